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
        description="Serve the rooms with Hypercorn's Trio worker. SIGTERM or SIGINT drains "
        "the rooms (close 1001) within SHUTDOWN_GRACE_S and exits 0.",
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
