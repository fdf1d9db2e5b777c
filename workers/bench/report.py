"""The printed table, the machine line and the goals of a ``bench e2e`` run (issue #12)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from typing import Any

from workers.settings import PROJECT_ROOT


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine since boot (/proc/stat), None off Linux.

    Steal is time the hypervisor gave this VM's CPUs to someone else: on a shared machine it is
    what makes the same run's p99 swing between runs, so the report names it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def steal_pct(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Share of all CPU time between two ``cpu_ticks`` readings the hypervisor stole, in %."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round(100.0 * (end[0] - start[0]) / (end[1] - start[1]), 1)


def machine(load_start: Sequence[float], load_end: Sequence[float] | None,
            steal: float | None = None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 0.0
    la = f"load average {load_start[0]:.2f} at start" + (f", {load_end[0]:.2f} at end" if load_end else "")
    if steal is not None:
        la += f"; CPU steal {steal:.1f}% of CPU time during the run (the hypervisor's other guests)"
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB, Linux {platform.release()}, Python "
            f"{platform.python_version()}; Kafka broker and Redis on the same machine; {la}")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def _find(systems: list[dict[str, Any]], name: str, topology: str | None, workers: int) -> dict[str, Any] | None:
    return next((s for s in systems if s["name"] == name and s["workers"] == workers
                 and (topology is None or s["topology"] == topology)), None)


def goals(systems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #12's goals, each with the figure it was judged on (None: not measured in this run)."""
    out: list[dict[str, Any]] = []

    def add(goal: str, value: float | None, met: bool | None, detail: str) -> None:
        out.append({"goal": goal, "value": None if value is None else round(value, 3), "met": met,
                    "detail": detail})

    for s in systems:
        if not s["name"].startswith("streamscore:"):
            continue
        w, topo, label = s["workers"], s["topology"], f"{s['name']} x{s['workers']}"
        mx = s["max_events_per_s"]
        ceil = _find(systems, "passthrough", topo, w)
        if ceil and ceil["max_events_per_s"]:
            r = mx / ceil["max_events_per_s"]
            add(">= 50% of the pass-through ceiling", r, r >= 0.5, f"{label}: {mx:,.0f} vs {ceil['max_events_per_s']:,.0f}/s")
        for peer, k in (("faust", 10.0), ("quix", 3.0)):
            ps = _find(systems, peer, topo, w)
            if ps and ps["max_events_per_s"]:
                r = mx / ps["max_events_per_s"]
                add(f">= {k:g}x the {peer} peer", r, r >= k, f"{label}: {mx:,.0f} vs {ps['max_events_per_s']:,.0f}/s")
        lat = s["latency_ms"]
        at5k = lat.get("5000")
        add("e2e p99 <= 10 ms at 5k events/s", at5k["p99"] if at5k else None,
            at5k["p99"] <= 10.0 if at5k else None, label)
        k80 = s.get("latency_80pct_key")
        at80 = lat.get(k80) if k80 else None
        add("e2e p99 <= 50 ms at 80% of max", at80["p99"] if at80 else None,
            at80["p99"] <= 50.0 if at80 else None, f"{label} at {k80}/s")
        degraded = s["max_phase"]["degraded"] + sum(int(d.get("degraded", 0)) for d in s["latency_detail"].values())
        add("no decision with default features because the machine was busy", degraded, degraded == 0,
            f"{label}: decisions flagged degraded in this run")
        add("worker RSS <= 400 MB", s["peak_rss_mb"], s["peak_rss_mb"] <= 400.0, f"{label}: peak (VmHWM)")
    return out


def _lat(s: dict[str, Any], key: str | None) -> str:
    if key is None:
        return "-"
    v = s["latency_ms"].get(key)
    if v is None:
        return "n/a" if key in s["latency_ms"] else "-"
    return f"{v['p50']:.0f}/{v['p99']:.0f}"


def table(doc: dict[str, Any]) -> str:
    systems: list[dict[str, Any]] = doc["systems"]
    rates = [str(r) for r in doc["run"]["rates"]]
    head = (f"{'system':<26}{'topology':<14}{'w':>2} {'max ev/s':>10} {'vs ceil':>7}  "
            + "".join(f"{r + '/s p50/p99':>16}" for r in rates)
            + f"{'80%max p50/p99':>18} {'cpu µs/ev':>9} {'RSS MB':>7} {'steal%':>6}  decisions")
    lines = [f"machine: {doc['machine']}", "latency: ms, " + doc["run"]["latency"], "", head, "-" * len(head)]
    for s in systems:
        ceil = _find(systems, "passthrough", s["topology"], s["workers"])
        ratio = f"{s['max_events_per_s'] / ceil['max_events_per_s']:.2f}" if ceil and ceil["max_events_per_s"] else "-"
        k80 = s.get("latency_80pct_key")
        d = s.get("decisions") or {}
        eq = ("reference" if d.get("is_reference") else
              f"{d['compared'] - d['different']}/{d['compared']} equal" if "compared" in d else "-")
        k80_txt = f"{_lat(s, k80)} @{k80}" if k80 else "-"
        steal = s.get("cpu_steal_pct")
        steal_txt = "-" if steal is None else f"{steal:.1f}"
        lines.append(f"{s['name']:<26}{s['topology']:<14}{s['workers']:>2} {s['max_events_per_s']:>10,.0f} {ratio:>7}  "
                     + "".join(f"{_lat(s, r):>16}" for r in rates)
                     + f"{k80_txt:>18} {s['cpu_us_per_event']:>9.0f} {s['peak_rss_mb']:>7.0f} {steal_txt:>6}  {eq}")
    lines.append("n/a: rate above that system's maximum, not offered; steal%: share of the machine's "
                 "CPU time the hypervisor gave other guests while that system ran (/proc/stat)")
    for s in systems:
        if not s["name"].startswith("streamscore:") or not s.get("stages_ms"):
            continue
        lines.append("")
        lines.append(f"{s['name']} x{s['workers']}: per-stage p50/p99 ms, from the decision records")
        stages = ["broker_to_worker", "batch_wait_and_queue", "features", "assemble", "inference", "produce_to_append"]
        lines.append(f"  {'offered':>8} " + "".join(f"{st:>22}" for st in stages))
        for rate, per in s["stages_ms"].items():
            cells = []
            for st in stages:
                v = per.get(st)
                cells.append(f"{v['p50']:.2f}/{v['p99']:.2f}" if v else "-")
            lines.append(f"  {rate:>8} " + "".join(f"{c:>22}" for c in cells))
    lines.append("")
    lines.append("goals (issue #12):")
    for g in doc.get("goals", []):
        mark = "met" if g["met"] else ("NOT met" if g["met"] is not None else "not measured")
        lines.append(f"  [{mark:^12}] {g['goal']}: {g['value']}  ({g['detail']})")
    return "\n".join(lines)
