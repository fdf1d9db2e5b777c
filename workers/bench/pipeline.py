"""``streamscore bench pipeline``: the whole worker vs a raw Kafka pass-through, same broker, one run.

Both read the same N pre-produced events from a fresh topic with fresh consumer groups. The raw
pass-through consumes in batches and produces each value unchanged (the floor any Kafka consumer in
Python pays); the worker decodes, fetches features, scores, decides and produces decisions, with
at-least-once commits. The ratio is what scoring costs on top of moving the bytes. Rates are
measured from the first message consumed to the last delivery acknowledged. Needs `make setup`.

    streamscore bench pipeline [--events N] [--json PATH] [--topology F] [--log-sink S] [--observe O]

``--log-sink off`` silences logging entirely, ``slow`` writes every record through a sink that
takes 10 ms a record with a status line every 0.1 s (the worker must not notice: records queue,
and drop when the queue is full). ``--observe off`` turns metrics, spans and trace propagation off
on the hot path, ``spans`` turns batch spans on (exported to a sink that discards them, through
the usual background ``BatchSpanProcessor``): their cost is the difference in worker events/s.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from workers.dev import stack as devstack
from workers.observe.logs import DroppingQueueHandler, setup_logging, stop_logging
from workers.observe.observer import Observer, QuietObserver
from workers.observe.traces import BatchTracer
from workers.dev.producer import event_key, event_source
from workers.settings import Settings, get_settings
from workers.topology import Topology, load_topology
from workers.pipeline.worker import Worker


def _fill(settings: Settings, topology: Topology, topic: str, n: int) -> None:
    p = Producer({**settings.kafka_client_config(), "linger.ms": 20, "compression.type": "lz4"})
    events = event_source(topology, 7, time.time_ns() // 1_000_000)
    for _ in range(n):
        ev = next(events)
        while True:
            try:
                p.produce(topic, orjson.dumps(ev), event_key(topology, ev))
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120):
        raise RuntimeError(f"could not produce {n} events to {topic}")


def passthrough(settings: Settings, topology: Topology, src: str, dst: str, n: int) -> float:
    """Events/s of consume(batch) -> produce(same bytes) -> acked, for ``n`` events."""
    c = Consumer({**settings.kafka_client_config(), "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  **topology.kafka.consumer})
    p = Producer({**settings.kafka_client_config(), "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2, **topology.kafka.producer})
    acked = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    c.subscribe([src])
    seen, first = 0, None
    deadline = time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        msgs = c.consume(num_messages=topology.batching.max_batch, timeout=0.05)
        if msgs and first is None:
            first = time.monotonic()
        for m in msgs:
            if m.error() is None:
                while True:
                    try:
                        p.produce(dst, m.value(), m.key(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        p.poll(0.05)
                seen += 1
        p.poll(0)
    p.flush(60)
    end = time.monotonic()
    c.close()
    if acked < n or first is None:
        raise RuntimeError(f"pass-through moved {acked} of {n} events")
    return n / (end - first)


class SlowHandler(logging.Handler):
    """A log sink that takes ``delay_s`` per record (a slow disk or a remote collector)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.written = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        time.sleep(self.delay_s)
        self.written += 1


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _observer(observe: str, t: Topology, settings: Settings) -> Observer:
    if observe == "off":
        return QuietObserver(t, settings)
    if observe == "spans":
        return Observer(t, settings, tracer=BatchTracer(t.id, processor=BatchSpanProcessor(_Discard())))
    return Observer(t, settings)


def run_bench(n: int, topology_path: str, log_sink: str = "default", observe: str = "on") -> dict[str, Any]:
    settings = get_settings()
    slow: SlowHandler | None = None
    if log_sink == "off":
        stop_logging()
        logging.getLogger().handlers[:] = []
        logging.disable(logging.CRITICAL)
    elif log_sink == "slow":
        slow = SlowHandler(0.010)
        setup_logging("INFO", settings.log_queue_max_records, settings.log_format, settings.secret_values(),
                      handler=slow)
        settings = settings.model_copy(update={"status_interval_s": 0.1})
    base = load_topology(topology_path)
    s = uuid.uuid4().hex[:8]
    src, raw_out, dec_out, dlq = (f"bench-{s}-{x}" for x in ("in", "raw", "decisions", "dlq"))
    parts = base.input.partitions
    devstack.ensure_topics(settings, [devstack.TopicSpec(src, parts), devstack.TopicSpec(raw_out, parts),
                                      devstack.TopicSpec(dec_out, parts), devstack.TopicSpec(dlq, 1)])
    try:
        _fill(settings, base, src, n)
        raw_eps = passthrough(settings, base, src, raw_out, n)
        t = base.model_copy(update={
            "input": base.input.model_copy(update={"topic": src, "consumer_group": f"bench-w-{s}"}),
            "output": base.output.model_copy(update={"topic": dec_out}),
            "dead_letter": base.dead_letter.model_copy(update={"topic": dlq}),
        })
        # The process's CPU time (all threads) from the first event consumed: steadier than wall
        # time on a shared machine, and without start-up (model load, Feast registry, warm-up).
        cpu_first: list[float] = []

        def at_first_event(w: Worker) -> None:
            if not cpu_first and w.stats.first_msg_s is not None:
                cpu_first.append(time.process_time())

        w = Worker(t, settings, max_events=n, idle_exit_s=60, install_signals=False,
                   observer=_observer(observe, t, settings), progress=at_first_event, progress_interval_s=0)
        if w.run() != 0:
            raise RuntimeError(f"worker failed: {w.error}")
        cpu_s = time.process_time() - (cpu_first[0] if cpu_first else 0.0)
        st = w.stats
        worker_eps = n / ((st.last_ack_s or time.monotonic()) - (st.first_msg_s or st.started_s))
        batch = sorted(st.batch_ms)
        return {
            "events": n,
            "max_batch": t.batching.max_batch,
            "topology": t.id,
            "model": f"{t.model.name}/{t.model.version}",
            "reader": t.features.reader if t.features is not None else None,
            "passthrough_events_per_s": round(raw_eps, 1),
            "worker_events_per_s": round(worker_eps, 1),
            "worker_cpu_us_per_event": round(cpu_s / n * 1e6, 2),
            "ratio": round(worker_eps / raw_eps, 3),
            "worker_batch_p50_ms": round(batch[len(batch) // 2], 3) if batch else None,
            "worker_batch_p99_ms": round(batch[int(len(batch) * 0.99)], 3) if batch else None,
            "worker_stage_ms_total": {k: round(v, 1) for k, v in st.stage_ms.items()},
            "log_sink": log_sink,
            "observe": observe,
            "slow_sink_records_written": slow.written if slow else None,
            "log_records_dropped": DroppingQueueHandler.dropped,
        }
    finally:
        admin = AdminClient(dict(settings.kafka_client_config()))
        for f in admin.delete_topics([src, raw_out, dec_out, dlq]).values():
            try:
                f.result(30)
            except Exception:
                pass  # best effort: leftover bench topics are harmless


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="streamscore bench pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000, help="pre-produced events (default 50000)")
    ap.add_argument("--topology", default="topologies/fraud.yaml", help="default topologies/fraud.yaml")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--log-sink", choices=["default", "off", "slow"], default="default",
                    help="default: stderr; off: no logging at all; slow: 10 ms a record, status every "
                         "0.1 s (default default)")
    ap.add_argument("--observe", choices=["on", "off", "spans"], default="on",
                    help="on: metrics + trace propagation; off: neither on the hot path; spans: on + "
                         "batch spans (default on)")
    a = ap.parse_args(argv)
    r = run_bench(a.events, a.topology, a.log_sink, a.observe)
    print(f"\nworker ({r['topology']}, model {r['model']}) vs raw Kafka pass-through, {r['events']} events, "
          f"max_batch {r['max_batch']}, reader {r['reader']}")
    print(f"  pass-through : {r['passthrough_events_per_s']:>10,.0f} events/s")
    print(f"  worker       : {r['worker_events_per_s']:>10,.0f} events/s   (ratio {r['ratio']:.2f}), "
          f"{r['worker_cpu_us_per_event']} CPU µs/event (process, all threads, from the first event)")
    print(f"  worker micro-batch p50/p99: {r['worker_batch_p50_ms']} / {r['worker_batch_p99_ms']} ms")
    print(f"  log sink {r['log_sink']}, observe {r['observe']}, log records dropped "
          f"{r['log_records_dropped']}, slow sink wrote {r['slow_sink_records_written']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    return 0
