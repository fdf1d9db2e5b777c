"""Everything a worker reports, behind the few calls its hot path makes (once per batch each).

The worker owns one ``Observer``: it binds the stage's metrics, the batch tracer, the health state
and, while the worker runs, the background threads (probes and lag, status line, audit writer) and
the start / rebalance / stop log lines. The pipeline calls it; it calls no stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.bounded import call_within, left
from workers.events import EventBatch, OnlineFeatures
from workers.observe import traces
from workers.observe.audit import AuditLog
from workers.observe.health import Health, ObserveServer, Prober, redis_ping
from workers.observe.lag import LagMonitor
from workers.observe.metrics import StageMetrics
from workers.observe.status import Counts, StatusReporter
from workers.observe.traces import BatchTracer
from workers.settings import Settings
from workers.topology import Topology

log = logging.getLogger("workers.worker")


class Observer:
    def __init__(self, topology: Topology, settings: Settings, *, tracer: BatchTracer | None = None,
                 serve: bool | None = None) -> None:
        self.topology = topology
        self.settings = settings
        self.stage = topology.id
        self.metrics = StageMetrics(topology.id)
        self.tracer = tracer or BatchTracer(topology.id, settings.trace_exporter)
        self.health = Health(settings.liveness_timeout_s, settings.ready_when_degraded,
                             has_store=topology.features is not None)
        self.health.on_ready_change = lambda ok: self.metrics.ready.set(1 if ok else 0)
        self.server: ObserveServer | None = None
        self._serve = settings.metrics_port > 0 if serve is None else serve
        self.lag: LagMonitor | None = None
        self._prober: Prober | None = None
        self._status: StatusReporter | None = None
        self.audit: AuditLog | None = None
        self._started_logged = False
        self.warm_up_ms = 0.0
        self._model: dict[str, str] = {}
        self._model_now: Callable[[], tuple[str, str, str, str]] | None = None

    # ---- lifecycle (not the hot path) ----------------------------------------------------------
    def serve(self, port: int | None = None) -> ObserveServer:
        """Serve /metrics, /healthz, /readyz (``port``: the settings' port unless given; 0 = any)."""
        if self.server is None:
            self.server = ObserveServer(self.settings.metrics_addr,
                                        self.settings.metrics_port if port is None else port, self.health)
        return self.server

    def prepared(self, model: str, version: str, variant: str, engine: str, warm_up_ms: float) -> None:
        self.warm_up_ms = warm_up_ms
        self.health.warmed = True
        self.metrics.model_info(model, version, variant, engine, self.settings.latency_budget_ms)
        self._model = {"model": model, "version": version, "variant": variant, "engine": engine}

    def start(self, assignment: Callable[[], list[tuple[str, int]]], counts: Callable[[], Counts],
              model: Callable[[], tuple[str, str, str, str]] | None = None) -> None:
        """Background threads for a running worker: probes + lag, status line, audit writer.
        ``model``: (name, version, variant, engine) serving now, re-read by the probes (hot swaps)."""
        s, t = self.settings, self.topology
        self._model_now = model
        self._assignment = assignment
        self.health.assigned = lambda: bool(assignment())
        if self._serve:
            self.serve()
        self.lag = LagMonitor(s.kafka_client_config(), t.input.consumer_group, t.id, assignment,
                              timeout_s=min(5.0, s.probe_interval_s))
        checks: list[Callable[[], None]] = [self._probe_broker]
        if t.features is not None:
            self._ping = redis_ping(s.redis_url, min(2.0, s.probe_interval_s))
            checks.append(self._probe_store)
        checks.append(self._refresh_ready)
        self._prober = Prober(checks, s.probe_interval_s, at_exit=self.lag.close)
        self._prober.start()
        self._status = StatusReporter(t.id, counts, s.status_interval_s)
        self._status.start()
        if s.audit_path is not None or s.audit_topic is not None:
            self.audit = AuditLog(t.id, path=s.audit_path, topic=s.audit_topic,
                                  client_config=s.kafka_client_config(),
                                  max_queued_batches=s.audit_queue_max_batches)

    def _probe_broker(self) -> None:
        assert self.lag is not None
        self.health.broker_ok = self.lag.refresh()

    def _probe_store(self) -> None:
        self.health.store_ok = self._ping()

    def _refresh_ready(self) -> None:
        self.health.ready()  # keeps streamscore_ready current between /readyz requests
        if self._model_now is not None:
            name, version, variant, engine = self._model_now()
            if (name, version) != (self._model["model"], self._model["version"]):
                self._model = {"model": name, "version": version, "variant": variant, "engine": engine}
                self.metrics.model_info(name, version, variant, engine, self.settings.latency_budget_ms)

    def draining(self) -> None:
        self.health.draining = True
        self.health.ready()

    def stopping(self) -> None:
        """The stop began: background threads end after their call in progress (no waiting), so
        that by ``stopped`` they are over, also with the broker or Redis unreachable."""
        self.draining()
        for part in (self._status, self._prober, self.lag):
            if part is not None:
                part.interrupt()

    def stopped(self, fields: dict[str, Any], deadline_s: float | None = None) -> None:
        """The stop's last step: background threads joined, audit and spans flushed, the stop line
        logged, all of it within ``deadline_s`` (time.monotonic(); the grace period's end). A
        thread still waiting on an unreachable peer at the deadline is left behind (a daemon: the
        process does not wait for it); what it would have flushed is lost and said so."""
        self.stopping()
        behind: list[str] = []
        if self._status is not None and not self._status.stop(left(deadline_s)):
            behind.append("status line")
        if self._prober is not None and not self._prober.stop(left(deadline_s)):
            behind.append("probes (lag client not closed)")
        if self.audit is not None:
            if not self.audit.close(left(deadline_s)):
                behind.append("audit records")
            fields["audit_records"] = self.audit.written
        if not call_within(self.tracer.shutdown, left(deadline_s), "trace-flush"):
            behind.append("trace export")
        if behind:
            log.warning("grace period over: not waiting for %s", ", ".join(behind))
        log.info("stopped: %s", ", ".join(f"{k}={v}" for k, v in fields.items()),
                 extra={"fields": {"event": "stop", "stage": self.stage, **fields}})

    def close_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # ---- consumer thread, once per consume() ---------------------------------------------------
    def loop(self, queue_depth: int, paused_partitions: int, in_flight: int) -> None:
        self.health.beat()
        self.metrics.gauges(queue_depth, paused_partitions, in_flight)
        if not self._started_logged and self._assignment():
            self._started_logged = True
            parts = sorted(self._assignment())
            log.info("started: %s on %s (%s), warm-up %.0f ms, partitions %s", self.stage,
                     f"{self._model['model']} v{self._model['version']}", self._model["engine"],
                     self.warm_up_ms, [p for _, p in parts],
                     extra={"fields": {"event": "start", "stage": self.stage,
                                       "topology": self.topology.source_path, **self._model,
                                       "warm_up_ms": round(self.warm_up_ms, 1),
                                       "input_topic": self.topology.input.topic,
                                       "partitions": [p for _, p in parts]}})

    def consumed(self, messages: Sequence[Any], seconds: float) -> list[bytes | None] | None:
        """A consume() that returned messages: counts, and the records' ``traceparent`` headers."""
        self.metrics.consumed(len(messages))
        self.metrics.step("consume", seconds)
        return traces.read_parents(messages)

    def decoded(self, messages: Sequence[Any], parents: list[bytes | None] | None, batch: EventBatch,
                dead: Sequence[Any], seconds: float) -> tuple[EventBatch, dict[tuple[str, int, int], bytes]]:
        """The decoded batch with its ``_trace.parent`` column; the dead letters' traceparents."""
        self.metrics.step("decode", seconds)
        dead_keys = {(d.topic, d.partition, d.offset) for d in dead} if dead and parents else set()
        if dead:
            reasons: dict[str, int] = {}
            for d in dead:
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
            self.metrics.dead(reasons)
        n = len(batch)
        if n:
            col = traces.parent_column(n, parents, messages, dead_keys)
            batch = EventBatch({**batch.fields, traces.TRACE_COLUMN: col}, batch.nulls, batch.key, batch.topic,
                               batch.partition, batch.offset, batch.received_ns, batch.kafka_ts_ms)
        return batch, traces.dead_parents(parents, messages, dead_keys)

    def committed(self, seconds: float) -> None:
        self.metrics.step("commit", seconds)

    def acked_hook(self) -> Callable[[npt.NDArray[np.float64]], None] | None:
        """What the sink calls with the e2e latency (s) of each drained batch of acknowledgements."""
        return self.metrics.acked

    # ---- scoring thread, once per batch --------------------------------------------------------
    def batch_started(self, batch: EventBatch) -> Any:
        return self.tracer.start(batch.fields.get(traces.TRACE_COLUMN), len(batch))

    def features(self, rows: int, feats: OnlineFeatures) -> None:
        self.metrics.features(rows, feats.degraded, feats.missing, feats.stale, feats.extra)

    def batch_scored(self, span: Any, rows: int, seconds: float, timings_ms: dict[str, float]) -> None:
        self.metrics.scored(rows, seconds, timings_ms)
        self.tracer.finish(span, timings_ms)

    def outgoing(self, batch: EventBatch, span: Any) -> list[bytes | None] | None:
        return traces.outgoing(batch.fields.get(traces.TRACE_COLUMN), len(batch), span)

    def decided(self, values: list[bytes], verdict_counts: dict[str, int], fallback_causes: dict[str, int]) -> None:
        self.metrics.decided(verdict_counts, fallback_causes)
        if self.audit is not None:
            self.audit.submit(values)


class QuietObserver(Observer):
    """Metrics, traces and trace propagation off on the hot path (probes, logs and lag stay):
    what ``streamscore bench pipeline --observe off`` measures their cost against."""

    def consumed(self, messages: Sequence[Any], seconds: float) -> list[bytes | None] | None:
        return None

    def decoded(self, messages: Sequence[Any], parents: list[bytes | None] | None, batch: EventBatch,
                dead: Sequence[Any], seconds: float) -> tuple[EventBatch, dict[tuple[str, int, int], bytes]]:
        return batch, {}

    def loop(self, queue_depth: int, paused_partitions: int, in_flight: int) -> None:
        self.health.beat()

    def committed(self, seconds: float) -> None:
        pass

    def acked_hook(self) -> Callable[[npt.NDArray[np.float64]], None] | None:
        return None

    def batch_started(self, batch: EventBatch) -> Any:
        return None

    def features(self, rows: int, feats: OnlineFeatures) -> None:
        pass

    def batch_scored(self, span: Any, rows: int, seconds: float, timings_ms: dict[str, float]) -> None:
        pass

    def outgoing(self, batch: EventBatch, span: Any) -> list[bytes | None] | None:
        return None

    def decided(self, values: list[bytes], verdict_counts: dict[str, int], fallback_causes: dict[str, int]) -> None:
        pass
