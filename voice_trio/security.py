"""Who may open a room (DESIGN.md section 9): room tokens, origins, client addresses, limits.

Every WebSocket handshake, on both serve paths, goes through one
:meth:`HandshakeGuard.enter` before any room state exists. It answers with a
:class:`Ticket` (the session id and the client address, holding one of
that address's room slots until released) or raises :class:`Refusal` with the
HTTP status the client gets:

- 403 for a session id that is not 1-128 of ``[A-Za-z0-9_-]``, a token of
  another session, or an ``Origin`` that is not allowed;
- 401 for a missing, malformed, badly signed, not yet valid or expired token;
- 429 for a client address over its handshake rate or its concurrent rooms.

A room token is a JWT signed with ``AUTH_SECRET`` (HS256) whose ``sub`` is the
session id, ``aud`` is ``voice-trio`` and ``exp`` its expiry; :func:`mint_token`
makes one for a team's own backend (``voice-trio token`` prints one). A token
is taken from the query (``?token=``, since browsers cannot set headers on a
WebSocket) or an ``Authorization: Bearer`` header. Tokens and the secret never
reach a log, an event or a metric: refusals say what was wrong, never the value.

With ``REDIS_URL`` the per-address limits (the handshake rate and the open
rooms) are counted across instances too (:meth:`HandshakeGuard.share`, with
:class:`voice_trio.cluster.Cluster`): one Redis call per handshake, under
``REDIS_TIMEOUT_S``; when Redis is slow or down this instance's own counts
decide, as on a single instance.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

import jwt

from .errors import VoiceTrioError

__all__ = [
    "AUDIENCE",
    "Ticket",
    "HandshakeGuard",
    "Refusal",
    "SharedLimits",
    "TokenBucket",
    "client_key",
    "header_map",
    "refusal_headers",
    "session_id_of",
    "is_loopback",
    "mint_token",
    "verify_token",
]

#: The ``aud`` claim of every room token.
AUDIENCE: Final = "voice-trio"
#: The shortest ``AUTH_SECRET`` (bytes): HS256 keys shorter than its hash are weak (RFC 7518 3.2).
MIN_SECRET_BYTES: Final = 32
_WS_PATH: Final = re.compile(r"/ws/([A-Za-z0-9_-]{1,128})")
#: Client addresses whose handshake buckets are kept; the least recently seen go first.
MAX_TRACKED_ADDRESSES: Final = 65_536


class Refusal(VoiceTrioError):
    """A handshake the server refuses: ``status`` (HTTP), ``reason`` (the metric label)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def refusal_headers(refusal: Refusal) -> list[tuple[bytes, bytes]]:
    """The headers a refusal's HTTP response carries (RFC 6750 and RFC 6585)."""
    if refusal.status == 401:
        return [(b"www-authenticate", b'Bearer realm="voice-trio"')]
    if refusal.status == 429:
        return [(b"retry-after", b"1")]
    return []


def session_id_of(path: str) -> str | None:
    """The session id of a WebSocket path ``/ws/{1-128 of [A-Za-z0-9_-]}``, or None."""
    match = _WS_PATH.fullmatch(path)
    return None if match is None else match.group(1)


# ------------------------------------------------------------------ tokens


def mint_token(
    secret: str,
    session_id: str,
    *,
    ttl_s: float = 3600.0,
    not_before: float | None = None,
    now: float | None = None,
) -> str:
    """A room token for ``session_id``, valid for ``ttl_s`` seconds from ``now``.

    For a team's own backend: after its login, it mints a token for the user's
    session id and hands both to the client, which connects to
    ``/ws/{session_id}?token=...``.
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": session_id,
        "aud": AUDIENCE,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, session_id: str) -> None:
    """Raise :class:`Refusal` unless ``token`` is a valid room token for ``session_id``."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Refusal(401, "token_expired", "the room token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Refusal(401, "token_invalid", "the room token is not valid yet") from None
    except jwt.InvalidSignatureError:
        raise Refusal(401, "token_invalid", "the room token's signature is wrong") from None
    except jwt.InvalidAudienceError:
        raise Refusal(401, "token_invalid", f"the room token is not for {AUDIENCE}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Refusal(401, "token_invalid", f"the room token has no {exc.claim!r}") from None
    except jwt.InvalidTokenError:
        raise Refusal(401, "token_invalid", "the room token is not a valid JWT") from None
    if claims["sub"] != session_id:
        raise Refusal(403, "token_session", "the room token is for another session")


def token_from(query: str, authorization: str | None) -> str | None:
    """The token of a handshake: ``?token=`` first, else ``Authorization: Bearer``."""
    if "token=" in query:
        values = parse_qs(query, keep_blank_values=True).get("token")
        if values:
            return values[-1]
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


# ------------------------------------------------------------------ addresses


def client_key(address: Any) -> str:
    """The client address a connection is counted under: IPv4, or an IPv6 /64.

    One IPv6 host usually holds a whole /64, so counting single addresses would
    let it open 2**64 times the cap; an IPv4-mapped address counts as IPv4.
    """
    host = address[0] if isinstance(address, tuple) and address else str(address)
    try:
        ip = ipaddress.ip_address(str(host).strip().split("%", 1)[0])
    except ValueError:
        return str(host)  # a Unix socket's path, or nothing
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)


def header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name; a repeated header's values joined by ", "."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def is_loopback(host: str) -> bool:
    """Whether a bind or peer address is loopback (``localhost`` counts)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class TrustedProxies:
    """Peers whose ``X-Forwarded-For`` / ``X-Real-IP`` say who the client is."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From ``TRUSTED_PROXIES``: comma-separated addresses or CIDR networks."""
        return cls(part for part in text.split(",") if part.strip())

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, host: object) -> bool:
        if not self._networks:  # the common case: asked at every accept
            return False
        try:
            ip = ipaddress.ip_address(str(host).strip().split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str | None, real_ip: str | None) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy.

        ``X-Forwarded-For`` is read from the right (the nearest hop) past every
        trusted proxy; the first untrusted address is the client. A client can
        put anything at the left of the header, so nothing there is believed.
        """
        if peer not in self:
            return peer
        if forwarded_for:
            hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
            for hop in reversed(hops):
                if hop not in self:
                    return hop
            if hops:
                return hops[0]
        if real_ip and real_ip.strip():
            return real_ip.strip()
        return peer


# ------------------------------------------------------------------ rates


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends them or says no."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return True
        self.tokens = tokens
        return False


class _Buckets:
    """One bucket per key, at most ``limit`` keys (the least recently used go first)."""

    def __init__(self, rate: float, burst: float, limit: int = MAX_TRACKED_ADDRESSES) -> None:
        self.rate = rate
        self.burst = burst
        self._limit = limit
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self._limit:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


# ------------------------------------------------------------------ the guard


class SharedLimits(Protocol):
    """Per-address limits counted across instances (:class:`voice_trio.cluster.Cluster`)."""

    def bind_rooms(self, counts: Mapping[str, int]) -> None:
        """This instance's open rooms per address, kept up to date by the guard."""

    async def handshake(
        self, client: str, *, rate: float, burst: int, held: int, max_rooms: int
    ) -> tuple[str, int] | None:
        """``("ok" | "rate" | "rooms", rooms open across instances)``, or None: decide locally."""

    def rooms_changed(self, client: str) -> None:
        """``client``'s count here changed (a room ended, a handshake went unanswered)."""


class Ticket:
    """An admitted handshake: its session and client address, and its room slot."""

    __slots__ = ("session_id", "client", "_release")

    def __init__(self, session_id: str, client: str, release: Callable[[], None]) -> None:
        self.session_id = session_id
        self.client = client
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        """Give the client's room slot back (once; the room has ended or never began)."""
        if self._release is not None:
            self._release()
            self._release = None


class HandshakeGuard:
    """The checks of every WebSocket handshake, in the order they cost.

    ``allowed_origins`` empty: a browser's ``Origin`` must name the request's own
    ``Host``; a request without ``Origin`` (not a browser) is let through to the
    token check. ``secret`` empty: no token is asked for; then rooms are only
    served on a loopback address, unless ``allow_unauthenticated``.
    """

    def __init__(
        self,
        *,
        secret: str,
        allow_unauthenticated: bool,
        allowed_origins: str,
        trusted_proxies: str,
        max_rooms_per_ip: int,
        handshake_rate_per_ip: float,
        handshake_burst_per_ip: int,
        refused: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._allow_unauthenticated = allow_unauthenticated
        self._origins = frozenset(
            o.strip().rstrip("/").lower() for o in allowed_origins.split(",") if o.strip()
        )
        self.proxies = TrustedProxies.parse(trusted_proxies)
        self._max_rooms = max_rooms_per_ip
        self._rates = _Buckets(handshake_rate_per_ip, handshake_burst_per_ip)
        self._refused = refused
        self._clock = clock
        #: Rooms open (or being opened) per client address.
        self.rooms: dict[str, int] = {}
        self._shared: SharedLimits | None = None

    @property
    def auth(self) -> bool:
        """Whether room tokens are required."""
        return bool(self._secret)

    def share(self, limits: SharedLimits) -> None:
        """Count the per-address limits across instances too (``REDIS_URL``), from now on."""
        self._shared = limits
        limits.bind_rooms(self.rooms)

    def admit(
        self,
        target: str,
        headers: Mapping[str, str],
        *,
        peer: str,
        local: str | None,
    ) -> Ticket:
        """Check one handshake (``headers`` with lower-case names); raise :class:`Refusal`.

        This instance's own limits only; :meth:`enter` adds the shared ones.
        """
        try:
            return self._admit(target, headers, peer, local)
        except Refusal as refusal:
            self._refused(refusal.reason)
            raise

    async def enter(
        self,
        target: str,
        headers: Mapping[str, str],
        *,
        peer: str,
        local: str | None,
    ) -> Ticket:
        """:meth:`admit`, with the per-address limits counted across instances when shared.

        The same checks, refusals and order. Every handshake that passes this
        instance's rate makes one call to the shared limits, which spends the
        address's shared token (before the answer, so that tokens are not
        guessed faster on more instances) and, when every other check passed,
        counts its room; the call takes at most ``REDIS_TIMEOUT_S``, and without
        an answer this instance's own limits decide.
        """
        shared = self._shared
        if shared is None:
            return self.admit(target, headers, peer=peer, local=local)
        try:
            return await self._enter(shared, target, headers, peer, local)
        except Refusal as refusal:
            self._refused(refusal.reason)
            raise

    async def _enter(
        self,
        shared: SharedLimits,
        target: str,
        headers: Mapping[str, str],
        peer: str,
        local: str | None,
    ) -> Ticket:
        session_id, client, query = self._who(target, headers, peer)
        if not self._rates.take(client, self._clock()):
            raise Refusal(429, "handshake_rate", "too many connections from your address; wait")
        denied: Refusal | None = None
        try:
            self._check_request(headers, query, session_id, local)
        except Refusal as refusal:
            denied = refusal  # told after the shared rate, as admit tells it after its own
        held = self.rooms.get(client, 0)
        asks = denied is None and held < self._max_rooms
        if asks:  # held through the call: this instance's other handshakes count it
            self.rooms[client] = held + 1
        try:
            verdict = await shared.handshake(
                client,
                rate=self._rates.rate,
                burst=int(self._rates.burst),
                held=held + 1 if asks else 0,
                max_rooms=self._max_rooms,
            )
            if verdict is not None and verdict[0] == "rate":
                raise Refusal(429, "handshake_rate", "too many connections from your address; wait")
            if denied is not None:
                raise denied
            if not asks:
                raise Refusal(429, "rooms_per_ip", f"your address has {held} rooms open already")
            if verdict is not None and verdict[0] == "rooms":
                raise Refusal(
                    429, "rooms_per_ip", f"your address has {verdict[1]} rooms open already"
                )
        except BaseException:
            if asks:
                self._release(client)
            raise
        return Ticket(session_id, client, lambda: self._release(client))

    def _who(self, target: str, headers: Mapping[str, str], peer: str) -> tuple[str, str, str]:
        """The session id, the client address (counted under) and the query of a handshake."""
        path, _, query = target.partition("?")
        session_id = session_id_of(path)
        if session_id is None:
            raise Refusal(403, "session_id", "a session id is 1 to 128 of A-Z a-z 0-9 _ -")
        client = client_key(
            self.proxies.client(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"))
        )
        return session_id, client, query

    def _admit(
        self, target: str, headers: Mapping[str, str], peer: str, local: str | None
    ) -> Ticket:
        session_id, client, query = self._who(target, headers, peer)
        if not self._rates.take(client, self._clock()):
            raise Refusal(429, "handshake_rate", "too many connections from your address; wait")
        self._check_request(headers, query, session_id, local)
        held = self.rooms.get(client, 0)
        if held >= self._max_rooms:
            raise Refusal(429, "rooms_per_ip", f"your address has {held} rooms open already")
        self.rooms[client] = held + 1
        return Ticket(session_id, client, lambda: self._release(client))

    def _check_request(
        self, headers: Mapping[str, str], query: str, session_id: str, local: str | None
    ) -> None:
        """The origin, the token, and a room without one only over loopback."""
        self._check_origin(headers.get("origin"), headers.get("host"))
        if self._secret:
            token = token_from(query, headers.get("authorization"))
            if token is None:
                raise Refusal(
                    401, "token_missing", "a room token is needed (?token= or Authorization)"
                )
            verify_token(self._secret, token, session_id)
        elif not self._allow_unauthenticated and local is not None and not is_loopback(local):
            # `voice-trio serve` refuses to start like this; plain hypercorn gets here.
            raise Refusal(
                403,
                "unauthenticated",
                "rooms need AUTH_SECRET on a non-loopback address (or ALLOW_UNAUTHENTICATED)",
            )

    def _release(self, client: str) -> None:
        held = self.rooms.get(client, 0) - 1
        if held > 0:
            self.rooms[client] = held
        else:
            self.rooms.pop(client, None)
        if self._shared is not None:
            self._shared.rooms_changed(client)

    def _check_origin(self, origin: str | None, host: str | None) -> None:
        if origin is None:
            return  # not a browser: the token (when required) decides
        normalised = origin.strip().rstrip("/").lower()
        if self._origins:
            if normalised not in self._origins:
                raise Refusal(403, "origin", "this page's origin may not open rooms here")
            return
        origin_host = urlsplit(normalised).netloc
        if not host or not origin_host or origin_host != host.strip().lower():
            raise Refusal(403, "origin", "a page may only open rooms on its own host")
