"""The observer follows a hot-swapped model in streamscore_model_info; its stop is bounded."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from prometheus_client import REGISTRY

from workers.observe.health import Prober
from workers.observe.observer import Observer
from workers.observe.status import Counts
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


def test_stop_is_bounded_by_the_deadline_while_a_probe_waits_on_the_broker(
        topology: Topology, caplog: pytest.LogCaptureFixture) -> None:
    """The broker down: the lag read inside the probe thread waits out its own timeout. The stop's
    last step does not wait past the grace deadline for it (CI saw a SIGTERM'd worker exit 5 s late)."""
    t = topology.model_copy(update={"id": "unit-observer-stop"})
    s = Settings(kafka_bootstrap="127.0.0.1:1", probe_interval_s=0.05, status_interval_s=0.05)
    obs = Observer(t, s, serve=False)
    in_call, release = threading.Event(), threading.Event()

    def stuck_refresh() -> bool:  # a committed() / watermark call on an unreachable broker
        in_call.set()
        release.wait(10)
        return False

    counts = lambda: Counts(0, 0, 0, 0, 0, None, False)  # noqa: E731
    obs.start(lambda: [("tx", 0)], counts)
    assert obs.lag is not None
    obs.lag.refresh = stuck_refresh  # type: ignore[method-assign]
    assert in_call.wait(5)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="workers.worker"):
        obs.stopped({"consumed": 0}, time.monotonic() + 0.5)
    took = time.monotonic() - t0
    release.set()
    assert took < 2.0, took
    assert "not waiting for probes" in caplog.text
    assert "stopped: consumed=0" in caplog.text


def test_a_stopped_prober_runs_its_clean_up_on_its_own_thread() -> None:
    ran: list[str] = []
    p = Prober([lambda: None], 0.01, at_exit=lambda: ran.append(threading.current_thread().name))
    p.start()
    assert p.stop(2.0)
    assert ran == ["observe-probe"]
