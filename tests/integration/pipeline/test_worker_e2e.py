"""End to end on the real broker and Redis, for BOTH example pipelines on the one generic core:
N good + M malformed in -> N decisions + M dead letters, every decision in its topology's schema,
keyed as it says, scored as a direct ONNX Runtime run on the same features would score it."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Producer

from tests.integration.conftest import committed_offsets, end_offsets, read_all
from workers.dev.producer import MALFORMED_KINDS, event_key, event_source, get_path, malformed
from workers.features.feast_sdk import FeastSdkReader
from workers.model.inputs import Assembler
from workers.model.manifest import load_manifest
from workers.pipeline import deadletter
from workers.pipeline.decode import Decoder
from workers.pipeline.records import DecisionRecord, decision_json_schema
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology

pytestmark = pytest.mark.integration

N_GOOD = 1500
M_PER_KIND = 3


def _produce(settings: Settings, topology: Topology, seed: int = 11) -> tuple[list[dict[str, Any]], list[tuple[bytes, str]]]:
    """Good events from the topology's own generator, and M malformed ones of every kind its schema allows."""
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    events = event_source(topology, seed, time.time_ns() // 1_000_000)
    schema, limit = topology.input.schema_, topology.input.max_payload_bytes
    kinds = [k for k in MALFORMED_KINDS if malformed({}, k, schema, limit) is not None]
    good: list[dict[str, Any]] = []
    bad: list[tuple[bytes, str]] = []
    for i in range(N_GOOD):
        ev = dict(next(events))
        good.append(ev)
        p.produce(topology.input.topic, orjson.dumps(ev), event_key(topology, ev))
        if i % 50 == 0 and len(bad) < M_PER_KIND * len(kinds):
            made = malformed(ev, kinds[len(bad) % len(kinds)], schema, limit)
            assert made is not None
            bad.append(made)
            p.produce(topology.input.topic, made[0], b"bad")
    while len(bad) < M_PER_KIND * len(kinds):
        made = malformed(good[0], kinds[len(bad) % len(kinds)], schema, limit)
        assert made is not None
        bad.append(made)
        p.produce(topology.input.topic, made[0], b"bad")
    assert p.flush(30) == 0
    return good, bad


class _M:
    """A message as decode sees it."""

    def __init__(self, v: bytes) -> None:
        self._v = v

    def value(self) -> bytes:
        return self._v

    def key(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def error(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


@pytest.fixture(params=["fraud", "ato"])
def pipeline(request: pytest.FixtureRequest) -> tuple[Settings, Topology]:
    if request.param == "fraud":
        return request.getfixturevalue("feature_store"), request.getfixturevalue("it_topology")
    return request.getfixturevalue("ato_store"), request.getfixturevalue("ato_topology")


def test_good_and_malformed_events_end_to_end(pipeline: tuple[Settings, Topology]) -> None:
    settings, t = pipeline
    good, bad = _produce(settings, t)
    total = len(good) + len(bad)

    w = Worker(t, settings, max_events=total, idle_exit_s=60, install_signals=False)
    assert w.run() == 0
    manifest = w.manifest

    # exactly N decisions, every one in the topology's documented schema, keyed as it says
    decisions = read_all(settings, t.output.topic)
    assert len(decisions) == len(good)
    schema = decision_json_schema(t)
    recs = []
    for m in decisions:
        doc = orjson.loads(m.value())
        jsonschema.validate(doc, schema)
        recs.append(DecisionRecord.model_validate_json(m.value()))
    by_id = {(r.model_extra or {})["event_id"]: r for r in recs}
    assert set(by_id) == {e["event_id"] for e in good}
    key_field = t.decision.key
    for m, r in zip(decisions, recs):
        echo = r.model_extra or {}
        want_key = echo[key_field] if key_field in echo else None
        if want_key is not None:
            assert m.key() == str(want_key).encode()
        assert r.schema_ == t.decision.schema_.tag
        assert r.model.name == t.model.name and r.model.version == t.model.version
        assert r.score is not None and 0.0 <= r.score <= 1.0
        assert r.verdict in t.decision.verdicts
        assert r.source.topic == t.input.topic and r.stage == t.id
        assert {"features", "inference"} <= set(r.timings_ms)
    assert len(Counter(r.verdict for r in recs)) >= 2, "the generated stream should not get one verdict only"

    # exactly M dead letters with the original bytes, their documented reasons and provenance
    dead = read_all(settings, t.dead_letter.topic)
    assert len(dead) == len(bad)
    assert sorted(m.value() for m in dead) == sorted(b for b, _ in bad)
    want_reasons = {b: r for b, r in bad}
    for m in dead:
        h = deadletter.parse_headers(m.headers())
        assert h[deadletter.REASON] == want_reasons[m.value()]
        assert h[deadletter.SOURCE_TOPIC] == t.input.topic
        assert int(h[deadletter.SOURCE_OFFSET]) >= 0
        assert h[deadletter.STAGE] == t.id

    # offsets committed to the end of every partition
    assert committed_offsets(settings, t.input.consumer_group, t.input.topic) == end_offsets(settings, t.input.topic)

    # unknown entities got defaults + a flag, not an error
    flagged = [r for r in recs if any(f.startswith("missing:") for f in r.flags)]
    assert flagged, "the generators emit ~1% unknown entities; expected some missing flags"

    # scores equal a direct ONNX Runtime run on the same feature rows
    batch, dl = Decoder(t.input.schema_, t.input.max_payload_bytes).decode([_M(orjson.dumps(e)) for e in good])
    assert dl == []
    assert t.features is not None
    reader = FeastSdkReader(settings.feature_repo, t.features.feature_service, manifest, settings=settings)
    feats = reader.fetch({jk: batch.column(f) for jk, f in t.entities.items()})
    x = Assembler(manifest.inputs, manifest.online_numeric).assemble(batch, feats)
    sess = ort.InferenceSession(str(manifest.model_path), providers=["CPUExecutionProvider"])
    out = np.asarray(sess.run([manifest.output.name], {sess.get_inputs()[0].name: x})[0])
    direct = out.reshape(out.shape[0], -1)[:, manifest.output.column]
    got = np.array([by_id[e].score for e in batch.column("event_id")], dtype=np.float64)
    np.testing.assert_allclose(got, direct, atol=2e-6)
    assert [get_path(e, "event_id") for e in good] == batch.column("event_id").tolist()


def test_worker_survives_only_malformed_input(stack: Settings, it_topology: Topology) -> None:
    p = Producer(stack.kafka_client_config())
    bad = [b"", b"{", b"\x00\x01", b"null", b'{"amount": NaN}'] * 4
    for b in bad:
        p.produce(it_topology.input.topic, b)
    p.flush(10)
    w = Worker(it_topology, stack, max_events=len(bad), idle_exit_s=60, install_signals=False)
    assert w.run() == 0
    assert w.sink is not None and w.sink.acked_dead == len(bad) and w.sink.acked_decisions == 0


def test_backpressure_pauses_when_scoring_is_slow(feature_store: Settings,
                                                  it_topology: Topology) -> None:
    """A slow engine fills the bounded queue; the worker pauses input instead of buffering.
    (inline_max_batch 0: every batch goes through the queue, as batches above it would.)"""
    from workers.engines import make_engine

    t = it_topology.model_copy(update={"batching": it_topology.batching.model_copy(
        update={"max_batch": 16, "max_wait_ms": 1, "max_inflight_batches": 1, "inline_max_batch": 0})})
    inner = make_engine(t.model, feature_store.models_dir)

    class Slow:
        name = "slow"

        def load(self) -> None:
            inner.load()

        def warm_up(self, sizes: list[int]) -> None:
            inner.warm_up(sizes)

        def infer(self, x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            time.sleep(0.02)
            return inner.infer(x)

        def describe(self) -> dict[str, Any]:
            return {}

    good, bad = _produce(feature_store, t)
    total = len(good) + len(bad)
    w = Worker(t, feature_store, engine=Slow(), max_events=total, idle_exit_s=60,
               install_signals=False)
    assert w.run() == 0
    assert w.stats.paused_times > 0
    assert w.sink is not None and w.sink.acked_decisions == len(good)
    assert w.sink.acked_dead == len(bad)


@pytest.mark.parametrize("flush_when_idle", [True, False])
def test_natural_batching_scores_a_partial_batch_at_once_when_the_scorer_is_idle(
        feature_store: Settings, it_topology: Topology, flush_when_idle: bool) -> None:
    """A few events and a long max_wait_ms: with flush_when_idle (the default) they are scored as
    soon as they arrive, the scorer being idle; without it they wait max_wait_ms for a fuller batch."""
    t = it_topology.model_copy(update={"batching": it_topology.batching.model_copy(
        update={"max_batch": 256, "max_wait_ms": 2000, "flush_when_idle": flush_when_idle})})
    p = Producer(feature_store.kafka_client_config())
    events = event_source(t, 5, time.time_ns() // 1_000_000)
    for _ in range(5):
        ev = dict(next(events))
        p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev))
    assert p.flush(30) == 0
    w = Worker(t, feature_store, max_events=5, idle_exit_s=60, install_signals=False)
    assert w.run() == 0
    recs = [orjson.loads(m.value()) for m in read_all(feature_store, t.output.topic)]
    assert len(recs) == 5
    in_worker = [r["timings_ms"]["in_worker"] for r in recs]
    if flush_when_idle:
        assert max(in_worker) < 1000, in_worker
    else:
        assert min(in_worker) >= 1900, in_worker


def test_worker_with_int8_model(feature_store: Settings, it_topology: Topology) -> None:
    """The INT8 variant of fraud_mlp v1 (from `streamscore model quantize`) serves through the same worker."""
    t = it_topology.model_copy(update={"model": it_topology.model.model_copy(
        update={"name": "fraud_mlp", "version": "1", "variant": "int8"})})
    good, bad = _produce(feature_store, t)
    w = Worker(t, feature_store, max_events=len(good) + len(bad), idle_exit_s=60,
               install_signals=False)
    assert w.manifest.file == "model.int8.onnx"
    assert w.run() == 0
    recs = [DecisionRecord.model_validate_json(m.value())
            for m in read_all(feature_store, t.output.topic)]
    assert len(recs) == len(good)
    assert all(r.model.variant == "int8" and r.score is not None for r in recs)
    assert len(read_all(feature_store, t.dead_letter.topic)) == len(bad)


def test_expired_events_get_fallback_decisions(feature_store: Settings,
                                               it_topology: Topology) -> None:
    """Events older than their deadline are not scored but still get exactly one decision."""
    t = it_topology.model_copy(update={"batching": it_topology.batching.model_copy(
        update={"deadline_ms": 1000})})
    p = Producer(feature_store.kafka_client_config())
    events = event_source(t, 3, time.time_ns() // 1_000_000)
    old_ms = time.time_ns() // 1_000_000 - 60_000  # record timestamps a minute in the past
    fresh = []
    for i in range(200):
        ev = next(events)
        if i % 2:
            p.produce(t.input.topic, orjson.dumps(ev), b"k", timestamp=old_ms)
        else:
            p.produce(t.input.topic, orjson.dumps(ev), b"k")
            fresh.append(str(ev["event_id"]))
    assert p.flush(30) == 0
    w = Worker(t, feature_store, max_events=200, idle_exit_s=60, install_signals=False)
    assert w.run() == 0
    recs = [DecisionRecord.model_validate_json(m.value())
            for m in read_all(feature_store, t.output.topic)]
    assert len(recs) == 200
    late = [r for r in recs if "fallback:deadline" in r.flags]
    assert len(late) == 100
    assert all(r.score is None and r.verdict == "review" for r in late)
    assert {(r.model_extra or {})["event_id"] for r in recs if r.score is not None} == set(fresh)
