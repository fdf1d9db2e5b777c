"""`streamscore bench cascade` on the real Redis writes its JSON (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from workers.bench.cascade import main
from workers.settings import Settings


def test_cascade_bench_writes_json(feature_store: Settings, tmp_path: Path) -> None:
    out = tmp_path / "cascade.json"
    assert main(["--events", "2000", "--repeat", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["heavy"], r["cheap"], r["band"]) == ("fraud_gbm v2", "fraud_lite v1", [0.01, 0.9])
    ho, demo = r["heldout"], r["demo"]
    assert ho["heavy_only"]["heavy_share"] == demo["heavy_only"]["heavy_share"] == 1.0
    assert 0.0 < ho["cascade"]["heavy_share"] < 1.0 and 0.0 < demo["cascade"]["heavy_share"] < 1.0
    assert ho["auc_heavy"] > 0.9 and ho["auc_cascade"] > 0.9 and ho["rows"] == ho["cascade"]["rows"]
    assert demo["cache"]["exact"] and demo["cache"]["lookups"] == 2000
    assert demo["cache"]["hit_rate_replayed"] == 1.0
