"""``streamscore bench engine --quick``: checks the JSON shape only, never the figures."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from workers.bench import engine as bench_engine
from workers.model import modelgraph

KEYS = {"engine", "model", "batch", "rows_per_s", "raw_rows_per_s", "ratio", "p50_ms", "p99_ms"}


def test_quick_run_writes_the_documented_json(tmp_path: Path) -> None:
    demo = tmp_path / "demo.onnx"
    onnx.save(modelgraph.random_mlp(26, (8,), seed=3), str(demo))
    out = tmp_path / "bench.json"
    code = bench_engine.main([
        "--quick", "--batches", "1,8", "--seconds", "0.01", "--engines", "onnxruntime-cpu",
        "--demo-model", str(demo), "--source", "synthetic", "--json", str(out),
        "--work-dir", str(tmp_path / "work"),
    ])
    assert code == 0
    doc = json.loads(out.read_text())
    assert isinstance(doc["device"], str) and doc["device"]
    results = doc["results"]
    assert {(r["model"], r["batch"], r["mode"]) for r in results} == {
        (m, b, mode) for m in ("demo_mlp", "heavy_mlp") for b in (1, 8) for mode in ("batcher+engine", "e2e")
    }
    for r in results:
        assert KEYS <= set(r)
        assert r["engine"] == "onnxruntime-cpu"
        assert all(isinstance(r[k], (int, float)) and r[k] >= 0 for k in KEYS - {"engine", "model"})


def test_heavy_model_on_cpu_is_capped(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = bench_engine.main([
        "--quick", "--batches", "2,16", "--seconds", "0.01", "--engines", "onnxruntime-cpu",
        "--models", "heavy", "--heavy-cpu-max-batch", "4", "--json", str(out),
        "--work-dir", str(tmp_path),
    ])
    assert code == 0
    doc = json.loads(out.read_text())
    assert [r["batch"] for r in doc["results"]] == [2]
    assert any("batch 16" in s for s in doc["skipped"])


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    assert bench_engine.main(["--batches", "0"]) == 2
    assert bench_engine.main(["--batches", "1", "--engines", "no-such-engine"]) == 2
    assert bench_engine.main(["--batches", "1", "--models", "demo", "--demo-model", str(tmp_path / "x.onnx")]) == 2
