"""Degraded modes as policy: rows whose store could not be read, or whose entity is missing, are
decided by features.on_unavailable / on_missing and flagged with the cause; the read waits up to the
batch's latency budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import redis

from tests.unit.pipeline.test_worker_scoring import FakeEngine, FakeSink, _batch, _records
from workers.events import ObjArray, OnlineFeatures
from workers.features.health import GuardedReader, StoreHealth, cause_of
from workers.features.policy import FeaturePolicy, read_timeout_s
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology, TopologyError

VIEWS = ["card_profile", "card_velocity", "merchant_risk"]


class Reader:
    join_keys = ["card_id", "merchant_id"]

    def __init__(self, *, degraded: str | None = None, missing: str | None = None) -> None:
        self.degraded, self.missing = degraded, missing
        self.timeouts: list[float | None] = []

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        self.timeouts.append(timeout_s)
        n = len(next(iter(entities.values())))
        miss = {v: np.zeros(n, dtype=bool) for v in VIEWS}
        if self.missing:
            miss[self.missing][::2] = True  # every other row
        return OnlineFeatures(np.ones((n, 17), np.float32), {}, miss, {v: np.zeros(n, bool) for v in VIEWS},
                              degraded=self.degraded is not None, unavailable=self.degraded)

    def close(self) -> None:
        pass


def _worker(topology: Topology, reader: Reader, **features: Any) -> tuple[Worker, FakeSink]:
    assert topology.features is not None
    t = topology.model_copy(update={"features": topology.features.model_copy(update=features)})
    w = Worker(t, reader=reader, engine=FakeEngine(), install_signals=False)
    w._prepare()
    sink = FakeSink()
    w.sink = sink  # type: ignore[assignment]
    return w, sink


def test_fraud_topology_falls_back_when_the_store_cannot_be_read(topology: Topology) -> None:
    assert topology.features is not None and topology.features.on_unavailable == "fallback"
    reader = Reader(degraded="auth")
    w, sink = _worker(topology, reader)
    w._score(_batch(topology, 4), reader, w._engine)  # type: ignore[arg-type]
    recs = _records(sink)
    assert len(recs) == 4
    for r in recs:
        assert r.verdict == "review" and r.score is None
        assert r.flags[:2] == ["degraded", "unavailable:auth"]
        assert "fallback:features_unavailable:auth" in r.flags
    assert w.stats.unavailable == {"auth": 4} and w.stats.degraded == 4


def test_score_with_defaults_scores_and_flags(topology: Topology) -> None:
    reader = Reader(degraded="timeout")
    w, sink = _worker(topology, reader, on_unavailable="score_with_defaults")
    w._score(_batch(topology, 3), reader, w._engine)  # type: ignore[arg-type]
    for r in _records(sink):
        assert r.score is not None and r.flags[:2] == ["degraded", "unavailable:timeout"]
        assert not any(f.startswith("fallback:") for f in r.flags)


def test_on_missing_per_view(topology: Topology) -> None:
    reader = Reader(missing="card_profile")
    w, sink = _worker(topology, reader, on_missing={"card_profile": "fallback"})
    w._score(_batch(topology, 4), reader, w._engine)  # type: ignore[arg-type]
    recs = {r.source.offset: r for r in _records(sink)}
    assert recs[0].score is None and recs[0].verdict == "review"
    assert recs[0].flags == ["missing:card_profile", "fallback:missing_features:card_profile"]
    assert recs[1].score is not None and recs[1].flags == []
    # the default for a view not listed: scored with the documented defaults, flagged
    reader2 = Reader(missing="merchant_risk")
    w2, sink2 = _worker(topology, reader2, on_missing={"card_profile": "fallback"})
    w2._score(_batch(topology, 2), reader2, w2._engine)  # type: ignore[arg-type]
    assert [r.flags for r in _records(sink2)] == [["missing:merchant_risk"], []]


def test_on_missing_names_only_views_the_model_reads(topology: Topology) -> None:
    assert topology.features is not None
    spec = topology.features.model_copy(update={"on_missing": {"card_profil": "fallback"}})
    with pytest.raises(TopologyError, match="card_profil"):
        FeaturePolicy(spec, VIEWS)


def test_the_read_waits_for_the_batchs_budget_not_a_fixed_timeout(topology: Topology) -> None:
    spec = topology.features
    assert spec is not None and (spec.latency_budget_ms, spec.timeout_ms) == (250, 50)
    now = 10_000_000_000
    assert read_timeout_s(spec, now, now) == pytest.approx(0.25)
    assert read_timeout_s(spec, now - 100_000_000, now) == pytest.approx(0.15)
    assert read_timeout_s(spec, now - 900_000_000, now) == pytest.approx(0.05)  # floor: timeout_ms
    reader = Reader()
    w, _ = _worker(topology, reader)
    w._score(_batch(topology, 2), reader, w._engine)  # type: ignore[arg-type]
    assert reader.timeouts[0] is not None and 0.05 <= reader.timeouts[0] <= 0.25


@pytest.mark.parametrize(("exc", "cause"), [
    (redis.exceptions.AuthenticationError("invalid password"), "auth"),
    (redis.exceptions.ResponseError("NOAUTH Authentication required."), "auth"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), "timeout"),
    (redis.exceptions.ConnectionError("Error 111 connecting"), "unreachable"),
    (ConnectionRefusedError(111, "refused"), "unreachable"),
    (redis.exceptions.BusyLoadingError("LOADING Redis is loading"), "loading"),
    (RuntimeError("bug"), "error"),
])
def test_causes(exc: BaseException, cause: str) -> None:
    assert cause_of(exc) == cause


class _Health(StoreHealth):
    def __init__(self, empty: list[str]) -> None:
        self.empty = empty

    def empty_views(self) -> list[str]:
        return self.empty

    def close(self) -> None:
        pass


def test_a_reachable_but_empty_store_is_degraded_empty_store(caplog: pytest.LogCaptureFixture) -> None:
    health = _Health(["card_profile"])
    g = GuardedReader(Reader(), health, Settings())
    ents = {"card_id": np.array(["c1", "c2"], dtype=object), "merchant_id": np.array(["m", "m"], dtype=object)}
    with caplog.at_level("ERROR"):
        out = g.fetch(ents)
        g.fetch(ents)
    assert out.degraded and out.unavailable == "empty_store"
    assert sum("holds no materialized features" in r.message for r in caplog.records) == 1  # once, not per batch
    health.empty = []
    assert not g.fetch(ents).degraded


@pytest.mark.parametrize(("reply", "cause"), [("NOAUTH Authentication required.", "auth"),
                                              ("WRONGPASS invalid username-password pair", "auth"),
                                              ("LOADING Redis is loading the dataset in memory", "loading")])
def test_error_replies_of_a_whole_store_fail_the_batch_not_read_as_missing(reply: str, cause: str) -> None:
    """A Redis that requires a password answered every key with NOAUTH, which read as 'missing'."""
    from workers.features.redis_fast import FastRedisReader

    with pytest.raises(redis.exceptions.RedisError) as err:
        FastRedisReader._reply_error(None, reply)  # type: ignore[arg-type]
    assert cause_of(err.value) == cause


def test_health_asks_again_on_a_new_connection_after_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The health client's connection from before a Redis restart fails once; that is not 'fine'."""
    import workers.features.health as health

    class Client:
        made = 0

        def __init__(self) -> None:
            Client.made += 1
            self.broken = Client.made == 1

        def exists(self, *keys: str) -> int:
            if self.broken:
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return 0

        def mget(self, keys: list[str]) -> list[None]:
            return [None] * len(keys)

        def close(self) -> None:
            pass

    monkeypatch.setattr(health, "redis_client", lambda *a, **k: Client())
    h = StoreHealth(Settings(), "p", ["card_profile", "merchant_risk"])
    assert h.empty_views() == ["card_profile", "merchant_risk"] and Client.made == 2
