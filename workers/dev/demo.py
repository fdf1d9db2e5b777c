"""``streamscore demo``: a bounded producer + worker run on the local stack, with a summary.

The worker runs with a fresh consumer group positioned at the current end of the input topic, so
the summary counts exactly this run's events. The producer runs as a separate process (it has its
own core on a 2-core machine). Live progress is printed once a second.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
import sys
import threading
import time
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition

from workers.settings import PROJECT_ROOT, Settings, get_settings
from workers.pipeline.source import retry_coordinator
from workers.pipeline.worker import Worker
from workers.topology import Topology, load_topology


def position_group_at_end(topology: Topology, settings: Settings, group: str) -> None:
    c = Consumer({**settings.kafka_client_config(), "group.id": group,
                  "enable.auto.commit": False}, logger=logging.getLogger(__name__))
    try:
        md = c.list_topics(topology.input.topic, timeout=10)
        parts = md.topics[topology.input.topic].partitions
        tps = []
        for p in parts:
            _, high = c.get_watermark_offsets(TopicPartition(topology.input.topic, p), timeout=10)
            tps.append(TopicPartition(topology.input.topic, p, high))
        retry_coordinator(lambda: c.commit(offsets=tps, asynchronous=False))
    finally:
        c.close()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summarize(w: Worker, seconds: float, produced: dict[str, Any]) -> dict[str, Any]:
    sink = w.sink
    assert sink is not None
    e2e = sink.e2e_ms
    batch = list(w.stats.batch_ms)
    st = w.stats
    # Throughput over the active window (first event consumed -> last decision acked), not
    # including start-up (model load, Feast registry) or the producer's ramp.
    active = (st.last_ack_s or time.monotonic()) - (st.first_msg_s or st.started_s)
    return {
        "events_in": w.stats.consumed,
        "produced": produced,
        "decisions_out": sink.acked_decisions,
        "dead_lettered": sink.acked_dead,
        "dead_letter_reasons": dict(w.stats.dead_reasons),
        "accounted_for": sink.acked_decisions + sink.acked_dead == w.stats.consumed,
        "verdicts": dict(w.stats.verdicts),
        "fallbacks": w.stats.fallbacks,
        "degraded": w.stats.degraded,
        "throughput_per_s": round(sink.acked_decisions / active, 1) if active else 0.0,
        "seconds": round(active, 2),
        "wall_seconds": round(seconds, 2),
        "e2e_latency_ms": {"p50": round(_pct(e2e, 50), 2), "p99": round(_pct(e2e, 99), 2)},
        "batch_ms": {"p50": round(_pct(batch, 50), 3), "p99": round(_pct(batch, 99), 3),
                     "batches": w.stats.batches},
        "stage_ms_total": {k: round(v, 1) for k, v in w.stats.stage_ms.items()},
        "paused_times": w.stats.paused_times,
        "model": f"{w.manifest.name}/{w.manifest.version}",
    }


def _print_summary(s: dict[str, Any]) -> None:
    total = max(1, s["decisions_out"])
    mix = ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in sorted(s["verdicts"].items()))
    print("\n=== streamscore demo summary ===")
    print(f"events in        : {s['events_in']}")
    print(f"decisions out    : {s['decisions_out']}")
    print(f"dead-lettered    : {s['dead_lettered']}  {s['dead_letter_reasons']}")
    print(f"accounted for    : {s['accounted_for']} (decisions + dead letters == events in)")
    print(f"verdict mix      : {mix}")
    print(f"fallbacks        : {s['fallbacks']}   degraded (store unreadable, defaults): "
          f"{s['degraded']}")
    print(f"throughput       : {s['throughput_per_s']:.0f} decisions/s over {s['seconds']} s")
    print(f"e2e latency      : p50 {s['e2e_latency_ms']['p50']} ms, p99 {s['e2e_latency_ms']['p99']} ms"
          " (Kafka record timestamp -> decision acknowledged)")
    print(f"micro-batch      : p50 {s['batch_ms']['p50']} ms, p99 {s['batch_ms']['p99']} ms over "
          f"{s['batch_ms']['batches']} batches")
    print(f"model            : {s['model']}")


def run_demo(topology_path: str, *, count: int, rate: float, malformed_fraction: float,
             json_path: str | None = None, streaming: bool = True) -> int:
    """``streaming``: also run the topology's streaming aggregation jobs (``dev.streaming``)."""
    settings = get_settings()
    base = load_topology(topology_path)
    group = f"streamscore-demo-{int(time.time())}"
    topology = base.model_copy(update={"input": base.input.model_copy(update={"consumer_group": group})})
    position_group_at_end(topology, settings, group)

    from workers.streaming.app import last_summary, spawn_aggregation, stop_aggregation

    jobs: list[tuple[Any, Path]] = []
    for job_topology in (base.dev.streaming if streaming else ()):
        job_log = settings.state_dir / "logs" / f"{Path(job_topology).stem}.log"
        print(f"[demo] starting the streaming job {job_topology} (log {job_log}) ...", flush=True)
        jobs.append((spawn_aggregation(PROJECT_ROOT / job_topology, job_log), job_log))  # returns once it consumes

    started = time.monotonic()

    def progress(w: Worker) -> None:
        s = w.sink
        dec = s.acked_decisions if s else 0
        dead = s.acked_dead if s else 0
        el = time.monotonic() - started
        p99 = _pct(s.e2e_ms[-5000:], 99) if s and s.e2e_ms else float("nan")
        print(f"[demo] {el:5.1f}s in={w.stats.consumed:<7} decisions={dec:<7} dead={dead:<5} "
              f"rate={dec / max(el, 1e-9):7.0f}/s e2e_p99={p99:6.1f}ms "
              f"{'PAUSED' if w.source and w.source.paused else ''}", flush=True)

    worker = Worker(topology, settings, max_events=count, idle_exit_s=30.0, progress=progress)
    cmd = [sys.executable, "-m", "workers", "produce", "--topology", topology_path,
           "--rate", str(rate), "--count", str(count),
           "--malformed-fraction", str(malformed_fraction)]
    prod: subprocess.Popen[bytes] | None = None

    def start_producer() -> None:
        nonlocal prod
        prod = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, env=os.environ.copy())

    def launcher() -> None:
        worker.ready.wait(120)
        start_producer()

    threading.Thread(target=launcher, daemon=True).start()
    print(f"[demo] producing {count} events at {rate:.0f}/s ({malformed_fraction:.1%} malformed) "
          f"to {topology.input.topic}; worker group {group}", flush=True)
    try:
        code = worker.run()
    finally:
        for proc, job_log in jobs:
            stop_aggregation(proc)
            print(f"[demo] {last_summary(job_log)}", flush=True)
    seconds = time.monotonic() - started
    produced: dict[str, Any] = {}
    if prod is not None:
        out, _ = prod.communicate(timeout=120)
        line = out.decode().strip().splitlines()[-1] if out else ""
        produced = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    s = summarize(worker, seconds, produced)
    _print_summary(s)
    if json_path:
        with open(json_path, "wb") as f:
            f.write(orjson.dumps(s, option=orjson.OPT_INDENT_2))
    return code if s["accounted_for"] else 1
