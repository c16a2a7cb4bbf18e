"""The ASGI application: ``/ws/{session_id}``, ``/healthz``, ``/metrics``, ``static/``.

A room is served by :meth:`VoiceTrioApp.serve_room` over a transport: under
``voice-trio serve`` the server's own WebSocket on the socket
(``voice_trio.server``, ``voice_trio.websocket``), under any ASGI server the
plain ASGI WebSocket messages (no framework cost per message). The HTTP routes
go through a small Starlette app. Process-wide tasks (the loop-lag monitor and
the sweeper that drives idle deadlines and per-room ``metrics`` events) live
in the ASGI lifespan's nursery.

Run it with ``voice-trio serve`` (the fast path) or
``hypercorn --worker-class trio voice_trio.app:app``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import operator
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import logs
from ._hypercorn import adapt_hypercorn
from .agent import Graph
from .cluster import Cluster, default_instance_id
from .config import ConfigError, Settings, default_db_path
from .demo import build_receptionist
from .metrics import Histogram, ServerMetrics
from .providers import Brain, EchoBrain, SessionOptions, Voice
from .providers.azure_realtime import AzureRealtimeBrain
from .providers.breaker import CircuitBreaker
from .providers.cartesia import CartesiaPool, CartesiaVoice
from .providers.local import LocalBrain, LocalSpeech, LocalVoice, Responder
from .record import NullRecorder, Recorder
from .resume import SessionKeeper
from .room import CloseCode, Room
from .security import (
    HandshakeGuard,
    Refusal,
    header_map,
    is_loopback,
    refusal_headers,
    session_id_of,
)
from .session import Session
from .telephony import STREAM_PATH as PHONE_STREAM_PATH
from .telephony import VOICE_PATH as PHONE_VOICE_PATH
from .telephony import TwilioBridge
from .transport import ASGITransport, Transport

__all__ = ["VoiceTrioApp", "app", "STATIC_DIR", "load_graph"]

log = logging.getLogger("voice_trio")

adapt_hypercorn()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class VoiceTrioApp:
    """One per server process. ``settings=None`` reads the environment at start-up."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        static_dir: Path | None = None,
        speech: LocalSpeech | None = None,
        agent: Graph | None = None,
    ) -> None:
        self._settings = settings
        #: The embedded speech models (loaded at start-up when the local brain or voice is used).
        self.speech = speech
        #: The agent graph the brains decide with (the demo receptionist by default).
        self.agent = agent
        #: The process's Cartesia sockets (VOICE_TTS=cartesia), shared by all rooms.
        self.cartesia: CartesiaPool | None = None
        self.metrics = ServerMetrics()
        self.rooms: dict[str, Room] = {}
        self.shutting_down = False
        self._guard: HandshakeGuard | None = None
        #: The port ``voice-trio serve`` listens on (None under another ASGI server).
        self.listen_port: int | None = None
        self._nursery: trio.Nursery | None = None
        #: Presence and the cross-instance kick in Redis (REDIS_URL; None: one instance).
        self.cluster: Cluster | None = None
        #: The conversations kept for resume (SESSION_RESUME_TTL_S; None: off), at start-up.
        self.keeper: SessionKeeper | None = None
        #: Where rooms hand their records (voice_trio.outofband: transcripts, jobs, events);
        #: built at start-up.
        self.recorder: Recorder = NullRecorder()
        self.outofband: Any = None  # voice_trio.outofband.OutOfBand, once started
        self.metrics.rooms_open = lambda: len(self.rooms)
        self.metrics.upstreams_live = lambda: sum(r.upstream.live for r in self.rooms.values())
        self.metrics.outbox_depth_max = lambda: max(
            (r.outbox.depth for r in self.rooms.values()), default=0
        )
        #: One breaker per provider for the whole process, shared by every room (issue #10).
        self.azure_breaker = CircuitBreaker("azure", errors=self.metrics.upstream_errors)
        self.metrics.circuit_open["azure"] = self.azure_breaker.is_open
        self.metrics.circuit_open["cartesia"] = lambda: (
            self.cartesia is not None and self.cartesia.breaker.is_open()
        )
        self.metrics.circuit_open["asr"] = lambda: (
            self.speech is not None and self.speech.breaker.is_open()
        )
        #: Phone calls (Twilio Media Streams): the voice webhook and the stream.
        self.twilio = TwilioBridge(self)
        self._http = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/metrics", self._metrics),
                Route("/v1/sessions/{session_id}", self._session),
                Route(PHONE_VOICE_PATH, self.twilio.voice, methods=["POST"]),
                Mount("/", StaticFiles(directory=static_dir or STATIC_DIR, html=True)),
            ]
        )

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def make_brain(self, session: Session) -> Brain:
        settings = self.settings
        brain = settings.brain
        if brain == "echo":
            return EchoBrain(session.options)
        if brain == "azure":
            self.make_responder(session)  # the session's conversation: instructions, tools
            return AzureRealtimeBrain(
                session.options,
                endpoint=settings.azure_openai_endpoint,
                api_key=settings.azure_openai_api_key,
                deployment=settings.azure_openai_deployment,
                api_version=settings.azure_openai_api_version or None,
                conversation=session.conversation,
                output="audio" if settings.voice == "none" else "text",
                voice=settings.azure_voice,
                session_max_s=settings.azure_session_max_s,
                breaker=self.azure_breaker,
                stall_timeout_s=settings.azure_stall_timeout_s,
            )
        first = session.conversation is None
        return LocalBrain(
            session.options,
            speech=self._require_speech(),
            responder=self.make_responder(session),
            greet=first and settings.agent_greeting,
            end_silence_ms=settings.vad_end_silence_ms,
            max_end_silence_ms=settings.vad_max_end_silence_ms,
            partial_interval_s=settings.asr_partial_interval_s,
        )

    def make_voice(self, session: Session) -> Voice | None:
        settings = self.settings
        if settings.voice == "local":
            return LocalVoice(self._require_speech(), session.options)
        if settings.voice == "cartesia":
            if self.cartesia is None:
                raise RuntimeError("the Cartesia pool is not running")
            return CartesiaVoice(
                self.cartesia,
                session.options,
                voice_id=settings.cartesia_voice_id,
                model=settings.cartesia_model,
            )
        return None

    def make_responder(self, session: Session) -> Responder:
        """The session's conversation on the agent graph (kept across upstream restarts)."""
        if session.conversation is None:
            if self.agent is None:
                raise RuntimeError("the agent graph is not loaded")
            session.conversation = self.agent.conversation(session_id=session.session_id)
        responder: Responder = session.conversation
        return responder

    @property
    def brain_input_rates(self) -> frozenset[int]:
        """The input rates the configured brain takes as they are."""
        brain = self.settings.brain
        if brain == "local":
            return LocalBrain.input_rates
        return AzureRealtimeBrain.input_rates if brain == "azure" else EchoBrain.input_rates

    def _require_speech(self) -> LocalSpeech:
        if self.speech is None:
            raise RuntimeError("the embedded speech models are not loaded")
        return self.speech

    @property
    def needs_speech(self) -> bool:
        return self.settings.brain == "local" or self.settings.voice == "local"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # ---------------------------------------------------------------- lifespan

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            settings = self.settings
        except ConfigError as exc:
            log.error("bad configuration: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        # This instance's name (/healthz; in Redis and session.ready with REDIS_URL).
        settings = self._settings = msgspec.structs.replace(
            settings, instance_id=default_instance_id(settings.instance_id, port=self.listen_port)
        )
        try:
            # The graph first: a mistyped AGENT_GRAPH fails before the models load.
            if settings.brain in ("local", "azure") and self.agent is None:
                self.agent = await trio.to_thread.run_sync(load_graph, settings)
            if self.needs_speech and self.speech is None:
                self.speech = await LocalSpeech.load(settings)
        except ConfigError as exc:
            log.error("bad configuration: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        except Exception as exc:
            log.exception("could not load the embedded brain (speech models, agent graph)")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self.metrics.loop_lag.run)
            # The recognizer's breaker comes with the models (LocalSpeech.load reads the
            # same settings); the Azure one is made before the settings are read.
            self.azure_breaker.threshold = settings.provider_breaker_threshold
            self.azure_breaker.cooldown_s = settings.provider_breaker_cooldown_s
            if self.speech is not None:
                self.speech.breaker.errors = self.metrics.upstream_errors
                await nursery.start(self.speech.run)
            if settings.voice == "cartesia":
                self.cartesia = CartesiaPool(
                    api_key=settings.cartesia_api_key,
                    base_url=settings.cartesia_base_url,
                    version=settings.cartesia_version,
                    max_sockets=settings.cartesia_max_sockets,
                    breaker=CircuitBreaker(
                        "cartesia",
                        threshold=settings.provider_breaker_threshold,
                        cooldown_s=settings.provider_breaker_cooldown_s,
                        errors=self.metrics.upstream_errors,
                    ),
                    stall_timeout_s=settings.cartesia_stall_timeout_s,
                )
                await nursery.start(self.cartesia.run)
            nursery.start_soon(self._sweep, settings)
            if settings.redis_url:
                self.cluster = Cluster(
                    url=settings.redis_url,
                    instance_id=settings.instance_id,
                    replaced=self._replaced,
                    errors=self.metrics.redis_errors,
                    prefix=settings.redis_prefix,
                    ttl_s=settings.presence_ttl_s,
                    refresh_s=settings.presence_refresh_s,
                    timeout_s=settings.redis_timeout_s,
                )
                cluster = self.cluster
                self.guard.share(cluster.limits)  # per-address limits across instances
                self.metrics.redis_up = lambda: cluster.statistics().healthy
                self.metrics.cluster_kicks = lambda: (
                    cluster.statistics().kicks_sent,
                    cluster.statistics().kicks_received,
                )
                await nursery.start(cluster.run)
            if settings.session_resume_ttl_s > 0:
                self.keeper = SessionKeeper(
                    ttl_s=settings.session_resume_ttl_s, max_bytes=settings.session_store_max_bytes
                )
                self.keeper.cluster, self.keeper.graph = self.cluster, self.agent
                await nursery.start(self.keeper.run)
            await self._start_recorders(settings, nursery)
            self._nursery = nursery
            with record_gc_pauses(self.metrics.gc_pause):
                if tune_garbage_collector(settings.gc_thresholds):
                    nursery.start_soon(freeze_survivors, lambda: len(self.rooms))
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown: every connection has ended by now
                if self.keeper is not None:
                    # The rooms that just closed are kept while Redis is still connected.
                    with trio.move_on_after(2.0):
                        await self.keeper.flush()
                nursery.cancel_scope.cancel()
        self._nursery = None
        await send({"type": "lifespan.shutdown.complete"})

    async def _start_recorders(self, settings: Settings, nursery: trio.Nursery) -> None:
        """The transcript store, job queue and event stream the settings turn on (#14)."""
        from .outofband import start_recorders

        self.outofband = await start_recorders(settings, self.metrics, nursery)
        self.recorder = self.outofband.recorder

    async def _sweep(self, settings: Settings) -> None:
        """One task for all rooms: idle deadlines and metrics events, no per-room timer."""
        period = min(
            1.0,
            settings.upstream_idle_s / 4,
            settings.session_idle_s / 4,
            settings.room_metrics_interval_s / 2,
        )
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            rooms = list(self.rooms.values())
            for i in range(len(rooms)):
                rooms[i].tick(now)
                if i % 1000 == 999:
                    await trio.lowlevel.checkpoint()
            # No loop variable left behind: it would keep the last room swept in memory
            # through the sleep, after it closed, until another room is swept.
            del rooms

    def begin_shutdown(self) -> None:
        """Stop taking rooms; let each room's turn end within the grace period; close 1001."""
        if self.shutting_down:
            return
        self.shutting_down = True
        if self._nursery is None:
            return
        deadline = trio.current_time() + self.settings.shutdown_grace_s
        for room in list(self.rooms.values()):
            self._nursery.start_soon(room.drain, deadline)

    # ------------------------------------------------------------------- http

    async def _healthz(self, request: Request) -> Response:
        health: dict[str, Any] = {
            "status": "ok",
            "rooms": len(self.rooms),
            "shutting_down": self.shutting_down,
            "instance_id": self.settings.instance_id,
        }
        if self.cluster is not None:
            health["redis"] = "ok" if self.cluster.statistics().healthy else "degraded"
        return JSONResponse(health)

    async def _metrics(self, request: Request) -> Response:
        return PlainTextResponse(
            self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def _session(self, request: Request) -> Response:
        """``GET /v1/sessions/{session_id}``: the transcript, summary and usage (issue #14)."""
        return await session_response(self.settings, request)

    # -------------------------------------------------------------- websocket

    @staticmethod
    def session_id_of(path: str) -> str | None:
        """The session id of a WebSocket path ``/ws/{1-128 of [A-Za-z0-9_-]}``, or None."""
        return session_id_of(path)

    @property
    def guard(self) -> HandshakeGuard:
        """The checks of every room's handshake (tokens, origins, per-address limits)."""
        if self._guard is None:
            settings = self.settings
            self._guard = HandshakeGuard(
                secret=settings.auth_secret,
                allow_unauthenticated=settings.allow_unauthenticated,
                allowed_origins=settings.allowed_origins,
                trusted_proxies=settings.trusted_proxies,
                max_rooms_per_ip=settings.max_rooms_per_ip,
                handshake_rate_per_ip=settings.handshake_rate_per_ip,
                handshake_burst_per_ip=settings.handshake_burst_per_ip,
                refused=self._handshake_refused,
            )
        return self._guard

    def _handshake_refused(self, reason: str) -> None:
        self.metrics.handshakes_refused[reason] += 1

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        query = scope.get("query_string", b"").decode("latin-1")
        client, server = scope.get("client"), scope.get("server")
        phone = scope["path"] == PHONE_STREAM_PATH
        try:
            target = scope["path"] + ("?" + query if query else "")
            headers = header_map(scope.get("headers", []))
            peer, local = (client[0] if client else ""), (server[0] if server else None)
            if phone:  # a carrier's stream: its own checks (signature, the call's token)
                ticket = self.twilio.admit(target, headers, peer=peer, local=local)
            else:
                ticket = await self.guard.enter(target, headers, peer=peer, local=local)
        except Refusal as refusal:
            await _deny(scope, send, refusal)
            return
        try:
            await send({"type": "websocket.accept"})
            transport = ASGITransport(send, receive)
            if phone:  # the session id comes with the call's `start`
                await self.twilio.serve(transport)
            else:
                await self.serve_room(ticket.session_id, transport)
        finally:
            ticket.release()

    async def serve_room(self, session_id: str, transport: Transport) -> None:
        """Run the room of an accepted connection until it ends (the connection's task)."""
        if self._nursery is None:
            raise RuntimeError(
                "voice_trio.app needs the ASGI lifespan protocol (Hypercorn runs it)"
            )
        if self.shutting_down:
            await transport.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        old = self.rooms.get(session_id)
        if old is None and len(self.rooms) >= self.settings.max_sessions:
            await transport.close(
                CloseCode.TRY_AGAIN_LATER, f"server full ({self.settings.max_sessions} rooms)"
            )
            return
        settings = self.settings
        room = Room(
            session=Session(session_id, SessionOptions(language=settings.voice_language)),
            settings=settings,
            metrics=self.metrics,
            make_brain=self.make_brain,
            make_voice=self.make_voice,
            transport=transport,
            brain_rates=self.brain_input_rates,
            recorder=self.recorder,
            keeper=self.keeper,
        )
        self.rooms[session_id] = room
        cluster, claim = self.cluster, 0
        try:
            if cluster is not None:
                # Kicks the session's room on another instance (at most REDIS_TIMEOUT_S).
                claim = await cluster.claim(session_id)
            if old is not None:
                old.close(CloseCode.REPLACED, "replaced")
                with trio.move_on_after(5.0):
                    await old.closed.wait()
            if self.keeper is not None:
                # The conversation goes on: the replaced room's, else the one kept (here or
                # in Redis: at most REDIS_TIMEOUT_S).
                kept = old.session if old is not None else await self.keeper.find(session_id)
                if kept is not None and (kept.heard or kept.conversation is not None):
                    kept.resumed = True
                    room.resume(kept)
            if self.shutting_down:
                room.close(CloseCode.GOING_AWAY, "server shutting down")
            with logs.room_context(session_id, self.settings.instance_id):
                await room.serve()
        finally:
            if self.keeper is not None:
                self.keeper.mark(room.session)
            if self.rooms.get(session_id) is room:
                del self.rooms[session_id]
                if cluster is not None:
                    cluster.release(session_id, claim)

    def _replaced(self, session_id: str) -> None:
        """Another instance opened ``session_id``: its room here closes as within one process."""
        room = self.rooms.get(session_id)
        if room is not None:
            room.close(CloseCode.REPLACED, "replaced")


def load_graph(settings: Settings) -> Graph:
    """The agent graph: AGENT_GRAPH's ``module:factory`` called with no arguments, else the demo.

    The module is imported from the current directory first (as ``uvicorn`` and
    ``gunicorn`` find an app), so a team's graph needs no packaging to be tried.
    Raises :class:`ConfigError` when it cannot be imported or is not a graph factory.
    """
    spec = settings.agent_graph
    if not spec:
        return build_receptionist(settings.agent_db_path or default_db_path())
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = operator.attrgetter(name)(importlib.import_module(module_name))
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"AGENT_GRAPH={spec}: {type(exc).__name__}: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"AGENT_GRAPH={spec}: {name} is not a function")
    graph = factory()
    if not isinstance(graph, Graph):
        raise ConfigError(
            f"AGENT_GRAPH={spec}: {name}() returned {type(graph).__name__}, "
            "not a voice_trio.agent.Graph"
        )
    return graph


#: Seconds between two freezes of the tracked objects (:func:`freeze_survivors`).
GC_FREEZE_INTERVAL_S: Final = 1.0
#: The backstop of :func:`freeze_survivors`: a full collection once the frozen objects
#: exceed those of start-up by this many per open room, plus GC_BACKSTOP_OBJECTS. An
#: idle room is ~100 tracked objects, so only garbage frozen by mistake gets there.
GC_BACKSTOP_OBJECTS_PER_ROOM: Final = 1000
GC_BACKSTOP_OBJECTS: Final = 500_000


class GCPauses:
    """A ``gc.callbacks`` entry: the pause of every collection into a histogram."""

    __slots__ = ("histogram", "_started")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.histogram.observe(time.perf_counter() - self._started)


@contextlib.contextmanager
def record_gc_pauses(histogram: Histogram) -> Iterator[None]:
    """Record every garbage collection's pause into ``histogram`` while in the block."""
    callback = GCPauses(histogram)
    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


async def _deny(scope: dict[str, Any], send: Any, refusal: Refusal) -> None:
    """Refuse an ASGI WebSocket handshake with the refusal's HTTP status, when the server can."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message})
        return
    body = (refusal.message + "\n").encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *refusal_headers(refusal),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


def tune_garbage_collector(thresholds: str) -> bool:
    """Fewer, cheaper collections for a process that holds thousands of rooms.

    With Python's defaults, 10,000 idle rooms (~1.7 M tracked objects) got a full
    collection every ~11 s that stopped the event loop for 1.5-2 s (bench/README.md).
    A larger first generation lets a message's short-lived objects die before they
    are promoted, and the third threshold spaces full collections; the objects
    made at start-up (modules, models) are frozen out of every later collection.
    Returns whether it tuned anything (``off``: Python's defaults, nothing frozen).
    """
    if thresholds == "off":
        return False
    gen0, gen1, gen2 = (int(n) for n in thresholds.split(","))
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, gen1, gen2)
    return True


async def freeze_survivors(
    rooms_open: Callable[[], int], *, interval: float = GC_FREEZE_INTERVAL_S
) -> None:
    """Keep collections short: every ``interval`` s, freeze what is tracked now.

    A full collection walks every tracked object, ~100 per idle room: at 10,000
    idle rooms it stopped the loop 610-740 ms (bench/churn.py idle). A closed
    room is freed by reference counting (it leaves no cycle: tests/test_churn.py),
    so the collector has nothing to find among the rooms; ``gc.freeze`` (O(1):
    it moves lists) takes them out of every later walk, so a collection walks
    only what was made since the last freeze (and a freeze restarts the count
    to the next young collection). Frozen objects that die are still freed by
    their reference count; only cyclic garbage among them stays. As a backstop
    against that, once the frozen objects outgrow the rooms (``GC_BACKSTOP_*``)
    they are unfrozen and collected in full, once, with a warning.
    """
    start = gc.get_freeze_count()
    while True:
        await trio.sleep(interval)
        gc.freeze()
        frozen = gc.get_freeze_count()
        rooms = rooms_open()
        if frozen > start + GC_BACKSTOP_OBJECTS_PER_ROOM * rooms + GC_BACKSTOP_OBJECTS:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            # Counted by what is left, not by gc.collect(): a cycle through a generator
            # is broken by its finalizer and freed by reference counting, uncounted.
            log.warning(
                "%d objects were frozen for %d rooms: a full collection freed %d of them"
                " (reference cycles that should be broken where they are made)",
                frozen,
                rooms,
                frozen - gc.get_freeze_count(),
            )
            start = gc.get_freeze_count() - GC_BACKSTOP_OBJECTS_PER_ROOM * rooms


app = VoiceTrioApp()


async def session_response(settings: Settings, request: Request) -> Response:
    """``GET /v1/sessions/{session_id}``: the JSON of a session, if the request may read it.

    With AUTH_SECRET the room token of that session or an admin token; without it,
    loopback only (unless ALLOW_UNAUTHENTICATED).
    """
    from .transcripts import read_session, session_access

    session_id = request.path_params["session_id"]
    try:
        if session_id_of(f"/ws/{session_id}") is None:
            raise Refusal(404, "session_id", "a session id is 1 to 128 of A-Z a-z 0-9 _ -")
        session_access(
            settings.auth_secret,
            session_id,
            request.url.query,
            request.headers.get("authorization"),
        )
        server = request.scope.get("server")
        if not (settings.auth_secret or settings.allow_unauthenticated) and (
            server and not is_loopback(str(server[0]))
        ):
            raise Refusal(403, "unauthenticated", "transcripts need AUTH_SECRET here")
    except Refusal as refusal:
        return JSONResponse(
            {"error": refusal.reason, "message": refusal.message},
            status_code=refusal.status,
            headers={k.decode(): v.decode() for k, v in refusal_headers(refusal)},
        )
    path = settings.transcript_db_path or None
    found = None
    if settings.transcripts:
        found = await trio.to_thread.run_sync(read_session, path, session_id)
    if found is None:
        return JSONResponse({"error": "not_found", "message": "no such session"}, status_code=404)
    return JSONResponse(found)
