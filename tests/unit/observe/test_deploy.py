"""deploy/: the alert rules pass promtool, and the dashboard and rules name only metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import workers.observe.metrics  # noqa: F401  (registers every metric)

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamscore.json"


def _exported() -> set[str]:
    names: set[str] = set()
    for fam in REGISTRY.collect():
        base = fam.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_info"}
    return names


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load(RULES.read_text())
    out += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return out


def test_alert_rules_pass_promtool() -> None:
    assert shutil.which("promtool"), "promtool not found: apt-get install -y prometheus (.ci/run installs it)"
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_dashboard_and_rules_use_exported_metrics_only() -> None:
    known = _exported()
    used = {m for e in _exprs() for m in re.findall(r"\bstreamscore_[a-z0-9_]+", e)}
    assert used and used <= known, sorted(used - known)


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for what in ("throughput", "p99", "budget", "per-step", "batch size", "lag", "dead-letter", "degraded", "fallback"):
        assert what in titles, what
