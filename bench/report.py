"""Turn level records into a progress line, a markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ms(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 1e3:.{digits}f}"


def num(value: Any, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)


def trio_ms(summary: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p99", "max")) -> str:
    """``p50/p99/max`` of a summary dict, in ms."""
    summary = summary or {}
    return "/".join(ms(summary.get(k)) for k in keys)


def lag_ms(server: dict[str, Any]) -> str:
    return "/".join(ms(server.get(f"loop_lag_{k}_s")) for k in ("p50", "p99", "max"))


def progress_line(r: dict[str, Any]) -> str:
    c, s = r["client"], r["server"]
    head = (
        f"level {r['mode']} {r['rooms']}: open {c.get('rooms_opened')}/{r['rooms']} "
        f"lag p50/p99/max {lag_ms(s)} ms cpu {num(r.get('server_cpu_pct'))}% "
        f"(clients {num(r.get('client_cpu_pct'))}%, other processes {num(r.get('other_cpu_pct'))}%)"
    )
    if r["profile"] == "idle":
        before, after = r.get("rss_before", 0) / 2**20, r.get("rss_after", 0) / 2**20
        head += (
            f" rss {num(before, '.1f')}->{num(after, '.1f')} MB"
            f" = {num(r.get('kb_per_idle_room'), '.1f')} KB/room"
        )
    else:
        d = c.get("delay_s", {})
        head += (
            f" delay p50/p99 {trio_ms(d, ('p50', 'p99'))} ms"
            f" transit p50/p99 {trio_ms(c.get('transit_s'), ('p50', 'p99'))} ms"
            f" growth {ms(c.get('delay_growth_s'))} ms"
            f" rx/exp {num(c.get('received_over_expected'), '.4f')}"
        )
    v = r["verdict"]
    head += " PASS" if v["pass"] else " FAIL: " + "; ".join(v["reasons"])
    if v.get("client_limited"):
        head += " (client fell behind)"
    return head


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    out = [
        f"# bench: {meta['target']}",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cpus']} cores, {meta['machine']['mem_total_gb']} GB, "
        f"{meta['machine']['platform']}, Python {meta['machine']['python']}",
        f"- voice_trio source sha256: {meta.get('voice_trio_source_sha256')}",
        f"- command: `{meta['command']}`",
        "",
    ]
    levels = [r for r in records if "profile" in r]
    idle = [r for r in levels if r["profile"] == "idle"]
    active = [r for r in levels if r["profile"] == "active"]
    interrupt = [r for r in levels if r["profile"] == "interrupt"]
    if idle:
        out += ["## idle rooms", ""]
        out.append(
            _table(
                [
                    "rooms",
                    "opened",
                    "open p50/p99 ms",
                    "RSS before MB",
                    "RSS after MB",
                    "KB/room",
                    "lag p50/p99/max ms",
                    "CPU %",
                    "other procs CPU %",
                    "upstreams",
                    "deflate accepted",
                    "verdict",
                ],
                [
                    [
                        str(r["rooms"]),
                        str(r["client"].get("rooms_opened")),
                        trio_ms(r["client"].get("open_s"), ("p50", "p99")),
                        num(r.get("rss_before", 0) / 2**20, ".1f"),
                        num(r.get("rss_after", 0) / 2**20, ".1f"),
                        num(r.get("kb_per_idle_room"), ".1f"),
                        f"{ms(r['server'].get('loop_lag_p50_s'))}/{ms(r['server'].get('loop_lag_p99_s'))}/{ms(r['server'].get('loop_lag_max_s'))}",
                        num(r.get("server_cpu_pct")),
                        num(r.get("other_cpu_pct")),
                        num(r["server"].get("upstreams_live")),
                        str(r["client"].get("deflate_accepted")),
                        "pass"
                        if r["verdict"]["pass"]
                        else "FAIL: " + "; ".join(r["verdict"]["reasons"]),
                    ]
                    for r in idle
                ],
            )
        )
        out.append("")
    if active:
        out += ["## active rooms (standard room, echo brain)", ""]
        rows = []
        for r in active:
            c, s = r["client"], r["server"]
            d = c.get("delay_s", {})
            drops = (
                sum((s.get("outbox_dropped") or {}).values())
                if s.get("outbox_dropped") is not None
                else None
            )
            rows.append(
                [
                    f"{r['mode']} {r['rooms']}",
                    str(c.get("rooms_opened")),
                    f"{ms(s.get('loop_lag_p50_s'))}/{ms(s.get('loop_lag_p99_s'))}/{ms(s.get('loop_lag_max_s'))}",
                    num(r.get("server_cpu_pct")),
                    num(r.get("client_cpu_pct")),
                    num(r.get("other_cpu_pct")),
                    num((r.get("rss_end") or 0) / 2**20, ".0f"),
                    trio_ms(d),
                    trio_ms(c.get("transit_s")),
                    f"{ms(c.get('delay_growth_s'))} "
                    f"({num(c.get('delay_slope_ms_per_min'), '.1f')}/min)",
                    num(c.get("received_over_expected"), ".4f"),
                    trio_ms(c.get("text_rtt_s"), ("p50", "p99")),
                    f"{num(drops)}/{num(s.get('incoming_audio_dropped'))}"
                    f"/{num(s.get('slow_consumer_closes'))}",
                    num(s.get("outbox_depth_max_over_samples")),
                    str(c.get("deflate_accepted")),
                    ms(c.get("send_lateness_p99_worst_s")),
                    "pass"
                    if r["verdict"]["pass"]
                    else "FAIL: " + "; ".join(r["verdict"]["reasons"]),
                ]
            )
        out.append(
            _table(
                [
                    "level",
                    "opened",
                    "lag p50/p99/max ms",
                    "server CPU %",
                    "clients CPU %",
                    "other procs CPU %",
                    "RSS MB",
                    "frame delay p50/p99/max ms",
                    "transit p50/p99/max ms",
                    "delay growth ms",
                    "rx/expected",
                    "text RTT p50/p99 ms",
                    "drops out/in/slow-closes",
                    "outbox depth max",
                    "deflate accepted",
                    "client lateness p99 ms",
                    "verdict",
                ],
                rows,
            )
        )
        out.append("")
    if interrupt:
        out += ["## interrupt", ""]
        out.append(
            _table(
                [
                    "rooms",
                    "interrupts sent/answered",
                    "interrupt->interrupted p50/p99/max ms",
                    "frames after interrupted, before next response.started",
                    "stale frames after interrupted",
                    "server interrupts_total",
                    "lag p99 ms",
                    "verdict",
                ],
                [
                    [
                        str(r["rooms"]),
                        f"{r['client'].get('interrupts_sent')}/{r['client'].get('interrupts_answered')}",
                        f"{ms(r['client']['interrupt_to_interrupted_s'].get('p50'))}/{ms(r['client']['interrupt_to_interrupted_s'].get('p99'))}/{ms(r['client']['interrupt_to_interrupted_s'].get('max'))}",
                        str(r["client"].get("frames_after_interrupted_before_started")),
                        str(r["client"].get("stale_frames_after_interrupted")),
                        num(r["server"].get("interrupts")),
                        ms(r["server"].get("loop_lag_p99_s")),
                        "pass"
                        if r["verdict"]["pass"]
                        else "FAIL: " + "; ".join(r["verdict"]["reasons"]),
                    ]
                    for r in interrupt
                ],
            )
        )
        out.append("")
    for r in records:
        if r.get("mode") == "sweep-result":
            out.append(
                "**sweep: max active rooms per process passing the bar = "
                f"{r['max_passing_rooms']}** (first failing level: {r['first_failing_rooms']})"
            )
            out.append("")
    missing = sorted({n for r in levels for n in r["server"].get("metric_names_missing", [])})
    if missing:
        out.append(f"metrics missing from /metrics: {', '.join(missing)}")
        out.append("")
    out += [
        "Notes: loop lag is the server's own summary (last 60 s window, read at the end of the",
        "level); CPU % is psutil (user+system) over the steady window, 100 % = one core;",
        "'other procs' = the machine's busy CPU minus server, load generators and driver: when it",
        "is high, other work shared the 2 cores and lag figures are inflated; frame delay =",
        "echoed-audio delay per 100 ms frame (send -> frame complete at the client; half the",
        "frames wait ~100 ms for the second frame of their 9600-byte chunk); transit = per chunk,",
        "send of its newest frame -> received (the server's own delay); steady window only;",
        "growth = median transit of the last fifth minus the first fifth of the level.",
        "",
    ]
    return "\n".join(out)


def plots(out_dir: Path, records: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    levels = [r for r in records if "profile" in r]
    for r in levels:
        samples = r.get("samples") or []
        if not samples:
            continue
        tag = f"{r['mode']}-{r['rooms']}"
        fig, axes = plt.subplots(
            3 if r["profile"] != "idle" else 2, 1, figsize=(9, 8), sharex=False
        )
        t = [s["t"] for s in samples]
        axes[0].plot(t, [1e3 * (s.get("lag_p99") or 0) for s in samples], label="lag p99")
        axes[0].plot(
            t, [1e3 * (s.get("lag_max") or 0) for s in samples], label="lag max", alpha=0.6
        )
        axes[0].plot(t, [1e3 * (s.get("lag_p50") or 0) for s in samples], label="lag p50")
        axes[0].axhline(20, color="red", linestyle=":", label="20 ms bar")
        axes[0].set_ylabel("loop lag ms (60 s window)")
        axes[0].legend(loc="upper left", fontsize=8)
        ax = axes[1]
        ax.plot(
            t, [s.get("cpu_pct") or 0 for s in samples], color="tab:orange", label="server CPU %"
        )
        ax.plot(
            t,
            [s.get("host_cpu_pct") or 0 for s in samples],
            color="tab:gray",
            alpha=0.6,
            label="whole machine CPU %",
        )
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylabel("CPU %")
        ax2 = ax.twinx()
        ax2.plot(t, [s["rss"] / 2**20 for s in samples], color="tab:green", label="RSS MB")
        ax2.set_ylabel("RSS MB")
        ax.set_xlabel("s since level start")
        if r["profile"] != "idle":
            path = out_dir / f"delays-{tag}.npz"
            if path.exists():
                with np.load(path) as data:
                    st, d = data["send_t"], data["delay"]
                if st.size:
                    step = max(1, st.size // 20000)
                    axes[2].plot(st[::step], 1e3 * d[::step], ",", alpha=0.5)
                    axes[2].set_ylabel("delivery delay ms")
                    axes[2].set_xlabel("s since steady start")
        fig.suptitle(f"{r.get('target')} {tag}")
        fig.tight_layout()
        fig.savefig(out_dir / f"level-{tag}.png", dpi=90)
        plt.close(fig)
    active = [r for r in levels if r["profile"] == "active"]
    if len(active) > 1:
        active = sorted(active, key=lambda r: r["rooms"])
        x = [r["rooms"] for r in active]
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.plot(
            x,
            [1e3 * (r["server"].get("loop_lag_p99_s") or 0) for r in active],
            "o-",
            label="loop lag p99 ms",
        )
        ax.plot(
            x,
            [1e3 * (r["client"].get("delay_s", {}).get("p99") or 0) for r in active],
            "s-",
            label="delivery delay p99 ms",
        )
        ax.plot(x, [r.get("server_cpu_pct") or 0 for r in active], "^-", label="server CPU %")
        ax.axhline(20, color="red", linestyle=":")
        ax.set_xlabel("active rooms")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "sweep.png", dpi=90)
        plt.close(fig)
