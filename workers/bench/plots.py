"""PNG plots of a ``bench e2e`` run: latency CDF per system, throughput vs offered rate."""

from __future__ import annotations

import math
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


def latency_cdf(path: Path, systems: Mapping[str, Mapping[str, list[tuple[float, float]]]], title: str) -> Path:
    """One panel per system; a curve per offered rate. ``systems``: label -> rate label -> points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(systems))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (label, curves) in zip(axes.flat, systems.items()):
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
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(path: Path, systems: Mapping[str, tuple[float | None, list[tuple[float, float]]]], title: str) -> Path:
    """Achieved vs offered events/s per system; its measured maximum as a horizontal dashed line.
    ``systems``: label -> (max events/s, [(offered, achieved)])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    top = 1.0
    for i, (label, (mx, pts)) in enumerate(systems.items()):
        color = f"C{i % 10}"
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=label)
            top = max(top, *(p[0] for p in pts), *(p[1] for p in pts))
        if mx:
            ax.axhline(mx, color=color, linestyle="--", linewidth=0.8)
            top = max(top, mx)
    ax.plot([1, top], [1, top], color="grey", linewidth=0.6, linestyle=":", label="achieved = offered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("decisions (or records) appended per s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title + "\n(dashed: each system's maximum, from a pre-produced backlog)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
