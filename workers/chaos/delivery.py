"""Chaos scenarios of the worker process and the broker: kill -9, broker outages with a SIGTERM
during them, and 1 -> 3 -> 1 workers in one group.

Every scenario runs the fraud topology on fresh topics and a fresh group, produces events at a
steady rate in a background thread while the fault happens, then drains what is left with one
clean worker and counts per input message (``ledger``): at_least_once must lose nothing;
exactly_once must also duplicate nothing, read back with an ``isolation.level=read_committed``
reader. Workers are real ``streamscore run`` processes; their logs stay in the scratch directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from workers.chaos.ledger import Counts, count, end_offsets, outcomes, read_topic
from workers.chaos.report import ScenarioResult
from workers.chaos.run import ChaosContext, Scenario
from workers.dev import stack as devstack
from workers.dev.producer import event_key, event_source
from workers.settings import PROJECT_ROOT, Settings
from workers.topology import load_topology

BASE_TOPOLOGY = PROJECT_ROOT / "topologies" / "fraud.yaml"
GRACE_S = 10.0  # the workers' shutdown_grace_s in these scenarios


@dataclass
class Run:
    """One scenario's topics, topology file and worker processes."""

    ctx: ChaosContext
    name: str
    delivery: str = "at_least_once"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raw = yaml.safe_load(BASE_TOPOLOGY.read_text())
        raw["input"].update(topic=f"chaos-{self.tag}-tx", consumer_group=f"chaos-{self.tag}")
        raw["output"]["topic"] = f"chaos-{self.tag}-decisions"
        raw["dead_letter"]["topic"] = f"chaos-{self.tag}-dlq"
        raw["delivery"] = self.delivery
        raw["dev"]["streaming"] = []
        self.path = self.ctx.workdir / f"{self.name}-{self.tag}.yaml"
        self.path.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.topology = load_topology(self.path)
        t = self.topology
        devstack.ensure_topics(self.ctx.settings, [
            devstack.TopicSpec(t.input.topic, t.input.partitions),
            devstack.TopicSpec(t.output.topic, t.output.partitions),
            devstack.TopicSpec(t.dead_letter.topic, t.dead_letter.partitions),
        ])

    @property
    def log_dir(self) -> Path:
        """Kept after the run (the scratch directory is not): where to look when one fails."""
        d = self.ctx.settings.state_dir / "chaos" / f"{self.name}-{self.tag}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log(self, wid: str) -> Path:
        return self.log_dir / f"worker-{wid}.log"

    def start(self, wid: str, instance_id: str | None = None, idle_exit_s: float | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "STREAMSCORE_SHUTDOWN_GRACE_S": str(GRACE_S),
               "STREAMSCORE_LOG_FORMAT": "text"}  # ownership() reads the text lines
        env.pop("STREAMSCORE_INSTANCE_ID", None)
        if instance_id is not None:
            env["STREAMSCORE_INSTANCE_ID"] = instance_id
        cmd = [sys.executable, "-m", "workers", "--log-level", "INFO", "run", str(self.path)]
        if idle_exit_s is not None:
            cmd += ["--idle-exit-s", str(idle_exit_s)]
        with self.log(wid).open("ab") as out:
            out.write(b"\n--- worker-start-mark ---\n")  # wait_started reads after the last one
            out.flush()
            self.procs[wid] = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                               stdout=out, stderr=subprocess.STDOUT)

    def wait_started(self, wid: str, timeout_s: float = 180.0) -> None:
        """Until worker ``wid`` has subscribed (its start-up takes seconds: imports, Feast, ONNX)."""
        deadline = time.monotonic() + timeout_s
        p = self.procs[wid]
        while b" started (" not in self.log(wid).read_bytes().split(b"worker-start-mark")[-1]:
            if p.poll() is not None:
                raise RuntimeError(f"worker {wid} exited with {p.returncode}; see {self.log(wid)}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"worker {wid} did not start within {timeout_s:.0f} s; see {self.log(wid)}")
            time.sleep(0.2)

    def kill9(self, wid: str) -> None:
        p = self.procs.pop(wid)
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def term(self, wid: str, timeout_s: float = 120.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        p = self.procs.pop(wid)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            code = p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait(30)
        return code, time.monotonic() - t0

    def wait(self, wid: str, timeout_s: float) -> int:
        try:
            return self.procs[wid].wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.procs[wid].kill()
            return self.procs[wid].wait(30)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(30)

    def decided(self) -> int:
        """Input messages done so far: the group's committed offsets (in exactly_once they move
        only with a committed transaction; output high watermarks also count aborted records)."""
        s, t = self.ctx.settings, self.topology
        c = Consumer({**s.kafka_client_config(), "group.id": t.input.consumer_group,
                      "enable.auto.commit": False})
        try:
            tps = [TopicPartition(t.input.topic, p) for p in range(t.input.partitions)]
            return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=5))
        except KafkaException:
            return -1  # the broker restarting, or offsets of a transaction still pending
        finally:
            c.close()

    def wait_progress(self, more_than: int, timeout_s: float = 120.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self.decided()
            if n > more_than:
                return n
            for wid, p in self.procs.items():
                if p.poll() is not None and p.returncode != 0:
                    raise RuntimeError(f"worker {wid} exited with {p.returncode}; see {self.log(wid)}")
            time.sleep(0.3)
        raise RuntimeError(f"{self.name}: no new outcome within {timeout_s:.0f} s; see {self.log_dir}")

    def counts(self) -> tuple[Counts, list[float]]:
        """The ledger's counts and the output records' timestamps (ms)."""
        s, t = self.ctx.settings, self.topology
        eos = self.delivery == "exactly_once"
        got = outcomes(s, t.output.topic, t.dead_letter.topic, read_committed=eos)
        stamps = [float(m.timestamp()[1]) for m in read_topic(s, t.output.topic, read_committed=eos)]
        return count(end_offsets(s, t.input.topic), got), stamps


class Load:
    """Events at ``rate``/s to the run's input topic from a background thread, until ``stop``
    (or ``total``)."""

    def __init__(self, run: Run, rate: float, total: int = 10_000_000) -> None:
        self.run, self.rate, self.total = run, rate, total
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _loop(self) -> None:
        t = self.run.topology
        p = Producer({**self.run.ctx.settings.kafka_client_config(), "linger.ms": 5,
                      "message.timeout.ms": 600_000})  # rides out the broker outages
        events = event_source(t, 17, time.time_ns() // 1_000_000)
        t0 = time.monotonic()
        while self.sent < self.total and not self._stop.is_set():
            due = min(self.total, int((time.monotonic() - t0) * self.rate) + 1)
            while self.sent < due:
                ev = next(events)
                try:
                    p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev))
                except BufferError:
                    p.poll(0.1)
                    continue
                self.sent += 1
            p.poll(0)
            time.sleep(0.02)
        p.flush(600)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float = 900.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


def _recover_s(stamps_ms: list[float], fault_end_s: list[float]) -> float | None:
    """Longest time from a fault's end (wall clock) to the next output record."""
    worst: float | None = None
    for t in fault_end_s:
        after = [s / 1e3 - t for s in stamps_ms if s / 1e3 >= t]
        if after:
            worst = max(worst or 0.0, min(after))
    return None if worst is None else round(worst, 1)


def _drain(run: Run, load: Load, instance_id: str | None = "0") -> int:
    """Once the load is sent: one clean worker until the input is idle; its exit code. It runs
    as the faulted worker's replacement (same instance id: in exactly_once it aborts the open
    transaction a killed worker left at once)."""
    load.join()
    run.start("drain", instance_id=instance_id, idle_exit_s=6.0)
    return run.wait("drain", 600)


def _finish(run: Run, name: str, expected: str, ok: Callable[[Counts], bool], fault_ends: list[float],
            notes: list[str], extra: dict[str, Any]) -> ScenarioResult:
    c, stamps = run.counts()
    run.stop_all()
    passed = ok(c) and not [n for n in notes if n.startswith("FAIL")]
    return ScenarioResult(name, c, recover_s=_recover_s(stamps, fault_ends), passed=passed,
                          expected=expected, notes=notes, extra={"logs": str(run.log_dir), **extra})


# ---------------------------------------------------------------- kill -9


def _kill9(delivery: str) -> Scenario:
    def scenario(ctx: ChaosContext) -> ScenarioResult:
        devstack.up(ctx.settings)
        name = f"kill9_x5_{'eos' if delivery == 'exactly_once' else 'alo'}"
        run = Run(ctx, name, delivery)
        kills = 2 if ctx.quick else 5
        rate = 400.0 if ctx.quick else 1000.0
        load = Load(run, rate).start()
        fault_ends: list[float] = []
        notes: list[str] = []
        try:
            seen = 0
            for k in range(kills):
                run.start("w", instance_id="0")  # static membership: it takes its partitions back
                if k:
                    fault_ends.append(time.time())
                run.wait_started("w")
                seen = run.wait_progress(max(seen, run.decided()))
                time.sleep(0.5 + (k % 3) * 0.4)  # mid-batch, mid-transaction
                run.kill9("w")
            run.start("w", instance_id="0")
            fault_ends.append(time.time())
            run.wait_started("w")
            run.wait_progress(max(seen, run.decided()))
            load.join()
            code, _ = run.term("w")
            if code != 0:
                notes.append(f"FAIL: the last worker exited {code}")
            if _drain(run, load) != 0:
                notes.append("FAIL: the draining worker did not exit 0")
        finally:
            run.stop_all()
        if delivery == "exactly_once":
            expected = "0 lost, 0 duplicated, 0 contradictory (read_committed)"
            return _finish(run, name, expected, lambda c: (c.lost, c.duplicated, c.contradictory) == (0, 0, 0),
                           fault_ends, notes, {"kills": kills})
        return _finish(run, name, "0 lost, 0 contradictory", lambda c: (c.lost, c.contradictory) == (0, 0),
                       fault_ends, notes, {"kills": kills})

    return scenario


# ---------------------------------------------------------------- broker outage


def _kafka_pid(settings: Settings) -> int:
    paths = devstack.StatePaths(settings.state_dir)
    pid = devstack._our_pid(paths.kafka_pid, paths.kafka_props)
    if pid is None:
        raise RuntimeError("the broker outage scenarios stop the local broker that `streamscore dev up` "
                           "started; none runs from this state dir (external Kafka?)")
    return pid


def _broker_outage(outage_s: float) -> Scenario:
    def scenario(ctx: ChaosContext) -> ScenarioResult:
        devstack.up(ctx.settings)
        secs = outage_s / 4 if ctx.quick else outage_s
        name = f"broker_down_{outage_s:.0f}s_sigterm"
        run = Run(ctx, name)
        rate = 400.0 if ctx.quick else 1000.0
        load = Load(run, rate).start()
        notes: list[str] = []
        extra: dict[str, Any] = {"outage_s": secs, "grace_s": GRACE_S}
        try:
            run.start("w", instance_id="0")
            run.wait_progress(run.wait_progress(0) + 200)
            kafka = _kafka_pid(ctx.settings)
            t_stop = time.monotonic()
            devstack._stop(kafka, "Kafka", devstack.KAFKA_STOP_TIMEOUT_S)
            t_down = time.monotonic()  # the broker process has exited
            extra["broker_stop_s"] = round(t_down - t_stop, 1)
            time.sleep(min(3.0, secs / 2))
            stopped: list[tuple[int, float]] = []  # the stop runs while the broker stays down
            stopper = threading.Thread(target=lambda: stopped.append(run.term("w", GRACE_S + 60)))
            stopper.start()
            time.sleep(max(0.0, secs - (time.monotonic() - t_down)))
            t_restart = time.monotonic()
            extra["broker_down_s"] = round(t_restart - t_down, 1)
            devstack.up(ctx.settings)
            up_at = time.time()
            extra["broker_restart_s"] = round(time.monotonic() - t_restart, 1)  # until it answers
            stopper.join()
            code, stop_s = stopped[0]
            extra.update(stop_exit=code, stop_s=round(stop_s, 1))
            if stop_s > GRACE_S + 2.0:  # + process exit; the stop itself is bounded by the grace
                notes.append(f"FAIL: SIGTERM during the outage took {stop_s:.1f} s (grace {GRACE_S:.0f} s)")
            run.start("w2", instance_id="0")
            run.wait_started("w2")
            run.wait_progress(run.decided())
            load.join()
            code2, _ = run.term("w2")
            if code2 != 0:
                notes.append(f"FAIL: the worker after the outage exited {code2}")
            if _drain(run, load) != 0:
                notes.append("FAIL: the draining worker did not exit 0")
        finally:
            run.stop_all()
            devstack.up(ctx.settings)
        return _finish(run, name, f"0 lost, stop within the {GRACE_S:.0f} s grace period",
                       lambda c: (c.lost, c.contradictory) == (0, 0), [up_at], notes, extra)

    return scenario


# ---------------------------------------------------------------- 1 -> 3 -> 1 workers

_LOG_TS = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: "
_ASSIGN = re.compile(_LOG_TS + r"partitions (assigned|revoked|lost)[^\[]*(\[.*?\])", re.M)


def ownership(logs: dict[str, str]) -> tuple[list[str], dict[str, list[tuple[int, float, float]]]]:
    """Partition ownership intervals per worker from their logs; the overlaps (a partition owned
    by two workers at once), described."""
    spans: dict[str, list[tuple[int, float, float]]] = {}
    for wid, text in logs.items():
        start: dict[int, float] = {}
        out: list[tuple[int, float, float]] = []
        last = 0.0
        for m in _ASSIGN.finditer(text):
            ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            last = ts
            parts = [int(p) for p in re.findall(r"\('[^']*', (\d+)\)", m.group(3))]
            for p in parts:
                if m.group(2) == "assigned":
                    start[p] = ts
                elif p in start:
                    out.append((p, start.pop(p), ts))
        out += [(p, t0, max(last, t0) + 1e9) for p, t0 in start.items()]  # still owned at the end
        spans[wid] = out
    overlaps = []
    ids = sorted(spans)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            for pa, a0, a1 in spans[a]:
                for pb, b0, b1 in spans[b]:
                    if pa == pb and a0 < b1 and b0 < a1:
                        overlaps.append(f"partition {pa}: {a} and {b}")
    return overlaps, spans


def _members(admin: AdminClient, group: str) -> int | None:
    try:
        d = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except KafkaException:
        return None
    return len(d.members) if d.state == ConsumerGroupState.STABLE else None


def _wait_members(run: Run, n: int, timeout_s: float = 120.0) -> None:
    admin = AdminClient(dict(run.ctx.settings.kafka_client_config()))
    deadline = time.monotonic() + timeout_s
    while _members(admin, run.topology.input.consumer_group) != n:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{run.name}: the group did not settle with {n} members in {timeout_s:.0f} s")
        time.sleep(0.3)


def _scale(ctx: ChaosContext) -> ScenarioResult:
    devstack.up(ctx.settings)
    name = "scale_1_3_1"
    run = Run(ctx, name)
    rate = 400.0 if ctx.quick else 1000.0
    hold_s = 3.0 if ctx.quick else 10.0
    load = Load(run, rate).start()
    notes: list[str] = []
    fault_ends: list[float] = []
    try:
        run.start("0")  # dynamic membership: leaving members hand their partitions over at once
        _wait_members(run, 1)
        run.wait_progress(0)
        run.start("1")
        run.start("2")
        _wait_members(run, 3)
        fault_ends.append(time.time())
        run.wait_progress(run.decided())
        time.sleep(hold_s)
        for wid in ("1", "2"):
            code, _ = run.term(wid)
            if code != 0:
                notes.append(f"FAIL: worker {wid} exited {code} on SIGTERM")
        _wait_members(run, 1)
        fault_ends.append(time.time())
        run.wait_progress(run.decided())
        load.join()
        code, _ = run.term("0")
        if code != 0:
            notes.append(f"FAIL: worker 0 exited {code} on SIGTERM")
    finally:
        run.stop_all()
    overlaps, spans = ownership({w: run.log(w).read_text(errors="replace") for w in ("0", "1", "2")})
    if overlaps:
        notes.append(f"FAIL: partitions owned twice: {overlaps[:5]}")
    if not any(spans.values()):
        notes.append("FAIL: no assignment found in the workers' logs")
    if _drain(run, load, None) != 0:
        notes.append("FAIL: the draining worker did not exit 0")
    return _finish(run, name, "0 lost, no partition owned twice", lambda c: (c.lost, c.contradictory) == (0, 0),
                   fault_ends, notes, {"owned_twice": len(overlaps)})


SCENARIOS: dict[str, Scenario] = {
    "kill9_x5_alo": _kill9("at_least_once"),
    "kill9_x5_eos": _kill9("exactly_once"),
    "broker_down_10s_sigterm": _broker_outage(10.0),
    "broker_down_60s_sigterm": _broker_outage(60.0),
    "scale_1_3_1": _scale,
}
