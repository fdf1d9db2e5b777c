"""PNG plots of a ``bench e2e`` run: latency CDF per system, throughput vs offered rate."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def cdf_points(latencies_ms: Sequence[float], points: int = 400) -> list[tuple[float, float]]:
    """(latency, fraction at or below it) at ``points`` quantiles, up to p99.9 and the max."""
    if not latencies_ms:
        return []
    a = np.sort(np.asarray(latencies_ms, dtype=np.float64))
    qs = np.concatenate([np.linspace(0.0, 0.99, points - 20), np.linspace(0.99, 1.0, 20)])
    return [(float(np.quantile(a, q)), float(q)) for q in qs]


def common_rate(systems: Mapping[str, Mapping[str, list[tuple[float, float]]]]) -> str | None:
    """The offered rate most systems (two or more) were measured at, the lowest of a tie; None if
    no two systems share one (a rate above a system's maximum is not offered to it)."""
    counts: dict[str, int] = {}
    for curves in systems.values():
        for r, pts in curves.items():
            if pts:
                counts[r] = counts.get(r, 0) + 1
    if not counts or max(counts.values()) < 2:
        return None
    return min(counts, key=lambda r: (-counts[r], not r.isdigit(), int(r) if r.isdigit() else 0, r))


def latency_cdf(path: Path, systems: Mapping[str, Mapping[str, list[tuple[float, float]]]], title: str) -> Path:
    """One panel per system; a curve per offered rate. ``systems``: label -> rate label -> points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    common = common_rate(systems)
    n = max(1, len(systems) + (common is not None))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    panels = list(axes.flat)
    if common is not None:  # first: the systems measured at the rate most share
        ax = panels.pop(0)
        palette = plt.get_cmap("tab10" if len(systems) <= 10 else "tab20")
        for i, (label, curves) in enumerate(systems.items()):
            pts = curves.get(common) or []
            if pts:  # over ten systems: tab20 keeps them apart (the default cycle repeats after ten)
                ax.step([max(p[0], 0.5) for p in pts], [p[1] for p in pts], where="post", label=label,
                        color=palette(i % palette.N), linewidth=1.0,
                        linestyle="-" if label.endswith(" x1") else "--")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.001)
        ax.set_title(f"all systems measured at {int(common):,}/s offered" if common.isdigit() else common,
                     fontsize=10)
        ax.set_xlabel("broker append -> decision appended (ms)")
        ax.set_ylabel("fraction of events")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax, (label, curves) in zip(panels, systems.items()):
        for rate, pts in curves.items():
            if pts:
                xs = [max(p[0], 0.5) for p in pts]
                ax.step(xs, [p[1] for p in pts], where="post", label=f"{rate}/s")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.001)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("broker append -> decision appended (ms)")
        ax.set_ylabel("fraction of events")
        ax.grid(True, which="both", alpha=0.3)
        if any(curves.values()):
            ax.legend(fontsize=7, title="offered", title_fontsize=7)
    for ax in panels[len(systems):]:
        ax.axis("off")
    fig.suptitle(wrap_title(title, 55 * cols), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# One colour per kind of system, the same in every panel (the default cycle repeats after ten).
KIND_COLORS = {"passthrough": "0.35", "streamscore": "C1", "faust": "C2", "quix": "C3"}


def kind_color(label: str) -> str:
    """The colour of the system a label names ("passthrough (...) x1", "streamscore:<id> x2", ...)."""
    kind = label.split(":", 1)[0].split(" ", 1)[0]
    return KIND_COLORS.get(kind, "C0")


def wrap_title(title: str, width: int) -> str:
    return textwrap.fill(title, width=width, break_long_words=False)


def throughput(path: Path, panels: Mapping[str, Mapping[str, tuple[float | None, list[tuple[float, float]]]]],
               title: str) -> Path:
    """Achieved vs offered events/s; each system's measured maximum as a horizontal dashed line.
    One panel per group of systems that ran on the same events with the same worker count
    (``panels``: group title -> system label -> (max events/s, [(offered, achieved)])), so the
    ceiling and the peers of a group share axes and each kind keeps its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False, layout="constrained")
    top = 1.0
    for systems in panels.values():
        for mx, pts in systems.values():
            top = max(top, mx or 0.0, *(p[0] for p in pts), *(p[1] for p in pts))
    low = min([p[0] for systems in panels.values() for _, pts in systems.values() for p in pts] or [100.0])
    lo, hi = 10 ** math.floor(math.log10(max(low, 1.0) / 2)), 10 ** math.ceil(math.log10(top * 1.5))
    for ax, (group, systems) in zip(axes.flat, panels.items()):
        for label, (mx, pts) in systems.items():
            color = kind_color(label)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=label)
            if mx:
                ax.axhline(mx, color=color, linestyle="--", linewidth=0.9)
                ax.annotate(f"{mx:,.0f}/s", (lo * 1.1, mx), fontsize=7, color=color, va="bottom")
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.6, linestyle=":", label="achieved = offered")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("offered events/s")
        ax.set_ylabel("decisions (or records) appended per s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(group, fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(wrap_title(title + " (dashed: each system's maximum, from a pre-produced backlog)",
                            60 * cols), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
