from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from workers.model import modelgraph
from workers.model import quantize
from workers.engines.onnx_cpu import OnnxCpuEngine
from workers.model.manifest import load_manifest, sha256_file


ROOT = Path(__file__).resolve().parents[3]


def small_spec(directory: Path, estimator: str = "kind: mlp\n  params: {hidden_layers: [16]}") -> Path:
    """fraud_mlp v1's training spec on 20k transactions (~1 s), written where quantize re-reads it."""
    text = (ROOT / "examples" / "fraud" / "train_v1.yaml").read_text()
    text = text.replace("inputs: inputs_v1.yaml", f"inputs: {ROOT / 'examples' / 'fraud' / 'inputs_v1.yaml'}")
    text = text.replace("params: {n_txns: 200000}", "params: {n_txns: 20000}")
    text = text.replace("kind: mlp\n  params: {hidden_layers: [64, 64]}", estimator)
    path = directory / "train_small.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained like the real one: ``<dir>/fraud_mlp/1``."""
    from workers.model.train import load_train_spec, train

    out = tmp_path_factory.mktemp("models")
    logging.getLogger("streamscore.train").setLevel(logging.WARNING)
    train(load_train_spec(small_spec(out)), out=out)
    return out


def test_writes_int8_and_fp16_with_manifests(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert quantize.main(["--models-dir", str(trained)]) == 0
    d = trained / "fraud_mlp" / "1"
    base = load_manifest(trained, "fraud_mlp", 1)
    for variant in ("int8", "fp16"):
        model = d / f"model.{variant}.onnx"
        doc = json.loads((d / f"manifest.{variant}.json").read_text())
        assert doc["file"] == model.name and doc["sha256"] == sha256_file(model)
        v = doc["variant"]
        assert v["name"] == variant and v["base_sha256"] == base.sha256
        assert v["fp32_heldout_auc"] == pytest.approx(base.metric("heldout_auc"), abs=1e-4)
        assert v["auc_drop"] == pytest.approx(v["fp32_heldout_auc"] - doc["metrics"]["heldout_auc"], abs=2e-6)
        assert v["auc_drop"] <= quantize.DEFAULT_MAX_AUC_DROP
        assert doc["feature_order"] == list(base.feature_order)
    ops = {n.op_type for n in onnx.load(str(d / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: also what TensorRT accepts
    out = capsys.readouterr().out
    assert "int8" in out and "fp16" in out and "drop" in out


def test_int8_runs_on_the_cpu_engine(trained: Path) -> None:
    assert quantize.main(["--models-dir", str(trained), "--variants", "int8"]) == 0
    engine = OnnxCpuEngine(trained / "fraud_mlp" / "1" / "model.int8.onnx")
    engine.load()
    engine.warm_up([1, 64])
    s = engine.infer(np.zeros((64, 26), dtype=np.float32))
    assert s.shape == (64, 1) and np.isfinite(s).all()


def test_output_is_deterministic(trained: Path) -> None:
    d = trained / "fraud_mlp" / "1"
    assert quantize.main(["--models-dir", str(trained)]) == 0
    first = {p.name: p.read_bytes() for p in d.glob("*.*.*")}
    assert quantize.main(["--models-dir", str(trained)]) == 0
    assert {p.name: p.read_bytes() for p in d.glob("*.*.*")} == first


def test_refuses_a_variant_over_the_auc_limit(trained: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # A negative limit refuses any variant: nothing may be written, and the exit code says so.
    import shutil

    models = tmp_path / "m"
    shutil.copytree(trained, models)
    d = models / "fraud_mlp" / "1"
    for p in d.glob("*.*.*"):
        p.unlink()
    assert quantize.main(["--models-dir", str(models), "--max-auc-drop", "-1"]) == quantize.EXIT_REFUSED
    assert not list(d.glob("model.*.onnx")) and not list(d.glob("manifest.*.json"))
    assert not list(d.glob(".*part"))
    err = capsys.readouterr().err
    assert "refusing" in err and "--max-auc-drop" in err


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert quantize.main(["--models-dir", str(tmp_path)]) == 1
    assert "model train" in capsys.readouterr().err


def test_unknown_variant_is_rejected(trained: Path) -> None:
    assert quantize.main(["--models-dir", str(trained), "--variants", "int4"]) == 1


def test_fp16_keeps_standardization_in_float32(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "m16.onnx"
    onnx.save(modelgraph.random_mlp(8, (16,), seed=1), str(src))
    quantize.convert_fp16(src, dst, fp16_io=False)
    m = onnx.load(str(dst))
    inits = {i.name: i.data_type for i in m.graph.initializer}
    assert inits["scaler_mean"] == onnx.TensorProto.FLOAT and inits["W0"] == onnx.TensorProto.FLOAT16
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    np.testing.assert_allclose(quantize.scores(dst, x, "score", 0), quantize.scores(src, x, "score", 0), atol=2e-3)
    quantize.convert_fp16(src, dst, fp16_io=True)
    assert onnx.load(str(dst)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    np.testing.assert_allclose(quantize.scores(dst, x, "score", 0), quantize.scores(src, x, "score", 0), atol=3e-3)


def test_tree_ensembles_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert quantize.main(["--models-dir", str(ROOT / "models"), "--name", "fraud_gbm", "--version", "2"]) == 1
    assert "tree ensemble" in capsys.readouterr().err
