"""The bulk histogram counts like prometheus-client's Histogram, and the exposition passes promtool."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from workers.observe.metrics import SECONDS_BUCKETS, BulkHistogram, StageMetrics, FALLBACKS


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    out = {}
    for fam in registry.collect():
        for s in fam.samples:
            if s.name.startswith(name):
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


def test_bulk_histogram_matches_prometheus_histogram() -> None:
    values = np.concatenate([np.random.default_rng(1).exponential(0.01, 5000),
                             np.asarray(SECONDS_BUCKETS), [0.0, 20.0]])  # bounds themselves: `le`
    bulk_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("lat_seconds", "x", ["stage"], SECONDS_BUCKETS, registry=bulk_reg)
    ref = Histogram("lat_seconds", "x", ["stage"], buckets=SECONDS_BUCKETS, registry=ref_reg)
    for chunk in np.array_split(values, 7):
        bulk.observe_many(("s",), chunk)
    for v in values.tolist():
        ref.labels("s").observe(v)
    got, want = _samples(bulk_reg, "lat_seconds"), _samples(ref_reg, "lat_seconds")
    want = {k: v for k, v in want.items() if not k[0].endswith("_created")}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k]), k
    assert bulk.counts(("s",)).sum() == values.size


def test_exposition_passes_promtool() -> None:
    m = StageMetrics("unit-promtool")
    m.consumed(3)
    m.acked(np.asarray([0.001, 0.2, 3.0]))
    m.scored(3, 0.004, {"features": 1.0, "assemble": 0.1, "inference": 2.0, "decide": 0.5, "produce": 0.2})
    m.decided({"approve": 2, "review": 1}, {"engine_error": 1})
    m.model_info("fraud_gbm", "2", "fp32", "onnxruntime-cpu", 250)
    text = generate_latest()
    assert shutil.which("promtool"), "promtool not found: apt-get install -y prometheus (.ci/run installs it)"
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_fallbacks_are_counted_by_cause() -> None:
    m = StageMetrics("unit-fallbacks")
    m.decided({"review": 3}, {"deadline": 1, "engine_error": 2})
    assert FALLBACKS.labels("unit-fallbacks", "engine_error")._value.get() == 2
    assert FALLBACKS.labels("unit-fallbacks", "deadline")._value.get() == 1
