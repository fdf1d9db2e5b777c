"""One model on rows of a micro-batch: assemble -> (cache) -> engine -> guard, and the decision of a
batch that several models scored (canary rows, cascade rows), merged back into input order.

``score_rows`` is the per-batch path every model takes, live or not: the model's ``Assembler`` on
the batch and its online features, rows with non-finite inputs set aside (``invalid_features``),
the prediction cache asked first where there is one, one engine call for the rest, and an engine
failure turned into NaN rows with ``engine_error:<Type>`` (one failing batch never raises).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.events import BoolArray, EventBatch, F32Array, OnlineFeatures
from workers.pipeline.decide import Decided, Decider
from workers.schema import KAFKA_KEY
from workers.serving import metrics
from workers.serving.live import LoadedModel

log = logging.getLogger(__name__)

Rows = npt.NDArray[np.intp]


@dataclass
class Scored:
    """Rows of a batch scored by one model. ``rows`` None: every row, in order."""

    model: LoadedModel
    role: str  # live | cheap | heavy | canary: which part of serving decided
    out: F32Array
    x: F32Array
    why: list[str | None]
    timings: dict[str, float]
    rows: Rows | None = None
    errors: int = 0  # rows the engine could not score (canary error rate)
    cache_hits: int = 0


def take_features(f: OnlineFeatures, idx: Rows) -> OnlineFeatures:
    return OnlineFeatures(
        f.numeric[idx], {k: v[idx] for k, v in f.strings.items()},
        {k: v[idx] for k, v in f.missing.items()}, {k: v[idx] for k, v in f.stale.items()},
        degraded=f.degraded, unavailable=f.unavailable, fetch_ms=f.fetch_ms, extra=f.extra,
    )


def infer(model: LoadedModel, x: F32Array) -> tuple[F32Array, int]:
    """The engine's output [n, k] for ``x``, through the model's cache; (out, cache hits)."""
    cache = model.cache
    if cache is None:
        return model.engine.infer(x), 0
    keys = cache.keys(x)
    out, hit = cache.lookup(keys, model.manifest.output.width)
    miss = np.flatnonzero(~hit)
    if miss.size:
        fresh = model.engine.infer(x if miss.size == len(keys) else x[miss])
        if fresh.shape != (miss.size, out.shape[1]):
            raise RuntimeError(f"engine returned shape {fresh.shape} for {miss.size} rows; the manifest's "
                               f"output has {out.shape[1]} columns")
        out[miss] = fresh
        cache.put(keys if miss.size == len(keys) else [keys[i] for i in miss.tolist()], fresh)
    return out, int(len(keys) - miss.size)


def score_rows(model: LoadedModel, batch: EventBatch, feats: OnlineFeatures, role: str, stage: str,
               rows: Rows | None = None) -> Scored:
    n = len(batch)
    t1 = time.perf_counter()
    x = model.assembler.assemble(batch, feats)
    bad = ~np.isfinite(x).all(axis=1)
    why: list[str | None] = [None] * n
    if bad.any():
        x[bad] = 0.0
        for i in np.flatnonzero(bad).tolist():
            why[i] = "invalid_features"
    t2 = time.perf_counter()
    errors, hits = 0, 0
    try:
        out, hits = infer(model, x)
        if out.ndim != 2 or out.shape[0] != n:
            raise RuntimeError(f"engine returned shape {out.shape} for {n} rows")
    except Exception as exc:  # the batch gets fallback decisions; the log says which model failed
        log.exception("engine of %s failed on a batch of %d", model.label, n)
        out = np.full((n, model.manifest.output.width), np.nan, dtype=np.float32)
        why = [f"engine_error:{type(exc).__name__}"] * n
        errors = n
    out = out.astype(np.float32, copy=True)
    out[bad] = np.nan
    t3 = time.perf_counter()
    m = model.manifest
    metrics.INFERENCE_SECONDS.labels(stage, m.name, str(m.version), role).observe(t3 - t2)
    if model.cache is not None:
        metrics.CACHE_LOOKUPS.labels(stage, "hit").inc(hits)
        metrics.CACHE_LOOKUPS.labels(stage, "miss").inc(n - hits)
    timings = {"assemble": round((t2 - t1) * 1e3, 3), "inference": round((t3 - t2) * 1e3, 3)}
    return Scored(model, role, out, x, why, timings, rows, errors, hits)


def key_hashes(batch: EventBatch, key: str) -> npt.NDArray[np.uint32]:
    """A stable hash (CRC-32, the same in every process and run) of each row's key."""
    if key == KAFKA_KEY:
        raw: list[object] = batch.key.tolist()
    else:
        raw = batch.column(key).tolist()
    crc = zlib.crc32
    return np.fromiter((crc(k if isinstance(k, bytes) else b"" if k is None else str(k).encode())
                        for k in raw), dtype=np.uint32, count=len(raw))


def in_fraction(hashes: npt.NDArray[np.uint32], fraction: float) -> BoolArray:
    """Rows whose key falls in the first ``fraction`` of the hash space (stable per key)."""
    return np.asarray(hashes % 10_000 < int(round(fraction * 10_000)), dtype=bool)


@dataclass(frozen=True)
class Part:
    """What decide needs of one model's rows."""

    decider: Decider
    rows: Rows | None
    out: F32Array | None
    x: F32Array | None
    why: Sequence[str | None]
    timings: dict[str, float]


def decide_parts(batch: EventBatch, feats: OnlineFeatures | None, parts: Sequence[Part]) -> Decided:
    """One decision per row of ``batch``, in its order, each by the model that scored the row."""
    if len(parts) == 1 and parts[0].rows is None:
        p = parts[0]
        return p.decider.decide(batch, p.out, p.x, feats, p.why, p.timings)
    n = len(batch)
    keys: list[bytes | None] = [None] * n
    values: list[bytes] = [b""] * n
    counts: dict[str, int] = {}
    fallbacks = 0
    causes: dict[str, int] = {}
    covered = 0
    for p in parts:
        assert p.rows is not None, "a batch split between models names each part's rows"
        if p.rows.size == 0:
            continue
        sub_f = take_features(feats, p.rows) if feats is not None else None
        d = p.decider.decide(batch.take(p.rows), p.out, p.x, sub_f, p.why, p.timings)
        for i, k, v in zip(p.rows.tolist(), d.keys, d.values):
            keys[i] = k
            values[i] = v
        for verdict, c in d.verdict_counts.items():
            counts[verdict] = counts.get(verdict, 0) + c
        fallbacks += d.fallbacks
        for cause, c in d.fallback_causes.items():
            causes[cause] = causes.get(cause, 0) + c
        covered += p.rows.size
    if covered != n:
        raise RuntimeError(f"the models' parts cover {covered} of {n} rows")
    return Decided(keys, values, counts, fallbacks, causes)
