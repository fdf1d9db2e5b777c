"""`streamscore model register`: a model trained elsewhere gets a manifest, checked like the worker would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.model.manifest import load_manifest
from workers.model.register import RegisterError, RegisterSpec, main, register
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
GBM = ROOT / "models" / "fraud_gbm" / "2"


def _spec(tmp: Path, **over: Any) -> RegisterSpec:
    defaults = json.loads((GBM / "manifest.json").read_text())["defaults"]
    raw: dict[str, Any] = {
        "model": {"name": "fraud_elsewhere", "version": 1},
        "topology": "topologies/fraud.yaml",
        "inputs": str(ROOT / "examples" / "fraud" / "inputs_v1.yaml"),
        "output": {"name": "probabilities", "kind": "probability", "column": 1},
        "defaults": defaults,
        "thresholds": {"review": 0.05, "decline": 0.9},
        "meaning": "probability that the transaction is fraud",
        "source_path": str(tmp / "register.yaml"),
    }
    raw.update(over)
    return RegisterSpec.model_validate(raw)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state")


def test_register_writes_a_manifest_the_worker_loads(settings: Settings, tmp_path: Path) -> None:
    m = register(GBM / "model.onnx", _spec(tmp_path), settings=settings)
    again = load_manifest(settings.models_dir, "fraud_elsewhere", 1)
    assert again.sha256 == m.sha256 and again.feature_order == m.feature_order
    assert again.output.name == "probabilities" and again.output.column == 1 and again.output.width == 2
    assert again.thresholds == {"review": 0.05, "decline": 0.9}
    assert again.training["registered_from"].endswith("model.onnx")
    with pytest.raises(RegisterError, match="already holds a model"):
        register(GBM / "model.onnx", _spec(tmp_path), settings=settings)
    register(GBM / "model.onnx", _spec(tmp_path), settings=settings, force=True)


@pytest.mark.parametrize(("over", "msg"), [
    ({"output": {"name": "nope"}}, "no float output 'nope'"),
    ({"output": {"name": "probabilities", "kind": "probability", "column": 2}}, "outside output"),
    ({"output": {"name": "probabilities", "kind": "classes", "labels": ["a", "b", "c"]}}, "has 2 columns"),
    ({"inputs": [{"name": "log_amount", "op": "log1p", "of": "amount"}]}, "input is 26 wide"),
    ({"defaults": {}}, "`defaults` must give a value for every online feature"),
    ({"thresholds": {"review": 0.05}}, "threshold 'decline' is not in model"),
    ({"inputs": [{"name": f"x{i}", "op": "log1p", "of": "colour"} for i in range(26)], "defaults": {}},
     "not an event field"),
])
def test_a_model_that_does_not_fit_is_refused_with_the_reason(settings: Settings, tmp_path: Path,
                                                                over: dict[str, Any], msg: str) -> None:
    with pytest.raises(Exception, match=msg):
        register(GBM / "model.onnx", _spec(tmp_path, **over), settings=settings)
    assert not (settings.models_dir / "fraud_elsewhere" / "1" / "manifest.json").exists()  # nothing written


def test_the_cli_reads_a_yaml_spec(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path).model_dump(by_alias=True, exclude={"source_path"})
    (tmp_path / "register.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr("workers.model.register.get_settings", lambda: settings)
    assert main(["--model", str(GBM / "model.onnx"), "--spec", str(tmp_path / "register.yaml")]) == 0
    assert "registered fraud_elsewhere v1" in capsys.readouterr().out
    assert main(["--model", str(tmp_path / "missing.onnx"), "--spec", str(tmp_path / "register.yaml"),
                 "--force"]) == 2
    assert "no such model file" in capsys.readouterr().err
