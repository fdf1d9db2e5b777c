"""The worker's scoring path (features -> engine -> decide -> sink) with fakes, no Kafka or Redis.

Covers the batch contract: exactly one decision per event, whatever fails.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decode import Decoder
from workers.events import EventBatch, ObjArray, OnlineFeatures
from workers.pipeline.records import DecisionRecord
from workers.topology import Topology
from workers.pipeline.worker import Worker


class FakeReader:
    join_keys = ["card_id", "merchant_id"]

    def __init__(self, n_numeric: int) -> None:
        self.n = n_numeric
        self.calls = 0

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        self.calls += 1
        rows = len(next(iter(entities.values())))
        return OnlineFeatures(numeric=np.ones((rows, self.n), dtype=np.float32),
                              strings={}, missing={}, stale={})

    def close(self) -> None:
        pass


class FakeEngine:
    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.rows: list[int] = []

    def load(self) -> None:
        pass

    def warm_up(self, batch_sizes: list[int]) -> None:
        pass

    def infer(self, x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        if self.fail:
            raise RuntimeError("GPU fell off the bus")
        self.rows.append(x.shape[0])
        return np.full((x.shape[0], 2), 0.01, dtype=np.float32)  # class probabilities of a binary model

    def describe(self) -> dict[str, Any]:
        return {}


class FakeSink:
    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.offsets: list[int] = []

    def send_decisions(self, keys: Any, values: Any, topics: Any, partitions: Any,
                       offsets: Any, stream_ms: Any, traceparents: Any = None) -> None:
        self.values.extend(values)
        self.traceparents = traceparents
        self.offsets.extend(offsets)


def _worker(topology: Topology, engine: FakeEngine, deadline_ms: int = 0) -> tuple[Worker, FakeSink, FakeReader]:
    t = topology.model_copy(update={"batching": topology.batching.model_copy(
        update={"deadline_ms": deadline_ms})})
    w = Worker(t, reader=FakeReader(17), engine=engine, install_signals=False)
    reader, eng = w._prepare()
    sink = FakeSink()
    w.sink = sink  # type: ignore[assignment]
    assert isinstance(reader, FakeReader)
    return w, sink, reader


def _batch(topology: Topology, n: int, ts: list[int] | None = None) -> EventBatch:
    d = Decoder(topology.input.schema_, topology.input.max_payload_bytes)
    b, dead = d.decode([FakeMessage(orjson.dumps(good_event(i)), _offset=i) for i in range(n)])
    assert not dead
    if ts is not None:
        b = dataclasses.replace(b, kafka_ts_ms=np.asarray(ts, dtype=np.int64))
    return b


def _records(sink: FakeSink) -> list[DecisionRecord]:
    return [DecisionRecord.model_validate_json(v) for v in sink.values]


def test_one_decision_per_event(topology: Topology) -> None:
    w, sink, reader = _worker(topology, FakeEngine())
    w._score(_batch(topology, 10), reader, w._engine)  # type: ignore[arg-type]
    recs = _records(sink)
    assert len(recs) == 10 and sorted(sink.offsets) == list(range(10))
    assert all(r.score == pytest.approx(0.01) and not r.flags for r in recs)


def test_expired_rows_fall_back_without_features_or_engine(topology: Topology) -> None:
    engine = FakeEngine()
    w, sink, reader = _worker(topology, engine, deadline_ms=1000)
    now = time.time_ns() // 1_000_000
    w._score(_batch(topology, 4, ts=[now - 60_000, now, now - 60_000, now]), reader, engine)  # type: ignore[arg-type]
    recs = {r.source.offset: r for r in _records(sink)}
    assert sorted(recs) == [0, 1, 2, 3]
    assert recs[0].flags == ["fallback:deadline"] and recs[0].score is None
    assert recs[0].verdict == topology.decision.fallback_verdict
    assert recs[1].score is not None and recs[1].flags == []
    assert engine.rows == [2]  # only the live rows reached the engine


def test_all_expired_skips_the_store(topology: Topology) -> None:
    engine = FakeEngine()
    w, sink, reader = _worker(topology, engine, deadline_ms=1)
    w._score(_batch(topology, 3, ts=[0, 0, 0]), reader, engine)  # type: ignore[arg-type]
    assert len(sink.values) == 3 and reader.calls == 0 and engine.rows == []


def test_engine_failure_gives_fallback_for_every_row(topology: Topology) -> None:
    engine = FakeEngine(fail=True)
    w, sink, reader = _worker(topology, engine)
    w._score(_batch(topology, 5), reader, engine)  # type: ignore[arg-type]
    recs = _records(sink)
    assert len(recs) == 5
    assert all(r.score is None and r.flags == ["fallback:engine_error:RuntimeError"] for r in recs)


def test_one_bad_row_does_not_fail_its_batch(topology: Topology,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Assembly never emits NaN today; the worker's guard is defence in depth, tested here."""
    engine = FakeEngine()
    w, sink, reader = _worker(topology, engine)
    real = w._assembler.assemble

    def with_nan_row(*args: Any) -> np.ndarray:  # type: ignore[type-arg]
        x = real(*args)
        x[1, 0] = np.nan
        return x

    monkeypatch.setattr(w._assembler, "assemble", with_nan_row)
    w._score(_batch(topology, 3), reader, engine)  # type: ignore[arg-type]
    recs = {r.source.offset: r for r in _records(sink)}
    assert recs[1].flags == ["fallback:invalid_features"] and recs[1].score is None
    assert recs[0].score is not None and recs[2].score is not None
