"""Deployment files: an nginx config that keeps each session on one instance (DESIGN.md 7).

:func:`nginx_config` writes a complete ``nginx.conf`` for a list of
``voice-trio serve`` instances (``voice-trio nginx-config`` prints it). It runs
in the foreground as any user:

    nginx -p DIR/ -c DIR/nginx.conf -e stderr

What it does, and why:

- ``/ws/{session_id}`` goes to the instance chosen by a consistent hash of the
  session id (``hash ... consistent``, ketama): a reconnect reaches the instance
  that holds the room, so it replaces the room there. An instance that fails
  (``max_fails=1``: one refused or timed-out connect) is left out for
  ``fail_timeout``; only the sessions that hashed to it move (to the next
  instance on the ring), the others stay where they are. Each upstream has a
  shared-memory ``zone``, so nginx's workers share those failures (and the
  round robin below).
- The WebSocket upgrade is passed through (HTTP/1.1, ``Upgrade``,
  ``Connection``), with no buffering either way and one hour of silence allowed
  before nginx cuts a room (an idle room is closed by the server's own
  ``SESSION_IDLE_S`` long before), and a 16 KB buffer each way
  (:data:`ROOM_BUFFER_KB`: nginx's default 4 KB delayed some messages by 100 ms).
- Every other path (``/healthz``, ``/metrics``, the demo page) goes round robin
  to the instances over kept-alive connections. Scrape ``/metrics`` of each
  instance directly: through nginx it is whichever instance answered.
- ``Host`` is the client's (the server's ``Origin`` check compares the two),
  ``X-Forwarded-For`` is the client's header with nginx's peer appended
  (``$proxy_add_x_forwarded_for``) and ``X-Real-IP`` is nginx's peer: instances
  started with ``TRUSTED_PROXIES=<nginx's address>`` count limits per client.
- The pid file, the access log and the five ``*_temp_path`` are under the
  prefix: a non-root nginx otherwise fails on ``/var/lib/nginx/body``. The
  access log writes ``$uri`` (never the query: it carries room tokens). nginx's
  error log (stderr) cannot be told so: an upstream error's line quotes the
  request line, query included (see deploy/README.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import ConfigError

__all__ = ["Address", "DeployError", "nginx_config", "parse_address"]

#: A backend that refuses or times out once is left out for FAIL_TIMEOUT_S.
MAX_FAILS: Final = 1
#: Seconds a failed backend is left out before nginx tries it again.
FAIL_TIMEOUT_S: Final = 10
#: Seconds to wait for a backend's TCP connect: loopback or a LAN answers in milliseconds.
CONNECT_TIMEOUT_S: Final = 5
#: Seconds a room may be silent both ways before nginx cuts it (rooms idle out sooner).
ROOM_TIMEOUT_S: Final = 3600
#: KB of nginx's buffer for each direction of a room: more than the largest message
#: either side sends (a 100 ms frame is 4.8 KB, the server's chunks up to 9.6 KB).
#: With nginx's default 4 KB, 0.1-0.25 % of the echoed chunks came ~100 ms late at
#: 50-200 standard rooms (a frame period: the rest of a message waited for the next
#: one; 18 of 16,119 at 200 rooms); with 16 KB, 0 of 48,317 (bench/cluster.py).
ROOM_BUFFER_KB: Final = 16
#: Idle kept-alive HTTP connections per worker to the backends.
HTTP_KEEPALIVE: Final = 16
#: Seconds nginx keeps an idle backend connection: under the server's own 5 s, so
#: nginx never reuses a connection the server is closing.
HTTP_KEEPALIVE_S: Final = 4
#: Connections per nginx worker; each proxied room holds two (client and backend).
WORKER_CONNECTIONS: Final = 8192

_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class DeployError(ConfigError):
    """An argument a deployment file cannot be written from; the message says why."""


@dataclass(frozen=True)
class Address:
    """A ``HOST:PORT``: an IPv4 address, ``[IPv6]`` or a host name, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, *, what: str = "address") -> Address:
    """Parse ``HOST:PORT`` (``[::1]:8000`` for IPv6); :class:`DeployError` says what is wrong."""
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise DeployError(f"{what} {text!r}: write an IPv6 address as [ADDR]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DeployError(f"{what} {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise DeployError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
        if ":" in host:
            raise DeployError(f"{what} {text!r}: write an IPv6 address as [ADDR]:PORT")
        numeric = all(c.isdigit() or c == "." for c in host)
        if not (_is_ipv4(host) if numeric else _HOSTNAME.fullmatch(host)):
            raise DeployError(f"{what} {text!r}: {host!r} is not an address or host name")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DeployError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return Address(host, int(port_text))


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def nginx_config(listen: Address, backends: Sequence[Address], prefix: Path | str) -> str:
    """A complete ``nginx.conf`` for ``backends`` behind ``listen``; paths under ``prefix``.

    ``prefix`` is made absolute, so the file works whatever ``nginx -p`` says;
    the directory must exist when nginx starts (nginx creates the temp
    directories in it, not the prefix itself).
    """
    if not backends:
        raise DeployError("give at least one --backend HOST:PORT")
    seen: set[Address] = set()
    for backend in backends:
        if backend in seen:
            raise DeployError(f"backend {backend} is listed twice")
        seen.add(backend)
    if listen in seen:
        raise DeployError(f"--listen {listen} is also a backend")
    root = Path(prefix).expanduser().resolve()
    if any(c in str(root) for c in " \t\n;{}'\"$\\#"):
        raise DeployError(f"--prefix {str(root)!r}: use a path without spaces or ;{{}}'\"$\\#")

    def under(name: str) -> str:
        return str(root / name)

    def servers(extra: str = "") -> str:
        return "\n".join(
            f"        server {b} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT_S}s{extra};"
            for b in backends
        )

    listed = ", ".join(str(b) for b in backends)
    return f"""\
# nginx in front of voice-trio instances ({listed}).
# Written by `voice-trio nginx-config`; run in the foreground with
#   nginx -p {root}/ -c {root}/nginx.conf -e stderr
# Rooms (/ws/{{session_id}}) are kept on one instance by a consistent hash of the
# session id; other paths go round robin. Start the instances with
# TRUSTED_PROXIES=<this nginx's address> so they read the client's address.

daemon off;
worker_processes auto;
pid {under("nginx.pid")};
error_log stderr;

events {{
    worker_connections {WORKER_CONNECTIONS};
}}

http {{
    # The query string carries room tokens: log the path only.
    log_format voice_trio '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                          '$status $body_bytes_sent $request_time $upstream_addr';
    access_log {under("access.log")} voice_trio;

    client_body_temp_path {under("client_body_temp")};
    proxy_temp_path {under("proxy_temp")};
    fastcgi_temp_path {under("fastcgi_temp")};
    uwsgi_temp_path {under("uwsgi_temp")};
    scgi_temp_path {under("scgi_temp")};

    server_tokens off;
    tcp_nodelay on;

    # The session id of /ws/{{session_id}} (the server's own rule: 1-128 of A-Z a-z 0-9 _ -);
    # empty for anything else, which the instance then refuses (403).
    map $uri $voice_trio_session {{
        "~^/ws/(?<sid>[A-Za-z0-9_-]{{1,128}})$" $sid;
        default "";
    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}

    # Rooms: a session id always hashes to the same instance; an instance that
    # fails is left out for {FAIL_TIMEOUT_S} s and only its own sessions move. The zone
    # shares the failures (and the round robin below) between nginx's workers.
    upstream voice_trio_rooms {{
        hash $voice_trio_session consistent;
        zone voice_trio_rooms 256k;
{servers()}
    }}

    # /healthz, /metrics, the demo page: round robin over kept-alive connections.
    upstream voice_trio_http {{
        zone voice_trio_http 256k;
{servers()}
        keepalive {HTTP_KEEPALIVE};
        keepalive_timeout {HTTP_KEEPALIVE_S}s;
    }}

    server {{
        listen {listen};
        server_name _;

        proxy_connect_timeout {CONNECT_TIMEOUT_S}s;
        proxy_http_version 1.1;

        location /ws/ {{
            proxy_pass http://voice_trio_rooms;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size {ROOM_BUFFER_KB}k;
            proxy_buffers 8 {ROOM_BUFFER_KB}k;
            proxy_read_timeout {ROOM_TIMEOUT_S}s;
            proxy_send_timeout {ROOM_TIMEOUT_S}s;
        }}

        location / {{
            proxy_pass http://voice_trio_http;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}
}}
"""
