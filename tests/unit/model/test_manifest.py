from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workers.model.manifest import ManifestError, ModelManifest, load_manifest, sha256_file, write_manifest
from workers.settings import PROJECT_ROOT


def raw_manifest(sha: str) -> dict[str, Any]:
    return {
        "format": 2,
        "name": "m",
        "version": 2,
        "file": "model.onnx",
        "sha256": sha,
        "input": {"name": "features", "shape": [-1, 3], "dtype": "float32", "meaning": ""},
        "output": {"name": "score", "shape": [-1, 1], "dtype": "float32", "kind": "probability", "column": 0,
                   "meaning": "p(fraud)"},
        "inputs": [{"name": "log_amount", "op": "log1p", "of": "amount"},
                   {"name": "v:a", "op": "feature", "of": "v:a"},
                   {"name": "same", "op": "equal", "of": ["country", "v:s"]}],
        "feature_order": ["log_amount", "v:a", "same"],
        "online_numeric": ["v:a"],
        "online_strings": ["v:s"],
        "feature_service": "svc",
        "defaults": {"v:a": 1.5, "v:s": ""},
        "thresholds": {"review": 0.5, "decline": 0.9},
        "metrics": {"heldout_auc": 0.95, "heldout_rows": 10, "train_rows": 40, "positive_rate": 0.02},
        "training": {"seed": 7, "spec": "x.yaml", "estimator": "mlp"},
    }


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    d = tmp_path / "m" / "2"
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"not really onnx")
    write(d, raw_manifest(sha256_file(d / "model.onnx")))
    return tmp_path


def write(d: Path, raw: dict[str, Any]) -> None:
    (d / "manifest.json").write_text(json.dumps(raw))


def test_load_valid(models: Path) -> None:
    m = load_manifest(models, "m", 2)
    assert m.version == 2 and m.input.shape == (-1, 3) and m.feature_order == ("log_amount", "v:a", "same")
    assert m.numeric_defaults() == [1.5] and m.defaults["v:s"] == ""
    assert m.model_path == models / "m" / "2" / "model.onnx"
    assert m.training["estimator"] == "mlp" and m.metric("train_rows") == 40
    assert m.output.kind == "probability" and m.output.width == 1


def test_roundtrip_is_byte_stable(models: Path, tmp_path: Path) -> None:
    m = load_manifest(models, "m", "2")
    out = tmp_path / "again"
    write_manifest(m, out)
    first = (out / "manifest.json").read_bytes()
    write_manifest(m, out)
    assert (out / "manifest.json").read_bytes() == first
    assert json.loads(first) == raw_manifest(m.sha256)


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"fraud_mlp/1/manifest.json: no such manifest .*model register"):
        load_manifest(tmp_path, "fraud_mlp", 1)


def test_bad_json_names_line(models: Path) -> None:
    (models / "m" / "2" / "manifest.json").write_text('{\n  "name": "m",\n  oops\n}')
    with pytest.raises(ManifestError, match="invalid JSON at line 3"):
        load_manifest(models, "m", 2)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(colour="blue"), r"unknown key\(s\) \['colour'\] in `manifest`"),
        (lambda r: r["thresholds"].update(block=1.5), r"`thresholds.block` = 1.5 is not a probability"),
        (lambda r: r.pop("feature_service"), r"name the `feature_service`"),
        (lambda r: r.pop("inputs"), r"missing key\(s\) \['inputs'\]"),
        (lambda r: r.update(format=1), r"format 1 is not supported"),
        (lambda r: r["inputs"].append({"name": "x", "op": "sqrt", "of": "a"}), r"inputs\[3\]"),
        (lambda r: r.update(online_numeric=[]), r"`online_numeric` must list exactly the online features"),
        (lambda r: r["output"].update(kind="classes"), r"lists its `labels`"),
        (lambda r: r["output"].update(column=1), r"outside the output's 1 columns"),
        (lambda r: r.update(version="2"), r"`version` must be int"),
        (lambda r: r["metrics"].update(heldout_rows=True), r"`metrics.heldout_rows` must be float or int, got a boolean"),
        (lambda r: r["defaults"].pop("v:a"), r"`defaults` has no value for online feature 'v:a'"),
        (lambda r: r["defaults"].update({"v:zzz": 1}), r"not in online_numeric/online_strings"),
        (lambda r: r["input"].update(shape=[-1, 2]), r"does not match the 3 columns the inputs make"),
        (lambda r: r.update(online_numeric=["nocolon"], defaults={"nocolon": 1, "v:s": ""}), r"not a 'view:feature' ref"),
        (lambda r: r.update(feature_order=["a", "a", "b"]), r"duplicate|does not match the columns"),
        (lambda r: r.update(name="other"), r"manifest says 'other' version 2, but lives under m/2"),
    ],
)
def test_invalid_manifests(models: Path, mutate: Any, message: str) -> None:
    d = models / "m" / "2"
    raw = json.loads((d / "manifest.json").read_text())
    mutate(raw)
    write(d, raw)
    with pytest.raises(ManifestError, match=message) as exc:
        load_manifest(models, "m", 2)
    assert "manifest.json" in str(exc.value)


def test_checksum_mismatch_and_missing_model(models: Path) -> None:
    d = models / "m" / "2"
    (d / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(ManifestError, match="sha256 of .* is"):
        load_manifest(models, "m", 2)
    assert load_manifest(models, "m", 2, verify_sha256=False).name == "m"
    (d / "model.onnx").unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(models, "m", 2)


def test_a_first_format_manifest_says_how_to_upgrade(models: Path) -> None:
    d = models / "m" / "2"
    raw = raw_manifest("x")
    for k in ("format", "inputs"):
        raw.pop(k)
    write(d, raw)
    with pytest.raises(ManifestError, match="first format.*model register"):
        load_manifest(models, "m", 2)


@pytest.mark.parametrize(("name", "version", "output", "column"), [
    ("fraud_mlp", 1, "score", 0), ("fraud_gbm", 2, "probabilities", 1), ("ato_gbm", 1, "probabilities", 1)])
def test_committed_model_manifests(name: str, version: int, output: str, column: int) -> None:
    m: ModelManifest = load_manifest(PROJECT_ROOT / "models", name, version)
    assert m.input.shape == (-1, len(m.feature_order)) and m.output.name == output and m.output.column == column
    assert set(m.online_numeric) == set(m.inputs.online_numeric)
    assert m.metric("heldout_auc") >= 0.90 and m.training["spec"]
    assert 0.0 < min(m.thresholds.values()) < max(m.thresholds.values()) < 1.0


def test_stale_variant_is_refused(tmp_path: Path) -> None:
    """A variant quantized from an earlier model.onnx must not be served after retraining."""
    import shutil

    src = Path(__file__).resolve().parents[3] / "models" / "fraud_mlp" / "1"
    dst = tmp_path / "fraud_mlp" / "1"
    shutil.copytree(src, dst)
    assert load_manifest(tmp_path, "fraud_mlp", 1, variant="int8").file == "model.int8.onnx"
    (dst / "model.onnx").write_bytes((dst / "model.onnx").read_bytes() + b"\x00")  # "retrained"
    with pytest.raises(ManifestError, match="quantize"):
        load_manifest(tmp_path, "fraud_mlp", 1, variant="int8")
