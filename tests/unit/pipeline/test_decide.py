from __future__ import annotations

import numpy as np
import orjson

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decide import REASON_RULES, Decider, ModelInfo
from workers.pipeline.decode import Decoder
from workers.events import OnlineFeatures
from workers.pipeline.records import DecisionRecord
from workers.topology import Topology


def _batch(topology: Topology, n: int):  # type: ignore[no-untyped-def]
    d = Decoder(topology.input.schema_, topology.input.max_payload_bytes)
    b, dead = d.decode([FakeMessage(orjson.dumps(good_event(i)), _offset=i) for i in range(n)])
    assert not dead
    return b


def test_verdicts_follow_policy_and_nan_falls_back(topology: Topology) -> None:
    d = Decider("s", topology.policy.resolved(0.5, 0.85), ModelInfo("m", "1", "fp32", "cpu"), [])
    s = np.array([0.0, 0.49, 0.5, 0.84, 0.85, 1.0, np.nan], dtype=np.float32)
    assert d.verdicts(s).tolist() == [0, 0, 1, 1, 2, 2, 1]  # fallback_verdict: review


def test_one_record_per_event_schema_flags_reasons(topology: Topology) -> None:
    names = [c for _, c, _ in REASON_RULES]
    d = Decider("fraud-scorer", topology.policy.resolved(0.5, 0.85),
                ModelInfo("fraud_mlp", "1", "fp32", "cpu"), names)
    n = 4
    batch = _batch(topology, n)
    x = np.zeros((n, len(names)), dtype=np.float32)
    x[1, names.index("event:amount_to_card_avg")] = 10.0
    x[1, names.index("event:country_mismatch")] = 1.0
    feats = OnlineFeatures(
        numeric=np.zeros((n, 1), dtype=np.float32), strings={},
        missing={"card_profile": np.array([False, False, True, False])},
        stale={"card_velocity": np.array([False, False, False, True])},
    )
    scores = np.array([0.1, 0.9, 0.6, np.nan], dtype=np.float32)
    why = [None, None, None, "engine_error:X"]
    out = d.decide(batch, scores, x, feats, why, {"features": 0.1, "inference": 0.2})
    assert len(out.values) == n and len(out.keys) == n
    recs = [DecisionRecord.model_validate_json(v) for v in out.values]
    assert [r.verdict for r in recs] == ["approve", "decline", "review", "review"]
    assert recs[1].reasons == ["amount_far_above_card_usual", "country_differs_from_home"]
    assert "missing:card_profile" in recs[2].flags
    assert "stale:card_velocity" in recs[3].flags and "fallback:engine_error:X" in recs[3].flags
    assert recs[3].score is None
    assert out.verdict_counts == {"approve": 1, "review": 2, "decline": 1}
    assert out.fallbacks == 1
    assert [r.source.offset for r in recs] == [0, 1, 2, 3]


def test_fallback_without_features(topology: Topology) -> None:
    d = Decider("s", topology.policy.resolved(0.5, 0.85), ModelInfo("m", "1", "fp32", "cpu"), [])
    batch = _batch(topology, 3)
    out = d.decide(batch, np.full(3, np.nan, dtype=np.float32), None, None, ["deadline"] * 3, {})
    recs = [DecisionRecord.model_validate_json(v) for v in out.values]
    assert all(r.verdict == "review" and r.flags == ["fallback:deadline"] for r in recs)
