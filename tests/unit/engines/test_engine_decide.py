"""The batch contract at the engine/decide level: one decision per event, fallbacks flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.unit.conftest import FakeModel, three_verdicts
from tests.unit.engines.conftest import rows
from workers.engines.onnx_cpu import OnnxCpuEngine
from workers.events import EventBatch
from workers.pipeline.decide import Decider, ModelInfo
from workers.schema import EventSchema, FieldSpec

SCHEMA = EventSchema(name="t", version=1, fields={"event_id": FieldSpec(type="string")})
SPEC = three_verdicts()


def events(n: int) -> EventBatch:
    i = np.arange(n, dtype=np.int64)
    return EventBatch(
        {"event_id": np.array([f"e{k}" for k in range(n)], dtype=object)}, {},
        key=np.full(n, b"k", dtype=object), topic=np.full(n, "transactions", dtype=object),
        partition=np.zeros(n, np.int64), offset=i, received_ns=np.zeros(n, np.int64),
        kafka_ts_ms=np.zeros(n, np.int64),
    )


def decider() -> Decider:
    return Decider("test", SPEC, FakeModel(), ModelInfo("tiny", "1", "fp32", "onnxruntime-cpu"), SCHEMA)


def records(values: list[bytes]) -> list[dict[str, object]]:
    return [orjson.loads(v) for v in values]


@pytest.mark.parametrize("n", [1, 7, 256])
def test_exactly_one_decision_per_event_in_order(tiny_path: Path, n: int) -> None:
    engine = OnnxCpuEngine(tiny_path)
    engine.load()
    x = rows(n)
    batch = events(n)
    out = engine.infer(x)
    assert out.shape == (n, 1)
    d = decider().decide(batch, out, x, None, [None] * n, {})
    recs = records(d.values)
    assert len(recs) == len(d.keys) == n
    assert [r["event_id"] for r in recs] == batch.column("event_id").tolist()
    assert sum(d.verdict_counts.values()) == n and d.fallbacks == 0
    assert all(r["verdict"] in SPEC.verdicts for r in recs)


def test_engine_error_gives_every_row_the_fallback_verdict() -> None:
    # What the worker does when engine.infer raises: NaN outputs and one reason for every row.
    n = 5
    d = decider().decide(events(n), np.full((n, 1), np.nan, dtype=np.float32), None, None,
                         ["engine_error:RuntimeError"] * n, {})
    recs = records(d.values)
    assert len(recs) == n and d.fallbacks == n
    assert {r["verdict"] for r in recs} == {SPEC.fallback_verdict}
    assert all(r["score"] is None and "fallback:engine_error:RuntimeError" in r["flags"] for r in recs)  # type: ignore[operator]


def test_one_bad_row_falls_back_alone(tiny_path: Path) -> None:
    engine = OnnxCpuEngine(tiny_path)
    engine.load()
    n = 6
    x = rows(n)
    out = engine.infer(x)
    out[2] = np.nan  # as the worker marks a row with non-finite features
    why: list[str | None] = [None] * n
    why[2] = "invalid_features"
    recs = records(decider().decide(events(n), out, x, None, why, {}).values)
    assert len(recs) == n
    assert recs[2]["verdict"] == "review" and recs[2]["flags"] == ["fallback:invalid_features"]
    assert all(r["score"] is not None and r["flags"] == [] for i, r in enumerate(recs) if i != 2)
