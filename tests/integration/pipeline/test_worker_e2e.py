"""End to end on the real broker and Redis: N good + M malformed in -> N decisions + M dead letters."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Producer

from tests.integration.conftest import committed_offsets, end_offsets, read_all
from examples.fraud import datagen
from workers.pipeline import deadletter
from workers.model import featurize
from workers.pipeline.decode import Decoder
from workers.engines import model_file
from workers.features.feast_sdk import FeastSdkReader
from workers.model.manifest import load_manifest
from workers.dev.producer import MALFORMED_KINDS, _malformed
from workers.pipeline.records import DecisionRecord
from workers.settings import Settings
from workers.topology import Topology
from workers.pipeline.worker import Worker

N_GOOD = 1500
M_PER_KIND = 3


def _produce(settings: Settings, topology: Topology) -> tuple[list[dict[str, Any]], list[bytes]]:
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    events = datagen.iter_events(11)
    good: list[dict[str, Any]] = []
    bad: list[bytes] = []
    for i in range(N_GOOD):
        ev = next(events)
        good.append(ev)
        p.produce(topology.input.topic, orjson.dumps(ev), str(ev["card_id"]).encode())
        if i % 50 == 0 and len(bad) < M_PER_KIND * len(MALFORMED_KINDS):
            kind = MALFORMED_KINDS[len(bad) % len(MALFORMED_KINDS)]
            raw = _malformed(ev, kind, topology.input.max_payload_bytes)
            bad.append(raw)
            p.produce(topology.input.topic, raw, b"bad")
    while len(bad) < M_PER_KIND * len(MALFORMED_KINDS):
        raw = _malformed(good[0], MALFORMED_KINDS[len(bad) % len(MALFORMED_KINDS)],
                         topology.input.max_payload_bytes)
        bad.append(raw)
        p.produce(topology.input.topic, raw, b"bad")
    assert p.flush(30) == 0
    return good, bad


def test_good_and_malformed_events_end_to_end(feature_store: Settings,
                                               it_topology: Topology) -> None:
    settings, t = feature_store, it_topology
    good, bad = _produce(settings, t)
    total = len(good) + len(bad)

    w = Worker(t, settings, max_events=total, idle_exit_s=60, install_signals=False)
    assert w.run() == 0

    # exactly N decisions, every one parses into the documented schema, keyed like the input
    decisions = read_all(settings, t.output.topic)
    assert len(decisions) == len(good)
    recs = [DecisionRecord.model_validate_json(m.value()) for m in decisions]
    by_id = {r.event_id: r for r in recs}
    assert set(by_id) == {e["event_id"] for e in good}
    for m, r in zip(decisions, recs):
        assert m.key() == r.card_id.encode()
        assert r.model.name == "fraud_mlp" and r.model.version == "1"
        assert r.score is not None and 0.0 <= r.score <= 1.0
        assert r.source.topic == t.input.topic
        assert {"features", "inference"} <= set(r.timings_ms)

    # exactly M dead letters with the original bytes and provenance in headers
    dead = read_all(settings, t.dead_letter.topic)
    assert len(dead) == len(bad)
    assert sorted(m.value() for m in dead) == sorted(bad)
    for m in dead:
        h = deadletter.parse_headers(m.headers())
        assert h[deadletter.SOURCE_TOPIC] == t.input.topic
        assert int(h[deadletter.SOURCE_OFFSET]) >= 0 and h[deadletter.REASON]
        assert h[deadletter.STAGE] == t.id

    # offsets committed to the end of every partition
    assert committed_offsets(settings, t.input.consumer_group, t.input.topic) == end_offsets(
        settings, t.input.topic)

    # unknown entities got defaults + a flag, not an error
    flagged = [r for r in recs if any(f.startswith("missing:") for f in r.flags)]
    assert flagged, "datagen emits ~1% unknown cards/merchants; expected some missing flags"

    # scores equal a direct ONNX Runtime run on the same feature rows
    manifest = load_manifest(settings.models_dir, "fraud_mlp", "1")
    decoder = Decoder(t.input.schema_, t.input.max_payload_bytes)

    class _M:
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

        def timestamp(self) -> tuple[int, int]:
            return (0, 0)

    batch, dl = decoder.decode([_M(orjson.dumps(e)) for e in good])
    assert dl == []
    reader = FeastSdkReader(settings.feature_repo, t.features.feature_service, manifest)
    feats = reader.fetch({"card_id": batch.card_id, "merchant_id": batch.merchant_id})
    x = featurize.assemble(batch, feats, manifest)
    sess = ort.InferenceSession(str(model_file(settings.models_dir, "fraud_mlp", "1", "fp32")),
                                providers=["CPUExecutionProvider"])
    direct = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
    got = np.array([by_id[e].score for e in batch.event_id], dtype=np.float64)
    np.testing.assert_allclose(got, direct, atol=2e-6)


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


def test_worker_with_int8_model(feature_store: Settings, it_topology: Topology) -> None:
    """The INT8 variant (from `streamscore model quantize`) serves through the same worker."""
    t = it_topology.model_copy(update={"model": it_topology.model.model_copy(
        update={"variant": "int8"})})
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
    events = datagen.iter_events(3)
    old_ms = time.time_ns() // 1_000_000 - 60_000  # record timestamps a minute in the past
    fresh = []
    for i in range(200):
        ev = next(events)
        if i % 2:
            p.produce(t.input.topic, orjson.dumps(ev), b"k", timestamp=old_ms)
        else:
            p.produce(t.input.topic, orjson.dumps(ev), b"k")
            fresh.append(ev["event_id"])
    assert p.flush(30) == 0
    w = Worker(t, feature_store, max_events=200, idle_exit_s=60, install_signals=False)
    assert w.run() == 0
    recs = [DecisionRecord.model_validate_json(m.value())
            for m in read_all(feature_store, t.output.topic)]
    assert len(recs) == 200
    late = [r for r in recs if "fallback:deadline" in r.flags]
    assert len(late) == 100
    assert all(r.score is None and r.verdict == "review" for r in late)
    assert {r.event_id for r in recs if r.score is not None} == set(fresh)
