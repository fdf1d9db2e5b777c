"""Features stage: the reader interface, the defaults readers fill, and the reader for topologies
without online features.

A reader turns the entity keys of one micro-batch into ``OnlineFeatures`` in ONE round trip to the
online store. Readers: ``feast_sdk`` (Feast's own ``get_online_features``) and ``redis_fast`` (a
direct reader of Feast's Redis layout, see ``workers/features/redis_fast.py``); ``factory`` picks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal, Protocol

import numpy as np

from workers.events import ObjArray, OnlineFeatures
from workers.model.manifest import ModelManifest

StalePolicy = Literal["default", "keep"]


class FeatureStoreError(RuntimeError):
    """Set-up or reader construction failed; the message says what to do."""


class FeatureReader(Protocol):
    @property
    def join_keys(self) -> list[str]:
        """The entity columns ``fetch`` expects (Feast join keys of the feature service's views)."""
        ...

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        """``entities`` maps join key (e.g. ``card_id``) -> key per row; returns one row per row.
        ``timeout_s``: how long this read may wait for the store (None: the reader's own)."""
        ...

    def close(self) -> None: ...


def no_features(n: int) -> OnlineFeatures:
    """``n`` rows without any online feature (a model that reads event fields only)."""
    return OnlineFeatures(np.empty((n, 0), np.float32), {}, {}, {})


class NoFeatures:
    """The reader of a topology without online features: nothing to fetch, no flags. The worker
    does not call it (it has no entity columns to pass); ``no_features(n)`` is what it uses."""

    join_keys: list[str] = []

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        return no_features(len(next(iter(entities.values()))) if entities else 0)

    def close(self) -> None:
        pass


class FeatureDefaults:
    """The manifest's documented defaults as arrays: what a reader fills for rows it cannot read."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.numeric = np.asarray(manifest.numeric_defaults(), dtype=np.float32)
        self.strings = {r: str(manifest.defaults[r]) for r in manifest.online_strings}

    def rows(self, n: int, views: Iterable[str], *, degraded: bool, t0: float,
             unavailable: str | None = None) -> OnlineFeatures:
        """``n`` rows of defaults; ``degraded``: the store could not be read at all (``unavailable``
        says why)."""
        return OnlineFeatures(
            numeric=np.broadcast_to(self.numeric, (n, self.numeric.shape[0])).copy(),
            strings={r: np.full(n, v, dtype=object) for r, v in self.strings.items()},
            # Degraded: no view could be read, so every row counts as missing (never as stale).
            missing={v: np.full(n, degraded, dtype=bool) for v in views},
            stale={v: np.zeros(n, dtype=bool) for v in views},
            degraded=degraded,
            unavailable=(unavailable or "error") if degraded else None,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
        )


