"""`streamscore bench e2e --quick` on the real broker and Redis: the JSON has the issue's shape, the
Faust and Quix peers decide exactly as streamscore does, and both PNGs are written. No timing is
asserted (the machine is shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.bench.e2e import main
from workers.settings import Settings


def test_bench_e2e_quick(feature_store: Settings, tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    assert main(["--quick", "--json", str(out), "--plots", str(tmp_path / "run")]) == 0
    doc = json.loads(out.read_text())
    assert isinstance(doc["machine"], str) and doc["machine"]
    names = [s["name"] for s in doc["systems"]]
    assert names == ["passthrough", "streamscore:fraud-scorer", "faust", "quix"]
    for s in doc["systems"]:
        assert s["workers"] == 1
        assert s["max_events_per_s"] > 0
        assert s["cpu_s"] >= 0 and s["peak_rss_mb"] > 0
        assert s["max_phase"]["out"] == doc["run"]["events"]  # every backlog event came out once
        measured = {k: v for k, v in s["latency_ms"].items() if v is not None}
        assert measured, f"{s['name']}: no offered rate was measured"
        for v in measured.values():
            assert set(v) == {"p50", "p95", "p99", "p999"}
            assert v["p50"] <= v["p95"] <= v["p99"] <= v["p999"]
    ref = doc["systems"][1]["decisions"]
    assert ref["is_reference"] and ref["compared"] == doc["run"]["events"]
    for peer in doc["systems"][2:]:
        d = peer["decisions"]
        assert d["compared"] == doc["run"]["events"], d
        assert d["different"] == 0, d.get("examples")
    for png in doc["plots"].values():
        assert Path(png).stat().st_size > 1000 and Path(png).read_bytes()[:4] == b"\x89PNG"


def test_bench_e2e_refuses_a_store_without_materialized_features(feature_store: Settings) -> None:
    """Run against an unmaterialized store, every system would be timed on default features (each
    decision flagged degraded): refused before the first system starts, saying what to run."""

    from workers.bench.e2e import System, preflight
    from workers.bench.load import BenchError
    from workers.topology import load_topology

    fraud = System("streamscore", "topologies/fraud.yaml", load_topology("topologies/fraud.yaml"))
    preflight(feature_store, [fraud])  # materialized by the fixture: no refusal
    empty_db = feature_store.model_copy(update={"redis_url": feature_store.redis_url.rsplit("/", 1)[0] + "/7"})
    with pytest.raises(BenchError, match=r"no materialized features for views \[.*card_profile.*\].*"
                                         r"streamscore setup --topology topologies/fraud.yaml"):
        preflight(empty_db, [fraud])
    # the pass-through reads no features: nothing to refuse
    preflight(empty_db, [System("passthrough", "topologies/fraud.yaml", fraud.topology)])
