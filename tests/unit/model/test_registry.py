"""The registry: `latest` (pointer, else the highest version) and `model promote`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.serving.conftest import copy_version, models  # noqa: F401 - a fixture
from workers.model.registry import RegistryError, main, promote, read_pointer, resolve, versions


def test_latest_is_the_highest_version_until_one_is_promoted(models: Path) -> None:
    copy_version(models, "fraud_gbm", "2", "10")
    assert versions(models, "fraud_gbm") == ["2", "10"]  # numerically, not as text
    assert resolve(models, "fraud_gbm", "latest") == "10"
    promote(models, "fraud_gbm", "2")
    assert read_pointer(models, "fraud_gbm") == "2" and resolve(models, "fraud_gbm", "latest") == "2"
    assert resolve(models, "fraud_gbm", "10") == "10"  # a pinned version ignores the pointer


def test_no_version_to_serve(models: Path) -> None:
    with pytest.raises(RegistryError, match="no version of model 'nothing'"):
        resolve(models, "nothing", "latest")


def test_promote_refuses_a_model_whose_file_changed(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy_version(models, "fraud_gbm", "2", "3", corrupt=True)
    assert main(["fraud_gbm", "3", "--models-dir", str(models)]) == 1
    assert "sha256" in capsys.readouterr().err and read_pointer(models, "fraud_gbm") is None


def test_promote_checks_the_fit_with_a_topology(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[3]
    assert main(["fraud_gbm", "2", "--models-dir", str(models), "--topology",
                 str(root / "topologies" / "ato.yaml")]) == 1
    assert "does not fit" in capsys.readouterr().err
    assert main(["fraud_gbm", "2", "--models-dir", str(models), "--topology",
                 str(root / "topologies" / "fraud.yaml")]) == 0
    assert "latest -> 2" in capsys.readouterr().out
