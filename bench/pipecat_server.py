"""Pipecat echo server: a COMPARISON TARGET for the bench, not voice-trio.

The bench's standard room (DESIGN.md 2 and 6a) served the way a Pipecat user
would write it, with Pipecat's own machinery, so ``bench/run.py --target
pipecat`` can put the two side by side:

- FastAPI app, WebSocket endpoint ``/ws/{session_id}``, served by uvicorn on
  127.0.0.1, one process (one core, like voice-trio);
- per connection: ``FastAPIWebsocketTransport`` with a small custom
  ``FrameSerializer`` (:class:`RawPCMSerializer`): a binary message is an
  ``InputAudioRawFrame`` (PCM16 LE mono, 24 kHz), an ``OutputAudioRawFrame``
  goes out as a binary message, JSON messages come in as
  ``InputTransportMessageFrame`` and ``OutputTransportMessage(Urgent)Frame``
  goes out as JSON;
- the pipeline ``transport.input() -> EchoProcessor -> transport.output()``,
  run by a ``PipelineWorker`` (the 1.x name of ``PipelineTask``) on a
  ``WorkerRunner`` (formerly ``PipelineRunner``);
- :class:`EchoProcessor` turns input audio into output audio re-chunked to
  9600 bytes (the output transport's chunk is also set to 200 ms = 9600 bytes,
  so it forwards each chunk unchanged), answers ``ping`` with ``pong`` and a
  ``text`` with ``response.started`` / ``response.text.delta`` /
  ``response.text.done`` / ``response.done`` like the echo brain, and
  ``interrupt`` with ``interrupted``; ``session.ready`` on connect;
- nothing that echo does not need: no VAD (Pipecat 1.x has none in the
  transport unless configured), no turn tracking, no RTVI, no idle timeout,
  no metrics/heartbeats, Pipecat's log at WARNING;
- ``/healthz`` and a minimal ``/metrics`` with the voice-trio names that mean
  something here (rooms open, loop lag measured the same way: an asyncio task
  sleeping 50 ms and recording how late it wakes over a 60 s window,
  messages, RSS).

permessage-deflate is refused (``ws_per_message_deflate=False``), as
voice-trio does; ``--allow-deflate`` keeps uvicorn's default (accept).
uvicorn's WebSocket keepalive pings are off (``ws_ping_interval=None``), like
Hypercorn's default that voice-trio runs with. The event loop is uvicorn's
default (``--loop auto``: uvloop, installed by ``uvicorn[standard]``).

Runs in its own virtualenv (``bash bench/setup_pipecat.sh``):

    bench/.venv-pipecat/bin/python bench/pipecat_server.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from loguru import logger
from peer_stats import LAG_INTERVAL_S, PeerStats
from pipecat.frames.frames import (
    ClientConnectedFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

SAMPLE_RATE = 24000
CHUNK_BYTES = 9600  # 200 ms of PCM16 mono at 24 kHz, like WS_TTS_CHUNK_BYTES


# --------------------------------------------------------------------------- figures
class Stats(PeerStats):
    """Process-wide figures for /metrics (same names and method as voice-trio's)."""

    async def sample_loop_lag(self) -> None:
        # perf_counter, not loop.time(): uvloop's loop clock has 1 ms resolution
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL_S)
            self.record_lag(time.perf_counter() - before - LAG_INTERVAL_S)


STATS = Stats()


# --------------------------------------------------------------------------- serializer
class RawPCMSerializer(FrameSerializer):
    """Raw PCM16 binary frames both ways; JSON text messages as transport messages."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.sample_rate = sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            STATS.messages_out += 1
            return frame.audio
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            if self.should_ignore_frame(frame):
                return None
            STATS.messages_out += 1
            return json.dumps(frame.message, ensure_ascii=False)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        STATS.messages_in += 1
        if isinstance(data, bytes):
            return InputAudioRawFrame(audio=data, sample_rate=self.sample_rate, num_channels=1)
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            message = {"type": "__bad_json__"}
        return InputTransportMessageFrame(message=message)


# --------------------------------------------------------------------------- processor
class EchoProcessor(FrameProcessor):
    """Input audio -> output audio in 9600-byte chunks; JSON events like the echo brain."""

    def __init__(self, session_id: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__()
        self.session_id = session_id
        self.chunk_bytes = chunk_bytes
        self.pending = bytearray()
        self.response_n = 0

    async def send_event(self, **fields: Any) -> None:
        await self.push_frame(OutputTransportMessageUrgentFrame(message=fields))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.pending += frame.audio
            while len(self.pending) >= self.chunk_bytes:
                chunk = bytes(self.pending[: self.chunk_bytes])
                del self.pending[: self.chunk_bytes]
                await self.push_frame(
                    OutputAudioRawFrame(audio=chunk, sample_rate=SAMPLE_RATE, num_channels=1)
                )
        elif isinstance(frame, InputTransportMessageFrame):
            if direction == FrameDirection.DOWNSTREAM:
                await self.on_message(frame.message)
        elif isinstance(frame, ClientConnectedFrame):
            await self.send_event(
                type="session.ready",
                session_id=self.session_id,
                input_sample_rate=SAMPLE_RATE,
                output_sample_rate=SAMPLE_RATE,
                brain="pipecat-echo",
                voice="none",
            )
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ping":
            await self.send_event(type="pong")
        elif kind == "text":
            self.response_n += 1
            rid = f"resp_{self.response_n}"
            text = str(message.get("text", ""))
            await self.send_event(type="response.started", response_id=rid)
            await self.send_event(type="response.text.delta", response_id=rid, delta=text)
            await self.send_event(type="response.text.done", response_id=rid, text=text)
            await self.send_event(type="response.done", response_id=rid, status="completed")
        elif kind == "interrupt":
            self.pending.clear()
            await self.send_event(type="interrupted", response_id=f"resp_{self.response_n}")
        elif kind == "__bad_json__":
            await self.send_event(
                type="error", code="bad_json", message="invalid JSON", fatal=False
            )
        else:
            await self.send_event(
                type="error", code="unknown_type", message=f"unknown type {kind!r}", fatal=False
            )


# --------------------------------------------------------------------------- app
def make_app() -> FastAPI:
    lag_task: asyncio.Task[None] | None = None

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        nonlocal lag_task
        lag_task = asyncio.create_task(STATS.sample_loop_lag())
        yield
        lag_task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok\n"

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(STATS.prometheus(), media_type="text/plain; version=0.0.4")

    @app.websocket("/ws/{session_id}")
    async def room(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        STATS.rooms_open += 1
        try:
            transport = FastAPIWebsocketTransport(
                websocket=websocket,
                params=FastAPIWebsocketParams(
                    audio_in_enabled=True,
                    audio_in_sample_rate=SAMPLE_RATE,
                    audio_out_enabled=True,
                    audio_out_sample_rate=SAMPLE_RATE,
                    audio_out_10ms_chunks=CHUNK_BYTES // (SAMPLE_RATE // 100 * 2),
                    audio_out_end_silence_secs=0,
                    add_wav_header=False,
                    serializer=RawPCMSerializer(),
                ),
            )
            pipeline = Pipeline([transport.input(), EchoProcessor(session_id), transport.output()])
            worker = PipelineWorker(
                pipeline,
                params=PipelineParams(
                    audio_in_sample_rate=SAMPLE_RATE,
                    audio_out_sample_rate=SAMPLE_RATE,
                ),
                enable_rtvi=False,
                enable_turn_tracking=False,
                idle_timeout_secs=None,
            )

            @transport.event_handler("on_client_disconnected")
            async def on_client_disconnected(transport: Any, ws: Any) -> None:
                await worker.cancel()

            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            STATS.rooms_open -= 1

    return app


def disable_playback_pacing() -> None:
    """Diagnosis only: no sleep after each audio write in the output transport.

    ``FastAPIWebsocketOutputTransport`` paces audio like a sound card: after each
    chunk it sleeps until the chunk's playback time (chunk bytes / rate / 2, i.e.
    real time for PCM16). For TTS output that runs ahead that is right; for an
    echo of real-time input, any late input chunk moves the clock for good.
    """

    async def no_sleep(self: FastAPIWebsocketOutputTransport) -> None:
        return None

    FastAPIWebsocketOutputTransport._write_audio_sleep = no_sleep  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Pipecat echo server (bench comparison target, not voice-trio)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--loop", default="auto", help="uvicorn event loop: auto (uvloop if installed), asyncio"
    )
    parser.add_argument("--allow-deflate", action="store_true", help="accept permessage-deflate")
    parser.add_argument("--log-level", default="WARNING", help="Pipecat (loguru) log level")
    parser.add_argument(
        "--no-playback-pacing",
        action="store_true",
        help="DIAGNOSIS ONLY, not Pipecat as shipped: skip the output transport's "
        "real-time playback clock (each audio chunk is written at once)",
    )
    args = parser.parse_args()
    if args.no_playback_pacing:
        disable_playback_pacing()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the bench only runs on loopback")
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    import importlib.metadata as md

    print(
        f"pipecat echo server (comparison target) on {args.host}:{args.port} "
        f"pipecat-ai {md.version('pipecat-ai')} uvicorn {md.version('uvicorn')} "
        f"loop={args.loop} deflate={'accept' if args.allow_deflate else 'refuse'}"
        f"{' playback-pacing=OFF (diagnosis)' if args.no_playback_pacing else ''}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        make_app(),
        host=args.host,
        port=args.port,
        loop=args.loop,
        ws_per_message_deflate=args.allow_deflate,
        # no server keepalive pings (Hypercorn's default for voice-trio is none too); the
        # bench's client cannot answer a ping that arrives while it is closing
        ws_ping_interval=None,
        ws_ping_timeout=None,
        log_level="warning",
        access_log=False,
        workers=1,
    )


if __name__ == "__main__":
    main()
