"""The observer follows a hot-swapped model in streamscore_model_info."""

from __future__ import annotations

from prometheus_client import REGISTRY

from workers.observe.observer import Observer
from workers.settings import Settings
from workers.topology import Topology


def _info(stage: str) -> dict[str, str]:
    for fam in REGISTRY.collect():
        if fam.name == "streamscore_model":
            for s in fam.samples:
                if s.labels.get("stage") == stage:
                    return dict(s.labels)
    return {}


def test_model_info_follows_the_serving_model(topology: Topology) -> None:
    t = topology.model_copy(update={"id": "unit-observer"})
    obs = Observer(t, Settings())
    obs.prepared("fraud_gbm", "2", "fp32", "onnxruntime-cpu", 12.0)
    assert _info("unit-observer")["version"] == "2"
    now = ("fraud_gbm", "3", "fp32", "onnxruntime-cpu")
    obs._model_now = lambda: now
    obs._refresh_ready()
    assert _info("unit-observer")["version"] == "3"
    assert obs.health.ready()[0] is False  # not started: nothing assigned, broker not probed
