"""The scoring worker: source -> decode -> batcher -> [features -> engine -> decide -> sink].

Two threads. The consumer thread (the caller of ``run``) consumes in batches, decodes, dead-letters
bad input, assembles micro-batches and commits offsets. The scoring thread takes whole micro-batches
from a bounded queue and runs features, engine and decide, then produces decisions. So the next
batch is assembled while the engine runs; when the queue is full the input partitions are paused.
Small batches (``batching.inline_max_batch``) arriving while the scorer is idle are scored on the
consumer thread instead, where a thread hand-off would cost more than scoring (``dispatch.py``).

Every consumed message ends as exactly one decision or one dead letter; offsets are committed only
after the broker acknowledged it (at-least-once). SIGINT/SIGTERM: stop consuming, score what is
in flight, flush, commit, exit 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np

from workers import metrics
from workers.pipeline.batcher import Backpressure, MicroBatcher, expired
from workers.pipeline.decide import Decider, ModelInfo
from workers.pipeline.decode import Decoder
from workers.pipeline.dispatch import ScoringStage
from workers.engines import Engine, make_engine
from workers.engines.base import default_buckets
from workers.events import EventBatch, F32Array, OnlineFeatures
from workers.features.base import FeatureReader, no_features
from workers.features.factory import make_reader
from workers.features.policy import FeaturePolicy, model_views, read_timeout_s
from workers.model.fit import check_fit
from workers.model.inputs import Assembler
from workers.model.manifest import ModelManifest, load_manifest
from workers.pipeline.offsets import OffsetTracker
from workers.settings import Settings, get_settings
from workers.pipeline.sink import KafkaSink
from workers.pipeline.source import KafkaSource
from workers.topology import Topology, TopologyError

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    consumed: int = 0
    batches: int = 0
    fallbacks: int = 0
    degraded: int = 0  # rows whose store could not be read (decided by features.on_unavailable)
    unavailable: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # rows per cause
    verdicts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batch_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    stage_ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    paused_times: int = 0
    started_s: float = field(default_factory=time.monotonic)
    first_msg_s: float | None = None
    last_ack_s: float | None = None


class Worker:
    def __init__(
        self,
        topology: Topology,
        settings: Settings | None = None,
        *,
        reader: FeatureReader | None = None,
        engine: Engine | None = None,
        max_events: int | None = None,
        idle_exit_s: float | None = None,
        progress: Callable[[Worker], None] | None = None,
        progress_interval_s: float = 1.0,
        commit_interval_ms: int = 200,
        install_signals: bool = True,
    ) -> None:
        self.topology = topology
        self.settings = settings or get_settings()
        self.manifest: ModelManifest = load_manifest(
            self.settings.models_dir, topology.model.name, topology.model.version,
            variant=topology.model.variant,
        )
        self._reader = reader
        self._engine = engine
        self._max_events = max_events
        self._idle_exit_s = idle_exit_s
        self._progress = progress
        self._progress_interval_s = progress_interval_s
        self._commit_interval_ns = commit_interval_ms * 1_000_000
        self._install_signals = install_signals
        self.stats = WorkerStats()
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        b = topology.batching
        self._batcher = MicroBatcher(b.max_batch, b.max_wait_ms)
        self._backpressure = Backpressure(b.max_inflight_batches)
        self._stage: ScoringStage | None = None
        self._decoder = Decoder.of(topology.input)
        self._entity_fields = dict(topology.entities)  # Feast join key -> event field
        check_fit(self.manifest, topology)
        self._assembler = Assembler(self.manifest.inputs, self.manifest.online_numeric, topology.input.schema_)
        self._policy = FeaturePolicy(topology.features, model_views(
            [*self.manifest.online_numeric, *self.manifest.online_strings]), topology.source_path or "topology")
        self.sink: KafkaSink | None = None
        self.source: KafkaSource | None = None
        self._decider: Decider | None = None
        self.ready = threading.Event()
        self.error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping after in-flight work", signum)
        self._stop.set()

    def _prepare(self) -> tuple[FeatureReader, Engine]:
        reader = self._reader or make_reader(self.topology, self.settings, self.manifest)
        absent = sorted(set(reader.join_keys) - set(self._entity_fields))
        if absent:
            raise TopologyError(
                f"{self.topology.source_path or 'topology'}: the feature service's views are keyed by "
                f"{reader.join_keys}; map {absent} to event fields under `entities` (join key: field)")
        # Feast and ONNX Runtime leave a large heap; freezing it keeps full GC passes (tens of ms
        # of p99 on the scoring thread) from rescanning start-up objects.
        gc.collect()
        gc.freeze()
        engine = self._engine or make_engine(
            self.topology.model, self.settings.models_dir,
            max_batch=self.topology.batching.max_batch, output=self.manifest.output.name,
        )
        engine.load()
        engine.warm_up(default_buckets(self.topology.batching.max_batch))
        self._decider = Decider(
            self.topology.id,
            self.topology.decision,
            self.manifest,
            ModelInfo(
                self.manifest.name, str(self.manifest.version), self.topology.model.variant,
                engine.name,
            ),
            self.topology.input.schema_,
        )
        return reader, engine

    def run(self) -> int:
        reader, engine = self._prepare()
        self.sink = KafkaSink(self.topology, self.settings, self.tracker)
        self.source = KafkaSource(self.topology, self.settings, self.tracker, self._drain_for_revoke)
        self.source.check_broker()
        if self._install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
        b = self.topology.batching
        self._stage = stage = ScoringStage(
            lambda batch: self._score(batch, reader, engine), self._score_failed,
            max_inflight=b.max_inflight_batches, inline_max_batch=b.inline_max_batch,
            low_water=self._backpressure.low,
        )
        stage.start()
        self.source.subscribe()
        self.ready.set()
        try:
            self._consume_loop()
        finally:
            code = self._shutdown(stage)
            reader.close()
            close = getattr(engine, "close", None)
            if callable(close):
                close()
        return code

    # ---- consumer thread -------------------------------------------------------------------
    def _consume_loop(self) -> None:
        assert self.source is not None and self.sink is not None
        src, sink, batcher, stage = self.source, self.sink, self._batcher, self._stage
        assert stage is not None
        last_commit = last_progress = last_msg = time.monotonic_ns()
        while not self._stop.is_set():
            if src.paused:
                # The scorer sets `drained` at the resume mark: wake at once rather than sleeping
                # out a poll timeout (measured: 35 pauses x 50 ms = 70% of a run).
                stage.drained.wait(0.05)
                stage.drained.clear()
                timeout = 0.0  # paused partitions return nothing; this keeps the group alive
            else:
                # The batcher runs on the wall clock (time.time_ns), like the events' timestamps.
                timeout = max(batcher.time_left_s(time.time_ns()), 0.001)
            msgs = src.consume(batcher.room(), timeout)
            now_wall = time.time_ns()
            if msgs or not src.has_assignment:
                last_msg = time.monotonic_ns()
            if msgs:
                if self.stats.first_msg_s is None:
                    self.stats.first_msg_s = time.monotonic()
                self._register(msgs)
                batch, dead = self._decoder.decode(msgs)
                if dead:
                    reasons: dict[str, int] = defaultdict(int)
                    for d in dead:
                        reasons[d.reason] += 1
                    for r, c in reasons.items():
                        self.stats.dead_reasons[r] += c
                        metrics.DEAD_LETTERS.labels(self.topology.id, r).inc(c)
                    sink.send_dead_letters(dead)
            ready = batcher.offer(batch, now_wall) if msgs else batcher.ready(time.time_ns())
            while ready is not None:
                self._enqueue(ready)
                ready = batcher.ready(time.time_ns())
            # Backpressure: pause input while the scoring stage has a full queue.
            if self._backpressure.update(stage.qsize()):
                src.pause()
            elif src.paused:
                src.resume()
            self.stats.paused_times = self._backpressure.pauses
            sink.poll(0)
            now = time.monotonic_ns()
            if now - last_commit >= self._commit_interval_ns:
                src.commit()
                last_commit = now
            if self.tracker.failed or stage.failed:
                self.error = (self.tracker.failed or stage.failed)[0]
                log.error("stopping: %s", self.error)
                break
            if self._progress and now - last_progress >= self._progress_interval_s * 1e9:
                self._progress(self)
                last_progress = now
            if self._max_events is not None and self.done_count() >= self._max_events:
                break
            if (
                self._idle_exit_s is not None
                and now - last_msg >= self._idle_exit_s * 1e9
                and len(batcher) == 0
                and self.tracker.in_flight() == 0
            ):
                break

    def _register(self, msgs: list[Any]) -> None:
        by_tp: dict[tuple[str, int], list[int]] = defaultdict(list)
        for m in msgs:
            by_tp[(m.topic(), m.partition())].append(m.offset())
        for tp, offs in by_tp.items():
            self.tracker.register(tp, offs)
        self.stats.consumed += len(msgs)
        metrics.EVENTS.labels(self.topology.id).inc(len(msgs))

    def _enqueue(self, batch: EventBatch) -> None:
        assert self.sink is not None and self.source is not None and self._stage is not None
        while not self._stage.submit(batch, timeout=0.05):
            if self._backpressure.update(self._stage.qsize()):
                self.source.pause()
            self.stats.paused_times = self._backpressure.pauses
            self.sink.poll(0)

    def _drain_for_revoke(self, tps: list[tuple[str, int]]) -> None:
        """Before partitions are given up: score and deliver everything in flight."""
        for b in self._batcher.drain(time.time_ns()):
            self._enqueue(b)
        if self._stage is not None:
            self._stage.join()
        if self.sink is not None:
            self.sink.flush(30.0)

    def done_count(self) -> int:
        s = self.sink
        return 0 if s is None else s.acked_decisions + s.acked_dead

    def _shutdown(self, stage: ScoringStage) -> int:
        assert self.source is not None and self.sink is not None
        if self.error is None:
            for b in self._batcher.drain(time.time_ns()):
                self._enqueue(b)
        if not stage.stop(timeout=60):
            self.error = self.error or "the scoring thread did not finish within 60 s"
        left = self.sink.flush(30.0)
        if left:
            self.error = self.error or f"{left} messages were not acknowledged by the broker"
        if self.tracker.failed and self.error is None:
            self.error = self.tracker.failed[0]
        self.stats.last_ack_s = time.monotonic()
        self.source.commit(retry_s=30.0)
        if self.tracker.committable() and self.error is None:
            # Decisions were delivered; their offsets were not committed: a restart redelivers.
            self.error = "the final offset commit failed; decisions may repeat after a restart"
        self.source.close()
        if self._progress:
            self._progress(self)
        if self.error:
            log.error("worker stopped with an error: %s", self.error)
            return 1
        return 0

    # ---- scoring thread --------------------------------------------------------------------
    def _score_failed(self, batch: EventBatch, exc: Exception) -> None:
        """A batch whose scoring raised: every row still gets a (fallback) decision."""
        log.error("scoring failed for a batch; sending fallback decisions", exc_info=exc)
        self._emit(batch, None, None, None, [f"internal_error:{type(exc).__name__}"] * len(batch), {})

    def _score(self, batch: EventBatch, reader: FeatureReader, engine: Engine) -> None:
        late = expired(batch.kafka_ts_ms, self.topology.batching.deadline_ms,
                       time.time_ns() // 1_000_000)
        if late.any():
            self._emit(batch.take(np.flatnonzero(late)), None, None, None,
                       ["deadline"] * int(late.sum()), {})
            batch = batch.take(np.flatnonzero(~late))
            if len(batch) == 0:
                return
        n = len(batch)
        t0 = time.perf_counter()
        feats = (reader.fetch({jk: batch.column(f) for jk, f in self._entity_fields.items()},
                              read_timeout_s(self.topology.features, int(batch.received_ns.min()), time.time_ns()))
                 if self._entity_fields else no_features(n))
        t1 = time.perf_counter()
        if feats.degraded:
            self.stats.degraded += n
            self.stats.unavailable[feats.unavailable or "error"] += n
            metrics.FEATURES_UNAVAILABLE.labels(self.topology.id, feats.unavailable or "error").inc(n)
        x = self._assembler.assemble(batch, feats)
        bad = ~np.isfinite(x).all(axis=1)
        why: list[str | None] = [None] * n
        if bad.any():
            x[bad] = 0.0
            for i in np.flatnonzero(bad).tolist():
                why[i] = "invalid_features"
        t2 = time.perf_counter()
        width = self.manifest.output.width
        try:
            out = engine.infer(x)
            if out.ndim != 2 or out.shape[0] != n:
                raise RuntimeError(f"engine returned shape {out.shape} for {n} rows")
        except Exception as exc:
            log.exception("engine failed on a batch of %d", n)
            out = np.full((n, width), np.nan, dtype=np.float32)
            why = [f"engine_error:{type(exc).__name__}"] * n
        out = out.astype(np.float32, copy=True)
        out[bad] = np.nan
        for rows, code in self._policy.fallbacks(feats):  # features.on_unavailable / on_missing
            out[rows] = np.nan
            for i in np.flatnonzero(rows).tolist():
                why[i] = why[i] or code
        t3 = time.perf_counter()
        timings = {
            "features": round((t1 - t0) * 1e3, 3),
            "assemble": round((t2 - t1) * 1e3, 3),
            "inference": round((t3 - t2) * 1e3, 3),
        }
        self._emit(batch, out, x, feats, why, timings)
        elapsed = time.perf_counter() - t0
        self.stats.batch_ms.append(elapsed * 1e3)
        metrics.BATCH_SECONDS.labels(self.topology.id).observe(elapsed)
        for k, v in timings.items():
            self.stats.stage_ms[k] += v

    def _emit(self, batch: EventBatch, out: F32Array | None, x: F32Array | None,
              feats: OnlineFeatures | None, why: Sequence[str | None],
              timings: dict[str, float]) -> None:
        """``out``: the engine's output [n, k] (NaN rows unscored); None: no row was scored."""
        assert self._decider is not None and self.sink is not None
        n = len(batch)
        t = time.perf_counter()
        d = self._decider.decide(batch, out, x, feats, why, timings)
        self.stats.stage_ms["decide"] += (time.perf_counter() - t) * 1e3
        if len(d.values) != n:  # the batch contract: exactly one decision per event
            raise RuntimeError(f"decide produced {len(d.values)} records for {n} events")
        self.sink.send_decisions(
            d.keys, d.values, batch.topic.tolist(), batch.partition.tolist(),
            batch.offset.tolist(), batch.kafka_ts_ms.tolist(),
        )
        self.stats.batches += 1
        self.stats.fallbacks += d.fallbacks
        if d.fallbacks:
            metrics.FALLBACKS.labels(self.topology.id).inc(d.fallbacks)
        for k, v in d.verdict_counts.items():
            self.stats.verdicts[k] += v
            if v:
                metrics.DECISIONS.labels(self.topology.id, k).inc(v)
