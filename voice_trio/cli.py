"""``voice-trio``: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, Settings

__all__ = ["main"]


def _settings_epilog() -> str:
    rows = Settings.describe()
    width = max(len(name) for name, _, _ in rows)
    lines = ["settings (environment variables, default in brackets):"]
    for name, default, meaning in rows:
        lines.append(f"  {name:<{width}}  {meaning} [{default}]")
    lines.append("")
    lines.append("A bad value stops start-up with a message naming the variable.")
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
    voices = commands.add_parser(
        "voices",
        help="list the Cartesia voices that speak a language (for CARTESIA_VOICE_ID)",
        description="List Cartesia voices through Cartesia's HTTP API (the cartesia package), "
        "with CARTESIA_API_KEY, CARTESIA_BASE_URL and CARTESIA_VERSION from the environment.",
    )
    voices.add_argument("--language", default="vi", help="language code [vi]")
    voices.add_argument("--query", default=None, help="search names and descriptions")
    voices.add_argument("--limit", type=int, default=500, help="list at most this many [500]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "serve":
        if args.workers < 1:
            print("voice-trio: --workers must be at least 1", file=sys.stderr)
            return 2
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            print(f"voice-trio: bad configuration: {exc}", file=sys.stderr)
            return 2
        from .server import run

        return run(settings, host=args.host, port=args.port, workers=args.workers)
    if args.command == "voices":
        return _voices(args.language, args.query, args.limit)
    return 2


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
