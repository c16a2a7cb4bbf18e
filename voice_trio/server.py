"""``voice-trio serve``: the rooms on the server's own WebSocket, HTTP by Hypercorn.

Every connection's request head is read first. A WebSocket upgrade is
answered here (:mod:`voice_trio.websocket`) and its room runs straight on the
socket; anything else (``/healthz``, ``/metrics``, the demo page) goes to
Hypercorn's HTTP server on the Trio worker with the bytes already read, and
Hypercorn runs the app's ASGI lifespan. With the standard room this path costs
about a third of the CPU of Hypercorn's own WebSocket handling
(bench/README.md); the ASGI path stays for ``hypercorn voice_trio.app:app``.

On SIGTERM or SIGINT: stop accepting connections, tell every room (close 1001
"going away") once its running turn has ended or the grace period is over,
close upstreams, exit 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config, Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr

from .app import VoiceTrioApp
from .config import Settings
from .room import CloseCode
from .websocket import Handshake, WebSocket, is_websocket_upgrade, read_request_head

__all__ = ["hypercorn_config", "serve", "run"]

log = logging.getLogger("voice_trio.server")

#: Added to SLOW_CLIENT_TIMEOUT_S for the kernel's send deadline (see :func:`listen`).
TCP_USER_TIMEOUT_MARGIN_S = 5.0
#: A new connection must send its request head within this time.
REQUEST_HEAD_TIMEOUT_S = 10.0


def hypercorn_config(settings: Settings, *, host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = settings.ws_max_message_bytes
    # Rooms close themselves within the grace period; Hypercorn's own limit is a backstop.
    config.graceful_timeout = settings.shutdown_grace_s + 5.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def _set_on_signal(signals: Any, event: trio.Event) -> None:
    async for signum in signals:
        if not event.is_set():
            log.info("%s: shutting down", signal.Signals(signum).name)
            event.set()


async def serve(
    app: VoiceTrioApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_event: trio.Event | None = None,
    sockets: Sockets | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_event`` is set, or until SIGINT/SIGTERM when it is None.

    ``task_status.started`` gets the bound URLs (``http://127.0.0.1:PORT``).
    """
    if shutdown_event is not None:
        await _serve(app, host, port, shutdown_event, sockets, task_status)
        return
    # The receiver stays open until the end, so a second signal cannot kill a draining server.
    event = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_on_signal, signals, event)
            await _serve(app, host, port, event, sockets, task_status)
            nursery.cancel_scope.cancel()


async def _serve(
    app: VoiceTrioApp,
    host: str,
    port: int,
    shutdown_event: trio.Event,
    sockets: Sockets | None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    # Hypercorn's worker_serve (0.18), with the front door of this module in
    # place of its TCPServer as each connection's handler.
    config = hypercorn_config(app.settings, host=host, port=port)
    config.set_statsd_logger_class(StatsdLogger)
    asgi = ASGIWrapper(app)  # type: ignore[arg-type]  # a plain ASGI 3 callable
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    own = sockets is None
    if sockets is None:
        sockets = listen(config, app.settings)
    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                listeners = [
                    trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    for sock in sockets.insecure_sockets
                ]
                binds = [
                    f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
                    for sock in sockets.insecure_sockets
                ]
                for bind in binds:
                    log.info("Running on %s (CTRL + C to quit)", bind)
                door = _FrontDoor(app, asgi, config, context, ConnectionState(lifespan_state))
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(
                            trio.serve_listeners,
                            door.handle,
                            listeners,
                            handler_nursery=connections,
                        )
                    )
                    task_status.started(binds)
                    await shutdown_event.wait()
                    app.begin_shutdown()  # the rooms drain in the app's lifespan nursery
                    accepting.cancel_scope.cancel()
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    finally:
        if own:
            for sock in sockets.insecure_sockets:
                sock.close()


class _FrontDoor:
    """Each connection's task: a WebSocket room here, anything else to Hypercorn."""

    def __init__(
        self,
        app: VoiceTrioApp,
        asgi: ASGIWrapper,
        config: Config,
        context: WorkerContext,
        state: ConnectionState,
    ) -> None:
        self.app = app
        self.asgi = asgi
        self.config = config
        self.context = context
        self.state = state

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(REQUEST_HEAD_TIMEOUT_S):
                try:
                    data = await read_request_head(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if not data:
                return
            if is_websocket_upgrade(data):
                await self._websocket(stream, data)
            else:
                http = TCPServer(
                    self.asgi,
                    self.config,
                    self.context,
                    self.state,
                    _Replayed(stream, data),  # type: ignore[arg-type]
                )
                await http.run()

    async def _websocket(self, stream: trio.SocketStream, data: bytes) -> None:
        app = self.app
        handshake = Handshake(data)
        path = None if handshake.target is None else handshake.target.split("?", 1)[0]
        session_id = None if path is None else app.session_id_of(path)
        try:
            if handshake.refusal is not None:
                await stream.send_all(handshake.refusal)
                return
            if session_id is None:
                await stream.send_all(handshake.reject(403))
                return
            await stream.send_all(handshake.accept())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        ws = WebSocket(
            stream,
            max_message_bytes=app.settings.ws_max_message_bytes,
            max_fragments=app.settings.ws_max_fragments,
            buffered=handshake.rest,
        )
        try:
            await app.serve_room(session_id, ws)
        except Exception:
            # A room's failure ends that room only: log it, close 1011, go on.
            log.exception("room %s failed", session_id)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await ws.close(CloseCode.INTERNAL_ERROR, "internal error")


class _Replayed(trio.abc.HalfCloseableStream):
    """A socket stream that first gives back the bytes already read from it."""

    def __init__(self, stream: trio.SocketStream, data: bytes) -> None:
        self.stream = stream
        self.socket = stream.socket  # Hypercorn reads the peer's address from it
        self._data = data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._data:
            await trio.lowlevel.checkpoint()
            data, self._data = self._data, b""
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def listen(config: Config, settings: Settings) -> Sockets:
    """Bind and listen, with a send deadline on every connection.

    Hypercorn writes to the socket in a shielded scope, so a client that stops
    reading could hold its room's writer forever. ``TCP_USER_TIMEOUT`` (Linux,
    inherited by accepted sockets) makes the kernel drop a connection whose data
    has gone unacknowledged, or whose window stayed closed, for longer than the
    slow-consumer timeout plus a margin; the room then ends like any other.
    """
    sockets = config.create_sockets()
    timeout_ms = int((settings.slow_client_timeout_s + TCP_USER_TIMEOUT_MARGIN_S) * 1000)
    for sock in sockets.insecure_sockets:
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        sock.listen(config.backlog)
    return sockets


def _worker(host: str, port: int, sockets: Sockets) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    app = VoiceTrioApp(Settings.from_env())
    trio.run(partial(serve, app, host=host, port=port, sockets=sockets))


def run(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """The ``voice-trio serve`` command. Returns the exit status."""
    if workers == 1:
        trio.run(partial(serve, VoiceTrioApp(settings), host=host, port=port))
        return 0
    # Several processes share the listening socket; each one runs its own rooms.
    sockets = listen(hypercorn_config(settings, host=host, port=port), settings)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(host, port, sockets)) for _ in range(workers)]
    previous: dict[signal.Signals, Any] = {}

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                proc.terminate()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, forward)
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for sock in sockets.insecure_sockets:
            sock.close()
    return max((proc.exitcode or 0) for proc in procs)
