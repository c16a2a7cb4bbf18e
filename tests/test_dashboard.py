"""deploy/grafana-dashboard.json: a Grafana dashboard whose queries name only real metrics.

A real server (with a real redis-server, so the ``REDIS_URL`` metrics are
there too) is scraped, and every PromQL expression of the dashboard must name
metric families that its ``/metrics`` declares, with label names and values
that its samples carry. Every family the server exposes is on some panel, and
deploy/README.md's "Dashboard" section describes every panel by its title.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from .support import running_server
from .test_cluster import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"

#: Words of PromQL that are not metric names (functions are followed by "(").
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset"}  # fmt: skip
#: Labels Prometheus adds when it scrapes (not in /metrics).
TARGET_LABELS = {"instance", "job"}
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metrics_of(expr: str) -> dict[str, list[tuple[str, str, str]]]:
    """The metric names of a PromQL expression, each with its label matchers."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for name, body in _SELECTOR.findall(expr):
        found.setdefault(name, []).extend(_MATCHER.findall(body))
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels
    for match in _NAME.finditer(bare):
        name, rest = match.group(), bare[match.end() :].lstrip()
        if rest.startswith("(") or name in KEYWORDS or re.fullmatch(r"[0-9.e]+", name):
            continue
        found.setdefault(name, [])
    return found


class Exposition:
    """What one /metrics text declares: families, their types, and each sample's labels."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[dict[str, str]]] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split()
                self.types[family] = kind
            elif line and not line.startswith("#"):
                series = line.rsplit(" ", 1)[0]
                name, _, labels = series.partition("{")
                self.samples.setdefault(name, []).append(
                    dict(_MATCHER_EQ.findall(labels)) if labels else {}
                )

    def family(self, name: str) -> str | None:
        """The declared family a sample name belongs to (``x_bucket`` of histogram ``x``)."""
        if name in self.types:
            return name
        for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                              ("_count", {"histogram", "summary"})):  # fmt: skip
            base = name.removesuffix(suffix)
            if base != name and self.types.get(base) in kinds:
                return base
        return None


_MATCHER_EQ = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every query: the panels' targets and the template variables'."""
    out = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels()
        if p["type"] != "row"
        for t in p["targets"]
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", query)
            assert inner is not None, query
            out.append((f"variable {variable['name']}", inner.group(1)))
    return out


def test_the_json_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    data = dashboard()
    assert data["title"] and data["uid"] and isinstance(data["schemaVersion"], int)
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in panels() if p["type"] != "row"]
    assert len(graphs) >= 15
    for p in graphs:
        assert p["title"] and p["description"], p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert t["datasource"] == p["datasource"]
            # Every query honours the instance picker.
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


def test_the_promql_reader_finds_names_and_labels() -> None:
    # The reader itself, on what the dashboard uses: a typo must not slip through.
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(voice_trio_x_bucket{instance=~"$i",'
        'stage="asr"}[$__rate_interval]))) / max without (kind) (voice_trio_y) or vector(0)'
    )
    assert metrics_of(expr) == {
        "voice_trio_x_bucket": [("instance", "=~", "$i"), ("stage", "=", "asr")],
        "voice_trio_y": [],
    }


async def scrape_a_real_server(redis: RedisServer) -> Exposition:
    """/metrics of a server with REDIS_URL, after a turn, a bad message and a refused handshake."""
    fields = {"redis_url": redis.url, "instance_id": "dash", "redis_prefix": "dash"}
    async with running_server(**fields) as server:
        with trio.fail_after(30):
            while (await server.get("/healthz")).json().get("redis") != "ok":
                await trio.sleep(0.05)
            async with server.connect("dashboard") as client:
                await client.ws.send_message("{oops")
                await client.expect("error", code="invalid_json")
            try:
                async with trio_websocket.open_websocket_url(
                    server.ws_base + "/ws/evil", extra_headers=[("Origin", "https://evil.example")]
                ):
                    raise AssertionError("a foreign origin was let in")
            except trio_websocket.ConnectionRejected:
                pass
            return Exposition((await server.get("/metrics")).text)


async def test_every_query_names_metrics_a_real_server_exposes(redis: RedisServer) -> None:
    exposed = await scrape_a_real_server(redis)
    assert exposed.family("voice_trio_redis_up") == "voice_trio_redis_up"
    shown: set[str] = set()
    for where, expr in expressions():
        names = metrics_of(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name, matchers in names.items():
            family = exposed.family(name)
            assert family is not None, f"{where}: {name} is not on /metrics"
            shown.add(family)
            samples = exposed.samples.get(name, [])
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                # A labelled counter has samples only once counted: those seen must carry it.
                assert samples, f"{where}: {name}{{{label}}} has no sample to check against"
                assert all(label in s for s in samples), f"{where}: {name} has no {label}"
                if op == "=":
                    values = {s[label] for s in samples}
                    assert value in values, f"{where}: {name}{{{label}={value!r}}} not in {values}"
            grouped = re.findall(r"\bby\s*\(([^)]*)\)", expr)
            for labels in grouped:
                for label in (x.strip() for x in labels.split(",")):
                    if label in TARGET_LABELS or label == "le" or not samples:
                        continue
                    assert all(label in s for s in samples), f"{where}: {name} has no {label}"
    # And nothing the server exposes is missing from the dashboard.
    missing = {f for f in exposed.types if f.startswith(("voice_trio_", "process_"))} - shown
    assert not missing, f"metrics on /metrics but on no panel: {sorted(missing)}"


def test_the_readme_describes_every_panel() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    section = text.split("\n## Dashboard\n", 1)[1].split("\n## ", 1)[0]
    for p in panels():
        assert f"**{p['title']}**" in section, f"deploy/README.md does not describe {p['title']!r}"
