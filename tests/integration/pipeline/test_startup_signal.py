"""SIGTERM while the worker is still starting (imports, model and Feast loading): a clean exit 0
that consumed and committed nothing — not a kill by the default signal action (exit -15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.conftest import ROOT, committed_offsets
from workers.settings import Settings
from workers.topology import Topology


def test_sigterm_during_start_up_exits_zero(stack: Settings, it_topology: Topology, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "topologies" / "fraud.yaml").read_text())
    t = it_topology
    raw["input"].update(topic=t.input.topic, consumer_group=t.input.consumer_group)
    raw["output"]["topic"], raw["dead_letter"]["topic"] = t.output.topic, t.dead_letter.topic
    topo = tmp_path / "t.yaml"
    topo.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "workers", "--log-level", "INFO", "run", str(topo)],
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Wait until the interpreter runs our code (the first line it logs or prints would be too
    # late: start-up is what is being interrupted), then signal.
    while b"workers" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        pass
    import time

    time.sleep(1.0)  # inside the imports of cmd_run (numpy, ONNX Runtime, Feast take seconds)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"stopped during start-up" in out
    assert all(o < 0 for o in committed_offsets(stack, t.input.consumer_group, t.input.topic).values())
