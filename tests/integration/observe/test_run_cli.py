"""`streamscore run --metrics-port P` as an operator starts it: probes and metrics on P, JSON log
lines on stderr (start, stop), on the real broker and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from tests.integration.conftest import ROOT
from workers.dev.producer import event_key, event_source
from workers.settings import Settings
from workers.topology import Topology

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def test_run_serves_probes_and_metrics_and_logs_json(feature_store: Settings, it_topology: Topology,
                                                     tmp_path: Path) -> None:
    t = it_topology
    raw = yaml.safe_load((ROOT / "topologies" / "fraud.yaml").read_text())
    raw["input"].update(topic=t.input.topic, consumer_group=t.input.consumer_group)
    raw["output"]["topic"] = t.output.topic
    raw["dead_letter"]["topic"] = t.dead_letter.topic
    topo = tmp_path / "t.yaml"
    topo.write_text(yaml.safe_dump(raw))
    p = Producer(feature_store.kafka_client_config())
    events = event_source(t, 9, time.time_ns() // 1_000_000)
    n = 500
    for _ in range(n):
        ev = next(events)
        p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev))
    assert p.flush(30) == 0

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workers", "run", str(topo), "--metrics-port", str(port),
                             "--idle-exit-s", "6"], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen_ready = False
        metrics = b""
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            status, _ = _get(port, "/readyz")
            seen_ready = seen_ready or status == 200
            s, body = _get(port, "/metrics")
            if s == 200:
                metrics = body
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert seen_ready
    assert b"streamscore_events_total" in metrics and b"streamscore_model_info" in metrics
    lines = [orjson.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    events_seen = [r.get("event") for r in lines]
    assert "start" in events_seen and "stop" in events_seen, err.decode()[-3000:]
    assert b"decisions=500" in out
