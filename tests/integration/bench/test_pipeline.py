"""`streamscore bench pipeline` runs on the real broker and writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from workers.bench.pipeline import main
from workers.settings import Settings


def test_pipeline_bench_writes_json(feature_store: Settings, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    assert main(["--events", "3000", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["events"] == 3000
    assert r["passthrough_events_per_s"] > 0 and r["worker_events_per_s"] > 0
    assert r["ratio"] == round(r["worker_events_per_s"] / r["passthrough_events_per_s"], 3)
