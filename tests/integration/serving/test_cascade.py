"""The cascade on the real broker: fraud_lite v1 scores every event, fraud_gbm v2 only those whose
cheap score lies inside the band; each decision names the model that decided it. The cheap scores
are recomputed here by a direct ONNX Runtime run on features read with Feast's own SDK."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.integration.conftest import read_all
from tests.integration.serving.conftest import Running, produce, with_serving
from workers.features.feast_sdk import FeastSdkReader
from workers.model.inputs import Assembler
from workers.model.manifest import load_manifest
from workers.pipeline.decode import Decoder
from workers.pipeline.records import DecisionRecord
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology

pytestmark = pytest.mark.integration

LO, HI = 0.01, 0.9


class _M:
    def __init__(self, v: bytes) -> None:
        self._v = v

    def value(self) -> bytes:
        return self._v

    def key(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def error(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def test_the_heavy_model_decides_only_inside_the_band(settings: Settings, it_topology: Topology,
                                                      running: list[Running]) -> None:
    t = with_serving(it_topology, cascade={"model": {"name": "fraud_lite", "version": "1"},
                                           "band": {"from": LO, "to": HI}})
    events = produce(settings, t, 1500)
    r = Running(Worker(t, settings, install_signals=False))
    running.append(r)
    assert r.finish(len(events)) == 0
    recs = {(x.model_extra or {})["event_id"]: x for x in
            (DecisionRecord.model_validate_json(m.value()) for m in read_all(settings, t.output.topic))}
    assert set(recs) == {e["event_id"] for e in events}

    lite = load_manifest(settings.models_dir, "fraud_lite", "1")
    heavy = load_manifest(settings.models_dir, "fraud_gbm", "2")
    batch, dead = Decoder(t.input.schema_, t.input.max_payload_bytes).decode([_M(orjson.dumps(e)) for e in events])
    assert not dead and t.features is not None
    reader = FeastSdkReader(settings.feature_repo, t.features.feature_service, heavy, settings=settings)
    feats = reader.fetch({jk: batch.column(f) for jk, f in t.entities.items()})
    x = Assembler(lite.inputs, heavy.online_numeric).assemble(batch, feats)
    sess = ort.InferenceSession(str(lite.model_path), providers=["CPUExecutionProvider"])
    cheap = np.asarray(sess.run([lite.output.name], {sess.get_inputs()[0].name: x})[0]).reshape(len(x), -1)[
        :, lite.output.column]
    models = [recs[e].model.name for e in batch.column("event_id")]
    scores = np.array([recs[e].score for e in batch.column("event_id")])
    inside = (cheap >= LO) & (cheap <= HI)
    edge = (np.abs(cheap - LO) < 1e-5) | (np.abs(cheap - HI) < 1e-5)  # float noise at the edges
    heavy_rows = np.array([m == "fraud_gbm" for m in models])
    assert set(models) == {"fraud_lite", "fraud_gbm"}
    assert (heavy_rows[~edge] == inside[~edge]).all()
    np.testing.assert_allclose(scores[~heavy_rows], cheap[~heavy_rows], atol=2e-6)  # the cheap score decided
    share = heavy_rows.mean()
    assert 0.0 < share < 0.5, f"heavy share {share:.3f}"
