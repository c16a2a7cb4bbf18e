"""Running the app under Hypercorn's Trio worker, with a graceful shutdown.

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
from hypercorn.trio.run import worker_serve

from .app import VoiceTrioApp
from .config import Settings

__all__ = ["hypercorn_config", "serve", "run"]

log = logging.getLogger("voice_trio.server")

#: Added to SLOW_CLIENT_TIMEOUT_S for the kernel's send deadline (see :func:`listen`).
TCP_USER_TIMEOUT_MARGIN_S = 5.0


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
    config = hypercorn_config(app.settings, host=host, port=port)

    async def shutdown_trigger() -> None:
        await shutdown_event.wait()
        app.begin_shutdown()  # the rooms drain in the app's lifespan nursery

    own = sockets is None
    if sockets is None:
        sockets = listen(config, app.settings)
    try:
        await worker_serve(
            ASGIWrapper(app),  # type: ignore[arg-type]  # a plain ASGI 3 callable
            config,
            sockets=sockets,
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
        )
    finally:
        if own:
            for sock in sockets.insecure_sockets:
                sock.close()


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
