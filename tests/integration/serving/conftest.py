"""Serving fixtures on the real broker and Redis: a private models directory (copies of the
committed models, new versions made from them) and a worker running on a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from tests.unit.serving.conftest import copy_version
from workers.dev.producer import event_key, event_source
from workers.pipeline.worker import Worker
from workers.serving.spec import ServingSpec
from workers.settings import Settings
from workers.topology import Topology


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    out = tmp_path / "models"
    for name, v in (("fraud_gbm", "2"), ("fraud_lite", "1"), ("fraud_mlp", "1")):
        copy_version(out, name, v, v)
    copy_version(out, "fraud_gbm", "2", "3")  # the same trees under a new version: a candidate
    return out


@pytest.fixture()
def settings(feature_store: Settings, models: Path) -> Settings:
    return feature_store.model_copy(update={"models_dir": models})


def with_serving(t: Topology, **serving: Any) -> Topology:
    return t.model_copy(update={"serving": ServingSpec.model_validate(serving)})


def produce(settings: Settings, t: Topology, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` events of the topology's generator; seed 7: the world whose features `setup` materialized."""
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    gen = event_source(t, seed, time.time_ns() // 1_000_000)
    out = []
    for _ in range(n):
        ev = dict(next(gen))
        out.append(ev)
        p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev))
    assert p.flush(30) == 0
    return out


class Running:
    """A worker on a thread; ``finish`` stops it once ``expected`` inputs were acknowledged."""

    def __init__(self, w: Worker) -> None:
        self.worker = w
        self.code: list[int] = []
        self._t = threading.Thread(target=lambda: self.code.append(w.run()), daemon=True)
        self._t.start()
        assert w.ready.wait(120), "the worker did not start"

    def wait_for(self, cond: Any, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert self._t.is_alive(), f"the worker stopped while waiting for {what}: {self.worker.error}"
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            time.sleep(0.02)

    def finish(self, expected: int) -> int:
        self.wait_for(lambda: self.worker.done_count() >= expected, f"{expected} acknowledged inputs")
        self.worker.stop()
        self._t.join(120)
        assert not self._t.is_alive() and self.code, "the worker did not stop"
        return self.code[0]


@pytest.fixture()
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:  # a failed test must not leave a worker consuming
        r.worker.stop()
