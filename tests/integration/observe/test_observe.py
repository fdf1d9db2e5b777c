"""A worker on the real broker and Redis, seen from outside: /metrics, /healthz, /readyz, lag that
rises while its partitions are paused and falls after, a trace id followed from an input header to
its decision, and the exposition checked by `promtool check metrics`."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pydantic import SecretStr
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.conftest import read_all
from workers.dev.producer import event_key, event_source, malformed
from workers.events import ObjArray, OnlineFeatures
from workers.features.factory import make_reader
from workers.model.manifest import load_manifest
from workers.observe.logs import setup_logging, stop_logging
from workers.observe.observer import Observer
from workers.observe.traces import BatchTracer
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition (None: absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait(cond: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class GatedReader:
    """The real reader, held at a gate: while closed, scoring stalls and the input pauses."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = threading.Event()
        self.gate.set()

    @property
    def join_keys(self) -> list[str]:
        keys: list[str] = self._inner.join_keys
        return keys

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        self.gate.wait(120)
        out: OnlineFeatures = self._inner.fetch(entities, timeout_s)
        return out

    def close(self) -> None:
        self._inner.close()


@pytest.fixture()
def traced(feature_store: Settings, it_topology: Topology) -> Topology:
    """The fraud topology on fresh topics with its own stage id (metrics are per process) and the
    input's trace id written into each decision."""
    d = it_topology.decision
    decision = d.model_copy(update={"echo": tuple(f for f in d.echo if f != "trace_id"), "trace_id": True})
    # Every batch goes to the scoring thread (none inline on the consumer thread), so a held scorer
    # fills the queue and pauses the partitions, rather than holding the consumer loop itself.
    batching = it_topology.batching.model_copy(update={"inline_max_batch": 0})
    return it_topology.model_copy(update={"id": f"obs-{uuid.uuid4().hex[:6]}", "decision": decision,
                                          "batching": batching})


def _produce(settings: Settings, t: Topology, n: int, traced_every: int = 2) -> list[tuple[bytes, str | None]]:
    """``n`` good events (every ``traced_every``-th with a traceparent header) + 1 malformed one
    with a header; returns (event_id or b'bad', trace id or None) in order."""
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    events = event_source(t, 5, time.time_ns() // 1_000_000)
    sent: list[tuple[bytes, str | None]] = []
    for i in range(n):
        ev = dict(next(events))
        tid = uuid.uuid4().hex if i % traced_every == 0 else None
        hdrs = [("traceparent", f"00-{tid}-{uuid.uuid4().hex[:16]}-01".encode())] if tid else None
        p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev), headers=hdrs)
        sent.append((str(ev["event_id"]).encode(), tid))
    bad = malformed(ev, "invalid_json", t.input.schema_, t.input.max_payload_bytes)
    assert bad is not None
    bad_tid = uuid.uuid4().hex
    p.produce(t.input.topic, bad[0], b"bad", headers=[("traceparent", f"00-{bad_tid}-{'1' * 16}-01".encode())])
    sent.append((b"bad", bad_tid))
    assert p.flush(30) == 0
    return sent


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


SASL_SECRET = "obs-sasl-secret-4711"
Running = tuple[Worker, GatedReader, InMemorySpanExporter, Capture, threading.Thread]


@pytest.fixture()
def running(feature_store: Settings, traced: Topology, tmp_path: Path) -> Iterator[Running]:
    # SASL credentials on a PLAINTEXT broker: librdkafka ignores them, but every client gets them,
    # so any path that logs a client's configuration would show the secret.
    settings = feature_store.model_copy(update={"probe_interval_s": 0.3, "status_interval_s": 1.0,
                                                "kafka_sasl_username": "obs-user",
                                                "kafka_sasl_password": SecretStr(SASL_SECRET),
                                                "audit_path": tmp_path / "audit.jsonl"})
    cap = Capture()
    setup_logging("INFO", handler=cap, secrets=settings.secret_values())
    manifest = load_manifest(settings.models_dir, traced.model.name, traced.model.version)
    reader = GatedReader(make_reader(traced, settings, manifest))
    spans = InMemorySpanExporter()
    obs = Observer(traced, settings, tracer=BatchTracer(traced.id, processor=SimpleSpanProcessor(spans)),
                   serve=True)
    w = Worker(traced, settings, reader=reader, idle_exit_s=None, install_signals=False, observer=obs)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    _wait(lambda: obs.server is not None and w.source is not None and w.source.has_assignment, 120,
          "the worker's partitions")
    try:
        yield w, reader, spans, cap, th
    finally:
        reader.gate.set()
        w.stop()
        th.join(120)
        stop_logging()
        logging.getLogger().handlers[:] = []


def test_metrics_health_lag_and_traces_of_a_live_worker(feature_store: Settings, traced: Topology,
                                                         running: Running) -> None:
    w, reader, spans, cap, th = running
    assert w.obs.server is not None
    port, stage = w.obs.server.port, traced.id
    _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "/readyz to answer ready")
    status, body = _get(port, "/healthz")
    assert status == 200 and orjson.loads(body)["ok"] is True
    ready = orjson.loads(_get(port, "/readyz")[1])
    assert ready["engine_warmed"] and ready["partitions_assigned"] and ready["broker_reachable"]
    assert ready["store_reachable"] is True

    # 1. Lag rises while scoring is held (the scoring queue fills, the partitions pause) ...
    reader.gate.clear()
    n = 3000
    sent = _produce(feature_store, traced, n)
    total_in = n + 1

    def lag() -> float:
        text = _get(port, "/metrics")[1].decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("streamscore_consumer_lag{") and f'stage="{stage}"' in line)

    _wait(lambda: lag() >= n // 2, 60, "lag to rise while scoring is held")
    text = _get(port, "/metrics")[1].decode()
    assert (_sample(text, "streamscore_paused_partitions", stage=stage) or 0) > 0
    # ... and falls back to zero once it is released.
    reader.gate.set()
    _wait(lambda: w.done_count() >= total_in, 120, "every event decided or dead-lettered")
    _wait(lambda: lag() == 0, 60, "lag to fall to zero")

    # 2. The metrics: counts match what went in, histograms saw every batch and event.
    text = _get(port, "/metrics")[1].decode()
    assert _sample(text, "streamscore_events_total", stage=stage) == total_in
    decided = sum(v for v in (_sample(text, "streamscore_decisions_total", stage=stage, verdict=x)
                              for x in traced.decision.verdicts) if v)
    assert decided == n
    assert _sample(text, "streamscore_dead_letters_total", stage=stage, reason="invalid_json") == 1
    assert _sample(text, "streamscore_e2e_latency_seconds_count", stage=stage) == n
    assert (_sample(text, "streamscore_e2e_latency_seconds_sum", stage=stage) or 0) > 0
    for step in ("consume", "decode", "features", "assemble", "inference", "decide", "produce", "commit"):
        assert (_sample(text, "streamscore_step_seconds_count", stage=stage, step=step) or 0) > 0, step
    assert _sample(text, "streamscore_batch_size_sum", stage=stage) == n
    assert _sample(text, "streamscore_model_info", stage=stage, model="fraud_gbm", version="2",
                   engine="onnxruntime-cpu") == 1
    assert _sample(text, "streamscore_ready", stage=stage) == 1
    assert _sample(text, "streamscore_in_flight_messages", stage=stage) is not None
    # ~1% of the generator's entities are on purpose not in the store
    assert (_sample(text, "streamscore_feature_missing_total", stage=stage, view="card_profile") or 0) > 0
    assert (_sample(text, "streamscore_feature_cache_hits_total", stage=stage) or 0) > 0
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert "password" not in text.lower()

    # 3. Traces: the input's traceparent on its decision (and dead letter); its trace id in the record.
    out = read_all(feature_store, traced.output.topic)
    assert len(out) == n
    by_event: dict[bytes, tuple[str | None, str | None]] = {}
    for m in out:
        rec = orjson.loads(m.value())
        hdr = dict(m.headers() or []).get("traceparent")
        by_event[rec["event_id"].encode()] = (rec["trace_id"], hdr.decode()[3:35] if hdr else None)
    for event_id, tid in sent[:-1]:
        rec_tid, hdr_tid = by_event[event_id]
        assert rec_tid == tid
        if tid is not None:
            assert hdr_tid == tid  # the event's own context, passed on
        else:
            assert hdr_tid is not None  # the batch span's context (sampled)
    dlq = read_all(feature_store, traced.dead_letter.topic)
    assert [dict(m.headers())["traceparent"].decode()[3:35] for m in dlq] == [sent[-1][1]]
    # one span per scored batch, linked to its events' contexts, with a child per step
    finished = spans.get_finished_spans()
    batches = [s for s in finished if s.name == stage]
    assert batches and sum(s.attributes["streamscore.batch.rows"] for s in batches) == n
    linked = {f"{link.context.trace_id:032x}" for s in batches for link in s.links}
    traced_ids = {tid for _, tid in sent[:-1] if tid}
    # at most 128 links a span (SpanLimits): a batch of 256 every other one traced may lose a few
    assert linked <= traced_ids and len(linked) >= 0.9 * len(traced_ids)
    assert {s.name for s in finished} >= {stage, "features", "inference", "decide", "produce"}

    # 4. What an operator reads in the logs: start, status lines, stop; and never a secret.
    w.stop()
    th.join(120)
    records = [orjson.loads(line) for line in cap.lines]
    events = [r.get("event") for r in records]
    assert events.count("start") == 1 and events.count("stop") == 1
    start = next(r for r in records if r.get("event") == "start")
    assert start["model"] == "fraud_gbm" and start["engine"] == "onnxruntime-cpu" and start["partitions"]
    stop = next(r for r in records if r.get("event") == "stop")
    assert stop["decisions"] == n and stop["dead_letters"] == 1 and stop["unacknowledged"] == 0
    assert any("assigned" in r["msg"] for r in records)
    assert SASL_SECRET not in "\n".join(cap.lines) + text
    # 5. The audit log holds every decision record, as produced.
    assert w.settings.audit_path is not None
    audited = w.settings.audit_path.read_bytes().splitlines()
    assert sorted(audited) == sorted(m.value() for m in out)


def test_readyz_is_false_while_draining(feature_store: Settings, running: Running) -> None:
    w, _, _, _, _ = running
    assert w.obs.server is not None
    port = w.obs.server.port
    _wait(lambda: _get(port, "/readyz")[0] == 200, 30, "/readyz to answer ready")
    w.obs.draining()
    status, body = _get(port, "/readyz")
    assert status == 503 and orjson.loads(body)["not_draining"] is False
    assert _get(port, "/healthz")[0] == 200  # alive all the same
