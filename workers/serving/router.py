"""Which model decides which row of a micro-batch: canary, cascade or the live model; then the
shadow. Built from the topology's ``serving`` section (``workers/serving/spec.py``).

Per micro-batch, on the scoring thread: the live model is read once (``LiveModel.current``, swapped
between batches by ``workers/serving/reload.py``); while a canary is active, its fraction of
entities is scored and decided by the candidate alone; the other rows go through the cascade
(cheap model, then the live model inside the band) or straight to the live model. After the
batch's decisions were produced, ``after_decisions`` hands the shadow its sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.events import EventBatch, F32Array, OnlineFeatures
from workers.serving import metrics
from workers.serving.canary import Canary
from workers.serving.cascade import Cascade
from workers.serving.live import EngineFactory, FeatureLayout, LiveModel, LoadedModel, load_model
from workers.serving.scoring import Part, Scored, score_rows, take_features
from workers.serving.shadow import Shadow
from workers.topology import Topology

log = logging.getLogger(__name__)


class Serving:
    def __init__(self, topology: Topology, live: LiveModel, *, cascade: Cascade | None = None,
                 canary: Canary | None = None, shadow: Shadow | None = None) -> None:
        self._stage = topology.id
        self.live = live
        self.cascade = cascade
        self.canary = canary
        self.shadow = shadow

    @classmethod
    def build(cls, topology: Topology, models_dir: Path, live: LiveModel, layout: FeatureLayout,
              engine_factory: EngineFactory | None, producer_conf: dict[str, Any]) -> Serving:
        """Every model the serving section names, loaded and checked now: a bad one fails start-up."""
        s = topology.serving

        def load(name: str, version: str) -> LoadedModel:
            return load_model(topology, models_dir, name, version, layout, engine_factory=engine_factory)

        cascade = canary = shadow = None
        if s.cascade is not None:
            cascade = Cascade(s.cascade, load(s.cascade.model.name, s.cascade.model.version), topology.id)
        if s.canary is not None:
            canary = Canary(s.canary, load(s.canary.model.name, s.canary.model.version), topology.id)
        if s.shadow is not None:
            shadow = Shadow(s.shadow, load(s.shadow.model.name, s.shadow.model.version), topology.id,
                            topology.decision.verdicts, producer_conf)
            shadow.start()
        return cls(topology, live, cascade=cascade, canary=canary, shadow=shadow)

    @property
    def plain(self) -> bool:
        """Only the live model decides (no split of the batch)."""
        return self.cascade is None and (self.canary is None or not self.canary.active)

    def score(self, batch: EventBatch, feats: OnlineFeatures) -> list[Scored]:
        live = self.live.current  # once per batch: a swap takes effect at the next one
        c = self.canary
        if c is not None and c.active:
            pick = c.pick(batch)
            if pick.any():
                ci = np.flatnonzero(pick)
                cand = score_rows(c.model, batch.take(ci), take_features(feats, ci), "canary", self._stage, ci)
                c.observe(cand)
                if ci.size == len(batch):
                    return [cand]
                li = np.flatnonzero(~pick)
                return [cand, *self._live(live, batch.take(li), take_features(feats, li), li)]
        return self._live(live, batch, feats, None)

    def _live(self, live: LoadedModel, batch: EventBatch, feats: OnlineFeatures,
              rows: np.ndarray[Any, np.dtype[np.intp]] | None) -> list[Scored]:
        if self.cascade is not None:
            return self.cascade.score(live, batch, feats, rows)
        return [score_rows(live, batch, feats, "live", self._stage, rows)]

    def parts(self, scored: Sequence[Scored], features_ms: float) -> list[Part]:
        out = []
        for s in scored:
            m = s.model.manifest
            metrics.ROWS.labels(self._stage, m.name, str(m.version), s.role).inc(len(s.why))
            out.append(Part(s.model.decider, s.rows, s.out, s.x, s.why, {"features": features_ms, **s.timings}))
        return out

    def after_decisions(self, batch: EventBatch, feats: OnlineFeatures, scored: Sequence[Scored]) -> None:
        """The shadow's turn, once the batch's decisions were handed to the sink."""
        if self.shadow is None:
            return
        n = len(batch)
        live_scores: F32Array = np.full(n, np.nan, dtype=np.float32)
        who: list[tuple[str, str]] = [("", "")] * n
        for s in scored:
            score, _ = s.model.decider.head(s.out)
            tag = (s.model.manifest.name, str(s.model.manifest.version))
            if s.rows is None:
                live_scores[:] = score
                who = [tag] * n
            else:
                live_scores[s.rows] = score
                for i in s.rows.tolist():
                    who[i] = tag
        self.shadow.offer(batch, feats, live_scores, who)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush the shadow (within ``timeout_s``); release the engines of the models besides the live one."""
        if self.shadow is not None:
            self.shadow.close(timeout_s)
        for m in (self.cascade.cheap if self.cascade else None, self.canary.model if self.canary else None,
                  self.shadow.model if self.shadow else None):
            close = getattr(m.engine, "close", None) if m is not None else None
            if callable(close):
                close()
