"""Read a server's ``/metrics`` and say which figures call for tuning (docs/customise.md).

    .venv/bin/python examples/watch_metrics.py http://127.0.0.1:8000            # once
    .venv/bin/python examples/watch_metrics.py http://127.0.0.1:8000 --every 5  # every 5 s

Each line is a figure, its value, and when it is off, what it means and which
setting to look at. Counters are totals since the process started: watch them
grow (or scrape them with Prometheus and graph their rate).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio

__all__ = ["Finding", "fetch", "histogram_quantile", "parse", "report"]

Samples = dict[str, float]


def parse(text: str) -> Samples:
    """The Prometheus text format as ``{'name{labels}': value}`` (comments skipped)."""
    samples: Samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: Samples, name: str) -> float:
    """A metric summed over its labels (``voice_trio_outbox_dropped_total{kind=...}``)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def histogram_quantile(samples: Samples, name: str, q: float) -> float | None:
    """The upper bound of the bucket that holds quantile ``q`` (None: no observation)."""
    count = samples.get(f"{name}_count", 0.0)
    if not count:
        return None
    buckets = sorted(
        (math.inf if bound == "+Inf" else float(bound), n)
        for key, n in samples.items()
        if key.startswith(f'{name}_bucket{{le="')
        for bound in [key.split('"')[1]]
    )
    return next(bound for bound, n in buckets if n >= q * count)


@dataclass(frozen=True, slots=True)
class Finding:
    figure: str
    value: str
    #: Empty when the figure is fine; else what it means and what to tune.
    advice: str


def _rule(
    figure: str, value: float | None, bad: Callable[[float], bool], advice: str, unit: str = ""
) -> Finding:
    if value is None:
        return Finding(figure, "n/a", "")
    shown = f"{value * 1000:.1f} ms" if unit == "s" else f"{value:g}"
    return Finding(figure, shown, advice if bad(value) else "")


def report(samples: Samples) -> list[Finding]:
    """The figures a team watches first, with advice for those that are off."""
    lag_p99 = samples.get('voice_trio_loop_lag_seconds{quantile="0.99"}')
    open_breakers = [
        key.split('"')[1] for key, v in samples.items()
        if key.startswith("voice_trio_circuit_open{") and v
    ]  # fmt: skip
    return [
        _rule("rooms open", samples.get("voice_trio_rooms_open"), lambda v: False, ""),
        _rule("brains live", samples.get("voice_trio_upstreams_live"), lambda v: False, ""),
        _rule(
            "loop lag p99",
            lag_p99,
            lambda v: v > 0.02,
            "the event loop runs late: fewer rooms per process (more instances, bench/README.md)",
            unit="s",
        ),
        _rule(
            "outbox messages dropped",
            total(samples, "voice_trio_outbox_dropped_total"),
            lambda v: v > 0,
            "clients read slower than the room sends (deltas and metrics are dropped, the "
            "*.done events still carry the whole text): raise WS_OUTGOING_MAX if it is common",
        ),
        _rule(
            "slow consumers closed",
            samples.get("voice_trio_slow_consumer_closes_total"),
            lambda v: v > 0,
            "clients whose outbox stayed full for SLOW_CLIENT_TIMEOUT_S were closed with 1013: "
            "raise it for clients on poor networks, or WS_OUTGOING_MAX for bursts",
        ),
        _rule(
            "inbound audio dropped",
            samples.get("voice_trio_incoming_audio_dropped_total"),
            lambda v: v > 0,
            "the brain takes audio slower than clients send it: raise WS_INCOMING_AUDIO_MAX "
            "for bursts, or look at the brain (voice_trio_upstream_errors_total)",
        ),
        _rule(
            "over the rate limits",
            total(samples, "voice_trio_rate_limited_total"),
            lambda v: v > 0,
            "clients sent more than ROOM_MESSAGE_RATE / ROOM_AUDIO_RATE (their excess dropped)",
        ),
        _rule(
            "time to first audio p50, at most",
            histogram_quantile(samples, "voice_trio_time_to_first_audio_seconds", 0.5),
            lambda v: v > 1.5,
            "replies start late: the brain or the voice is slow (ASR_WORKERS, the provider)",
            unit="s",
        ),
        Finding(
            "open circuit breakers",
            ", ".join(open_breakers) or "none",
            "a provider is failing; rooms are told at once (PROVIDER_BREAKER_*)"
            if open_breakers
            else "",
        ),
    ]


async def fetch(base_url: str) -> Samples:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(base_url.rstrip("/") + "/metrics")
        response.raise_for_status()
        return parse(response.text)


def show(findings: list[Finding]) -> str:
    width = max(len(f.figure) for f in findings)
    return "\n".join(
        f"{f.figure:<{width}}  {f.value:>10}" + (f"  <- {f.advice}" if f.advice else "")
        for f in findings
    )


async def main(base_url: str, every: float | None) -> None:
    while True:
        print(show(report(await fetch(base_url))), flush=True)
        if every is None:
            return
        print(flush=True)
        await trio.sleep(every)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="What a voice-trio server's /metrics say.")
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--every", type=float, default=None, help="repeat every N seconds")
    args = parser.parse_args()
    trio.run(main, args.url, args.every)
