"""The one-line status an operator sees every ``status_interval_s``: rate, e2e p99, lag, degraded.

Computed on a background thread from counters the worker keeps anyway and from the end-to-end
latency histogram (p99 over the interval, as the upper bound of its bucket, like Prometheus'
``histogram_quantile`` reads it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.observe import metrics

log = logging.getLogger("workers.status")


@dataclass(frozen=True)
class Counts:
    consumed: int
    decisions: int
    dead_letters: int
    degraded: int
    fallbacks: int
    lag: int | None
    paused: bool


def bucket_quantile(bounds: list[float], counts: npt.NDArray[np.int64], q: float) -> float | None:
    """``q``-quantile of per-bucket counts (last bucket +Inf) as its bucket's upper bound."""
    total = int(counts.sum())
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
    return bounds[i] if i < len(bounds) else float("inf")


class StatusReporter:
    def __init__(self, stage: str, counts: Callable[[], Counts], interval_s: float) -> None:
        self._stage = stage
        self._counts = counts
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="observe-status", daemon=True)
        self._bounds = list(metrics.SECONDS_BUCKETS)
        self._prev = (counts(), self._e2e_counts(), time.monotonic())

    def start(self) -> None:
        if self._interval_s > 0:
            self._thread.start()

    def interrupt(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> bool:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _e2e_counts(self) -> npt.NDArray[np.int64]:
        return metrics.E2E_SECONDS.counts((self._stage,))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.report()

    def report(self) -> dict[str, object]:
        """Log the status since the previous report (or since the reporter was made)."""
        now = self._counts()
        e2e = self._e2e_counts()
        t = time.monotonic()
        prev, prev_e2e, prev_t = self._prev
        dt = max(t - prev_t, 1e-9)
        decided = now.decisions - prev.decisions
        p99 = bucket_quantile(self._bounds, e2e - prev_e2e, 0.99)
        degraded = (now.degraded - prev.degraded) / decided if decided else 0.0
        fields: dict[str, object] = {
            "event": "status",
            "rate_per_s": round((now.consumed - prev.consumed) / dt, 1),
            "decisions_per_s": round(decided / dt, 1),
            "dead_letters": now.dead_letters - prev.dead_letters,
            "e2e_p99_ms_at_most": None if p99 is None else round(p99 * 1e3, 3),
            "lag": now.lag,
            "degraded_share": round(degraded, 4),
            "fallback_share": round((now.fallbacks - prev.fallbacks) / decided, 4) if decided else 0.0,
            "paused": now.paused,
        }
        log.info("status: %.0f events/s, e2e p99 <= %s, lag %s, degraded %.1f%%",
                 fields["rate_per_s"], "n/a" if p99 is None else f"{p99 * 1e3:g} ms",
                 "n/a" if now.lag is None else now.lag, 100 * degraded, extra={"fields": fields})
        self._prev = (now, e2e, t)
        return fields
