"""Many instances on one Redis (``REDIS_URL``): presence of sessions and the cross-instance kick.

Off by default: without ``REDIS_URL`` nothing here runs and a server is a
single instance. With it, one :class:`Cluster` per process (per worker):

- **Presence.** Every room this instance holds has a key ``{prefix}presence:{sid}``
  whose value ``{claim}@{instance}`` says which instance holds it (``claim`` is a
  number unique to that room within its process). The key is written once when
  the room opens; its TTL is refreshed for all of the instance's rooms at once,
  by one task every ``PRESENCE_REFRESH_S`` (one script call per
  :data:`REFRESH_CHUNK` rooms), never by a timer or a call per room. A closed
  room's key is deleted in the next batch of releases (compare-and-delete).
- **Kick.** Opening a room runs ``SET presence:{sid} {me} EX ttl GET`` and, when
  the previous holder is another instance, ``PUBLISH {prefix}kick:{holder}
  "{claim} {sid}"``, in one Lua script: one round trip, and one call for all
  the rooms that open together (a burst after a restart). Each process has
  one subscriber on its own channel; a kick closes the room it names with 4000
  "replaced", unless a newer room of that session has opened here since (the
  claim number does not match). A kick lost while the subscriber was away is made
  up by the refresh: a key found holding another instance's claim closes the room.
- **Redis slow or down.** Every call on a room's path has a deadline
  (``REDIS_TIMEOUT_S``); a failure counts in ``voice_trio_redis_errors_total``
  and the instance goes *degraded*: rooms open and run as on a single instance
  (claims are kept locally, not sent), while one task probes Redis with
  exponential backoff. Once it answers (and the subscriber is back), a refresh
  writes the presence of every room again (Redis may have restarted empty).
  During an outage the same session may open on two instances; the refresh after
  it keeps the first one to write and closes the other (4000).
- **Per-address limits across instances** (:meth:`Cluster.handshake`, called by
  :meth:`HandshakeGuard.enter <voice_trio.security.HandshakeGuard.enter>`): one
  script call per handshake spends a token of the client address's bucket
  ``{prefix}rate:{address}`` (a hash, refilled at ``HANDSHAKE_RATE_PER_IP`` by
  Redis's own clock, expiring once it would be full again) and checks its open
  rooms in ``{prefix}rooms:{address}``: a hash with one field per instance, whose
  value ``{count} {expires_ms} {seq}`` is that instance's own count, written
  whole (never incremented), so a lost or late write is made good by the next.
  An entry lives ``PRESENCE_TTL_S`` (the same on every instance: the hash lives
  as long as its newest entry) unless rewritten: each instance rewrites the
  entries of the addresses it holds rooms for with the presence refresh (one
  call per :data:`REFRESH_CHUNK` addresses), and those whose count changed in
  the next batch of releases. A dead instance's entries stop counting when they
  expire (an admission deletes them); ``seq`` (rising across restarts) keeps an
  older write from overwriting a newer one. Redis slow or down: the local limits
  decide, and the refresh after the reconnection writes every count again.

Plain Redis (or Valkey) >= 6: the scripts name keys they build, so Redis Cluster
is not supported.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import anyio
import trio

from .errors import leaves

if TYPE_CHECKING:
    import coredis

__all__ = [
    "Cluster",
    "ClusterStatistics",
    "default_instance_id",
    "is_redis_failure",
]

log = logging.getLogger("voice_trio.cluster")

#: Rooms per script call of a refresh or a release batch: a call of 1,000 keys
#: keeps Redis busy well under a millisecond, so other clients never wait long.
REFRESH_CHUNK: Final = 1000
#: Seconds between two flushes of released rooms' keys (one call per flush).
RELEASE_FLUSH_S: Final = 0.5
#: Claims waiting for the claimer task (rooms opening in a burst); past it a claim
#: is not sent (counted) and the next refresh writes its key.
CLAIM_QUEUE_MAX: Final = 1000
#: Released keys waiting for a flush; past it (Redis down a long time) more are
#: dropped and counted: their TTL removes them anyway.
RELEASE_QUEUE_MAX: Final = 100_000
#: Reconnection: the first wait, doubled after each failure up to the cap
#: (each wait drawn between half of it and all of it, so instances do not probe
#: in step after a Redis restart).
BACKOFF_FIRST_S: Final = 0.1
BACKOFF_MAX_S: Final = 2.0
#: The subscriber pings Redis after this long without a message, so a silent
#: connection (a partition, a hung Redis) is found within it.
SUBSCRIBER_KEEPALIVE_S: Final = 5.0
#: At start-up, how long :meth:`Cluster.run` waits for Redis (and the subscription)
#: before it reports started anyway, degraded: rooms that open at once are claimed
#: in Redis and can be kicked, and a Redis that is down delays start-up this long.
STARTUP_WAIT_S: Final = 1.0

# KEYS: presence keys. ARGV: the TTL, me, the key prefix, then for KEYS[i] the
# value (claim@me) and the session id. Returns each key's previous value ('' for
# none); publishes a kick to each previous holder that is another instance.
_CLAIM = """
local prevs = {}
for i, key in ipairs(KEYS) do
  local value, sid = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local prev = redis.call('SET', key, value, 'EX', ARGV[1], 'GET')
  if prev then
    local at = string.find(prev, '@', 1, true)
    if at and string.sub(prev, at + 1) ~= ARGV[2] then
      redis.call('PUBLISH', ARGV[3] .. 'kick:' .. string.sub(prev, at + 1),
                 string.sub(prev, 1, at - 1) .. ' ' .. sid)
    end
  end
  prevs[i] = prev or ''
end
return prevs
"""

# KEYS: presence keys. ARGV[1]: the TTL; ARGV[1 + i]: this instance's value for
# KEYS[i]. Ours: the TTL is renewed; gone (expired, Redis restarted): written
# again; another instance's: its 1-based index is returned (that room was replaced).
_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value == ARGV[i + 1] then
    redis.call('EXPIRE', key, ARGV[1])
  elseif not value then
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""

# KEYS: presence keys; ARGV[i]: the value this instance wrote. Deletes each key
# that still holds it (a newer holder's key is left alone).
_RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    n = n + redis.call('DEL', key)
  end
end
return n
"""

# Sets this instance's entry of a per-address rooms hash (see the module's
# docstring), unless the entry holds a newer write; a count of 0 deletes it. The
# key lives as long as its newest entry (every instance has the same TTL).
_PUT_ROOMS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function put(key, me, n, expires, seq, ttl)
  local old = redis.call('HGET', key, me)
  if old then
    local was = string.match(old, ' (%d+)$')
    if was and tonumber(was) > tonumber(seq) then return end
  end
  if n == 0 then
    redis.call('HDEL', key, me)
  else
    redis.call('HSET', key, me, string.format('%d %d %s', n, expires, seq))
    redis.call('PEXPIRE', key, ttl)
  end
end
"""

# A batch of handshakes, in order. KEYS[2i - 1]: handshake i's address's token
# bucket, KEYS[2i]: its rooms hash. ARGV: me, the entry TTL (ms), seq, then per
# handshake its rate (a second), burst, held (this instance's rooms of the
# address with this one; 0: no room asked, a check here refused it already) and
# the most rooms. Returns per handshake two numbers: 0, rooms (admitted); 1, 0
# (over the rate); 2, rooms (over the rooms), rooms being those open across
# instances (this one included when admitted).
_HANDSHAKE = (
    _PUT_ROOMS
    + """
local function check(bucket, rooms, me, ttl, seq, rate, burst, held, most, now)
  local state = redis.call('HMGET', bucket, 'n', 't')
  local tokens = tonumber(state[1])
  if tokens == nil then
    tokens = burst
  else
    tokens = math.min(burst, tokens + math.max(0, now - tonumber(state[2])) * rate / 1000)
  end
  local taken = tokens >= 1
  if taken then tokens = tokens - 1 end
  redis.call('HSET', bucket, 'n', tostring(tokens), 't', string.format('%d', now))
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens) / rate * 1000) + 1000)
  if not taken then return 1, 0 end
  if held == 0 then return 0, 0 end
  local others = 0
  local all = redis.call('HGETALL', rooms)
  for i = 1, #all, 2 do
    if all[i] ~= me then
      local n, expires = string.match(all[i + 1], '^(%d+) (%d+)')
      if n and tonumber(expires) > now then
        others = others + tonumber(n)
      else
        redis.call('HDEL', rooms, all[i])
      end
    end
  end
  if others + held > most then return 2, others + held - 1 end
  put(rooms, me, held, now + ttl, seq, ttl)
  return 0, others + held
end
local now = now_ms()
local me, ttl, seq = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 1, #KEYS / 2 do
  local a = 4 * i
  out[2 * i - 1], out[2 * i] = check(KEYS[2 * i - 1], KEYS[2 * i], me, ttl, seq,
    tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), now)
end
return out
"""
)

# KEYS: rooms hashes. ARGV: me, the entry TTL (ms), seq, then KEYS[i]'s count.
_ROOMS = (
    _PUT_ROOMS
    + """
local now = now_ms()
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  put(key, ARGV[1], tonumber(ARGV[3 + i]), now + ttl, ARGV[3], ttl)
end
return #KEYS
"""
)

_FAILURES: Final = (
    OSError,  # TimeoutError among them
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis is unreachable, slow or refusing (a group: all of it)."""
    from coredis.exceptions import RedisError  # imported by Cluster.run already

    return bool(leaves(exc, (RedisError, *_FAILURES)))


def default_instance_id(configured: str = "", *, port: int | None = None) -> str:
    """This process's name in Redis.

    ``INSTANCE_ID`` as given, else ``{hostname}:{port}`` (stable across restarts)
    when the port is known (``voice-trio serve``), else ``{hostname}:{pid}`` (plain
    ``hypercorn``). A worker of ``voice-trio serve --workers N`` (a process started
    by :mod:`multiprocessing`) appends its pid, so that the workers, which share one
    port and one environment, still have distinct names (and each its own kick
    channel).
    """
    if not configured:
        if port is None:
            return f"{socket.gethostname()}:{os.getpid()}"
        configured = f"{socket.gethostname()}:{port}"
    if multiprocessing.parent_process() is not None:
        return f"{configured}:{os.getpid()}"
    return configured


class _Claim:
    """A room's claim on its way to Redis, sent with the others of its burst."""

    __slots__ = ("session_id", "value", "done", "previous")

    def __init__(self, session_id: str, value: str) -> None:
        self.session_id = session_id
        self.value = value
        self.done = trio.Event()
        self.previous: str | None = None


class _Check:
    """A handshake's check of the shared limits, sent with the others of its burst."""

    __slots__ = ("client", "rate", "burst", "held", "max_rooms", "done", "verdict")

    def __init__(self, client: str, rate: float, burst: int, held: int, max_rooms: int) -> None:
        self.client = client
        self.rate = rate
        self.burst = burst
        self.held = held
        self.max_rooms = max_rooms
        self.done = trio.Event()
        self.verdict: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    instance_id: str
    #: The last call to Redis succeeded (False: degraded, reconnecting).
    redis_up: bool
    #: The kick subscriber is subscribed on this instance's channel now.
    subscribed: bool
    #: Rooms this instance has claimed and holds now.
    claims: int
    #: Kicks this instance published (its new room replaced another instance's).
    kicks_sent: int
    #: Rooms closed here because another instance opened their session.
    kicks_received: int
    #: Released keys waiting for the next flush.
    releases_pending: int
    #: Times Redis came back after being unreachable.
    reconnects: int

    @property
    def healthy(self) -> bool:
        return self.redis_up and self.subscribed


class Cluster:
    """One per process: the presence of this instance's rooms and its kick subscriber.

    ``replaced(session_id)`` is called (synchronously, in the event loop) when
    another instance has opened a session this instance holds; the app closes
    that room with 4000. ``errors`` counts failed Redis calls by operation
    (``claim``, ``refresh``, ``release``, ``ping``, ``subscribe``, and for the
    per-address limits ``handshake`` and ``rooms``).
    """

    def __init__(
        self,
        *,
        url: str,
        instance_id: str,
        replaced: Callable[[str], None],
        errors: collections.Counter[str] | None = None,
        prefix: str = "voice-trio:",
        ttl_s: float = 20.0,
        refresh_s: float = 5.0,
        timeout_s: float = 0.2,
    ) -> None:
        self.url = url
        self.instance_id = instance_id
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.errors: collections.Counter[str] = (
            errors if errors is not None else collections.Counter()
        )
        self._replaced = replaced
        self._channel = f"{prefix}kick:{instance_id}"
        self._client: coredis.Redis[str] | None = None
        self._claim: Any = None
        self._refresh: Any = None
        self._release: Any = None
        # Session id -> the claim number of the room holding it here now.
        self._claims: dict[str, int] = {}
        self._next_claim = secrets.randbits(40)
        # Presence key -> the value to delete it with, when it still holds that value.
        self._releases: dict[str, str] = {}
        self._handshake: Any = None
        self._rooms: Any = None
        #: Open rooms per client address here (the handshake guard's own count, see
        #: :meth:`bind_rooms`): the entries this instance writes in the rooms hashes.
        self._room_counts: Mapping[str, int] = {}
        # Addresses whose count changed since the last flush (a release, a failed call).
        self._rooms_dirty: set[str] = set()
        # Orders this instance's writes of a rooms entry: rises across restarts too.
        self._seq = time.time_ns() // 1000
        self._up = False
        self._subscribed = False
        self._broken = trio.Event()  # set when a call fails: the keeper reconnects
        self._healthy = trio.Event()  # set once Redis answers and the subscriber is on
        self._probe = False  # a claim was slow: the keeper pings on its next tick
        self._claims_tx, self._claims_rx = trio.open_memory_channel[_Claim](CLAIM_QUEUE_MAX)
        self._checks_tx, self._checks_rx = trio.open_memory_channel[_Check](CLAIM_QUEUE_MAX)
        self._kicks_sent = 0
        self._kicks_received = 0
        self._reconnects = 0

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe and keep presence fresh until cancelled.

        Started once Redis answers, or after :data:`STARTUP_WAIT_S` whether or not
        it does: until it does, the instance is degraded and serves rooms as a
        single instance.
        """
        # Imported here: coredis takes ~0.3 s to import, which a single instance never pays.
        import coredis
        from coredis.retry import NoRetryPolicy

        client: coredis.Redis[str] = coredis.Redis.from_url(
            self.url,
            decode_responses=True,
            stream_timeout=max(self.timeout_s, 1.0),
            connect_timeout=max(self.timeout_s, 1.0),
            # No retry inside a call: a room's call has one deadline, and the
            # reconnection (with backoff) is this module's.
            retry_policy=NoRetryPolicy(),
        )
        async with client, trio.open_nursery() as nursery:
            self._client = client
            self._claim = client.register_script(_CLAIM)
            self._refresh = client.register_script(_REFRESH)
            self._release = client.register_script(_RELEASE)
            self._handshake = client.register_script(_HANDSHAKE)
            self._rooms = client.register_script(_ROOMS)
            self._broken.set()  # the first connection is a reconnection
            nursery.start_soon(self._keep)
            nursery.start_soon(self._subscribe)
            nursery.start_soon(self._claimer)
            nursery.start_soon(self._checker)
            with trio.move_on_after(STARTUP_WAIT_S):
                await self._healthy.wait()
            task_status.started()

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics(
            instance_id=self.instance_id,
            redis_up=self._up,
            subscribed=self._subscribed,
            claims=len(self._claims),
            kicks_sent=self._kicks_sent,
            kicks_received=self._kicks_received,
            releases_pending=len(self._releases),
            reconnects=self._reconnects,
        )

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}presence:{session_id}"

    def _value(self, claim: int) -> str:
        return f"{claim}@{self.instance_id}"

    def _failed(self, op: str, exc: BaseException | None) -> None:
        self.errors[op] += 1
        if self._up:
            log.warning("Redis %s failed (%r): degraded, reconnecting", op, exc or "timeout")
        self._up = False
        self._broken.set()

    # ------------------------------------------------------- a room's path

    async def get_value(self, name: str, op: str) -> str | None:
        """The value kept under ``{prefix}{name}``, or None (absent, or Redis slow or down)."""
        client = self._client
        if client is None or not self._up:
            await trio.lowlevel.checkpoint()
            return None
        ok, value = await self._call(op, partial(client.get, self.prefix + name), self.timeout_s)
        return value if ok and isinstance(value, str) else None

    async def set_value(self, name: str, value: str, ttl_ms: int, op: str) -> bool:
        """Keep ``value`` under ``{prefix}{name}`` for ``ttl_ms``; False when Redis is away."""
        client = self._client
        if client is None or not self._up:
            await trio.lowlevel.checkpoint()
            return False
        ok, _ = await self._call(
            op, partial(client.set, self.prefix + name, value, px=ttl_ms), self.timeout_s
        )
        return ok

    async def claim(self, session_id: str) -> int:
        """Hold ``session_id`` here: write its presence, kick its previous holder.

        Returns the claim number to :meth:`release` it with. Takes at most
        ``timeout_s``; while Redis is degraded it sends nothing (the refresh after
        the reconnection writes the presence).
        """
        claim = self._next_claim
        self._next_claim += 1
        self._releases.pop(self._key(session_id), None)
        self._claims[session_id] = claim
        if not self._up:
            await trio.lowlevel.checkpoint()
            return claim
        pending = _Claim(session_id, self._value(claim))
        try:
            self._claims_tx.send_nowait(pending)
        except trio.WouldBlock:
            self.errors["claim"] += 1  # a burst past CLAIM_QUEUE_MAX: the refresh writes it
            await trio.lowlevel.checkpoint()
            return claim
        with trio.move_on_after(self.timeout_s):
            await pending.done.wait()
        if not pending.done.is_set():
            # Slow, not refused: maybe Redis, maybe this busy event loop. Counted, and
            # the keeper pings at once (with a longer deadline) to tell which; the
            # claim is still sent, and the next refresh writes the key if it is not.
            self.errors["claim"] += 1
            self._probe = True
        return claim

    async def _claimer(self) -> None:
        """Send the claims of rooms opening together in one script call (one round trip)."""
        async for first in self._claims_rx:
            batch = [first]
            while len(batch) < REFRESH_CHUNK:
                try:
                    batch.append(self._claims_rx.receive_nowait())
                except trio.WouldBlock:
                    break
            if self._up:
                args: list[str | int] = [int(self.ttl_s), self.instance_id, self.prefix]
                for pending in batch:
                    args += (pending.value, pending.session_id)
                keys = [self._key(pending.session_id) for pending in batch]
                ok, previous = await self._call(
                    "claim",
                    partial(self._claim, keys=keys, args=args),
                    max(self.timeout_s, 1.0),
                )
                for pending, prev in zip(batch, previous if ok else (), strict=False):
                    pending.previous = prev or None
                    if prev and prev.partition("@")[2] != self.instance_id:
                        self._kicks_sent += 1
            for pending in batch:
                pending.done.set()

    def release(self, session_id: str, claim: int) -> None:
        """The room of ``claim`` has closed: its key goes in the next batch of releases."""
        if self._claims.get(session_id) != claim:
            return
        del self._claims[session_id]
        if len(self._releases) >= RELEASE_QUEUE_MAX:
            self.errors["release"] += 1  # dropped: the key expires with its TTL
            return
        self._releases[self._key(session_id)] = self._value(claim)

    # ------------------------------------------------ per-address limits

    def bind_rooms(self, counts: Mapping[str, int]) -> None:
        """Publish ``counts`` (open rooms per client address here, kept by the caller)."""
        self._room_counts = counts

    async def handshake(
        self, client: str, *, rate: float, burst: int, held: int, max_rooms: int
    ) -> tuple[str, int] | None:
        """Spend a handshake token of ``client`` and check its rooms, across instances.

        ``held``: this instance's rooms of ``client`` counting this one (already in
        the bound counts), or 0 when no room is asked. Returns ``("ok", rooms)``,
        ``("rate", 0)`` or ``("rooms", rooms)`` (rooms open across instances), or
        None when Redis did not answer within ``timeout_s`` or is degraded: then
        the local limits decide (a late write is made good by the next flush).
        """
        if not self._up or self._handshake is None:
            return None
        pending = _Check(client, rate, burst, held, max_rooms)
        try:
            self._checks_tx.send_nowait(pending)
        except trio.WouldBlock:
            pending.done.set()  # a burst past CLAIM_QUEUE_MAX: the local limits decide
            self.errors["handshake"] += 1
        with trio.move_on_after(self.timeout_s):
            await pending.done.wait()
        if not pending.done.is_set():
            # Slow: counted, and the keeper pings at once to tell Redis from this loop.
            self.errors["handshake"] += 1
            self._probe = True
        if pending.verdict is None:
            self.rooms_changed(client)  # the call may still write: the flush rewrites it
        return pending.verdict

    async def _checker(self) -> None:
        """Send the checks of handshakes that come together in one script call."""
        async for first in self._checks_rx:
            batch = [first]
            while len(batch) < REFRESH_CHUNK:
                try:
                    batch.append(self._checks_rx.receive_nowait())
                except trio.WouldBlock:
                    break
            if self._up:
                self._seq = max(self._seq + 1, time.time_ns() // 1000)
                keys: list[str] = []
                args: list[str | int] = [self.instance_id, int(self.ttl_s * 1000), self._seq]
                for p in batch:
                    keys += (f"{self.prefix}rate:{p.client}", f"{self.prefix}rooms:{p.client}")
                    args += (repr(float(p.rate)), p.burst, p.held, p.max_rooms)
                ok, out = await self._call(
                    "handshake",
                    partial(self._handshake, keys=keys, args=args),
                    max(self.timeout_s, 1.0),
                )
                for i, pending in enumerate(batch if ok else ()):
                    verdict, rooms = int(out[2 * i]), int(out[2 * i + 1])
                    pending.verdict = (("ok", "rate", "rooms")[verdict], rooms)
            for pending in batch:
                pending.done.set()

    def rooms_changed(self, client: str) -> None:
        """``client``'s count here changed: its entry is rewritten in the next flush."""
        if len(self._rooms_dirty) >= RELEASE_QUEUE_MAX:
            self.errors["rooms"] += 1  # dropped: the entry expires with its TTL
            return
        self._rooms_dirty.add(client)

    async def _write_rooms(self, addresses: list[str]) -> bool:
        """This instance's entries for ``addresses``, with their counts of now."""
        for start in range(0, len(addresses), REFRESH_CHUNK):
            chunk = addresses[start : start + REFRESH_CHUNK]
            self._seq = max(self._seq + 1, time.time_ns() // 1000)
            args: list[str | int] = [self.instance_id, int(self.ttl_s * 1000), self._seq]
            args += [self._room_counts.get(address, 0) for address in chunk]
            keys = [f"{self.prefix}rooms:{address}" for address in chunk]
            ok, _ = await self._call(
                "rooms", partial(self._rooms, keys=keys, args=args), max(self.timeout_s, 1.0)
            )
            if not ok:
                return False
        return True

    async def _flush_rooms(self) -> None:
        dirty, self._rooms_dirty = self._rooms_dirty, set()
        if not await self._write_rooms(list(dirty)):
            for address in dirty:  # again after the reconnection
                self.rooms_changed(address)

    def _kicked(self, session_id: str, claim: int | None) -> None:
        """Another instance holds ``session_id`` now: close ours (if it is that claim's)."""
        held = self._claims.get(session_id)
        if held is None or (claim is not None and held != claim):
            return
        self._kicks_received += 1
        self._replaced(session_id)

    # ------------------------------------------------------------ the keeper

    async def _keep(self) -> None:
        """One task: reconnection with backoff, the periodic refresh, the release flushes."""
        next_refresh = trio.current_time() + self.refresh_s
        while True:
            if self._broken.is_set():
                await self._reconnect()
                next_refresh = trio.current_time() + self.refresh_s
            with trio.move_on_after(RELEASE_FLUSH_S):
                await self._broken.wait()
            if self._broken.is_set():
                continue
            if self._probe:
                self._probe = False
                if not await self._ping():
                    continue
            if self._releases:
                await self._flush_releases()
            if self._rooms_dirty:
                await self._flush_rooms()
            if trio.current_time() >= next_refresh:
                next_refresh = trio.current_time() + self.refresh_s
                if self._claims or self._room_counts:
                    await self._refresh_all()
                else:
                    await self._ping()

    async def _reconnect(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            self._broken = trio.Event()
            if await self._ping() and await self._refresh_all():
                await self._flush_releases()
                await self._flush_rooms()
                if not self._broken.is_set():
                    self._up = True
                    self._reconnects += 1
                    if self._subscribed:
                        self._healthy.set()
                    log.info("Redis reachable: %d rooms' presence written", len(self._claims))
                    return
            await trio.sleep(random.uniform(delay / 2, delay))
            delay = min(BACKOFF_MAX_S, delay * 2)

    async def _call(self, op: str, call: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
        """Run one Redis call under ``timeout``: (succeeded, result)."""
        assert self._client is not None
        with trio.move_on_after(timeout):
            try:
                return True, await call()
            except BaseException as exc:
                if not is_redis_failure(exc):
                    raise
                self._failed(op, exc)
                return False, None
        self._failed(op, None)
        return False, None

    async def _ping(self) -> bool:
        client = self._client
        assert client is not None
        ok, _ = await self._call("ping", client.ping, max(self.timeout_s, 1.0))
        return ok

    async def _refresh_all(self) -> bool:
        """Renew (or write again) every held room's key; close those another instance holds.

        Then this instance's entry of every address it holds rooms for.
        """
        items = list(self._claims.items())
        ttl = int(self.ttl_s)
        for start in range(0, len(items), REFRESH_CHUNK):
            chunk = items[start : start + REFRESH_CHUNK]
            keys = [self._key(sid) for sid, _ in chunk]
            args: list[str | int] = [ttl, *(self._value(claim) for _, claim in chunk)]
            ok, lost = await self._call(
                "refresh",
                partial(self._refresh, keys=keys, args=args),
                max(self.timeout_s, 1.0),
            )
            if not ok:
                return False
            for index in lost or ():
                sid, claim = chunk[int(index) - 1]
                self._kicked(sid, claim)
        return await self._write_rooms([a for a, n in self._room_counts.items() if n > 0])

    async def _flush_releases(self) -> None:
        releases, self._releases = self._releases, {}
        pairs = list(releases.items())
        for start in range(0, len(pairs), REFRESH_CHUNK):
            chunk = pairs[start : start + REFRESH_CHUNK]
            keys = [key for key, _ in chunk]
            values = [value for _, value in chunk]
            ok, _ = await self._call(
                "release",
                partial(self._release, keys=keys, args=values),
                max(self.timeout_s, 1.0),
            )
            if not ok:
                # Back in the queue for after the reconnection (unless reclaimed since).
                for key, value in pairs[start:]:
                    if len(self._releases) < RELEASE_QUEUE_MAX:
                        self._releases.setdefault(key, value)
                return

    # ------------------------------------------------------------ subscriber

    async def _subscribe(self) -> None:
        """The process's one kick listener, on ``{prefix}kick:{instance}``; re-subscribes."""
        client = self._client
        assert client is not None
        delay = BACKOFF_FIRST_S
        while True:
            try:
                async with client.pubsub(
                    channels=[self._channel],
                    retry_policy=None,  # the reconnection (with backoff) is this loop's
                    subscription_timeout=max(self.timeout_s, 1.0),
                    max_idle_seconds=SUBSCRIBER_KEEPALIVE_S,
                ) as pubsub:
                    async for message in pubsub:
                        kind = message["type"]
                        if kind == "subscribe":
                            self._subscribed = True
                            if self._up:
                                self._healthy.set()
                            delay = BACKOFF_FIRST_S
                        elif kind == "message":
                            self._on_kick(message["data"])
            except BaseException as exc:
                self._subscribed = False
                if not is_redis_failure(exc):
                    raise
                self._failed("subscribe", exc)
            self._subscribed = False
            await trio.sleep(random.uniform(delay / 2, delay))
            delay = min(BACKOFF_MAX_S, delay * 2)

    def _on_kick(self, data: object) -> None:
        if not isinstance(data, str):
            return
        claim, _, session_id = data.partition(" ")
        self._kicked(session_id, int(claim) if claim.isdigit() else None)
