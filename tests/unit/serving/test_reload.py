"""Hot reload: the watcher swaps in a promoted or re-pinned model once it is loaded and checked,
and refuses a bad one (once, with its reason) while the old one keeps serving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.unit.serving.conftest import copy_version
from workers.model.registry import promote
from workers.serving.live import LiveModel, ModelRefused, layout_of, load_model
from workers.serving.reload import ModelWatcher
from workers.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parents[3]


def _watch(topology: Topology, models: Path) -> tuple[ModelWatcher, LiveModel]:
    first = load_model(topology, models, topology.model.name, topology.model.version, None)
    live = LiveModel(first)
    layout = layout_of(first.manifest)
    w = ModelWatcher(topology, models, live,
                     lambda n, v: load_model(topology, models, n, v, layout), interval_s=3600)
    return w, live


def _latest(topology: Topology) -> Topology:
    return topology.model_copy(update={"model": topology.model.model_copy(update={"version": "latest"}),
                                       "source_path": ""})


def test_promote_swaps_and_a_bad_model_is_refused_once(topology: Topology, models: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    t = _latest(topology)
    w, live = _watch(t, models)
    assert live.current.label == "fraud_gbm v2" and not w.check_once()
    copy_version(models, "fraud_gbm", "2", "3")
    promote(models, "fraud_gbm", "3")
    assert w.check_once() and live.current.label == "fraud_gbm v3"
    copy_version(models, "fraud_gbm", "2", "4", corrupt=True)
    (models / "fraud_gbm" / "LATEST").write_text("4\n")  # by hand: promote itself would refuse it
    labels = {"stage": t.id, "model": "fraud_gbm", "version": "4", "reason": "checksum"}
    before = REGISTRY.get_sample_value("streamscore_model_refused_total", labels) or 0.0
    assert not w.check_once() and live.current.label == "fraud_gbm v3"
    assert not w.check_once()
    assert REGISTRY.get_sample_value("streamscore_model_refused_total", labels) == before + 1
    assert [r for r, _ in w.refusals] == ["checksum"]  # logged and counted once, not every poll
    assert "refused (checksum); still serving fraud_gbm v3" in caplog.text


def test_editing_the_topology_version_swaps(tmp_path: Path, models: Path) -> None:
    text = (ROOT / "topologies" / "fraud.yaml").read_text()
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    t = load_topology(path)  # source_path: the temporary file, which the watcher polls
    w, live = _watch(t, models)
    copy_version(models, "fraud_gbm", "2", "7")
    path.write_text(text.replace('version: "2" ', 'version: "7" '))
    os.utime(path, (os.path.getmtime(path) + 5, os.path.getmtime(path) + 5))  # a coarse clock may not tick
    assert w.check_once() and live.current.label == "fraud_gbm v7"


def test_a_model_that_does_not_fit_is_refused(topology: Topology, models: Path) -> None:
    first = load_model(topology, models, "fraud_gbm", "2", None)
    with pytest.raises(ModelRefused) as e:
        load_model(topology, models, "nope", "1", layout_of(first.manifest))
    assert e.value.reason == "manifest"
    ato = load_topology(ROOT / "topologies" / "ato.yaml")
    with pytest.raises(ModelRefused) as e2:
        load_model(ato, models, "fraud_gbm", "2", None)
    assert e2.value.reason == "fit" and "does not fit" in str(e2.value)
