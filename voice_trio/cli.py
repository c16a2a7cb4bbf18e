"""``voice-trio``: the command line."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from functools import partial

import trio

from . import logs
from .config import ConfigError, Settings, markdown_table

__all__ = ["main"]


def _settings_epilog() -> str:
    lines = ["settings (environment variables, default in brackets):"]
    for row in Settings.describe():
        default = row.shown_default.strip("`")
        if row.secret:  # never its value: only whether the environment sets it
            default = "secret, " + (
                "set" if os.environ.get(row.variable, "").strip() else "not set"
            )
        lines.append(f"  {row.variable}" + (f" [{default}]" if default else ""))
        lines.extend(
            textwrap.wrap(
                row.description.replace("`", ""),
                92,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
        )
    lines.append("")
    lines.append("A bad value stops start-up with a message naming the variable.")
    lines.append("`voice-trio settings` shows the values in use; `voice-trio check` tries them.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-trio",
        description="Realtime voice-agent server for Vietnamese-speaking products, on Trio.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve /ws/{session_id}, /healthz, /metrics and the demo page",
        description="Serve the rooms on Trio: WebSocket rooms on the server's own "
        "WebSocket, other HTTP through Hypercorn. SIGTERM or SIGINT drains the rooms "
        "(close 1001) within SHUTDOWN_GRACE_S and exits 0.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind [127.0.0.1]")
    serve.add_argument("--port", type=int, default=8000, help="port to bind [8000]")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port; each holds its own rooms [1]",
    )
    shown = commands.add_parser(
        "settings",
        help="print the settings in use (secrets only as set or not)",
        description="Print every setting as read from the environment, secrets only as "
        "(set) or (not set); --markdown prints the README's configuration table instead.",
    )
    shown.add_argument(
        "--markdown", action="store_true", help="the table of every setting, default and meaning"
    )
    check = commands.add_parser(
        "check",
        help="try the settings: embedded models, agent graph, Azure, Cartesia, Redis",
        description="Validate the settings from the environment, load the embedded models "
        "the configured brain and voice need (or say which are missing), build the agent "
        "graph, open an Azure OpenAI Realtime session and close it at once, and have "
        "Cartesia speak a short Vietnamese sentence with the configured voice, and PING "
        "Redis when REDIS_URL is set. Prints a "
        "table of what works; exits 1 when a check fails, 2 when a setting is invalid.",
    )
    check.add_argument("--timeout", type=float, default=10.0, help="seconds per network step [10]")
    serve.add_argument(
        "--graph",
        metavar="MODULE:FACTORY",
        help="the agent graph: a function of no arguments that returns a voice_trio.agent.Graph "
        "(sets AGENT_GRAPH) [the demo receptionist]",
    )
    voices = commands.add_parser(
        "voices",
        help="list the Cartesia voices that speak a language (for CARTESIA_VOICE_ID)",
        description="List Cartesia voices through Cartesia's HTTP API (the cartesia package), "
        "with CARTESIA_API_KEY, CARTESIA_BASE_URL and CARTESIA_VERSION from the environment.",
    )
    voices.add_argument("--language", default="vi", help="language code [vi]")
    voices.add_argument("--query", default=None, help="search names and descriptions")
    voices.add_argument("--limit", type=int, default=500, help="list at most this many [500]")
    token = commands.add_parser(
        "token",
        help="print a room token for a session id (AUTH_SECRET from the environment)",
        description="Print a signed room token (JWT, HS256: sub = SESSION_ID, aud = voice-trio, "
        "exp) for /ws/SESSION_ID?token=..., signed with AUTH_SECRET from the environment. "
        "In code: voice_trio.mint_token(secret, session_id, ttl_s=...).",
    )
    token.add_argument("session_id", metavar="SESSION_ID", nargs="?", help="the room's session id")
    token.add_argument(
        "--admin",
        action="store_true",
        help="an admin token instead: reads any session's transcript (GET /v1/sessions/...), "
        "opens no room",
    )
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="seconds the token is valid [3600]"
    )
    session = commands.add_parser(
        "session",
        help="print a session's transcript, summary and usage as JSON",
        description="Print what GET /v1/sessions/SESSION_ID answers, read from "
        "TRANSCRIPT_DB_PATH (exit 1 for an unknown session).",
    )
    session.add_argument("session_id", metavar="SESSION_ID", help="the session id")
    worker = commands.add_parser(
        "worker",
        help="run a Celery worker for the background jobs (CELERY_BROKER_URL)",
        description="Run `celery -A voice_trio.jobs worker` with the settings from the "
        "environment: summaries and usage records of closed rooms, written into "
        "TRANSCRIPT_DB_PATH (the server's file). Arguments after -- go to Celery.",
    )
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="Celery's worker options")
    nginx = commands.add_parser(
        "nginx-config",
        help="print an nginx.conf that keeps each session on one of several instances",
        description="Print a complete nginx.conf for voice-trio instances: /ws/{session_id} "
        "by a consistent hash of the session id (a reconnect reaches the same instance; a "
        "dead instance moves only its own sessions), the WebSocket upgrade unbuffered, other "
        "paths round robin, X-Forwarded-For and X-Real-IP for TRUSTED_PROXIES, and the pid, "
        "log and temp paths under --prefix. Run it with "
        "`nginx -p DIR/ -c DIR/nginx.conf -e stderr` (it stays in the foreground).",
    )
    nginx.add_argument("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    nginx.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a voice-trio instance (repeat for each)",
    )
    nginx.add_argument(
        "--prefix",
        default=".",
        metavar="DIR",
        help="directory for nginx's pid file, access log and temp files [.]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.configure(Settings.from_env())
    except ConfigError:
        logs.configure()  # the command says what is wrong with the settings
    if args.command == "serve":
        if args.workers < 1:
            print("voice-trio: --workers must be at least 1", file=sys.stderr)
            return 2
        if args.graph is not None:
            os.environ["AGENT_GRAPH"] = args.graph  # --workers' processes read the environment
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
            return 2
        problem = unauthenticated_bind(settings, args.host)
        if problem:
            print(f"voice-trio: {problem}", file=sys.stderr)
            return 2
        from .server import run

        return run(settings, host=args.host, port=args.port, workers=args.workers)
    if args.command == "check":
        return _check(args.timeout)
    if args.command == "settings":
        return _settings(markdown=args.markdown)
    if args.command == "voices":
        return _voices(args.language, args.query, args.limit)
    if args.command == "token":
        return _token(args.session_id, args.ttl, admin=args.admin)
    if args.command == "session":
        return _session(args.session_id)
    if args.command == "worker":
        return _worker(args.celery_args)
    if args.command == "nginx-config":
        return _nginx_config(args.listen, args.backend, args.prefix)
    return 2


def _check(timeout_s: float) -> int:
    from .check import Result, render, run_checks

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.stdout.write(render([Result("settings", False, str(exc))]))
        return 2
    if timeout_s <= 0:
        print("voice-trio: --timeout must be positive", file=sys.stderr)
        return 2
    results = trio.run(partial(run_checks, settings, timeout_s=timeout_s))
    sys.stdout.write(render(results, settings))
    return 1 if any(r.ok is False for r in results) else 0


def _settings(*, markdown: bool) -> int:
    if markdown:
        sys.stdout.write(markdown_table())
        return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    rows = Settings.describe()
    width = max(len(row.variable) for row in rows)
    for row in rows:
        value = settings.shown(row.name)
        mark = " " if getattr(settings, row.name) == row.default else "*"
        print(f"{mark} {row.variable:<{width}}  {value}")
    print(f"* set in the environment; brain: {settings.brain}, voice: {settings.voice}")
    return 0


def _nginx_config(listen: str, backends: Sequence[str], prefix: str) -> int:
    from .deploy import DeployError, nginx_config, parse_address

    try:
        config = nginx_config(
            parse_address(listen, what="--listen"),
            [parse_address(b, what="--backend") for b in backends],
            prefix,
        )
    except DeployError as exc:
        print(f"voice-trio: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(config)
    return 0


def unauthenticated_bind(settings: Settings, host: str) -> str | None:
    """Why serving on ``host`` with these settings is refused (secure by default), or None."""
    from .security import is_loopback

    if settings.auth_secret or settings.allow_unauthenticated or is_loopback(host):
        return None
    return (
        f"refusing to serve rooms on {host} without AUTH_SECRET: anyone who can reach the "
        "port could open a room or take over one. Set AUTH_SECRET (32+ bytes; rooms then "
        "need a token, see `voice-trio token`), or ALLOW_UNAUTHENTICATED=true to serve "
        "open rooms anyway."
    )


def _session(session_id: str) -> int:
    import json

    from .transcripts import read_session

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    found = read_session(settings.transcript_db_path or None, session_id)
    if found is None:
        print(f"voice-trio: no session {session_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(found, ensure_ascii=False, indent=2))
    return 0


def _worker(celery_args: Sequence[str]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.celery_broker_url:
        print("voice-trio: set CELERY_BROKER_URL (redis://host:port/db)", file=sys.stderr)
        return 2
    from .jobs import make_app

    extra = [a for a in celery_args if a != "--"]
    make_app().worker_main(["worker", "--loglevel=INFO", *extra])
    return 0


def _token(session_id: str | None, ttl_s: float, *, admin: bool = False) -> int:
    from .security import mint_token, session_id_of
    from .transcripts import mint_admin_token

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.auth_secret:
        print("voice-trio: set AUTH_SECRET to sign room tokens", file=sys.stderr)
        return 2
    if ttl_s <= 0:
        print("voice-trio: --ttl must be positive", file=sys.stderr)
        return 2
    if admin:
        print(mint_admin_token(settings.auth_secret, ttl_s=ttl_s))
        return 0
    if session_id is None or session_id_of(f"/ws/{session_id}") is None:
        print("voice-trio: a session id is 1 to 128 of A-Z a-z 0-9 _ -", file=sys.stderr)
        return 2
    print(mint_token(settings.auth_secret, session_id, ttl_s=ttl_s))
    return 0


def _voices(language: str, query: str | None, limit: int) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
        return 2
    if not settings.cartesia_api_key:
        print("voice-trio: set CARTESIA_API_KEY to list Cartesia voices", file=sys.stderr)
        return 2
    import cartesia

    base_url = settings.cartesia_base_url.replace("wss://", "https://").replace("ws://", "http://")
    client = cartesia.Cartesia(
        api_key=settings.cartesia_api_key,
        base_url=base_url,
        default_headers={"Cartesia-Version": settings.cartesia_version},
        max_retries=1,
    )
    shown = 0
    try:
        for voice in client.voices.list(q=query, limit=100):
            locales = {loc.locale.split("-")[0] for loc in voice.locales}
            if voice.language != language and language not in locales:
                continue
            print(f"{voice.id}  {voice.name}  [{voice.language}]  {voice.description}")
            shown += 1
            if shown >= limit:
                break
    except cartesia.APIStatusError as exc:
        print(f"voice-trio: Cartesia answered {exc.status_code}: {exc.message}", file=sys.stderr)
        return 1
    except cartesia.APIConnectionError as exc:
        print(f"voice-trio: could not reach Cartesia at {base_url}: {exc}", file=sys.stderr)
        return 1
    if not shown:
        print(f"voice-trio: no Cartesia voice speaks {language!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
