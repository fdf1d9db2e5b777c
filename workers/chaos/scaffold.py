"""What the store and bad-input scenarios share: a topology on fresh topics, a worker process,
a producer, and the decisions read back with their flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Producer

from workers.chaos.ledger import read_topic
from workers.dev import stack as devstack
from workers.dev.producer import event_key, event_source
from workers.settings import PROJECT_ROOT, Settings
from workers.topology import Topology, load_topology

# (value, key, headers) of one input message
Message = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]] | None]


def fresh_topology(workdir: Path, name: str, base: Path = PROJECT_ROOT / "topologies" / "fraud.yaml",
                   settings: Settings | None = None, partitions: int | None = None) -> tuple[Topology, Path]:
    """``base`` on new, uniquely named topics and consumer group (created), written to ``workdir``."""
    raw = yaml.safe_load(base.read_text())
    if partitions is not None:
        raw["input"]["partitions"] = partitions
    s = f"chaos-{name}-{uuid.uuid4().hex[:6]}"
    raw["input"]["topic"], raw["input"]["consumer_group"] = f"{s}-in", s
    raw["output"]["topic"], raw["dead_letter"]["topic"] = f"{s}-decisions", f"{s}-dlq"
    raw["dev"]["streaming"] = []
    path = workdir / f"{s}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    t = load_topology(path)
    if settings is not None:
        devstack.ensure_topics(settings, [
            devstack.TopicSpec(t.input.topic, t.input.partitions),
            devstack.TopicSpec(t.output.topic, t.output.partitions),
            devstack.TopicSpec(t.dead_letter.topic, t.dead_letter.partitions)])
    return t, path


def good_events(topology: Topology, seed: int = 11) -> Iterator[tuple[bytes, bytes | None]]:
    for ev in event_source(topology, seed, time.time_ns() // 1_000_000):
        yield orjson.dumps(ev), event_key(topology, ev)


def producer(settings: Settings, max_message_bytes: int = 1_000_000) -> Producer:
    return Producer({**settings.kafka_client_config(), "linger.ms": 5, "acks": "all",
                     "message.max.bytes": max_message_bytes, "enable.idempotence": True})


def produce(settings: Settings, topic: str, messages: Iterable[Message], *, rate: float | None = None,
            max_message_bytes: int = 1_000_000, stop: threading.Event | None = None) -> int:
    """Send ``messages`` (at ``rate`` per second if given); returns how many were acknowledged."""
    p = producer(settings, max_message_bytes)
    acked = 0

    def cb(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    t0 = time.monotonic()
    for i, (v, k, h) in enumerate(messages):
        if stop is not None and stop.is_set():
            break
        if rate:
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                p.produce(topic, v, k, headers=h, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(60)
    return acked


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None


def start_worker(topology_path: Path, log: Path, *, idle_exit_s: float | None = None,
                 env: dict[str, str] | None = None) -> WorkerProcess:
    """``streamscore run`` in its own process (INFO logs and its summary line into ``log``)."""
    cmd = [sys.executable, "-m", "workers", "--log-level", "INFO", "run", str(topology_path)]
    if idle_exit_s is not None:
        cmd += ["--idle-exit-s", str(idle_exit_s)]
    out = log.open("ab")
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    out.close()
    return WorkerProcess(proc, log)


def wait_ready(w: WorkerProcess, timeout_s: float = 120.0) -> None:
    """Until the worker has its partitions (it logs ``assigned``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "partitions assigned" in w.text():
            return
        if w.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {w.proc.returncode} while starting:\n{w.text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the worker got no partitions within {timeout_s:.0f} s:\n{w.text()[-3000:]}")


def decisions(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every decision record of ``topic``, parsed."""
    return [orjson.loads(m.value()) for m in read_topic(settings, topic)]


def summary_counts(log_text: str, key: str) -> dict[str, int]:
    """A ``{...}`` count of the worker's last summary line (``streamscore run``), e.g. ``unavailable``."""
    import ast

    for line in reversed(log_text.splitlines()):
        if line.startswith("consumed=") and f" {key}=" in line:
            part = line.split(f" {key}=", 1)[1]
            depth = 0
            for i, ch in enumerate(part):
                depth += ch == "{"
                depth -= ch == "}"
                if depth == 0:
                    parsed = ast.literal_eval(part[: i + 1])
                    return {str(k): int(v) for k, v in parsed.items()}
    return {}
