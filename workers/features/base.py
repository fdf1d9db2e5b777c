"""Features stage: the reader interface and the factory the worker uses.

A reader turns the entity keys of one micro-batch into ``OnlineFeatures`` in ONE round trip to the
online store. Readers: ``feast_sdk`` (Feast's own ``get_online_features``) and ``redis_fast`` (a
direct reader of Feast's Redis layout, see ``workers/features/redis_fast.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from workers.events import ObjArray, OnlineFeatures
from workers.model.manifest import ModelManifest
from workers.settings import Settings
from workers.topology import Topology


class FeatureReader(Protocol):
    def fetch(self, entities: dict[str, ObjArray]) -> OnlineFeatures:
        """``entities`` maps join key (e.g. ``card_id``) -> key per row; returns one row per row."""
        ...

    def close(self) -> None: ...


class FeatureDefaults:
    """The manifest's documented defaults as arrays: what a reader fills for rows it cannot read."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.numeric = np.asarray(manifest.numeric_defaults(), dtype=np.float32)
        self.strings = {r: str(manifest.defaults[r]) for r in manifest.online_strings}

    def rows(self, n: int, views: Iterable[str], *, degraded: bool, t0: float) -> OnlineFeatures:
        """``n`` rows of defaults; ``degraded``: the store could not be read at all."""
        return OnlineFeatures(
            numeric=np.broadcast_to(self.numeric, (n, self.numeric.shape[0])).copy(),
            strings={r: np.full(n, v, dtype=object) for r, v in self.strings.items()},
            # Degraded: no view could be read, so every row counts as missing (never as stale).
            missing={v: np.full(n, degraded, dtype=bool) for v in views},
            stale={v: np.zeros(n, dtype=bool) for v in views},
            degraded=degraded,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
        )


def make_reader(topology: Topology, settings: Settings, manifest: ModelManifest) -> FeatureReader:
    spec = topology.features
    if spec.reader == "feast_sdk":
        from workers.features.feast_sdk import FeastSdkReader

        return FeastSdkReader(settings.feature_repo, spec.feature_service, manifest,
                              settings=settings)
    from workers.features.redis_fast import FastRedisReader

    reader: FeatureReader = FastRedisReader.from_topology(topology, settings, manifest)
    return reader
