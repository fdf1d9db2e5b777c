"""Prometheus metrics of model serving, updated once per batch (never per event)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_SCORES = tuple(round(0.1 * i, 1) for i in range(1, 11))

MODEL_SWAPS = Counter("streamscore_model_swaps_total", "Live model swapped in", ["stage", "model", "version"])
MODEL_REFUSED = Counter("streamscore_model_refused_total", "New live model refused; the old one keeps serving",
                        ["stage", "model", "version", "reason"])
LIVE_VERSION = Gauge("streamscore_model_live_info", "1 for the model version now serving", ["stage", "model", "version"])
INFERENCE_SECONDS = Histogram("streamscore_model_inference_seconds", "Engine time per batch, per model",
                              ["stage", "model", "version", "role"], buckets=_LATENCY)
ROWS = Counter("streamscore_model_rows_total", "Rows decided, per model and role",
               ["stage", "model", "version", "role"])
CACHE_LOOKUPS = Counter("streamscore_prediction_cache_lookups_total", "Prediction cache lookups",
                        ["stage", "result"])
CANARY_ROLLBACKS = Counter("streamscore_canary_rollbacks_total", "Canary traffic returned to the live model",
                           ["stage", "model", "version", "reason"])
CANARY_ACTIVE = Gauge("streamscore_canary_active", "1 while a canary decides its fraction", ["stage", "model", "version"])
SHADOW_SCORES = Histogram("streamscore_shadow_score", "Scores of shadowed rows, live beside shadow",
                          ["stage", "model", "version", "role"], buckets=_SCORES)
SHADOW_ABS_DIFF = Histogram("streamscore_shadow_abs_diff", "|shadow score - live score| per shadowed row",
                            ["stage"], buckets=(0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0))
SHADOW_DROPPED = Counter("streamscore_shadow_dropped_batches_total", "Shadow batches dropped: queue full",
                         ["stage"])
