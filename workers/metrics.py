"""Prometheus metrics, updated once per batch (never per event) and served by a background thread."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

EVENTS = Counter("streamscore_events_total", "Input messages consumed", ["stage"])
DECISIONS = Counter("streamscore_decisions_total", "Decisions produced", ["stage", "verdict"])
DEAD_LETTERS = Counter("streamscore_dead_letters_total", "Dead-lettered inputs", ["stage", "reason"])
FEATURES_UNAVAILABLE = Counter(
    "streamscore_features_unavailable_rows_total",
    "Rows whose online store could not be read, by cause (unreachable, timeout, auth, loading, empty_store, error)",
    ["stage", "cause"])
FALLBACKS = Counter("streamscore_fallbacks_total", "Fallback decisions", ["stage"])
BATCH_SECONDS = Histogram(
    "streamscore_batch_seconds", "Features + engine + decide per micro-batch", ["stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def start_metrics_server(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")
