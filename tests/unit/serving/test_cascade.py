"""The cascade: the heavy model scores exactly the rows whose cheap score is inside the band, and
each decision names the model that decided it; the batch's decisions keep its order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.unit.conftest import FakeMessage, good_event
from workers.engines import Engine
from workers.model.manifest import ModelManifest
from workers.pipeline.decode import Decoder
from workers.pipeline.records import DecisionRecord
from workers.serving.cascade import Cascade
from workers.serving.live import LiveModel, layout_of, load_model
from workers.serving.router import Serving
from workers.serving.scoring import decide_parts
from workers.serving.spec import BandSpec, CascadeSpec, ModelRef
from workers.events import OnlineFeatures
from workers.topology import ModelSpec, Topology


class ScriptedEngine:
    """Scores row i with scores[i % len(scores)] (as a binary classifier's two columns)."""

    name = "scripted"

    def __init__(self, scores: list[float]) -> None:
        self.scores = np.asarray(scores, np.float32)
        self.rows: list[int] = []

    def load(self) -> None:
        pass

    def warm_up(self, batch_sizes: list[int]) -> None:
        pass

    def infer(self, x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        self.rows.append(x.shape[0])
        s = self.scores[np.arange(x.shape[0]) % len(self.scores)]
        return np.stack([1 - s, s], axis=1)

    def describe(self) -> dict[str, Any]:
        return {}


def test_heavy_only_inside_the_band(topology: Topology, models: Path) -> None:
    cheap_scores = [0.001, 0.02, 0.5, 0.95, 0.1, 0.004]  # band [0.01, 0.9]: rows 1, 2, 4 (mod 6)
    engines: dict[str, Engine] = {"fraud_lite": ScriptedEngine(cheap_scores), "fraud_gbm": ScriptedEngine([0.3])}

    def factory(spec: ModelSpec, manifest: ModelManifest, max_batch: int) -> Engine:
        return engines[spec.name]

    t = topology
    heavy = load_model(t, models, "fraud_gbm", "2", None, engine_factory=factory)
    lite = load_model(t, models, "fraud_lite", "1", layout_of(heavy.manifest), engine_factory=factory)
    spec = CascadeSpec(model=ModelRef(name="fraud_lite", version="1"),
                       band=BandSpec.model_validate({"from": 0.01, "to": 0.9}))
    serving = Serving(t, LiveModel(heavy), cascade=Cascade(spec, lite, t.id))
    d = Decoder(t.input.schema_, t.input.max_payload_bytes)
    batch, _ = d.decode([FakeMessage(orjson.dumps(good_event(i)), _offset=i) for i in range(12)])
    feats = OnlineFeatures(np.ones((12, len(heavy.manifest.online_numeric)), np.float32),
                           {r: np.array(["x"] * 12, dtype=object) for r in heavy.manifest.online_strings}, {}, {})
    scored = serving.score(batch, feats)
    heavy_engine = engines["fraud_gbm"]
    assert isinstance(heavy_engine, ScriptedEngine) and heavy_engine.rows[-1] == 6
    recs = [DecisionRecord.model_validate_json(v) for v in decide_parts(batch, feats, serving.parts(scored, 0.1)).values]
    assert [r.source.offset for r in recs] == list(range(12))  # input order kept across the two models
    by = [r.model.name for r in recs]
    assert by == ["fraud_lite", "fraud_gbm", "fraud_gbm", "fraud_lite", "fraud_gbm", "fraud_lite"] * 2
    assert all(r.score == 0.3 for r in recs if r.model.name == "fraud_gbm")
    assert [r.score for r in recs if r.model.name == "fraud_lite"][:3] == [0.001, 0.95, 0.004]
    assert serving.cascade is not None and serving.cascade.heavy_share() == 0.5
