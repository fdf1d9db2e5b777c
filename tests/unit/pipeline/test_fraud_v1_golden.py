"""The move to the topology-driven core changes no fraud decision.

``tests/data/fraud_v1_golden.jsonl.gz`` holds 1,526 events (a stream slice, unknown cards and
merchants, stale velocity, one degraded batch, extreme amounts), the online features a reader
returned for each, and the decision the pre-generic worker (commit 183ce49) made with fraud_mlp v1.
Here the same events go through today's worker scoring path (decode -> features -> assemble ->
ONNX Runtime -> decide), with the reader replaying those features, and must give the same scores,
verdicts, reasons, flags and echoed fields, batch by batch.

The topology's hard rules came with the fix of v1's flaw (fraud_gbm v2); the old worker had none,
so they are left out here.
"""

from __future__ import annotations

import gzip
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.unit.conftest import FakeMessage
from workers.events import ObjArray, OnlineFeatures
from workers.pipeline.decode import Decoder
from workers.pipeline.worker import Worker
from workers.topology import Topology

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "fraud_v1_golden.jsonl.gz"
BATCH = 256
VIEWS = ("card_profile", "merchant_risk", "card_velocity")


def _rows() -> list[dict[str, Any]]:
    with gzip.open(GOLDEN) as f:
        return [orjson.loads(line) for line in f][1:]  # line 0 says how it was made


class ReplayReader:
    """Hands out the recorded features of each batch, in order (the old reader's answers)."""

    def __init__(self, batches: deque[OnlineFeatures]) -> None:
        self.batches = batches
        self.join_keys = ["card_id", "merchant_id"]

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        got = self.batches.popleft()
        assert len(got) == len(entities["card_id"])
        return got

    def close(self) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.keys: list[bytes | None] = []

    def send_decisions(self, keys: Any, values: Any, *rest: Any) -> None:
        self.keys.extend(keys)
        self.values.extend(values)


def _features(rows: list[dict[str, Any]], numeric: tuple[str, ...], strings: tuple[str, ...]) -> OnlineFeatures:
    n = len(rows)
    return OnlineFeatures(
        numeric=np.array([[r["online"][k] for k in numeric] for r in rows], dtype=np.float32),
        strings={k: np.array([r["online"][k] for r in rows], dtype=object) for k in strings},
        missing={v: np.array([v in r["missing"] for r in rows], dtype=bool) for v in VIEWS},
        stale={v: np.array([v in r["stale"] for r in rows], dtype=bool) for v in VIEWS},
        degraded=bool(rows[0]["degraded"]),
    ) if n else OnlineFeatures(np.empty((0, len(numeric)), np.float32), {}, {}, {})


def test_fraud_v1_decisions_equal_the_pre_generic_workers(topology: Topology) -> None:
    rows = _rows()
    t = topology.model_copy(update={
        "model": topology.model.model_copy(update={"name": "fraud_mlp", "version": "1"}),
        "decision": topology.decision.model_copy(update={"rules": ()}),
        # The old worker scored rows it could not read with defaults (fails open; now a policy).
        "features": topology.features.model_copy(update={"on_unavailable": "score_with_defaults"}),
    })
    chunks = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]
    reader = ReplayReader(deque())
    w = Worker(t, reader=reader, install_signals=False)
    reader.batches.extend(_features(c, w.manifest.online_numeric, w.manifest.online_strings) for c in chunks)
    r, engine = w._prepare()
    sink = ListSink()
    w.sink = sink  # type: ignore[assignment]
    decoder = Decoder(t.input.schema_, t.input.max_payload_bytes)
    offset = 0
    for c in chunks:
        msgs = []
        for row in c:
            msgs.append(FakeMessage(orjson.dumps(row["event"]), _key=row["key"].encode(), _offset=offset,
                                    _partition=offset % 6))
            offset += 1
        batch, dead = decoder.decode(msgs)
        assert not dead
        w._score(batch, r, engine)
    assert not reader.batches
    assert len(sink.values) == len(rows)
    same = ("schema", "event_id", "card_id", "merchant_id", "score", "verdict", "model", "reasons", "flags",
            "event_time_ms", "trace_id", "stage")
    mismatches = []
    for row, value, key in zip(rows, sink.values, sink.keys):
        got = orjson.loads(value)
        got["flags"] = [f for f in got["flags"] if not f.startswith("unavailable:")]  # a flag added since
        want = row["decision"]
        assert key == row["key"].encode()
        diff = {k: (got.get(k), want[k]) for k in same if got.get(k) != want[k]}
        if diff:
            mismatches.append((want["event_id"], diff))
        assert got["rules"] == []
    assert mismatches == [], f"{len(mismatches)} of {len(rows)} decisions differ, e.g. {mismatches[:3]}"
    verdicts = {row["decision"]["verdict"] for row in rows}
    assert verdicts == {"approve", "review", "decline"}  # the golden set exercises every verdict
