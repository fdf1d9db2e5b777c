"""Prometheus metrics of the worker, updated once per batch (never once per event).

Every series is labelled by the topology's stage id (``stage``). Times are in seconds, with
buckets that resolve 50 µs to 10 s. End-to-end latency (Kafka record timestamp -> decision
acknowledged) is a value per event, but prometheus-client has no bulk ``observe``: ``BulkHistogram``
adds a numpy histogram of a whole batch of values to its cumulative bucket counts in one call
(``observe_many``), and is exposed like any histogram. Served with ``/healthz`` and ``/readyz``
by ``workers.observe.health``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# 1-2.5-5 steps from 50 µs to 10 s: a p99 of 3 ms and one of 3 s are both readable.
SECONDS_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS = tuple(float(2**k) for k in range(0, 17))  # 1 .. 65536 rows

# Per-batch steps of the worker, in the order of an event's path.
STEPS = ("consume", "decode", "features", "assemble", "inference", "decide", "produce", "commit")


class BulkHistogram(Collector):
    """A labelled histogram fed a numpy array of observations at a time.

    One ``observe_many`` is a ``searchsorted`` and a ``bincount`` (~5 µs for 256 values) under a
    lock, instead of 256 ``Histogram.observe`` calls (~0.5 µs each, each taking a lock).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry | None = REGISTRY) -> None:
        self._name = name
        self._doc = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._lock = threading.Lock()
        # label values -> (counts per bucket + one for +Inf, sum of observations)
        self._series: dict[tuple[str, ...], tuple[npt.NDArray[np.int64], list[float]]] = {}
        if registry is not None:
            registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: npt.NDArray[np.float64]) -> None:
        if values.size == 0:
            return
        # `le` buckets: a value equal to a bound counts in that bound's bucket.
        idx = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(idx, minlength=self._bounds.size + 1)
        total = float(values.sum())
        with self._lock:
            s = self._series.get(labels)
            if s is None:
                s = self._series[labels] = (np.zeros(self._bounds.size + 1, np.int64), [0.0])
            s[0][:] += counts
            s[1][0] += total

    def counts(self, labels: tuple[str, ...]) -> npt.NDArray[np.int64]:
        """Observations per bucket (not cumulative; the last is +Inf) of one series so far."""
        with self._lock:
            s = self._series.get(labels)
            return s[0].copy() if s is not None else np.zeros(self._bounds.size + 1, np.int64)

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            snapshot = [(k, c.copy(), s[0]) for k, (c, s) in self._series.items()]
        for labels, counts, total in snapshot:
            cum = np.cumsum(counts).tolist()
            buckets = [(_le(b), float(c)) for b, c in zip(self._bounds.tolist(), cum)]
            buckets.append(("+Inf", float(cum[-1])))
            fam.add_metric(list(labels), buckets, total)
        return [fam]


def _le(bound: float) -> str:
    return repr(float(bound))


EVENTS = Counter("streamscore_events_total", "Input messages consumed", ["stage"])
DECISIONS = Counter("streamscore_decisions_total", "Decisions produced, by verdict", ["stage", "verdict"])
DEAD_LETTERS = Counter("streamscore_dead_letters_total", "Dead-lettered inputs, by reason", ["stage", "reason"])
FALLBACKS = Counter("streamscore_fallbacks_total", "Fallback decisions, by cause", ["stage", "cause"])
DEGRADED = Counter("streamscore_degraded_rows_total",
                   "Rows scored with default features because the store could not be read", ["stage"])
MISSING = Counter("streamscore_feature_missing_total",
                  "Rows whose entity had no value in a feature view (defaults used)", ["stage", "view"])
STALE = Counter("streamscore_feature_stale_total",
                "Rows whose feature value was older than the view's TTL (defaults used)", ["stage", "view"])
FEATURES_UNAVAILABLE = Counter(
    "streamscore_features_unavailable_rows_total",
    "Rows whose online store could not be read, by cause (unreachable, timeout, auth, loading, empty_store, error)",
    ["stage", "cause"])
CACHE_HITS = Counter("streamscore_feature_cache_hits_total", "In-process feature cache hits", ["stage"])
CACHE_MISSES = Counter("streamscore_feature_cache_misses_total", "In-process feature cache misses", ["stage"])

E2E_SECONDS = BulkHistogram(
    "streamscore_e2e_latency_seconds",
    "Kafka record timestamp -> decision acknowledged by the broker, per event",
    ["stage"], SECONDS_BUCKETS,
)
STEP_SECONDS = Histogram("streamscore_step_seconds", "Time per micro-batch in each step of the worker",
                         ["stage", "step"], buckets=SECONDS_BUCKETS)
BATCH_SECONDS = Histogram("streamscore_batch_seconds", "Features + engine + decide per micro-batch",
                          ["stage"], buckets=SECONDS_BUCKETS)
BATCH_SIZE = Histogram("streamscore_batch_size", "Events per scored micro-batch", ["stage"],
                       buckets=BATCH_SIZE_BUCKETS)

LAG = Gauge("streamscore_consumer_lag", "Messages behind the partition's end (high watermark - committed)",
            ["stage", "topic", "partition"])
QUEUE_DEPTH = Gauge("streamscore_scoring_queue_depth", "Micro-batches waiting for the scoring thread", ["stage"])
PAUSED = Gauge("streamscore_paused_partitions", "Input partitions paused by backpressure", ["stage"])
IN_FLIGHT = Gauge("streamscore_in_flight_messages",
                  "Consumed messages whose decision or dead letter is not acknowledged yet", ["stage"])
READY = Gauge("streamscore_ready", "1 while /readyz answers ready", ["stage"])
LATENCY_BUDGET = Gauge("streamscore_latency_budget_seconds",
                       "The end-to-end latency budget of the stage (setting latency_budget_ms)", ["stage"])
MODEL = Info("streamscore_model", "The model a stage serves", ["stage"])
LOG_DROPPED = Counter("streamscore_log_records_dropped_total",
                      "Log records dropped because the log queue was full")
AUDIT_DROPPED = Counter("streamscore_audit_records_dropped_total",
                        "Decision audit records dropped because the audit queue was full", ["stage"])
AUDIT_WRITTEN = Counter("streamscore_audit_records_total", "Decision audit records written", ["stage"])


class StageMetrics:
    """The metrics of one stage id, with their label children bound once (a ``labels()`` lookup
    costs about a microsecond; the hot path calls these per batch)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._events = EVENTS.labels(stage)
        self._degraded = DEGRADED.labels(stage)
        self._cache_hits = CACHE_HITS.labels(stage)
        self._cache_misses = CACHE_MISSES.labels(stage)
        self._steps = {s: STEP_SECONDS.labels(stage, s) for s in STEPS}
        self._batch = BATCH_SECONDS.labels(stage)
        self._size = BATCH_SIZE.labels(stage)
        self._queue = QUEUE_DEPTH.labels(stage)
        self._paused = PAUSED.labels(stage)
        self._in_flight = IN_FLIGHT.labels(stage)
        self._e2e_labels = (stage,)
        self.ready = READY.labels(stage)
        self._children: dict[tuple[object, str], Any] = {}  # (metric, label) -> bound child

    def _child(self, metric: Counter, label: str) -> Any:
        c = self._children.get((metric, label))
        if c is None:
            c = self._children[(metric, label)] = metric.labels(self.stage, label)
        return c

    def consumed(self, n: int) -> None:
        self._events.inc(n)

    def step(self, name: str, seconds: float) -> None:
        self._steps[name].observe(seconds)

    def scored(self, rows: int, seconds: float, timings_ms: dict[str, float]) -> None:
        """One scored micro-batch: its size, its time and its steps' times (``timings_ms``)."""
        self._size.observe(rows)
        self._batch.observe(seconds)
        for k, v in timings_ms.items():
            h = self._steps.get(k)
            if h is not None:
                h.observe(v / 1e3)

    def features(self, rows: int, degraded: bool, missing: dict[str, npt.NDArray[np.bool_]],
                 stale: dict[str, npt.NDArray[np.bool_]], extra: dict[str, float]) -> None:
        if degraded:
            self._degraded.inc(rows)
            return  # a degraded batch counts every row missing: that is the degraded count
        for view, mask in missing.items():
            k = int(np.count_nonzero(mask))
            if k:
                self._child(MISSING, view).inc(k)
        for view, mask in stale.items():
            k = int(np.count_nonzero(mask))
            if k:
                self._child(STALE, view).inc(k)
        hits = extra.get("cache_hits")
        if hits:
            self._cache_hits.inc(hits)
        misses = extra.get("cache_misses")
        if misses:
            self._cache_misses.inc(misses)

    def unavailable(self, rows: int, cause: str) -> None:
        """Rows decided by the degraded-mode policy because the store could not be read."""
        self._child(FEATURES_UNAVAILABLE, cause).inc(rows)

    def decided(self, verdict_counts: dict[str, int], fallback_causes: dict[str, int]) -> None:
        for verdict, c in verdict_counts.items():
            if c:
                self._child(DECISIONS, verdict).inc(c)
        for cause, c in fallback_causes.items():
            self._child(FALLBACKS, cause).inc(c)

    def dead(self, reasons: dict[str, int]) -> None:
        for r, c in reasons.items():
            self._child(DEAD_LETTERS, r).inc(c)

    def acked(self, latency_s: npt.NDArray[np.float64]) -> None:
        E2E_SECONDS.observe_many(self._e2e_labels, latency_s)

    def gauges(self, queue_depth: int, paused_partitions: int, in_flight: int) -> None:
        self._queue.set(queue_depth)
        self._paused.set(paused_partitions)
        self._in_flight.set(in_flight)

    def model_info(self, name: str, version: str, variant: str, engine: str, budget_ms: float) -> None:
        MODEL.labels(self.stage).info({"model": name, "version": version, "variant": variant, "engine": engine})
        LATENCY_BUDGET.labels(self.stage).set(budget_ms / 1e3)
