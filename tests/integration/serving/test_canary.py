"""A canary rolled back automatically on the real broker: the candidate (v3, the same trees as
v2) is made slow by a test-only engine wrapper that sleeps; its p99 breaches the limit, traffic
returns to v2 with the reason logged and counted, and every event is decided exactly once."""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from tests.integration.conftest import read_all
from tests.integration.serving.conftest import Running, produce, with_serving
from workers.engines import Engine, make_engine
from workers.model.manifest import ModelManifest
from workers.pipeline.records import DecisionRecord
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import ModelSpec, Topology

pytestmark = pytest.mark.integration

SLEEP_S = 0.05  # per candidate batch; the limit below is 5 ms


class Slow:
    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name

    def load(self) -> None:
        self.inner.load()

    def warm_up(self, sizes: list[int]) -> None:
        self.inner.warm_up(sizes)

    def infer(self, x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        time.sleep(SLEEP_S)
        return self.inner.infer(x)

    def describe(self) -> dict[str, Any]:
        return {}


def test_a_slow_canary_is_rolled_back(settings: Settings, it_topology: Topology, running: list[Running],
                                      caplog: pytest.LogCaptureFixture) -> None:
    def engines(spec: ModelSpec, manifest: ModelManifest, max_batch: int) -> Engine:
        e = make_engine(spec, settings.models_dir, max_batch=max_batch, output=manifest.output.name)
        return Slow(e) if spec.version == "3" else e

    t = with_serving(it_topology, canary={
        "model": {"name": "fraud_gbm", "version": "3"}, "fraction": 0.5, "key": "card_id",
        "window_batches": 10, "min_batches": 3, "max_p99_ms": 5.0})
    t = t.model_copy(update={"batching": t.batching.model_copy(update={"max_batch": 64})})
    before = REGISTRY.get_sample_value("streamscore_canary_rollbacks_total",
                                       {"stage": t.id, "model": "fraud_gbm", "version": "3",
                                        "reason": "p99_latency"}) or 0.0
    events = produce(settings, t, 3000)
    r = Running(Worker(t, settings, engine_factory=engines, install_signals=False))
    running.append(r)
    assert r.finish(len(events)) == 0
    c = r.worker.serving.canary if r.worker.serving else None
    assert c is not None and not c.active and c.rolled_back_reason == "p99_latency"
    assert "canary fraud_gbm v3 rolled back to the live model (p99_latency)" in caplog.text
    assert REGISTRY.get_sample_value("streamscore_canary_rollbacks_total", {
        "stage": t.id, "model": "fraud_gbm", "version": "3", "reason": "p99_latency"}) == before + 1

    recs = [DecisionRecord.model_validate_json(m.value()) for m in read_all(settings, t.output.topic)]
    assert sorted((x.model_extra or {})["event_id"] for x in recs) == sorted(e["event_id"] for e in events)
    by3 = [x for x in recs if x.model.version == "3"]
    assert len(by3) == c.rows and 0 < len(by3) < len(recs)

    def picked(card: str) -> bool:
        return zlib.crc32(card.encode()) % 10_000 < 5_000

    assert all(picked((x.model_extra or {})["card_id"]) for x in by3)  # only the canary's entities
    # after the rollback the canary's entities are decided by v2 again
    assert any(picked((x.model_extra or {})["card_id"]) for x in recs if x.model.version == "2")
