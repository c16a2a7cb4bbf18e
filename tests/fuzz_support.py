"""Helpers of the fuzz suites (tests/test_fuzz_*.py): a real server, plain socket clients.

The fuzz suites reach volume (the CI profile sends 100,000+ inputs in a few
minutes) by keeping the client side cheap: sync sockets in sync tests, frames
built in one ``bytes`` per batch and written by a thread while the test reads
the answers. The server is ``voice-trio serve`` in a subprocess (started once
per module), so what is measured (tasks, RSS, log) is the server's alone, and
a server that dies is seen as a dead process, not a hung test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .support import frame

#: Every wait on the server is bounded by this: generous, so a loaded machine
#: (two cores shared by several test runs) never makes a test flaky. (FUZZ_PATIENCE_S
#: shortens it to shrink faster against a server known to hang, e.g. an old commit.)
PATIENCE_S = float(os.environ.get("FUZZ_PATIENCE_S", "60"))

#: The error codes of README.md "Wire protocol".
ERROR_CODES = frozenset(
    {
        "invalid_json",
        "invalid_message",
        "unknown_type",
        "invalid_audio",
        "text_too_long",
        "unsupported_sample_rate",
        "busy",
        "shutting_down",
        "asr_busy",
        "asr_timeout",
        "tts_failed",
    }
)

#: The server's JSON event types (README.md "Wire protocol", server to client).
SERVER_TYPES = frozenset(
    {
        "session.ready",
        "input.speech_started",
        "input.speech_stopped",
        "input.transcript",
        "response.started",
        "response.text.delta",
        "response.text.done",
        "response.done",
        "interrupted",
        "metrics",
        "error",
        "pong",
    }
)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
PING = b'{"type":"ping"}'
COMMIT = b'{"type":"commit_audio"}'


# --------------------------------------------------------------------- frames


def text_frame(payload: bytes) -> bytes:
    return frame(OP_TEXT, payload)


def parse_server_frame(data: bytearray | bytes, at: int) -> tuple[bool, int, bytes, int] | None:
    """One server frame at ``at``: (fin, opcode, payload, next offset), or None if incomplete."""
    have = len(data) - at
    if have < 2:
        return None
    b0, b1 = data[at], data[at + 1]
    assert not b1 & 0x80, "server frames are never masked"
    assert not b0 & 0x70, "server frames never set RSV bits"
    size, offset = b1 & 0x7F, 2
    if size == 126:
        if have < 4:
            return None
        size, offset = struct.unpack_from("!H", data, at + 2)[0], 4
    elif size == 127:
        if have < 10:
            return None
        size, offset = struct.unpack_from("!Q", data, at + 2)[0], 10
    if have < offset + size:
        return None
    start = at + offset
    return bool(b0 & 0x80), b0 & 0x0F, bytes(data[start : start + size]), start + size


# ----------------------------------------------------------------- the client


class ServerClosed(Exception):
    """The server sent a close frame (``code``, ``reason``) or dropped TCP (``code`` None)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class WireClient:
    """A WebSocket client on a plain blocking socket, frames written by hand."""

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="

    def __init__(self, port: int, session_id: str, *, timeout: float = PATIENCE_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(
            (
                f"GET /ws/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {self.KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"no handshake answer: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head!r}")
        self._buf = bytearray(rest)
        self._at = 0
        self._sender: threading.Thread | None = None
        self.send_error: BaseException | None = None
        #: Pong frames (control) received, in order.
        self.pongs: list[bytes] = []
        self.closed: ServerClosed | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_in_background(self, data: bytes) -> None:
        """Write ``data`` from a thread, so the test can read answers meanwhile (no deadlock)."""

        def run() -> None:
            try:
                self.sock.sendall(data)
            except OSError as exc:  # the server closed on us: the reader sees why
                self.send_error = exc

        self._sender = threading.Thread(target=run, daemon=True)
        self._sender.start()

    def join_sender(self) -> None:
        if self._sender is not None:
            self._sender.join(PATIENCE_S)
            assert not self._sender.is_alive(), "the server stopped reading for a minute"
            self._sender = None

    def read_frame(self) -> tuple[bool, int, bytes]:
        """The server's next data or control frame; close frames raise :class:`ServerClosed`."""
        if self.closed is not None:
            raise self.closed
        while True:
            parsed = parse_server_frame(self._buf, self._at)
            if parsed is not None:
                fin, opcode, payload, self._at = parsed
                if self._at > 1 << 20:
                    del self._buf[: self._at]
                    self._at = 0
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if payload else None
                    self.closed = ServerClosed(code, payload[2:].decode("utf-8"))
                    raise self.closed
                return fin, opcode, payload
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = ServerClosed(None, "TCP closed without a close frame")
                raise self.closed
            self._buf += chunk

    def read_message(self) -> bytes | dict[str, Any]:
        """The next binary message (bytes) or JSON event (dict); pongs are kept in ``pongs``."""
        while True:
            fin, opcode, payload = self.read_frame()
            assert fin, "the server never fragments"
            if opcode == OP_PONG:
                self.pongs.append(payload)
                continue
            if opcode == OP_BINARY:
                return payload
            assert opcode == OP_TEXT, f"server frame of opcode {opcode}"
            event: dict[str, Any] = json.loads(payload)
            assert event.get("type") in SERVER_TYPES, event
            return event

    def read_event(self, kind: str | None = None) -> dict[str, Any]:
        while True:
            message = self.read_message()
            if isinstance(message, dict) and message["type"] != "metrics":
                if kind is None or message["type"] == kind:
                    return message

    def read_close(self) -> ServerClosed:
        """Read (and drop) everything up to the server's close frame or the end of TCP."""
        try:
            while True:
                _, opcode, payload = self.read_frame()
                if opcode == OP_PONG:
                    self.pongs.append(payload)
        except ServerClosed as closed:
            return closed

    def at_eof(self) -> bool:
        """After a close frame: the server then ends TCP."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.join_sender()
        self.sock.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (no close frame, no FIN)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def echo_round_trip(self, pcm: bytes) -> None:
        """Echo brain: ``pcm`` + commit_audio comes back as that audio before response.done."""
        self.send(frame(OP_BINARY, pcm) + text_frame(COMMIT))
        audio = bytearray()
        while True:
            message = self.read_message()
            if isinstance(message, bytes):
                audio += message
            elif message["type"] == "response.done":
                break
        assert bytes(audio) == pcm, f"echo of {len(pcm)} bytes came back as {len(audio)}"


def tone(n_samples: int, seed: int = 0) -> bytes:
    return b"".join(
        struct.pack("<h", (i * 7 + seed * 1009) % 20000 - 10000) for i in range(n_samples)
    )


# ----------------------------------------------------------------- the server


@dataclass
class ServerProcess:
    """``voice-trio serve`` in a subprocess, ended by its PID."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log_seen: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=PATIENCE_S) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def metric(self, name: str) -> float:
        return self.metrics()[name]

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def new_log(self) -> str:
        """What the server logged since the last call."""
        text = self.log()
        new, self._log_seen = text[self._log_seen :], len(text)
        return new

    def wait_for(self, name: str, value: float, *, timeout: float = PATIENCE_S) -> float:
        """Poll /metrics until ``name`` is at most ``value``; return its last reading."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.metric(name)
            if now <= value or time.monotonic() > deadline:
                return now
            time.sleep(0.02)

    def assert_healthy(self) -> None:
        """Alive, and nothing in the log says a room or task failed."""
        assert self.alive(), f"the server died ({self.proc.returncode}):\n{self.log()[-4000:]}"
        new = self.new_log()
        bad = [line for line in new.splitlines() if _BAD_LOG.search(line)]
        assert not bad, "the server logged a failure:\n" + new[-6000:]


# A traceback, or the front door's "room X failed" (a room that died with 1011).
_BAD_LOG = re.compile(r"Traceback|room \S+ failed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_subprocess(tmp_dir: Path, **env: str) -> Iterator[ServerProcess]:
    """Start ``voice-trio serve`` (echo brain unless ``env`` says otherwise); stop it by PID."""
    port = free_port()
    log_path = tmp_dir / f"voice-trio-{port}.log"
    full_env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        # Every connection comes from 127.0.0.1: the per-address limits would refuse the
        # fuzzing's thousands of handshakes (they have their own tests).
        "MAX_CONNECTIONS_PER_IP": "100000",
        "MAX_ROOMS_PER_IP": "100000",
        "HANDSHAKE_RATE_PER_IP": "1000000",
        "HANDSHAKE_BURST_PER_IP": "1000000",
        # The fuzz sends its inputs in bursts; the rate limits have their own tests.
        "ROOM_MESSAGE_RATE": "1000000",
        "ROOM_AUDIO_RATE": "100000",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    command = [sys.executable, "-m", "voice_trio", "serve"]
    # FUZZ_SERVER_SRC=<a source tree> serves that tree's voice_trio (e.g. an older
    # commit, `git archive <commit> voice_trio | tar -x -C <dir>`), to show what a fix fixed.
    src = os.environ.get("FUZZ_SERVER_SRC")
    if src:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, full_env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            cwd=tmp_dir,  # not the repository: `-m` puts the cwd first on sys.path
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(port=port, proc=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            assert server.alive(), f"voice-trio serve did not start:\n{server.log()}"
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.new_log()  # start-up lines are not failures
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(PATIENCE_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# ------------------------------------------------------------- the neighbour


@dataclass
class Neighbour:
    """A room that keeps asking for its echo (audio + commit) while the fuzzing goes on."""

    port: int
    session_id: str = "fuzz-neighbour"
    round_trips: int = 0
    slowest_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            client = WireClient(self.port, self.session_id)
            client.read_event("session.ready")
            seed = 0
            while not self._stop.is_set():
                seed += 1
                started = time.monotonic()
                client.echo_round_trip(tone(2400, seed))
                took = time.monotonic() - started
                self.round_trips += 1
                self.slowest_s = max(self.slowest_s, took)
                self._stop.wait(0.05)
            client.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
            client.read_close()
            client.close()
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PATIENCE_S)


# -------------------------------------------------------------------- counts


@dataclass
class InputCounter:
    """Fuzz inputs sent by one module, reported at its end."""

    name: str
    inputs: int = 0
    examples: int = 0
    started: float = field(default_factory=time.monotonic)

    def write(self, config: Any, *, alone: bool = False) -> None:
        """Print the report (or with ``alone`` the name alone) past pytest's capture."""
        line = self.name if alone else self.report()
        capture = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if capture is None or reporter is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    def report(self) -> str:
        took = time.monotonic() - self.started
        rate = self.inputs / took if took else 0.0
        return (
            f"{self.name}: {self.inputs:,} fuzz inputs in {self.examples:,} hypothesis "
            f"examples, {took:.1f} s ({rate:,.0f}/s), profile "
            f"{os.environ.get('HYPOTHESIS_PROFILE', 'ci')}"
        )
