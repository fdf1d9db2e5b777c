"""A class-probability model end to end: LightGBM multiclass -> onnxmltools -> register -> the
worker's scoring path, verdicts from the topology's class -> verdict map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.conftest import FakeMessage
from workers.model.register import RegisterSpec, register
from workers.pipeline.decode import Decoder
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import load_topology

ROOT = Path(__file__).resolve().parents[3]
INPUTS: list[dict[str, Any]] = [
    {"name": "success", "op": "field", "of": "login.success"},
    {"name": "fails", "op": "clip", "of": "login.failed_attempts", "min": 0, "max": 50},
    {"name": "method", "op": "one_hot", "of": "login.method", "values": ["password", "sso", "passkey"]},
]
LABELS = ["ok", "odd", "bad"]


def _train(path: Path) -> None:
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    n = 3000
    success = rng.random(n) < 0.7
    fails = rng.poisson(2, n).astype(np.float32)
    method = rng.integers(0, 3, n)
    x = np.column_stack([success, fails, method == 0, method == 1, method == 2]).astype(np.float32)
    y = np.where(fails >= 4, 2, np.where(~success, 1, 0))
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0).fit(x, y)
    onx = onnxmltools.convert_lightgbm(clf, initial_types=[("features", FloatTensorType([None, 5]))],
                                       target_opset=15, zipmap=False)
    path.write_bytes(onx.SerializeToString())


class ListSink:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def send_decisions(self, keys: Any, values: Any, *rest: Any) -> None:
        self.values.extend(values)


def test_class_probabilities_decide_by_the_class_map(tmp_path: Path) -> None:
    pytest.importorskip("onnxmltools")
    onnx_file = tmp_path / "elsewhere.onnx"
    _train(onnx_file)
    settings = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state")
    base = load_topology(ROOT / "topologies" / "ato.yaml")
    topo = base.model_copy(update={
        "entities": {}, "features": None,
        "model": base.model.model_copy(update={"name": "login_classes", "version": "1"}),
        "decision": base.decision.model_copy(update={
            "bands": (), "classes": {"ok": "allow", "odd": "step_up", "bad": "block"},
            "reasons": base.decision.reasons.model_copy(update={"rules": ()}), "rules": ()}),
    })
    tfile = tmp_path / "topology.yaml"
    import yaml

    tfile.write_text(yaml.safe_dump(topo.model_dump(mode="json", by_alias=True, exclude={"source_path"})))
    spec = RegisterSpec.model_validate({
        "model": {"name": "login_classes", "version": 1}, "topology": str(tfile), "inputs": INPUTS,
        "output": {"name": "probabilities", "kind": "classes", "labels": LABELS},
        "source_path": str(tmp_path / "register.yaml")})
    m = register(onnx_file, spec, settings=settings)
    assert m.output.kind == "classes" and m.output.labels == tuple(LABELS)

    w = Worker(load_topology(tfile), settings, install_signals=False)
    reader, engine = w._prepare()
    sink = ListSink()
    w.sink = sink  # type: ignore[assignment]
    events = [
        {"event_id": "a", "user_id": "u1", "ip": "1.2.3.4", "event_time_ms": 1, "device": {"id": "d", "os": "ios"},
         "geo": {"country": "US"}, "login": {"method": "passkey", "success": True, "failed_attempts": 0}},
        {"event_id": "b", "user_id": "u1", "ip": "1.2.3.4", "event_time_ms": 2, "device": {"id": "d", "os": "ios"},
         "geo": {"country": "US"}, "login": {"method": "password", "success": False, "failed_attempts": 1}},
        {"event_id": "c", "user_id": "u1", "ip": "1.2.3.4", "event_time_ms": 3, "device": {"id": "d", "os": "ios"},
         "geo": {"country": "US"}, "login": {"method": "password", "success": False, "failed_attempts": 9}},
    ]
    batch, dead = Decoder(w.topology.input.schema_, 8192).decode(
        [FakeMessage(orjson.dumps(e), _offset=i) for i, e in enumerate(events)])
    assert not dead
    w._score(batch, reader, engine)
    recs = [orjson.loads(v) for v in sink.values]
    assert [(r["class"], r["verdict"]) for r in recs] == [("ok", "allow"), ("odd", "step_up"), ("bad", "block")]
    assert all(0.5 < r["score"] <= 1.0 for r in recs)  # the decided class's probability
