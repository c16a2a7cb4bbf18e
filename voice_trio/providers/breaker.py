"""Backoff and circuit breakers for the provider clients (issue #10).

The failure this prevents is Pipecat #871: a provider refuses connections (there,
Cartesia's concurrency limit), every call retries at once and forever with no
backoff, and the retries themselves keep the limit hit and take down the calls
that were still working. Here:

- a room's own retries wait a jittered exponential :class:`Backoff` and stop
  after a bounded number of consecutive failures;
- one :class:`CircuitBreaker` per provider per process (the app holds them) sees
  every room's attempts. After ``threshold`` consecutive failures it opens for
  ``cooldown_s``: every room asking for a connection then gets
  :class:`CircuitOpen` at once, without touching the network. The first
  attempt after the cool-down is the one *probe* (half-open); its outcome
  closes the breaker or opens it for another cool-down. No timer runs: the
  state moves when someone asks.
- an attempt counts as a success only once the connection has proved itself
  (a provider that accepts the handshake and then closes at once, Pipecat
  #3711, is a failure), so the count cannot be reset by connect-and-drop.

State is read through :meth:`CircuitBreaker.statistics`; ``/metrics`` shows
``voice_trio_circuit_open{provider}`` and ``voice_trio_upstream_errors_total{provider}``.
The clock is ``trio.current_time`` unless given, so tests drive it with
trio's ``autojump_clock`` or a plain function.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
from collections.abc import Callable

import trio

from ..errors import VoiceTrioError

__all__ = [
    "Attempt",
    "Backoff",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "CircuitOpen",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential delays: ``base_s * 2**(n-1)`` capped at ``max_s``, times
    a random factor in ``[1 - jitter, 1]`` so that rooms failing together retry apart."""

    base_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.5

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(failures - 1, 60))
        draw = (rng or _rng).random()
        return ceiling * (1.0 - self.jitter * draw)


_rng = random.Random()


class BreakerState(enum.Enum):
    CLOSED = "closed"  # attempts go through; failures are counted
    OPEN = "open"  # attempts are refused until the cool-down ends
    HALF_OPEN = "half_open"  # one probe attempt is out; the others are refused


class CircuitOpen(VoiceTrioError):
    """A provider's breaker refused an attempt; ``retry_in_s`` until it probes again."""

    def __init__(self, provider: str, retry_in_s: float, reason: str) -> None:
        super().__init__(f"{provider} circuit open; retry in {retry_in_s:.1f} s ({reason})")
        self.provider = provider
        self.retry_in_s = retry_in_s
        #: Why it opened: the last failure (a status or an exception's class, never a secret).
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerStatistics:
    provider: str
    state: BreakerState
    consecutive_failures: int
    failures_total: int
    successes_total: int
    opened_total: int
    refused_total: int
    retry_in_s: float
    last_failure: str


class Attempt:
    """One admitted connection attempt; settle it once with :meth:`succeeded`,
    :meth:`failed` or :meth:`release` (neither: it says nothing about the provider,
    e.g. the room went away). Later calls are ignored."""

    __slots__ = ("_breaker", "probe", "settled")

    def __init__(self, breaker: CircuitBreaker, *, probe: bool) -> None:
        self._breaker = breaker
        self.probe = probe
        self.settled = False

    def succeeded(self) -> None:
        if not self.settled:
            self.settled = True
            self._breaker._success(self.probe)

    def failed(self, reason: str) -> None:
        if not self.settled:
            self.settled = True
            self._breaker._failure(reason, self.probe)

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            if self.probe:
                self._breaker._probe_out = False


class CircuitBreaker:
    """The breaker of one provider, shared by every room of the process."""

    def __init__(
        self,
        provider: str,
        *,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = trio.current_time,
        errors: collections.Counter[str] | None = None,
    ) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("threshold must be >= 1 and cooldown_s > 0")
        self.provider = provider
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        #: Where failures are counted by provider (the app's ``metrics.upstream_errors``).
        self.errors = errors if errors is not None else collections.Counter()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._open_until = 0.0
        self._probe_out = False
        self._last_failure = ""
        self._failures = 0
        self._successes = 0
        self._opened = 0
        self._refused = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def is_open(self) -> bool:
        """True while attempts are refused (open, or half-open with the probe out)."""
        return self._state is not BreakerState.CLOSED

    def admit(self) -> Attempt:
        """An attempt may go out now, or :class:`CircuitOpen` says why not."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.CLOSED:
            return Attempt(self, probe=False)
        if self._state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return Attempt(self, probe=True)
        self._refused += 1
        retry_in = max(0.0, self._open_until - self._clock())
        raise CircuitOpen(self.provider, retry_in, self._last_failure)

    def record_failure(self, reason: str) -> None:
        """A failure seen outside an attempt (a live session that stalled or dropped)."""
        self._failure(reason, probe=False)

    def count_error(self) -> None:
        """An error the provider reported that says nothing about its health (counted only)."""
        self.errors[self.provider] += 1

    def statistics(self) -> BreakerStatistics:
        retry_in = 0.0
        if self._state is not BreakerState.CLOSED:
            retry_in = max(0.0, self._open_until - self._clock())
        return BreakerStatistics(
            provider=self.provider,
            state=self._state,
            consecutive_failures=self._consecutive,
            failures_total=self._failures,
            successes_total=self._successes,
            opened_total=self._opened,
            refused_total=self._refused,
            retry_in_s=retry_in,
            last_failure=self._last_failure,
        )

    # ------------------------------------------------------------ transitions

    def _success(self, probe: bool) -> None:
        self._successes += 1
        self._consecutive = 0
        if probe:
            self._probe_out = False
        self._state = BreakerState.CLOSED

    def _failure(self, reason: str, probe: bool) -> None:
        self._failures += 1
        self.errors[self.provider] += 1
        self._consecutive += 1
        self._last_failure = reason
        if probe:
            self._probe_out = False
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._consecutive >= self.threshold
        ):
            self._state = BreakerState.OPEN
            self._open_until = self._clock() + self.cooldown_s
            self._opened += 1
