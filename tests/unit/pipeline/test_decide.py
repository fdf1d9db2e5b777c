"""Decide: verdict bands and class maps, reason rules, hard rules, echo and keys, as declared data."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.unit.conftest import ROOT, FakeMessage, FakeModel, good_event, three_verdicts
from workers.events import OnlineFeatures
from workers.model.manifest import OutputSpec, load_manifest
from workers.pipeline.decide import Decider, DecisionError, ModelInfo
from workers.pipeline.decode import Decoder
from workers.pipeline.records import DecisionRecord
from workers.topology import DecisionSpec, Topology

INFO = ModelInfo("m", "1", "fp32", "cpu")
INPUTS = tuple(load_manifest(ROOT / "models", "fraud_mlp", "1", verify_sha256=False).feature_order)
RATIO, COUNTRY = INPUTS.index("event:amount_to_card_avg"), INPUTS.index("event:country_mismatch")


def _batch(topology: Topology, events: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    d = Decoder(topology.input.schema_, topology.input.max_payload_bytes)
    b, dead = d.decode([FakeMessage(orjson.dumps(e), _key=f"k{i}".encode(), _offset=i) for i, e in enumerate(events)])
    assert not dead
    return b


def _decider(topology: Topology, spec: DecisionSpec | None = None, model: FakeModel | None = None) -> Decider:
    return Decider("s", spec or topology.decision, model or FakeModel(INPUTS, {"review": 0.5, "decline": 0.85}),
                   INFO, topology.input.schema_)


def test_bands_from_manifest_thresholds_and_nan_falls_back(topology: Topology) -> None:
    d = _decider(topology)
    s = np.array([0.0, 0.49, 0.5, 0.84, 0.85, 1.0, np.nan], dtype=np.float32)
    assert d.verdicts(s).tolist() == [0, 0, 1, 1, 2, 2, 1]  # fallback_verdict: review


def test_numeric_band_thresholds_override_the_manifest(topology: Topology) -> None:
    spec = three_verdicts(bands=[{"verdict": "review", "from": 0.1}, {"verdict": "decline", "from": 0.2}])
    d = _decider(topology, spec)
    assert d.verdicts(np.array([0.05, 0.15, 0.25], dtype=np.float32)).tolist() == [0, 1, 2]


def test_a_threshold_name_the_manifest_lacks_is_refused(topology: Topology) -> None:
    spec = three_verdicts(bands=[{"verdict": "review", "from": "caution"}])
    with pytest.raises(DecisionError, match="threshold 'caution' is not in model"):
        _decider(topology, spec)


def test_one_record_per_event_schema_flags_reasons(topology: Topology) -> None:
    d = _decider(topology)
    n = 4
    batch = _batch(topology, [good_event(i, trace_id=f"t{i}" if i % 2 else None) for i in range(n)])
    x = np.zeros((n, len(INPUTS)), dtype=np.float32)
    x[1, RATIO] = 10.0
    x[1, COUNTRY] = 1.0
    feats = OnlineFeatures(
        numeric=np.zeros((n, 1), dtype=np.float32), strings={},
        missing={"card_profile": np.array([False, False, True, False])},
        stale={"card_velocity": np.array([False, False, False, True])},
    )
    out = np.array([[0.1], [0.9], [0.6], [np.nan]], dtype=np.float32)
    why = [None, None, None, "engine_error:X"]
    got = d.decide(batch, out, x, feats, why, {"features": 0.1, "inference": 0.2})
    assert len(got.values) == n and got.keys == [b"k0", b"k1", b"k2", b"k3"]
    recs = [DecisionRecord.model_validate_json(v) for v in got.values]
    assert [r.schema_ for r in recs] == ["decision.v1"] * n
    assert [r.verdict for r in recs] == ["approve", "decline", "review", "review"]
    assert recs[1].reasons == ["amount_far_above_card_usual", "country_differs_from_home"]
    assert "missing:card_profile" in recs[2].flags
    assert "stale:card_velocity" in recs[3].flags and "fallback:engine_error:X" in recs[3].flags
    assert recs[3].score is None
    assert got.verdict_counts == {"approve": 1, "review": 2, "decline": 1}
    assert got.fallbacks == 1
    assert [r.source.offset for r in recs] == [0, 1, 2, 3]
    extra = [r.model_extra or {} for r in recs]  # the echoed event fields
    assert [e["event_id"] for e in extra] == ["e0", "e1", "e2", "e3"]
    assert [e["trace_id"] for e in extra] == [None, "t1", None, "t3"]
    assert all(e["card_id"] == "c1" and e["event_time_ms"] == 1_700_000_000_000 for e in extra)


def test_fallback_without_features(topology: Topology) -> None:
    d = _decider(topology)
    batch = _batch(topology, [good_event(i) for i in range(3)])
    out = d.decide(batch, None, None, None, ["deadline"] * 3, {})
    recs = [DecisionRecord.model_validate_json(v) for v in out.values]
    assert all(r.verdict == "review" and r.flags == ["fallback:deadline"] and r.score is None for r in recs)


def test_hard_rules_raise_or_set_the_verdict_and_are_named(topology: Topology) -> None:
    spec = three_verdicts(rules=[
        {"name": "big_amount", "when": {"field": "amount", "op": ">=", "value": 10_000}, "verdict": "review"},
        {"name": "huge_ratio", "when": {"input": "event:amount_to_card_avg", "op": ">", "value": 100},
         "verdict": "decline"},
        {"name": "allow_list", "when": {"field": "country", "op": "==", "value": "VA"}, "verdict": "approve",
         "mode": "exactly"},
    ])
    d = _decider(topology, spec)
    amounts = [5.0, 20_000.0, 20_000.0, 5.0, 5.0]
    batch = _batch(topology, [good_event(i, amount=a, country="VA" if i == 4 else "DE") for i, a in enumerate(amounts)])
    x = np.zeros((5, len(INPUTS)), dtype=np.float32)
    x[2, RATIO] = 500.0
    out = np.array([[0.1], [0.1], [0.1], [0.95], [0.95]], dtype=np.float32)
    recs = [orjson.loads(v) for v in d.decide(batch, out, x, None, [None] * 5, {}).values]
    assert [r["verdict"] for r in recs] == ["approve", "review", "decline", "decline", "approve"]
    assert [r["rules"] for r in recs] == [[], ["big_amount"], ["big_amount", "huge_ratio"], [], ["allow_list"]]
    # at_least never lowers: a declined row with a big amount stays declined
    recs2 = [orjson.loads(v) for v in d.decide(batch, np.full((5, 1), 0.99, np.float32), x, None, [None] * 5, {}).values]
    assert recs2[1]["verdict"] == "decline"


def test_hard_rules_apply_to_fallback_rows_too(topology: Topology) -> None:
    spec = three_verdicts(fallback_verdict="approve", rules=[
        {"name": "big_amount", "when": {"field": "amount", "op": ">=", "value": 10_000}, "verdict": "review"}])
    batch = _batch(topology, [good_event(0, amount=50_000.0), good_event(1, amount=5.0)])
    recs = [orjson.loads(v) for v in _decider(topology, spec).decide(batch, None, None, None, ["deadline"] * 2, {}).values]
    assert [r["verdict"] for r in recs] == ["review", "approve"]


def test_class_probability_models_map_classes_to_verdicts(topology: Topology) -> None:
    model = FakeModel(INPUTS, {}, OutputSpec("probabilities", (-1, 3), "float32", "classes", labels=("ok", "odd", "bad")))
    spec = DecisionSpec.model_validate({"verdicts": ["allow", "step_up", "block"], "fallback_verdict": "step_up",
                                        "classes": {"ok": "allow", "odd": "step_up", "bad": "block"}})
    d = _decider(topology, spec, model)
    batch = _batch(topology, [good_event(i) for i in range(3)])
    out = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [np.nan, np.nan, np.nan]], dtype=np.float32)
    recs = [orjson.loads(v) for v in d.decide(batch, out, None, None, [None, None, "engine_error:X"], {}).values]
    assert [(r["verdict"], r["class"]) for r in recs] == [("allow", "ok"), ("block", "bad"), ("step_up", None)]
    assert recs[0]["score"] == pytest.approx(0.8) and recs[2]["score"] is None
    with pytest.raises(DecisionError, match="map exactly the model's classes"):
        _decider(topology, spec.model_copy(update={"classes": {"ok": "allow", "bad": "block"}}), model)
    with pytest.raises(DecisionError, match="use decision.bands"):
        _decider(topology, spec)  # a one-score model with a class map


def test_decision_key_from_a_field(topology: Topology) -> None:
    d = _decider(topology, three_verdicts(key="merchant_id"))
    batch = _batch(topology, [good_event(0, merchant_id="m7")])
    assert d.decide(batch, np.zeros((1, 1), np.float32), None, None, [None], {}).keys == [b"m7"]


def test_reason_on_a_model_input_the_model_lacks_is_refused(topology: Topology) -> None:
    with pytest.raises(DecisionError, match="is not one of the model's inputs"):
        _decider(topology, model=FakeModel(("f0",), {"review": 0.5, "decline": 0.9}))


@pytest.mark.parametrize(("raw", "msg"), [
    ({"verdicts": ["a", "b"], "bands": [{"verdict": "b", "from": 0.5}], "fallback_verdict": "c"}, "is not one of verdicts"),
    ({"verdicts": ["a", "b"], "bands": [{"verdict": "b", "from": 0.5}], "classes": {"x": "a"}, "fallback_verdict": "a"},
     "not both"),
    ({"verdicts": ["a", "b", "c"], "bands": [{"verdict": "c", "from": 0.2}, {"verdict": "b", "from": 0.5}],
      "fallback_verdict": "a"}, "least to most severe"),
    ({"verdicts": ["a", "b"], "bands": [{"verdict": "b", "from": 0.5}], "fallback_verdict": "a",
      "reasons": {"rules": [{"code": "x", "input": "i", "field": "f", "op": ">", "value": 1}]}}, "exactly one of"),
    ({"verdicts": ["a", "b"], "bands": [{"verdict": "b", "from": 0.5}], "fallback_verdict": "a",
      "rules": [{"name": "r", "when": {"field": "f", "op": ">", "value": "x"}, "verdict": "b"}]}, "== or !="),
])
def test_decision_sections_are_validated(raw: dict[str, object], msg: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=msg):
        DecisionSpec.model_validate(raw)


def test_trace_id_from_the_input_header_when_the_topology_asks(topology: Topology) -> None:
    import jsonschema
    from workers.observe.traces import TRACE_COLUMN
    from workers.pipeline.records import decision_json_schema

    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    spec = topology.decision.model_copy(update={"echo": ("event_id",), "trace_id": True})
    d = _decider(topology, spec)
    batch = _batch(topology, [good_event(i) for i in range(3)])
    col = np.empty(3, dtype=object)
    col[:] = [f"00-{tid}-00f067aa0ba902b7-01".encode(), None, b"not-a-traceparent"]
    batch = type(batch)({**batch.fields, TRACE_COLUMN: col}, batch.nulls, batch.key, batch.topic, batch.partition,
                        batch.offset, batch.received_ns, batch.kafka_ts_ms)
    got = d.decide(batch, np.array([[0.1], [0.2], [0.3]], dtype=np.float32), None, None, [None] * 3, {})
    recs = [orjson.loads(v) for v in got.values]
    assert [r["trace_id"] for r in recs] == [tid, None, None]
    schema = decision_json_schema(topology.model_copy(update={"decision": spec, "id": "s"}))
    for r in recs:
        jsonschema.validate(r, schema)
    # without the option, no key: the records of existing topologies keep their shape
    plain = _decider(topology, topology.decision.model_copy(update={"echo": ("event_id",)}))
    assert "trace_id" not in orjson.loads(plain.decide(batch, None, None, None, ["deadline"] * 3, {}).values[0])


def test_trace_id_and_an_echoed_trace_id_field_are_refused_together() -> None:
    with pytest.raises(ValueError, match="trace_id"):
        three_verdicts(trace_id=True, echo=["trace_id"])


def test_fallback_causes_are_counted_without_the_exception_type(topology: Topology) -> None:
    d = _decider(topology)
    batch = _batch(topology, [good_event(i) for i in range(4)])
    got = d.decide(batch, None, None, None, ["deadline", "engine_error:KeyError", "engine_error:ValueError", None], {})
    assert got.fallbacks == 3 and got.fallback_causes == {"deadline": 1, "engine_error": 2}
