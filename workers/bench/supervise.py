"""A system's worker processes: start, wait until their consumer group is stable, sample CPU and
RSS with psutil, stop with SIGTERM (a clean stop for every system), and name the log of one that
died."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from workers.bench.load import BenchError
from workers.settings import PROJECT_ROOT, Settings


def _vm_hwm_mb(pid: int) -> float | None:
    """The kernel's peak resident set of ``pid`` (VmHWM), in MB; None where /proc lacks it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class ProcSample:
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class Procs:
    """``count`` processes of one command line (``{i}`` in an argument becomes the process index)."""

    cmd: list[str]
    count: int
    log_dir: Path
    name: str
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    samples: list[ProcSample] = field(default_factory=list)
    _ps: list[psutil.Process] = field(default_factory=list)

    def log(self, i: int) -> Path:
        return self.log_dir / f"{self.name}-{i}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        for i in range(self.count):
            with self.log(i).open("ab") as out:
                p = subprocess.Popen([a.replace("{i}", str(i)) for a in self.cmd], cwd=PROJECT_ROOT,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
            self.procs.append(p)
            self._ps.append(psutil.Process(p.pid))
            self.samples.append(ProcSample())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                tail = self.log(i).read_text(errors="replace")[-1500:]
                raise BenchError(f"{self.name} process {i} exited with {p.returncode}; its log "
                                 f"{self.log(i)} ends with:\n{tail}")

    def sample(self) -> None:
        for ps, s in zip(self._ps, self.samples):
            try:
                t = ps.cpu_times()
                s.cpu_s = t.user + t.system
                s.rss_mb = ps.memory_info().rss / 2**20
                s.peak_rss_mb = max(s.peak_rss_mb, s.rss_mb, _vm_hwm_mb(ps.pid) or 0.0)
            except psutil.Error:
                pass  # exited between two samples: the last sample stands

    @property
    def cpu_s(self) -> float:
        return sum(s.cpu_s for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max((s.rss_mb for s in self.samples), default=0.0)

    @property
    def peak_rss_mb(self) -> float:
        return max((s.peak_rss_mb for s in self.samples), default=0.0)

    def stop(self, timeout_s: float = 60.0) -> list[int]:
        """SIGTERM all, wait (SIGKILL after ``timeout_s``); the exit codes."""
        self.sample()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait(timeout=10))
        return codes


def admin(settings: Settings) -> AdminClient:
    return AdminClient(dict(settings.kafka_client_config()))


def wait_stable(settings: Settings, group: str, members: int, procs: Procs, timeout_s: float,
                tick: object = None) -> None:
    """Until ``group`` is Stable with ``members`` members (every system's processes join one group)."""
    a = admin(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        procs.check_alive()
        try:
            d = a.describe_consumer_groups([group], request_timeout=5)[group].result()
            if d.state == ConsumerGroupState.STABLE and len(d.members) == members:
                return
        except KafkaException:
            pass  # the group does not exist until its first member joins
        if time.monotonic() >= deadline:
            raise BenchError(f"{procs.name}: consumer group {group} did not become stable with {members} "
                             f"member(s) within {timeout_s:.0f} s; see {procs.log(0)}")
        if callable(tick):
            tick()
        time.sleep(0.2)


def skip_to_end(settings: Settings, group: str, topic: str, ends: dict[int, int]) -> None:
    """Commit ``ends`` for ``group`` (its members stopped): the next start skips the backlog."""
    a = admin(settings)
    from confluent_kafka import ConsumerGroupTopicPartitions

    tps = [TopicPartition(topic, p, o) for p, o in ends.items()]
    deadline = time.monotonic() + 60
    while True:
        try:
            a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result()
            return
        except KafkaException as exc:
            # Non-empty group: the stopped members' sessions have not expired yet.
            if time.monotonic() >= deadline:
                raise BenchError(f"could not move group {group} past the backlog: {exc}") from None
            time.sleep(1.0)
