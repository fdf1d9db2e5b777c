"""What a worker does with rows whose features it could not read: the topology's policy.

``features.on_unavailable`` decides the rows of a batch read from a store that could not be read
(unreachable, timed out, refused the credentials, empty: ``OnlineFeatures.unavailable``);
``features.on_missing`` does the same per view for rows whose entity the store does not hold.
``score_with_defaults`` scores them with the manifest's documented defaults (flagged
``degraded`` / ``missing:<view>``); ``fallback`` gives them the topology's ``fallback_verdict``
without a score (flagged ``fallback:features_unavailable:<cause>`` /
``fallback:missing_features:<view>`` as well). Defaults describe an average entity, so scoring
with them fails open: for a fraud scorer most such rows are approved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.events import BoolArray, OnlineFeatures
from workers.topology import FeaturesSpec, TopologyError


class FeaturePolicy:
    def __init__(self, spec: FeaturesSpec | None, views: Sequence[str], where: str = "topology") -> None:
        self._fallback_unavailable = spec is not None and spec.on_unavailable == "fallback"
        on_missing = dict(spec.on_missing) if spec is not None else {}
        unknown = sorted(set(on_missing) - set(views))
        if unknown:
            raise TopologyError(f"{where}: features.on_missing names {unknown}, not views of the feature "
                                f"service ({sorted(views)})")
        self._fallback_missing = [v for v, p in on_missing.items() if p == "fallback"]

    def fallbacks(self, feats: OnlineFeatures) -> list[tuple[BoolArray, str]]:
        """(rows, why) pairs of rows the policy gives the fallback verdict, in order of precedence."""
        n = len(feats)
        if feats.degraded:
            if self._fallback_unavailable:
                return [(np.ones(n, dtype=bool), f"features_unavailable:{feats.unavailable or 'error'}")]
            return []
        out: list[tuple[BoolArray, str]] = []
        for view in self._fallback_missing:
            mask = feats.missing.get(view)
            if mask is not None and mask.any():
                out.append((mask, f"missing_features:{view}"))
        return out


def read_timeout_s(spec: FeaturesSpec | None, oldest_received_ns: int, now_ns: int) -> float | None:
    """How long a batch's store read may wait: what is left of ``latency_budget_ms`` since its
    oldest event arrived, never less than ``timeout_ms`` (so a busy CPU delays a read rather than
    turning it into degraded decisions)."""
    if spec is None:
        return None
    left_ms = spec.latency_budget_ms - (now_ns - oldest_received_ns) / 1e6
    return max(left_ms, spec.timeout_ms) / 1000.0


def model_views(online_refs: Sequence[str]) -> list[str]:
    """The views a model reads, from its ``view:feature`` references."""
    return sorted({r.split(":", 1)[0] for r in online_refs})
