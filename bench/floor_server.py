"""The floor: a bare Hypercorn-on-Trio echo server, a COMPARISON TARGET only.

This is not voice-trio. It is the least a server can do for the bench's
standard room, so the bench can show how far the real server is from the
floor set by Hypercorn + wsproto + Trio themselves:

- per connection: one reader (the ASGI task) and one writer task, joined by a
  bounded memory channel; nothing else (no brain, no outbox policy, no
  watchdog, no drops: a full channel simply blocks the reader);
- binary frames are echoed back re-chunked to ``--chunk`` bytes (9600 by
  default, like the echo brain's ``WS_TTS_CHUNK_BYTES``);
- ``{"type":"ping"}`` gets ``pong``; ``{"type":"text","text":...}`` gets
  ``response.started``, ``response.text.delta``, ``response.text.done``,
  ``response.done``, like the echo brain; ``interrupt`` gets ``interrupted``;
- ``/healthz`` and a ``/metrics`` with the subset of voice-trio's metric names
  that mean something here (rooms open, loop lag, messages, RSS), measured the
  same way (a task that sleeps a fixed interval and records how late it wakes).

permessage-deflate is REFUSED by default, as DESIGN.md asks of voice-trio
(Hypercorn 0.18 has no setting, so the handshake's view of the client's
``Sec-WebSocket-Extensions`` header is dropped; pinned to hypercorn 0.18).
``--allow-deflate`` keeps Hypercorn's default (accept) to show what it costs.

    python bench/floor_server.py --host 127.0.0.1 --port 8765 [--allow-deflate]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import sys
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from hypercorn.trio import serve
from peer_stats import LAG_INTERVAL_S, PeerStats

OUTBOX_MAX = 64


def refuse_permessage_deflate() -> None:
    """Make Hypercorn's handshake ignore any offered extension (so no deflate)."""
    version = importlib.metadata.version("hypercorn")
    if not version.startswith("0.18."):
        raise RuntimeError(
            f"refuse_permessage_deflate is written for hypercorn 0.18, found {version}"
        )
    original_init = ws_stream.Handshake.__init__

    def init_without_extensions(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.extensions = None

    ws_stream.Handshake.__init__ = init_without_extensions  # type: ignore[method-assign]


class FloorStats(PeerStats):
    """Process-wide figures of the floor (the only shared state, owned by the app)."""

    async def sample_loop_lag(self) -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(LAG_INTERVAL_S)
            self.record_lag(trio.current_time() - before - LAG_INTERVAL_S)


class FloorApp:
    def __init__(self, *, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.stats = FloorStats()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:
            await receive()  # lifespan.startup
            nursery.start_soon(self.stats.sample_loop_lag)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            nursery.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    async def http(self, scope: dict[str, Any], send: Any) -> None:
        if scope["path"] == "/healthz":
            status, body, ctype = 200, b"ok\n", b"text/plain"
        elif scope["path"] == "/metrics":
            status, body, ctype = (
                200,
                self.stats.prometheus().encode(),
                b"text/plain; version=0.0.4",
            )
        else:
            status, body, ctype = 404, b"not found\n", b"text/plain"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        stats = self.stats
        stats.rooms_open += 1
        send_channel, receive_channel = trio.open_memory_channel[dict[str, Any]](OUTBOX_MAX)

        async def writer() -> None:
            async with receive_channel:
                async for item in receive_channel:
                    await send(item)
                    stats.messages_out += 1

        def event(**fields: Any) -> dict[str, Any]:
            return {"type": "websocket.send", "text": json.dumps(fields, ensure_ascii=False)}

        pending = bytearray()
        response_n = 0
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                with send_channel:
                    await send_channel.send(
                        event(
                            type="session.ready",
                            session_id=scope["path"].rsplit("/", 1)[-1],
                            input_sample_rate=24000,
                            output_sample_rate=24000,
                            brain="floor",
                            voice="none",
                        )
                    )
                    while True:
                        message = await receive()
                        if message["type"] == "websocket.disconnect":
                            break
                        stats.messages_in += 1
                        data = message.get("bytes")
                        if data is not None:
                            pending += data
                            while len(pending) >= self.chunk_bytes:
                                chunk = bytes(pending[: self.chunk_bytes])
                                del pending[: self.chunk_bytes]
                                await send_channel.send({"type": "websocket.send", "bytes": chunk})
                            continue
                        try:
                            request = json.loads(message.get("text") or "")
                            kind = request.get("type")
                        except (ValueError, AttributeError):
                            await send_channel.send(
                                event(
                                    type="error",
                                    code="bad_json",
                                    message="invalid JSON",
                                    fatal=False,
                                )
                            )
                            continue
                        if kind == "ping":
                            await send_channel.send(event(type="pong"))
                        elif kind == "text":
                            response_n += 1
                            rid = f"resp_{response_n}"
                            text = str(request.get("text", ""))
                            await send_channel.send(event(type="response.started", response_id=rid))
                            await send_channel.send(
                                event(type="response.text.delta", response_id=rid, delta=text)
                            )
                            await send_channel.send(
                                event(type="response.text.done", response_id=rid, text=text)
                            )
                            await send_channel.send(
                                event(type="response.done", response_id=rid, status="completed")
                            )
                        elif kind == "interrupt":
                            pending.clear()
                            await send_channel.send(
                                event(type="interrupted", response_id=f"resp_{response_n}")
                            )
                        else:
                            await send_channel.send(
                                event(
                                    type="error",
                                    code="unknown_type",
                                    message=f"unknown type {kind!r}",
                                    fatal=False,
                                )
                            )
                # send_channel closed: the writer drains what is queued and ends
        finally:
            stats.rooms_open -= 1


async def main_async(args: argparse.Namespace) -> None:
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.backlog = args.backlog
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    app = FloorApp(chunk_bytes=args.chunk)

    async def shutdown_trigger() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                return

    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="bare Hypercorn/Trio echo server (bench comparison target)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--chunk", type=int, default=9600, help="bytes per echoed binary chunk")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument(
        "--allow-deflate",
        action="store_true",
        help="keep Hypercorn's default: accept permessage-deflate",
    )
    args = parser.parse_args()
    if not args.allow_deflate:
        refuse_permessage_deflate()
    print(
        f"floor server (comparison target) on {args.host}:{args.port} "
        f"deflate={'accept' if args.allow_deflate else 'refuse'}",
        file=sys.stderr,
    )
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
