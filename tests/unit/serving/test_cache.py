"""The prediction cache: exact answers per input row, TTL, size bound, only misses reach the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.serving.cache import PredictionCache

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_hit_is_the_exact_output_row() -> None:
    c = PredictionCache(ttl_ms=1000, max_entries=10)
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    out = np.array([[0.1234567], [0.7654321]], np.float32)
    keys = c.keys(x)
    c.put(keys, out)
    got, hit = c.lookup(c.keys(x[::-1].copy()), 1)
    assert hit.all() and got.tobytes() == out[::-1].tobytes()
    other, hit2 = c.lookup(c.keys(np.array([[1.0, 2.0000002]], np.float32)), 1)
    assert not hit2.any()  # a different row is a miss, however close
    assert (c.hits, c.misses) == (2, 1)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    c = PredictionCache(ttl_ms=500, max_entries=10, clock_s=clock)
    keys = c.keys(np.ones((1, 3), np.float32))
    c.put(keys, np.array([[0.5]], np.float32))
    clock.t = 0.4
    assert c.lookup(keys, 1)[1].all()
    clock.t = 0.6
    assert not c.lookup(keys, 1)[1].any()


def test_the_oldest_entries_go_past_the_bound() -> None:
    c = PredictionCache(ttl_ms=10_000, max_entries=3)
    x = np.arange(5, dtype=np.float32).reshape(5, 1)
    c.put(c.keys(x), x)
    assert len(c) == 3
    _, hit = c.lookup(c.keys(x), 1)
    assert hit.tolist() == [False, False, True, True, True]


def test_failed_rows_are_not_answers() -> None:
    c = PredictionCache(ttl_ms=10_000, max_entries=10)
    x = np.arange(2, dtype=np.float32).reshape(2, 1)
    c.put(c.keys(x), np.array([[np.nan], [0.3]], np.float32))
    assert c.lookup(c.keys(x), 1)[1].tolist() == [False, True]


def test_only_misses_reach_the_engine_and_a_swapped_model_starts_empty(tmp_path: Path) -> None:
    from tests.unit.serving.conftest import copy_version
    from workers.serving.live import LiveModel, load_model
    from workers.serving.scoring import infer
    from workers.serving.spec import CacheSpec, ServingSpec
    from workers.topology import load_topology

    models = tmp_path / "models"
    copy_version(models, "fraud_gbm", "2", "2")
    copy_version(models, "fraud_gbm", "2", "3")
    t = load_topology(ROOT / "topologies" / "fraud.yaml")
    t = t.model_copy(update={"serving": ServingSpec(cache=CacheSpec(ttl_ms=60_000, max_entries=100))})
    m = load_model(t, models, "fraud_gbm", "2", None)
    calls: list[int] = []
    real = m.engine.infer

    def counting(x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        calls.append(x.shape[0])
        return real(x)

    m.engine.infer = counting  # type: ignore[method-assign]
    x = np.random.default_rng(1).random((8, m.manifest.n_features), dtype=np.float32)
    first, hits = infer(m, x)
    assert hits == 0 and calls == [8]
    again, hits = infer(m, np.concatenate([x[:5], x[:3] + 1]))
    assert hits == 5 and calls == [8, 3]
    assert again[:5].tobytes() == first[:5].tobytes() == real(x[:5]).tobytes()  # exact
    live = LiveModel(m)
    live.swap(load_model(t, models, "fraud_gbm", "3", None))
    assert live.current.cache is not None and len(live.current.cache) == 0
