"""SIGTERM or SIGINT mid-stream: in-flight decisions flushed, offsets committed, exit 0, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from tests.integration.conftest import ROOT, committed_offsets, read_all
from examples.fraud import datagen
from workers.settings import Settings
from workers.topology import Topology


def _write_topology(t: Topology, path: Path) -> None:
    raw = yaml.safe_load((ROOT / "topologies" / "fraud.yaml").read_text())
    raw["input"]["topic"] = t.input.topic
    raw["input"]["consumer_group"] = t.input.consumer_group
    raw["output"]["topic"] = t.output.topic
    raw["dead_letter"]["topic"] = t.dead_letter.topic
    path.write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_flushes_commits_and_exits_zero(feature_store: Settings, it_topology: Topology,
                                               tmp_path: Path, signum: signal.Signals) -> None:
    t = it_topology
    topo_file = tmp_path / "t.yaml"
    _write_topology(t, topo_file)
    p = Producer(feature_store.kafka_client_config())
    events = datagen.iter_events(5)
    n = 3000
    for _ in range(n):
        ev = next(events)
        p.produce(t.input.topic, orjson.dumps(ev), str(ev["card_id"]).encode())
    assert p.flush(30) == 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "workers", "--log-level", "INFO", "run",
                             str(topo_file)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # wait until some decisions exist, then stop it mid-stream
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if sum(committed_offsets(feature_store, t.input.consumer_group, t.input.topic).values()) > 0:
            break
        time.sleep(0.2)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-3000:]

    decided = len(read_all(feature_store, t.output.topic))
    committed = committed_offsets(feature_store, t.input.consumer_group, t.input.topic)
    assert sum(max(o, 0) for o in committed.values()) == decided  # clean stop: no gap, no dupes

    # a second run picks up exactly where the first stopped: nothing lost
    proc2 = subprocess.run([sys.executable, "-m", "workers", "run", str(topo_file),
                            "--idle-exit-s", "5"], cwd=ROOT, env=env, capture_output=True,
                           timeout=180)
    assert proc2.returncode == 0, proc2.stdout.decode()[-3000:] + proc2.stderr.decode()[-3000:]
    assert len(read_all(feature_store, t.output.topic)) == n
