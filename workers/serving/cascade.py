"""The confidence-gated cascade: a cheap model scores every row; rows whose cheap score lies inside
the configured band (``[from, to]``, the scores it is unsure of) are scored again by the heavy
(live) model, in the same micro-batch cycle. Each row is decided by the model that scored it last,
and its decision record names that model. Rows the cheap model could not score (engine failure,
non-finite inputs) go to the heavy model too.
"""

from __future__ import annotations

import numpy as np

from workers.events import BoolArray, EventBatch, OnlineFeatures
from workers.serving.live import LoadedModel
from workers.serving.scoring import Rows, Scored, score_rows, take_features
from workers.serving.spec import CascadeSpec


class Cascade:
    def __init__(self, spec: CascadeSpec, cheap: LoadedModel, stage: str) -> None:
        self.cheap = cheap
        self._lo = spec.band.from_
        self._hi = spec.band.to
        self._stage = stage
        self.rows = 0
        self.heavy_rows = 0

    def uncertain(self, cheap: Scored) -> BoolArray:
        """Rows the heavy model must score: cheap score inside the band, or no cheap score."""
        score, _ = cheap.model.decider.head(cheap.out)
        return np.asarray(np.isnan(score) | ((score >= self._lo) & (score <= self._hi)), dtype=bool)

    def score(self, heavy: LoadedModel, batch: EventBatch, feats: OnlineFeatures,
              rows: Rows | None = None) -> list[Scored]:
        """``rows``: where ``batch`` sits in the micro-batch (None: it is the micro-batch)."""
        n = len(batch)
        cheap = score_rows(self.cheap, batch, feats, "cheap", self._stage)
        go = self.uncertain(cheap)
        k = int(go.sum())
        self.rows += n
        self.heavy_rows += k
        if k == 0:
            cheap.rows = rows
            return [cheap]
        if k == n:
            part = score_rows(heavy, batch, feats, "heavy", self._stage, rows)
            part.timings = _add(part.timings, cheap.timings)
            return [part]
        hi = np.flatnonzero(go)
        lo = np.flatnonzero(~go)
        part = score_rows(heavy, batch.take(hi), take_features(feats, hi), "heavy", self._stage,
                          hi if rows is None else rows[hi])
        part.timings = _add(part.timings, cheap.timings)
        cheap_part = Scored(cheap.model, "cheap", cheap.out[lo], cheap.x[lo], [cheap.why[i] for i in lo.tolist()],
                            cheap.timings, lo if rows is None else rows[lo], 0, cheap.cache_hits)
        return [cheap_part, part]

    def heavy_share(self) -> float:
        return self.heavy_rows / self.rows if self.rows else 0.0


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Timings of rows that both models scored: the sum, per stage."""
    return {k: round(a.get(k, 0.0) + b.get(k, 0.0), 3) for k in {**a, **b}}
