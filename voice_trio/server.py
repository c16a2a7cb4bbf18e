"""``voice-trio serve``: the rooms on the server's own WebSocket, HTTP by Hypercorn.

Every connection's request head is read first. A WebSocket upgrade is
answered here (:mod:`voice_trio.websocket`) and its room runs straight on the
socket; anything else (``/healthz``, ``/metrics``, the demo page) goes to
Hypercorn's HTTP server on the Trio worker with the bytes already read, and
Hypercorn runs the app's ASGI lifespan. With the standard room this path costs
about a third of the CPU of Hypercorn's own WebSocket handling
(bench/README.md); the ASGI path stays for ``hypercorn voice_trio.app:app``.

The front door's limits (each refusal counted on ``/metrics`` as
``voice_trio_connections_refused_total{reason}``):

- ``per_ip``: one client address (an IPv6 client: its /64) holds at most
  MAX_CONNECTIONS_PER_IP connections of every kind (rooms, HTTP, heads still
  arriving); more are closed as soon as they are accepted, before any read.
- ``capacity``: the process holds at most MAX_CONNECTIONS (0: the file
  descriptor limit, raised to its hard limit, less :data:`FD_RESERVE`). Past
  it, :data:`PROBE_SLOTS` more connections are taken that serve only ``GET``
  ``/healthz`` and ``/metrics`` (and close after one answer), so a full
  process can still be watched; anything else there gets 503; past those,
  connections are closed at accept. The descriptors never run out (EMFILE).
- ``head_timeout``: a request head must arrive within
  :data:`REQUEST_HEAD_TIMEOUT_S`; ``head_too_large``: a head over 16 KB gets
  431. Both are closed.
- ``cl_te``, ``http2``, ``upgrade_not_first``: refused by Hypercorn as adapted
  in :mod:`voice_trio._hypercorn` (400 / 505 / 400, then closed).

HTTP/1.1 keep-alive connections close after :data:`HTTP_KEEP_ALIVE_S` idle,
and at once on ``Connection: close`` or at shutdown.

On SIGTERM or SIGINT: stop accepting connections, close idle HTTP connections
and unfinished heads at once, give HTTP requests still running until
SHUTDOWN_GRACE_S, tell every room (close 1001 "going away") once its running
turn has ended or the grace period is over, close upstreams, exit 0.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import errno
import logging
import multiprocessing
import resource
import signal
import socket
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any, Final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr

from . import logs
from ._hypercorn import FrontDoorConfig
from .app import VoiceTrioApp
from .config import Settings
from .metrics import ServerMetrics
from .room import CloseCode
from .security import Refusal, client_key, header_map, refusal_headers
from .telephony import STREAM_PATH as PHONE_STREAM_PATH
from .websocket import (
    MAX_HEAD_BYTES,
    Handshake,
    WebSocket,
    is_websocket_upgrade,
    read_request_head,
)

__all__ = [
    "Admission",
    "ConnectionGate",
    "ConnectionStatistics",
    "client_key",
    "connection_limit",
    "hypercorn_config",
    "serve",
    "run",
]

log = logging.getLogger("voice_trio.server")

#: Added to SLOW_CLIENT_TIMEOUT_S for the kernel's send deadline (see :func:`listen`).
TCP_USER_TIMEOUT_MARGIN_S = 5.0
#: A new connection must send its request head within this time.
REQUEST_HEAD_TIMEOUT_S = 10.0
#: An idle HTTP/1.1 keep-alive connection is closed after this long (Hypercorn's default).
HTTP_KEEP_ALIVE_S = 5.0
#: A client that sends nothing this long while its HTTP request is open is dropped
#: (a body trickled byte by byte); the app's routes answer in milliseconds.
HTTP_READ_TIMEOUT_S = 30
#: Connections past the process's cap that may still ask for /healthz or /metrics.
PROBE_SLOTS = 16
#: Such a connection must send its head within this time (a probe's is one packet).
PROBE_HEAD_TIMEOUT_S = 2.0
PROBE_PATHS: Final = frozenset({b"/healthz", b"/metrics"})
#: File descriptors the derived cap leaves to everything but client connections:
#: the probe slots, listening sockets, Trio's epoll and wake-up socket, logs, model
#: and SQLite files, worker threads, Cartesia's pool (at most 64), DNS look-ups.
FD_RESERVE: Final = 256
#: The derived cap never goes below this, however low the descriptor limit.
MIN_CONNECTIONS: Final = 16
#: A refused request's answer is sent, then what the client already sent is read
#: and dropped (at most this long and this much) so that closing does not reset
#: the connection and lose the answer.
REFUSAL_LINGER_S = 1.0
REFUSAL_DRAIN_BYTES: Final = 256 * 1024
#: After accept fails for want of descriptors or memory, wait this long (as trio does).
ACCEPT_RETRY_S = 0.1
#: Connections accepted per wake-up of the accept loop before it lets other tasks run.
ACCEPT_BATCH: Final = 64
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
)
#: accept() errors that concern only the connection being accepted (trio's list).
_IGNORABLE_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)


def hypercorn_config(settings: Settings, *, host: str, port: int) -> FrontDoorConfig:
    config = FrontDoorConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.backlog = settings.listen_backlog
    config.websocket_max_message_size = settings.ws_max_message_bytes
    config.keep_alive_timeout = HTTP_KEEP_ALIVE_S
    config.read_timeout = HTTP_READ_TIMEOUT_S
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    config.alpn_protocols = ["http/1.1"]  # never HTTP/2, should TLS be configured
    # Rooms close themselves within the grace period; Hypercorn's own limit is a backstop.
    config.graceful_timeout = settings.shutdown_grace_s + 5.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


# ------------------------------------------------------------------ admission


class Admission(enum.Enum):
    """What the front door does with a connection it has just accepted."""

    SERVE = "serve"
    #: In the reserve past the cap: /healthz and /metrics only.
    PROBE_ONLY = "probe_only"
    #: Closed at once; the values are the ``reason`` labels of the refusal.
    REFUSED_PER_IP = "per_ip"
    REFUSED_FULL = "capacity"

    @property
    def refused(self) -> bool:
        return self in (Admission.REFUSED_PER_IP, Admission.REFUSED_FULL)


@dataclass(frozen=True)
class ConnectionStatistics:
    open: int
    limit: int
    per_ip_limit: int
    #: Of ``open``, those in the probe reserve.
    probes: int
    #: Distinct client addresses with a connection open, and the most one holds.
    addresses: int
    busiest: int


class ConnectionGate:
    """Open connections in total and per client address; the decision at accept."""

    def __init__(self, *, limit: int, per_ip_limit: int, probe_slots: int = PROBE_SLOTS) -> None:
        self.limit = limit
        self.per_ip_limit = per_ip_limit
        self.probe_slots = probe_slots
        self.open = 0
        self._probes = 0
        self._by_key: dict[str, int] = {}

    def admit(self, key: str, *, per_ip: bool = True) -> Admission:
        """Count a new connection from ``key`` in, unless it is refused.

        ``per_ip=False`` (a trusted proxy): only the process's cap applies.
        """
        held = self._by_key.get(key, 0)
        if per_ip and held >= self.per_ip_limit:
            return Admission.REFUSED_PER_IP
        if self.open < self.limit:
            admission = Admission.SERVE
        elif self._probes < self.probe_slots:
            admission = Admission.PROBE_ONLY
            self._probes += 1
        else:
            return Admission.REFUSED_FULL
        self._by_key[key] = held + 1
        self.open += 1
        return admission

    def release(self, key: str, admission: Admission) -> None:
        """Count a connection that :meth:`admit` let in out again."""
        held = self._by_key[key] - 1
        if held:
            self._by_key[key] = held
        else:
            del self._by_key[key]
        self.open -= 1
        if admission is Admission.PROBE_ONLY:
            self._probes -= 1

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            open=self.open,
            limit=self.limit,
            per_ip_limit=self.per_ip_limit,
            probes=self._probes,
            addresses=len(self._by_key),
            busiest=max(self._by_key.values(), default=0),
        )


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    target = hard if hard != infinite else 1 << 20
    if soft != infinite and soft >= target:
        return soft
    if soft == infinite:
        return target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_limit(settings: Settings, fd_limit: int) -> int:
    """The process's cap on open client connections, for a file-descriptor limit.

    MAX_CONNECTIONS when set; else the limit less :data:`FD_RESERVE`, and less
    one descriptor per room that may hold an Azure socket (the azure brain).
    """
    if settings.max_connections:
        if settings.max_connections + FD_RESERVE > fd_limit:
            log.warning(
                "MAX_CONNECTIONS=%d leaves fewer than %d of the %d file descriptors to the "
                "rest of the process: connections may fail with EMFILE",
                settings.max_connections,
                FD_RESERVE,
                fd_limit,
            )
        return settings.max_connections
    spare = fd_limit - FD_RESERVE
    upstreams = min(settings.max_sessions, spare // 2) if settings.brain == "azure" else 0
    return max(MIN_CONNECTIONS, spare - upstreams)


# ---------------------------------------------------------------------- serve


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
    settings = app.settings
    config = hypercorn_config(settings, host=host, port=port)
    config.websocket_upgrades = False  # rooms are the front door's, on first requests only
    config.set_statsd_logger_class(StatsdLogger)
    asgi = ASGIWrapper(app)  # type: ignore[arg-type]  # a plain ASGI 3 callable
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    gate = ConnectionGate(
        limit=connection_limit(settings, raise_fd_limit()),
        per_ip_limit=settings.max_connections_per_ip,
        probe_slots=PROBE_SLOTS,
    )
    app.metrics.connections_open = lambda: gate.open
    own = sockets is None
    if sockets is None:
        sockets = listen(config, settings)
    if sockets.insecure_sockets:  # the default instance id is hostname:port
        app.listen_port = int(sockets.insecure_sockets[0].getsockname()[1])
    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                binds = [
                    f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
                    for sock in sockets.insecure_sockets
                ]
                for bind in binds:
                    log.info("Running on %s (CTRL + C to quit)", bind)
                log.info(
                    "at most %d connections (%d per client address)",
                    gate.limit,
                    gate.per_ip_limit,
                )
                door = _FrontDoor(app, asgi, config, context, ConnectionState(lifespan_state), gate)
                async with trio.open_nursery() as accepting:
                    for sock in sockets.insecure_sockets:
                        accepting.start_soon(door.accept, sock, connections)
                    task_status.started(binds)
                    await shutdown_event.wait()
                    app.begin_shutdown()  # the rooms drain in the app's lifespan nursery
                    accepting.cancel_scope.cancel()
                if own:  # new connections are refused by the kernel, not left in the backlog
                    for sock in sockets.insecure_sockets:
                        trio.lowlevel.notify_closing(sock)
                        sock.close()
                door.begin_shutdown(trio.current_time() + settings.shutdown_grace_s, connections)
                await context.terminated.set()  # idle keep-alive connections close now
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    finally:
        if own:
            for sock in sockets.insecure_sockets:
                sock.close()


class _FrontDoor:
    """Admission at accept, then each connection's task: a room here, anything else to Hypercorn."""

    def __init__(
        self,
        app: VoiceTrioApp,
        asgi: ASGIWrapper,
        config: FrontDoorConfig,
        context: WorkerContext,
        state: ConnectionState,
        gate: ConnectionGate,
    ) -> None:
        self.app = app
        self.asgi = asgi
        self.config = config
        config.on_refused = self.refused  # Hypercorn's refusals (cl_te, http2, ...)
        # A probe connection is closed after its one answer (Hypercorn adds Connection: close).
        self.probe_config = copy.copy(config)
        self.probe_config.keep_alive_max_requests = 1
        self.context = context
        self.state = state
        self.gate = gate
        self.metrics: ServerMetrics = app.metrics
        # Cancel scopes of connections still sending their head, and of HTTP connections.
        self._heads: set[trio.CancelScope] = set()
        self._http: dict[trio.CancelScope, trio.SocketStream] = {}
        self._http_deadline: float | None = None
        self._http_drained = trio.Event()

    def refused(self, reason: str) -> None:
        self.metrics.connections_refused[reason] += 1

    async def accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        """Accept connections until cancelled; refuse at once what the gate refuses.

        Up to :data:`ACCEPT_BATCH` connections per wake-up, each one system call
        (the peer's address comes with it); a refused one costs a ``close`` and no
        task, so a flood from one address drains the backlog at the kernel's pace.
        """
        listener.setblocking(False)
        while True:
            await trio.lowlevel.wait_readable(listener)
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                        continue  # that connection is gone already
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    # Only when the process is out of descriptors for other reasons
                    # than client connections (their cap keeps FD_RESERVE free).
                    self.refused("accept_failed")
                    log.error("accept: %s; retrying in %.1f s", exc.strerror, ACCEPT_RETRY_S)
                    await trio.sleep(ACCEPT_RETRY_S)
                    break
                key = client_key(address)
                # Every user behind a trusted proxy shares its address: the proxy is not
                # capped per address here; its users are, by forwarded address, at the
                # handshake (voice_trio.security).
                admission = self.gate.admit(key, per_ip=address[0] not in self.app.guard.proxies)
                if admission.refused:
                    conn.close()
                    self.refused(admission.value)
                    continue
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                nursery.start_soon(self.handle, stream, key, admission)
            await trio.lowlevel.checkpoint()

    def begin_shutdown(self, deadline: float, nursery: trio.Nursery) -> None:
        """Close unfinished heads now; HTTP requests still running end by ``deadline``."""
        self._http_deadline = deadline
        for scope in self._heads:
            scope.cancel()
        for scope in self._http:
            scope.deadline = min(scope.deadline, deadline)
        if not self._http:
            self._http_drained.set()
        nursery.start_soon(self._end_http_at, deadline)

    async def _end_http_at(self, deadline: float) -> None:
        # Hypercorn writes in a shielded scope, so a client that stops reading a
        # response would outlive the deadline (until TCP_USER_TIMEOUT): shutting
        # its socket down fails that write, and the connection ends.
        with trio.move_on_at(deadline):
            await self._http_drained.wait()
        for stream in self._http.values():
            with contextlib.suppress(OSError):
                stream.socket.shutdown(socket.SHUT_RDWR)

    async def handle(self, stream: trio.SocketStream, key: str, admission: Admission) -> None:
        try:
            async with stream:
                await self._serve(stream, admission)
        finally:
            self.gate.release(key, admission)

    async def _serve(self, stream: trio.SocketStream, admission: Admission) -> None:
        probe = admission is Admission.PROBE_ONLY
        data = b""
        timeout = PROBE_HEAD_TIMEOUT_S if probe else REQUEST_HEAD_TIMEOUT_S
        with trio.move_on_after(timeout) as scope:
            self._heads.add(scope)
            try:
                if self._http_deadline is not None:
                    return  # accepted as the server began to shut down
                data = await read_request_head(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            finally:
                self._heads.discard(scope)
        if scope.cancelled_caught:
            if self._http_deadline is None:
                self.refused("head_timeout")
            return
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEAD_BYTES:
            if len(data) >= MAX_HEAD_BYTES:
                self.refused("head_too_large")
                await _refuse(
                    stream,
                    431,
                    "Request Header Fields Too Large",
                    f"request head over {MAX_HEAD_BYTES} bytes\n",
                )
            return  # else the client went away before its head ended
        if probe and not _is_probe(data):
            self.refused("capacity")
            await _refuse(
                stream, 503, "Service Unavailable", "server full\n", b"retry-after: 1\r\n"
            )
            return
        if is_websocket_upgrade(data):
            await self._websocket(stream, data)
        else:
            await self._serve_http(stream, data, self.probe_config if probe else self.config)

    async def _serve_http(
        self, stream: trio.SocketStream, data: bytes, config: FrontDoorConfig
    ) -> None:
        with trio.CancelScope() as scope:
            if self._http_deadline is not None:
                scope.deadline = self._http_deadline
            self._http[scope] = stream
            try:
                http = TCPServer(
                    self.asgi,
                    config,
                    self.context,
                    self.state,
                    _Replayed(stream, data),  # type: ignore[arg-type]
                )
                await http.run()  # it lets go of its protocol at the end (_hypercorn.py)
            finally:
                del self._http[scope]
                if self._http_deadline is not None and not self._http:
                    self._http_drained.set()

    async def _websocket(self, stream: trio.SocketStream, data: bytes) -> None:
        app = self.app
        handshake = Handshake(data)
        if handshake.refusal is not None or handshake.target is None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(handshake.refusal or handshake.reject(400))
            return
        try:
            peer, local = stream.socket.getpeername()[0], stream.socket.getsockname()[0]
        except OSError:
            return  # already gone
        phone = handshake.target.partition("?")[0] == PHONE_STREAM_PATH
        try:
            fields = header_map(handshake.headers)
            if phone:  # a carrier's stream: its own checks (signature, the call's token)
                ticket = app.twilio.admit(handshake.target, fields, peer=peer, local=local)
            else:
                ticket = await app.guard.enter(handshake.target, fields, peer=peer, local=local)
        except Refusal as refusal:
            headers = b"".join(k + b": " + v + b"\r\n" for k, v in refusal_headers(refusal))
            phrase = HTTPStatus(refusal.status).phrase
            await _refuse(stream, refusal.status, phrase, refusal.message + "\n", headers)
            return
        try:
            await self._room(stream, handshake, None if phone else ticket.session_id)
        finally:
            ticket.release()

    async def _room(
        self, stream: trio.SocketStream, handshake: Handshake, session_id: str | None
    ) -> None:
        """Serve the room of ``session_id``, or a phone call (None: its id comes with the call)."""
        app = self.app
        try:
            await stream.send_all(handshake.accept())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        ws = WebSocket(
            stream,
            max_message_bytes=app.settings.ws_max_message_bytes,
            max_fragments=app.settings.ws_max_fragments,
            buffered=handshake.rest,
        )
        with logs.room_context(session_id or "phone", app.settings.instance_id):
            try:
                if session_id is None:
                    await app.twilio.serve(ws)
                else:
                    await app.serve_room(session_id, ws)
            except Exception:
                # A room's failure ends that room only: log it, close 1011, go on.
                log.exception("room %s failed", session_id or "of a phone call")
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await ws.close(CloseCode.INTERNAL_ERROR, "internal error")


def _is_probe(data: bytes) -> bool:
    """Whether a request head is ``GET`` or ``HEAD`` of /healthz or /metrics."""
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return False
    return parts[1].split(b"?", 1)[0] in PROBE_PATHS


async def _refuse(
    stream: trio.SocketStream, status: int, phrase: str, body: str, headers: bytes = b""
) -> None:
    """Answer ``status`` and close, reading what the client sent meanwhile (bounded)."""
    content = body.encode()
    response = (
        (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(content)}\r\nconnection: close\r\n"
        ).encode()
        + headers
        + b"\r\n"
        + content
    )
    with trio.move_on_after(REFUSAL_LINGER_S):
        try:
            await stream.send_all(response)
            await stream.send_eof()
            drained = 0
            while drained < REFUSAL_DRAIN_BYTES:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


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


def listen(config: FrontDoorConfig, settings: Settings) -> Sockets:
    """Bind and listen (backlog LISTEN_BACKLOG), with a send deadline on every connection.

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
        sock.listen(settings.listen_backlog)
    somaxconn = _somaxconn()
    if somaxconn is not None and somaxconn < settings.listen_backlog:
        log.warning(
            "LISTEN_BACKLOG=%d is capped by the kernel at net.core.somaxconn=%d",
            settings.listen_backlog,
            somaxconn,
        )
    return sockets


def _somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _worker(host: str, port: int, sockets: Sockets) -> None:
    settings = Settings.from_env()
    logs.configure(settings)
    app = VoiceTrioApp(settings)
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
