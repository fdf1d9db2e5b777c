"""The scoring worker: source -> decode -> batcher -> [features -> engine -> decide -> sink].

Two threads. The consumer thread (the caller of ``run``) consumes in batches, decodes, dead-letters
bad input, assembles micro-batches and commits offsets. The scoring thread takes whole micro-batches
from a bounded queue and runs features, engine and decide, then produces decisions. So the next
batch is assembled while the engine runs; when the queue is full the input partitions are paused.
Small batches (``batching.inline_max_batch``) arriving while the scorer is idle are scored on the
consumer thread instead, where a thread hand-off would cost more than scoring (``dispatch.py``).
Which model scores which row (the live one, hot-swapped between batches; canary, cascade, shadow,
prediction cache) is ``workers/serving/``'s business, from the topology's ``serving`` section.

Every consumed message ends as exactly one decision or one dead letter; offsets are committed only
after the broker acknowledged it (at-least-once), asynchronously. ``delivery: exactly_once`` runs
the consume -> score -> produce loop in Kafka transactions instead (``transactions.py``).
SIGINT/SIGTERM (also during start-up): stop consuming, score what is in flight, flush, commit,
within ``shutdown_grace_s``; exit 0 when all of it was acknowledged and committed, 1 when the grace
period ran out first (the broker unreachable): what was not committed is redelivered on restart.
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

from workers.bounded import left
from workers.pipeline.batcher import Backpressure, MicroBatcher, expired
from workers.pipeline.decide import Decided, Decider
from workers.pipeline.decode import DeadLetter, Decoder
from workers.pipeline.dispatch import ScoringStage
from workers.engines import Engine
from workers.events import EventBatch, F32Array, OnlineFeatures
from workers.features.base import FeatureReader, no_features
from workers.features.factory import make_reader
from workers.features.policy import FeaturePolicy, model_views, read_timeout_s
from workers.model.fit import check_fit
from workers.model.inputs import Assembler
from workers.model.manifest import ModelManifest, load_manifest
from workers.model.registry import resolve
from workers.observe.observer import Observer
from workers.observe.status import Counts
from workers.pipeline.offsets import OffsetTracker
from workers.serving.live import EngineFactory, LiveModel, layout_of, load_model
from workers.serving.reload import ModelWatcher
from workers.serving.router import Serving
from workers.serving.scoring import Part, Scored, decide_parts
from workers.settings import Settings, get_settings
from workers.pipeline.sink import KafkaSink, producer_config
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
        engine_factory: EngineFactory | None = None,
        max_events: int | None = None,
        idle_exit_s: float | None = None,
        progress: Callable[[Worker], None] | None = None,
        progress_interval_s: float = 1.0,
        commit_interval_ms: int = 200,
        install_signals: bool = True,
        observer: Observer | None = None,
        early_stop: list[int] | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings or get_settings()
        models = self.settings.models_dir
        self.manifest: ModelManifest = load_manifest(  # the model at start ("latest" resolved)
            models, topology.model.name, resolve(models, topology.model.name, topology.model.version),
            variant=topology.model.variant,
        )
        self._reader = reader
        self._engine = engine
        self._engine_factory = engine_factory
        self.live: LiveModel | None = None
        self.serving: Serving | None = None
        self.watcher: ModelWatcher | None = None
        self._max_events = max_events
        self._idle_exit_s = idle_exit_s
        self._progress = progress
        self._progress_interval_s = progress_interval_s
        self._commit_interval_ns = commit_interval_ms * 1_000_000
        self._install_signals = install_signals
        self._early_stop = early_stop if early_stop is not None else []  # signals before run()
        self.stats = WorkerStats()
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self._stop_at: float | None = None  # time.monotonic() of the stop signal: the grace starts
        b = topology.batching
        self._batcher = MicroBatcher(b.max_batch, b.max_wait_ms)
        self._flush_when_idle = b.flush_when_idle
        self._backpressure = Backpressure(b.max_inflight_batches)
        self._stage: ScoringStage | None = None
        self._decoder = Decoder.of(topology.input)
        self._entity_fields = dict(topology.entities)  # Feast join key -> event field
        check_fit(self.manifest, topology)
        self._policy = FeaturePolicy(topology.features, model_views(
            [*self.manifest.online_numeric, *self.manifest.online_strings]), topology.source_path or "topology")
        self.sink: KafkaSink | None = None
        self.source: KafkaSource | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self.obs = observer or Observer(topology, self.settings)

    # ---- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping after in-flight work (grace period %.0f s)", signum,
                 self.settings.shutdown_grace_s)
        self.obs.draining()
        self.stop()

    def _deadline(self) -> float:
        """When the stop must be over: the grace period from the signal (or from now)."""
        return (self._stop_at or time.monotonic()) + self.settings.shutdown_grace_s

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
        # The live model and every model of `serving` are loaded, checked and warmed here; the
        # watcher swaps the live one later (workers/serving/). They read within what the reader fetches.
        t, models, layout = self.topology, self.settings.models_dir, layout_of(self.manifest)
        t_load = time.perf_counter()
        first = load_model(t, models, t.model.name, str(self.manifest.version), None, engine=self._engine,
                           engine_factory=self._engine_factory)
        self.obs.prepared(first.manifest.name, str(first.manifest.version), t.model.variant, first.engine.name,
                          (time.perf_counter() - t_load) * 1e3)
        self.live = LiveModel(first)
        self.serving = Serving.build(t, models, self.live, layout, self._engine_factory,
                                     producer_config(t, self.settings))
        if t.serving.reload.watch:
            self.watcher = ModelWatcher(
                t, models, self.live, lambda name, version: load_model(
                    t, models, name, version, layout, engine_factory=self._engine_factory),
                t.serving.reload.poll_interval_ms / 1e3)
        return reader, first.engine

    @property
    def _assembler(self) -> Assembler:
        assert self.live is not None
        return self.live.current.assembler

    @property
    def _decider(self) -> Decider:
        assert self.live is not None
        return self.live.current.decider

    def run(self) -> int:
        # First of all: a stop asked for during start-up (engine load, Feast) is a clean exit.
        if self._install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
        if self._early_stop:
            self._on_signal(self._early_stop[0], None)
            log.info("stopped during start-up; nothing was consumed")
            return 0
        reader, engine = self._prepare()
        if self._stop.is_set():
            log.info("stopped during start-up; nothing was consumed")
            reader.close()
            return 0
        if self.topology.delivery == "exactly_once":
            from workers.pipeline.transactions import run_exactly_once

            return run_exactly_once(self, reader, engine)
        self.sink = KafkaSink(self.topology, self.settings, self.tracker)
        self.source = KafkaSource(self.topology, self.settings, self.tracker, self._drain_for_revoke)
        self.source.check_broker()
        self.obs.start(self.source.assignment, self._counts, self._model_now)
        self.sink.on_acked = self.obs.acked_hook()
        b = self.topology.batching
        self._stage = stage = ScoringStage(
            lambda batch: self._score(batch, reader), self._score_failed,
            max_inflight=b.max_inflight_batches, inline_max_batch=b.inline_max_batch,
            low_water=self._backpressure.low,
        )
        stage.start()
        if self.watcher is not None:
            self.watcher.start()
        self.source.subscribe()
        log.info("worker %s started (at_least_once), consuming %s", self.topology.id,
                 self.topology.input.topic)
        self.ready.set()
        try:
            self._consume_loop()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            code = self._shutdown(stage)
            self.release(reader, engine, self._deadline())
        return code

    def release(self, reader: FeatureReader, engine: Engine, deadline_s: float) -> None:
        """The stop's last step in either delivery mode: serving (shadow flush within the
        deadline), the store client, the live engine, the HTTP server."""
        if self.serving is not None:
            self.serving.close(left(deadline_s))
        reader.close()
        close = getattr(self.live.current.engine if self.live else engine, "close", None)
        if callable(close):
            close()
        self.obs.close_server()

    # ---- consumer thread -------------------------------------------------------------------
    def _consume_loop(self) -> None:
        assert self.source is not None and self.sink is not None
        src, sink, batcher, stage = self.source, self.sink, self._batcher, self._stage
        assert stage is not None
        flush_when_idle = self._flush_when_idle
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
                left = batcher.time_left_s(time.time_ns())
                if flush_when_idle and len(batcher):
                    left = min(left, 0.001)  # pending while the scorer is busy: look again soon
                timeout = max(left, 0.001)
            t_consume = time.perf_counter()
            msgs = src.consume(batcher.room(), timeout)
            now_wall = time.time_ns()
            if msgs or not src.has_assignment:
                last_msg = time.monotonic_ns()
            if msgs:
                if self.stats.first_msg_s is None:
                    self.stats.first_msg_s = time.monotonic()
                t_decode = time.perf_counter()
                parents = self.obs.consumed(msgs, t_decode - t_consume)
                self._register(msgs)
                batch, dead = self._decoder.decode(msgs)
                batch, dead_parents = self.obs.decoded(msgs, parents, batch, dead,
                                                       time.perf_counter() - t_decode)
                if dead:
                    self.count_dead(dead, to_metrics=False)  # obs.decoded counted them
                    sink.send_dead_letters(dead, dead_parents)
            # Natural batching: nothing is being scored, so waiting for more would only add latency.
            idle = flush_when_idle and stage.idle()
            ready = batcher.offer(batch, now_wall, idle) if msgs else batcher.ready(time.time_ns(), idle)
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
            self.obs.loop(stage.qsize(), len(src.assignment()) if src.paused else 0, self.tracker.in_flight())
            now = time.monotonic_ns()
            if now - last_commit >= self._commit_interval_ns:
                if src.commit():
                    self.obs.committed((time.monotonic_ns() - now) / 1e9)
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

    def count_dead(self, dead: Sequence[DeadLetter], to_metrics: bool = True) -> None:
        reasons: dict[str, int] = defaultdict(int)
        for d in dead:
            reasons[d.reason] += 1
        for r, c in reasons.items():
            self.stats.dead_reasons[r] += c
        if to_metrics:
            self.obs.metrics.dead(reasons)

    def _register(self, msgs: list[Any]) -> None:
        by_tp: dict[tuple[str, int], list[int]] = defaultdict(list)
        for m in msgs:
            by_tp[(m.topic(), m.partition())].append(m.offset())
        for tp, offs in by_tp.items():
            self.tracker.register(tp, offs)
        self.stats.consumed += len(msgs)

    def _enqueue(self, batch: EventBatch, deadline_s: float | None = None) -> bool:
        """Hand ``batch`` to the scoring stage; False if ``deadline_s`` passed first (stop)."""
        assert self.sink is not None and self.source is not None and self._stage is not None
        while not self._stage.submit(batch, timeout=0.05):
            if deadline_s is not None and time.monotonic() >= deadline_s:
                return False
            if self._backpressure.update(self._stage.qsize()):
                self.source.pause()
            self.stats.paused_times = self._backpressure.pauses
            self.sink.poll(0)
        return True

    def _drain_for_revoke(self, tps: list[tuple[str, int]]) -> None:
        """Before partitions are given up: score and deliver everything in flight."""
        for b in self._batcher.drain(time.time_ns()):
            self._enqueue(b)
        if self._stage is not None:
            self._stage.join()
        if self.sink is not None:
            self.sink.flush(30.0)

    def _counts(self) -> Counts:
        s = self.sink
        return Counts(self.stats.consumed, s.acked_decisions if s else 0, s.acked_dead if s else 0,
                      self.stats.degraded, self.stats.fallbacks,
                      self.obs.lag.total() if self.obs.lag else None, bool(self.source and self.source.paused))

    def _model_now(self) -> tuple[str, str, str, str]:
        assert self.live is not None
        i = self.live.current.info
        return i.name, i.version, i.variant, i.engine

    def done_count(self) -> int:
        s = self.sink
        return 0 if s is None else s.acked_decisions + s.acked_dead

    def _shutdown(self, stage: ScoringStage) -> int:
        """Finish in-flight work, deliver and commit it: all of it within the grace period."""
        assert self.source is not None and self.sink is not None
        self.obs.stopping()  # its threads end meanwhile; `stopped` below waits within the deadline
        deadline = self._deadline()

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.error is None:
            for b in self._batcher.drain(time.time_ns()):
                if not self._enqueue(b, deadline):
                    break  # not scored: not committed either, so redelivered after a restart
        if not stage.stop(timeout=left()):
            self.sink.abandon()  # the scorer stops waiting for room in the producer's queue
            self.error = self.error or "in-flight batches were not scored within the grace period"
        unacked = self.sink.flush(left())
        if unacked:
            self.sink.purge()
            self.error = self.error or (f"{unacked} messages were not acknowledged by the broker "
                                        f"within the {self.settings.shutdown_grace_s:.0f} s grace period")
        if self.tracker.failed and self.error is None:
            self.error = self.tracker.failed[0]
        self.stats.last_ack_s = time.monotonic()
        committed = self.source.commit_final(deadline)
        if not committed and self.error is None:
            # Decisions were delivered; their offsets were not committed: a restart redelivers.
            self.error = ("the final offset commit was not confirmed within the grace period; "
                          "decisions may repeat after a restart")
        self.source.close(deadline)
        self.obs.stopped({"consumed": self.stats.consumed, "decisions": self.sink.acked_decisions,
                          "dead_letters": self.sink.acked_dead, "unacknowledged": unacked,
                          "committed": committed, "error": self.error}, deadline)
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

    def _score(self, batch: EventBatch, reader: FeatureReader, engine: Engine | None = None) -> None:
        """``engine`` is not used (the live model's engine scores); kept for existing callers."""
        late = expired(batch.kafka_ts_ms, self.topology.batching.deadline_ms,
                       time.time_ns() // 1_000_000)
        if late.any():
            self._emit(batch.take(np.flatnonzero(late)), None, None, None,
                       ["deadline"] * int(late.sum()), {})
            batch = batch.take(np.flatnonzero(~late))
            if len(batch) == 0:
                return
        n = len(batch)
        span = self.obs.batch_started(batch)
        t0 = time.perf_counter()
        feats = (reader.fetch({jk: batch.column(f) for jk, f in self._entity_fields.items()},
                              read_timeout_s(self.topology.features, int(batch.received_ns.min()), time.time_ns()))
                 if self._entity_fields else no_features(n))
        t1 = time.perf_counter()
        self.obs.features(n, feats)
        if feats.degraded:
            self.stats.degraded += n
            cause = feats.unavailable or "error"
            self.stats.unavailable[cause] += n
            self.obs.metrics.unavailable(n, cause)
        assert self.serving is not None
        # Assemble -> engine per model: the live one, or canary / cascade parts (workers/serving/).
        scored = self.serving.score(batch, feats)
        self._apply_policy(feats, scored)  # features.on_unavailable / on_missing
        parts = self.serving.parts(scored, round((t1 - t0) * 1e3, 3))
        t2 = time.perf_counter()
        decided = decide_parts(batch, feats, parts)
        t3 = time.perf_counter()
        self.stats.stage_ms["decide"] += (t3 - t2) * 1e3
        self._send(batch, decided, span)
        t4 = time.perf_counter()
        self.serving.after_decisions(batch, feats, scored)
        elapsed = time.perf_counter() - t0
        self.stats.batch_ms.append(elapsed * 1e3)
        self.stats.stage_ms["features"] += (t1 - t0) * 1e3
        steps = {"features": (t1 - t0) * 1e3}
        for s in scored:
            for k, v in s.timings.items():
                self.stats.stage_ms[k] += v
                steps[k] = steps.get(k, 0.0) + v
        self.obs.batch_scored(span, n, elapsed, {**steps, "decide": (t3 - t2) * 1e3, "produce": (t4 - t3) * 1e3})

    def _apply_policy(self, feats: OnlineFeatures, scored: Sequence[Scored]) -> None:
        """Rows the degraded-mode policy decides by the fallback verdict: their scores dropped and
        the cause recorded, in whichever model's part they were scored."""
        for rows, code in self._policy.fallbacks(feats):
            for sc in scored:
                mask = rows if sc.rows is None else rows[sc.rows]
                if not mask.any():
                    continue
                sc.out[mask] = np.nan
                for i in np.flatnonzero(mask).tolist():
                    sc.why[i] = sc.why[i] or code

    def _emit(self, batch: EventBatch, out: F32Array | None, x: F32Array | None,
              feats: OnlineFeatures | None, why: Sequence[str | None],
              timings: dict[str, float]) -> None:
        """Decisions by the live model; ``out``: its output [n, k] (NaN rows unscored); None: no row
        was scored (fallbacks)."""
        self._send(batch, decide_parts(batch, feats, [Part(self._decider, None, out, x, why, timings)]))

    def _send(self, batch: EventBatch, d: Decided, span: Any = None) -> None:
        assert self.sink is not None
        n = len(batch)
        if len(d.values) != n:  # the batch contract: exactly one decision per event
            raise RuntimeError(f"decide produced {len(d.values)} records for {n} events")
        self.sink.send_decisions(
            d.keys, d.values, batch.topic.tolist(), batch.partition.tolist(),
            batch.offset.tolist(), batch.kafka_ts_ms.tolist(), self.obs.outgoing(batch, span),
        )
        self.stats.batches += 1
        self.stats.fallbacks += d.fallbacks
        for k, v in d.verdict_counts.items():
            self.stats.verdicts[k] += v
        self.obs.decided(d.values, d.verdict_counts, d.fallback_causes)
