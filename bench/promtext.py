"""Read the server's /metrics (Prometheus text format) over loopback, on Trio."""

from __future__ import annotations

import math
import re

import trio

__all__ = ["Metrics", "http_get", "scrape"]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """One scrape: samples keyed by name and sorted labels."""

    def __init__(self, samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                continue
            labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
            try:
                samples[(m.group(1), labels)] = float(m.group(3))
            except ValueError:
                continue
        return cls(samples)

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str) -> float | None:
        """Sum of every sample of ``name`` (all label sets); None if absent."""
        values = [v for (n, _), v in self.samples.items() if n == name]
        return sum(values) if values else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            if n == name:
                out[dict(labels).get(label, "")] = v
        return out

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}

    def histogram_buckets(self, name: str) -> list[tuple[float, float]]:
        buckets = []
        for (n, labels), v in self.samples.items():
            if n == f"{name}_bucket":
                le = dict(labels).get("le", "+Inf")
                buckets.append((math.inf if le in ("+Inf", "inf") else float(le), v))
        return sorted(buckets)

    def as_dict(self) -> dict[str, float]:
        out = {}
        for (n, labels), v in self.samples.items():
            key = n + ("{" + ",".join(f'{k}="{val}"' for k, val in labels) + "}" if labels else "")
            out[key] = v
        return out


def histogram_quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float | None:
    """Quantile of the observations made between two scrapes of a histogram (linear in a bucket)."""
    base = dict(before)
    deltas = [(le, count - base.get(le, 0.0)) for le, count in after]
    if not deltas or deltas[-1][1] <= 0:
        return None
    rank = q * deltas[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in deltas:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return None


async def http_get(host: str, port: int, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """A bounded HTTP/1.0 GET (HTTP/1.0: no chunked body, the server closes)."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            data = bytearray()
            while len(data) < 32 * 1024 * 1024:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


async def scrape(host: str, port: int) -> Metrics:
    status, body = await http_get(host, port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return Metrics.parse(body.decode("utf-8", "replace"))
