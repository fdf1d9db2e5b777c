"""Shadow scoring: a candidate scores a sample of events (stable by the CRC-32 of the configured
key) after the live decisions of their batch were produced, off the critical path.

The scoring thread only picks the sampled rows and hands them (rows of the batch, their online
features, the live scores) to a bounded queue; when the queue is full the batch is dropped and
counted (``streamscore_shadow_dropped_batches_total``), never waited for. A background thread
assembles the candidate's own inputs, runs its engine, and writes one record per row to the shadow
topic with the live score beside it::

    {"schema": "shadow.v1", "stage": "...", "key": "...",
     "live": {"model": "fraud_gbm", "version": "2", "score": 0.91},
     "shadow": {"model": "fraud_mlp", "version": "1", "score": 0.88, "verdict": "review",
                "inference_ms": 0.2},
     "abs_diff": 0.03, "scored_at_ms": ..., "source": {"topic": ..., "partition": ..., "offset": ...}}

``verdict`` is the candidate's band verdict (hard rules are left out: they do not depend on the
model). Histograms compare the two score distributions and the candidate's inference time with
the live model's (``streamscore_shadow_score{role}``, ``streamscore_model_inference_seconds``).
Shadow records are not part of the at-least-once contract: their deliveries commit nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from workers.events import EventBatch, F32Array, OnlineFeatures
from workers.serving import metrics
from workers.serving.live import LoadedModel
from workers.serving.scoring import in_fraction, key_hashes, score_rows, take_features
from workers.serving.spec import ShadowSpec

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class _Job:
    batch: EventBatch
    feats: OnlineFeatures
    live_scores: F32Array
    live_models: list[tuple[str, str]]  # per row: (name, version) of the model that decided it


@dataclass
class ShadowStats:
    offered_rows: int = 0
    dropped_batches: int = 0
    dropped_rows: int = 0
    scored_rows: int = 0
    delivered: int = 0
    failed_deliveries: int = 0


class Shadow:
    def __init__(self, spec: ShadowSpec, model: LoadedModel, stage: str, verdicts: tuple[str, ...],
                 producer_conf: dict[str, Any]) -> None:
        self.spec = spec
        self.model = model
        self._stage = stage
        self._verdicts = verdicts
        self._queue: queue.Queue[object] = queue.Queue(maxsize=spec.max_queued_batches)
        self._producer = Producer({**producer_conf, "enable.idempotence": False, "acks": 1}, logger=log)
        self.stats = ShadowStats()
        self._thread = threading.Thread(target=self._loop, name="shadow", daemon=True)
        m = model.manifest
        self._name, self._version = m.name, str(m.version)

    def start(self) -> None:
        self._thread.start()

    def offer(self, batch: EventBatch, feats: OnlineFeatures, live_scores: F32Array,
              live_models: list[tuple[str, str]]) -> None:
        """Called by the scoring thread after the batch's decisions were produced; never blocks."""
        if self.spec.sample >= 1.0:
            idx = np.arange(len(batch))
        else:
            idx = np.flatnonzero(in_fraction(key_hashes(batch, self.spec.key), self.spec.sample))
        if idx.size == 0:
            return
        job = _Job(batch.take(idx), take_features(feats, idx), live_scores[idx],
                   [live_models[i] for i in idx.tolist()])
        self.stats.offered_rows += int(idx.size)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats.dropped_batches += 1
            self.stats.dropped_rows += int(idx.size)
            metrics.SHADOW_DROPPED.labels(self._stage).inc()

    def close(self, timeout_s: float = 30.0) -> None:
        """Score what is queued, then stop and flush the shadow records, within ``timeout_s``
        (the worker's grace period: shadow records still queued then are dropped, never waited for)."""
        deadline = time.monotonic() + timeout_s
        if self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=max(0.0, timeout_s))
            except queue.Full:
                pass
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._producer.flush(max(0.0, deadline - time.monotonic()))

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed_deliveries += 1

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Job)
            try:
                self._score(item)
            except Exception:  # a shadow must never take the worker down
                log.exception("shadow %s failed on a batch of %d", self.model.label, len(item.batch))

    def _score(self, job: _Job) -> None:
        s = score_rows(self.model, job.batch, job.feats, "shadow", self._stage)
        score, classes = self.model.decider.head(s.out)
        verdict = self.model.decider.verdicts(score, classes).tolist()
        self.stats.scored_rows += len(score)
        now_ms = time.time_ns() // 1_000_000
        ms = s.timings["inference"]
        b = job.batch
        live_h = metrics.SHADOW_SCORES.labels(self._stage, *job.live_models[0], "live") if job.live_models else None
        shadow_h = metrics.SHADOW_SCORES.labels(self._stage, self._name, self._version, "shadow")
        diff_h = metrics.SHADOW_ABS_DIFF.labels(self._stage)
        topic = self.spec.topic
        for i, (k, sc, lv, (lname, lver), v, t, p, o) in enumerate(zip(
                b.key.tolist(), score.tolist(), job.live_scores.tolist(), job.live_models, verdict,
                b.topic.tolist(), b.partition.tolist(), b.offset.tolist())):
            ok_s, ok_l = sc == sc, lv == lv  # NaN != NaN
            diff = abs(sc - lv) if ok_s and ok_l else None
            if ok_s:
                shadow_h.observe(sc)
            if ok_l and live_h is not None:
                live_h.observe(lv)
            if diff is not None:
                diff_h.observe(diff)
            rec = {
                "schema": "shadow.v1", "stage": self._stage,
                "key": k.decode("utf-8", "replace") if isinstance(k, bytes) else k,
                "live": {"model": lname, "version": lver, "score": round(lv, 6) if ok_l else None},
                "shadow": {"model": self._name, "version": self._version,
                           "score": round(sc, 6) if ok_s else None,
                           "verdict": self._verdicts[v], "inference_ms": ms},
                "abs_diff": round(diff, 6) if diff is not None else None,
                "scored_at_ms": now_ms, "source": {"topic": t, "partition": p, "offset": o},
            }
            while True:
                try:
                    self._producer.produce(topic, orjson.dumps(rec), k, on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        self._producer.poll(0)
