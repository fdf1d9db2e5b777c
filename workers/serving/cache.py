"""The prediction cache: the engine's exact output for an exact model input row, for a while.

Keyed by the bytes of one float32 input row; one cache belongs to one loaded model version
(``workers/serving/live.py``), so the key is in effect row bytes + model version, and a swapped
model starts with an empty cache (the old one goes with the old model). An answer is the float32
output row the engine gave, returned unchanged: a hit is exact. Entries live ``ttl_ms`` and at
most ``max_entries`` are kept (the oldest inserted go first). Lookups and inserts are per batch:
one clock read, the keys as one ``numpy`` view, one dict probe per row.

Used by the scoring thread only; not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice
from typing import cast

import numpy as np

from workers.events import BoolArray, F32Array


class PredictionCache:
    def __init__(self, ttl_ms: int, max_entries: int, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_ms / 1e3
        self._max = max_entries
        self._clock = clock_s
        self._d: dict[bytes, tuple[float, F32Array]] = {}  # insertion-ordered: oldest first
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    @staticmethod
    def keys(x: F32Array) -> list[bytes]:
        """One key per row: its bytes (a contiguous row as one fixed-size void scalar)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        keys = x.view(np.dtype((np.void, x.shape[1] * 4))).ravel().tolist()
        return cast(list[bytes], keys)

    def lookup(self, keys: list[bytes], width: int) -> tuple[F32Array, BoolArray]:
        """(outputs [n, width] where hit, hit mask); expired entries count as misses."""
        n = len(keys)
        out = np.empty((n, width), dtype=np.float32)
        hit = np.zeros(n, dtype=bool)
        deadline = self._clock() - self._ttl_s
        get = self._d.get
        for i, k in enumerate(keys):
            e = get(k)
            if e is not None and e[0] > deadline:
                out[i] = e[1]
                hit[i] = True
        h = int(hit.sum())
        self.hits += h
        self.misses += n - h
        return out, hit

    def put(self, keys: list[bytes], out: F32Array) -> None:
        """Remember finite output rows (a NaN row is a failure, not an answer)."""
        now = self._clock()
        ok = cast(list[bool], np.isfinite(out).all(axis=1).tolist())
        d = self._d
        for k, row, good in zip(keys, out, ok):
            if good:
                d.pop(k, None)  # re-inserted at the end: its age restarts
                d[k] = (now, row.copy())
        over = len(d) - self._max
        if over > 0:
            for k in list(islice(d, over)):  # dicts keep insertion order: these are the oldest
                del d[k]

    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0
