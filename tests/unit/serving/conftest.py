"""Serving fixtures: a private models directory holding copies of the committed models, and new
versions made from them (same ONNX file, manifest renumbered), so tests can promote and break them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def copy_version(models: Path, name: str, src: str, dst: str, *, corrupt: bool = False,
                 source: Path = ROOT / "models") -> Path:
    """``models/<name>/<dst>`` as a copy of ``source/<name>/<src>`` with its manifest renumbered;
    ``corrupt``: the ONNX file changed after the manifest (its checksum no longer matches)."""
    d = models / name / dst
    d.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / name / src, d)
    m = json.loads((d / "manifest.json").read_text())
    m["version"] = int(dst)
    (d / "manifest.json").write_text(json.dumps(m, indent=2))
    if corrupt:
        with (d / "model.onnx").open("ab") as f:
            f.write(b"\0")
    return d


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    out = tmp_path / "models"
    for name, v in (("fraud_gbm", "2"), ("fraud_lite", "1"), ("fraud_mlp", "1")):
        copy_version(out, name, v, v)
    return out
