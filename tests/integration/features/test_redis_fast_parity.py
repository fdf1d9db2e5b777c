"""Parity is the contract: FastRedisReader returns exactly what FeastSdkReader returns.

Against the real Redis after ``setup_features`` (the ``feature_store`` fixture). Besides the
materialized world, made-up entities (ids unique to this run, deleted afterwards, so the shared
data other tests read is untouched) are written in Feast's own layout: through Feast's
``write_to_online_store`` (old timestamps for stale values, extreme values, views written for only
one entity) and, for shapes Feast's writer never produces but a foreign writer may (sub-microsecond
timestamps at a TTL edge, values of the wrong type, null values, empty cells), with Feast's own key
and field helpers. Both readers then read the same rows at the same injected "now".
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from examples.fraud import datagen
from workers.events import ObjArray, OnlineFeatures
from workers.features.redis_fast import NATIVE_AVAILABLE, FastRedisReader
from workers.features.base import FeatureStoreError, StalePolicy
from workers.features.feast_repo import repo_config
from workers.features.feast_sdk import FeastSdkReader
from workers.model.manifest import ModelManifest, load_manifest
from workers.settings import PROJECT_ROOT, Settings
from workers.topology import load_topology

pytestmark = pytest.mark.integration

VIEWS = ("card_profile", "merchant_risk", "card_velocity")
RUN = uuid.uuid4().hex[:8]
NOW = float(int(time.time())) + 0.25  # fixed "now" for both readers; fractional on purpose
EDGE_NANOS = 249_999_800
# The reader's three ways of reading replies; parity must hold for each.
WIRES = [
    pytest.param({"parser": "native", "command": "auto"}, id="native-hgetall"),
    pytest.param({"parser": "native", "command": "hmget"}, id="native-hmget"),
    pytest.param({"parser": "hiredis"}, id="hiredis"),
]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(feature_store: Settings) -> ModelManifest:
    return load_manifest(feature_store.models_dir, "fraud_mlp", 1)


@pytest.fixture(scope="module")
def world_ids() -> tuple[list[str], list[str]]:
    cards, merchants = datagen.generate_entities(7, datagen.WorldParams().n_cards, datagen.WorldParams().n_merchants)
    return cards["card_id"].tolist(), merchants["merchant_id"].tolist()


def _readers(settings: Settings, manifest: ModelManifest, policy: StalePolicy = "default",
             **fast_kw: Any) -> tuple[FastRedisReader, FeastSdkReader]:
    fast = FastRedisReader(settings.feature_repo, manifest.feature_service, manifest, settings=settings,
                           stale_policy=policy, now_s=lambda: NOW, **fast_kw)
    sdk = FeastSdkReader(settings.feature_repo, manifest.feature_service, manifest, settings=settings,
                         stale_policy=policy, now_s=lambda: NOW)
    return fast, sdk


@pytest.fixture(scope="module", params=WIRES)
def readers(feature_store: Settings, manifest: ModelManifest,
            request: pytest.FixtureRequest) -> Iterator[tuple[FastRedisReader, FeastSdkReader]]:
    fast, sdk = _readers(feature_store, manifest, **request.param)
    yield fast, sdk
    fast.close()
    sdk.close()


def _feast_key(project: str, join_key: str, value: str) -> bytes:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return _redis_key(project, EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)]), 3)


@pytest.fixture(scope="module")
def made_up(feature_store: Settings) -> Iterator[dict[str, list[str]]]:
    """Entities written for this module only: {"cards": [...], "merchants": [...]}; deleted after."""
    from feast import FeatureStore
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    repo = feature_store.feature_repo.resolve()
    cfg = repo_config(repo, feature_store)
    store = FeatureStore(repo_path=str(repo), config=cfg)
    now = datetime.fromtimestamp(int(NOW), tz=timezone.utc)
    c = [f"cxpar{RUN}-{i}" for i in range(12)]
    m = [f"mxpar{RUN}-{i}" for i in range(5)]

    def profile(ids: list[str], age: timedelta, **over: list[Any]) -> pd.DataFrame:
        k = len(ids)
        df = pd.DataFrame({
            "card_id": ids, "event_timestamp": [now - age] * k, "created": [now - age] * k,
            "avg_amount": np.linspace(-5.5, 3.4e38, k).astype(np.float32),
            "std_amount": np.float32(1.25), "txn_count_30d": np.arange(k, dtype=np.int64) * -(2**40),
            "account_age_days": np.int64(2**62), "night_txn_ratio": np.float32(1e-40),
            "chargeback_count": np.arange(k, dtype=np.int64) - 3, "is_premium": [i % 2 == 0 for i in range(k)],
            "home_country": ["ZÜ", "", "NL"][:k] + ["DE"] * max(0, k - 3), "primary_device": ["d" * 200] * k,
        })
        for col, vals in over.items():
            df[col] = vals
        return df

    def velocity(ids: list[str], age: timedelta) -> pd.DataFrame:
        k = len(ids)
        return pd.DataFrame({
            "card_id": ids, "event_timestamp": [now - age] * k, "created": [now - age] * k,
            "txn_count_10m": np.int64(0), "txn_count_1h": np.arange(k, dtype=np.int64) * 300,
            "amount_sum_1h": np.float32(-0.0), "distinct_merchants_1d": np.int64(-1),
        })

    def risk(ids: list[str], age: timedelta) -> pd.DataFrame:
        k = len(ids)
        return pd.DataFrame({
            "merchant_id": ids, "event_timestamp": [now - age] * k, "created": [now - age] * k,
            "fraud_rate": np.array([1e-300, 0.1, float("inf"), -2.5, 1.0][:k], np.float64),
            "chargeback_rate": np.float32(0.5), "avg_amount": np.float32(12.34), "category_risk": np.float32(0.9),
            "age_days": np.int64(-(2**63)), "is_online": [True, False, True, False, True][:k],
        })

    hour, day = timedelta(hours=1), timedelta(days=1)
    store.write_to_online_store("card_profile", profile(c[0:3], hour))  # fresh, extreme values
    store.write_to_online_store("card_velocity", velocity(c[0:3], hour))
    store.write_to_online_store("card_profile", profile(c[3:5], hour, home_country=[None, "PL"]))
    store.write_to_online_store("card_velocity", velocity(c[3:5], 2 * day))  # past the 1-day TTL
    store.write_to_online_store("card_profile", profile(c[5:7], 40 * day))  # past the 30-day TTL
    store.write_to_online_store("card_velocity", velocity(c[5:7], hour))
    store.write_to_online_store("card_profile", profile(c[7:8], hour))  # no velocity at all
    store.write_to_online_store("card_velocity", velocity(c[8:9], hour))  # no profile at all
    store.write_to_online_store("merchant_risk", risk(m[0:3], hour))
    store.write_to_online_store("merchant_risk", risk(m[3:5], 31 * day))

    # Shapes only a foreign writer produces, in Feast's layout (Feast's key and field helpers).
    client = redis.Redis.from_url(feature_store.redis_url)
    project = cfg.project

    def ts(seconds: int, nanos: int) -> bytes:
        return bytes(Timestamp(seconds=seconds, nanos=nanos).SerializeToString())

    def f(view: str, feat: str) -> bytes:
        return bytes(_mmh3(f"{view}:{feat}"))

    t_now = int(NOW)
    # c9: velocity at the TTL edge with sub-microsecond nanos: Feast rounds .2499998 s to .25 s, which
    # makes it exactly one TTL old at NOW, so not stale; read raw it would be. Plus odd cells: an int
    # where a float is declared, a null, an empty value.
    client.hset(_feast_key(project, "card_id", c[9]), mapping={
        "_ts:card_velocity": ts(t_now - 86_400, EDGE_NANOS),
        f("card_velocity", "txn_count_10m"): Value(int64_val=3).SerializeToString(),
        f("card_velocity", "txn_count_1h"): Value(null_val=0).SerializeToString(),
        f("card_velocity", "amount_sum_1h"): Value(int64_val=17).SerializeToString(),
        f("card_velocity", "distinct_merchants_1d"): b"",
        "_ts:card_profile": ts(t_now - 100, 999_999_999),
        f("card_profile", "avg_amount"): Value(double_val=1.0 / 3.0).SerializeToString(),
        f("card_profile", "is_premium"): Value(int64_val=5).SerializeToString(),
        f("card_profile", "home_country"): Value(int64_val=5).SerializeToString(),
        f("card_profile", "primary_device"): Value(string_val="").SerializeToString(),
    })
    # c10: a timestamp but no values; c11: values but no timestamp.
    # (and a field no view declares, which Feast ignores: read whole by HGETALL, it must be skipped)
    client.hset(_feast_key(project, "card_id", c[10]), mapping={
        "_ts:card_profile": ts(t_now - 5, 0), f("card_profile", "avg_amount"): b"", b"not-a-feature": b"\x35junk"})
    client.hset(_feast_key(project, "card_id", c[11]), mapping={
        f("card_profile", "avg_amount"): Value(float_val=2.0).SerializeToString()})
    try:
        yield {"cards": c, "merchants": m}
    finally:
        keys = [_feast_key(project, "card_id", x) for x in c] + [_feast_key(project, "merchant_id", x) for x in m]
        client.delete(*keys)
        client.close()


# ---- helpers ----------------------------------------------------------------------------------


def entities(cards: list[str], merchants: list[str]) -> dict[str, ObjArray]:
    return {"card_id": np.array(cards, dtype=object), "merchant_id": np.array(merchants, dtype=object)}


def assert_same(fast: OnlineFeatures, sdk: OnlineFeatures) -> None:
    assert fast.degraded == sdk.degraded and len(fast) == len(sdk)
    assert fast.numeric.dtype == sdk.numeric.dtype == np.float32
    bad = np.argwhere(~((fast.numeric == sdk.numeric) | (np.isnan(fast.numeric) & np.isnan(sdk.numeric))))
    assert not len(bad), f"numeric differs at (row, col) {bad[:10].tolist()}"
    assert list(fast.strings) == list(sdk.strings)
    for ref in sdk.strings:
        assert fast.strings[ref].tolist() == sdk.strings[ref].tolist(), ref
    assert list(fast.missing) == list(sdk.missing) and list(fast.stale) == list(sdk.stale)
    for v in sdk.missing:
        assert fast.missing[v].tolist() == sdk.missing[v].tolist(), f"missing[{v}]"
        assert fast.stale[v].tolist() == sdk.stale[v].tolist(), f"stale[{v}]"


def assert_parity(fast: FastRedisReader, sdk: FeastSdkReader, ents: dict[str, ObjArray]) -> OnlineFeatures:
    """Both readers on the same rows. Other sessions' streaming jobs may write card_velocity into
    the shared Redis between the two reads, so a difference is re-read once: a real parity bug
    repeats, a race does not."""
    a, b = fast.fetch(ents), sdk.fetch(ents)
    try:
        assert_same(a, b)
    except AssertionError:
        a, b = fast.fetch(ents), sdk.fetch(ents)
        assert_same(a, b)
    return a


def random_batch(rng: np.random.Generator, world_ids: tuple[list[str], list[str]], n: int,
                 extra_cards: Sequence[str] = (), extra_merchants: Sequence[str] = ()) -> dict[str, ObjArray]:
    cards, merchants = world_ids
    c = [cards[i] for i in rng.integers(0, len(cards), n)]
    m = [merchants[i] for i in rng.integers(0, len(merchants), n)]
    for i in np.flatnonzero(rng.random(n) < 0.05).tolist():  # unknown ids
        c[i] = f"cxnone-{RUN}-{i}"
    for i in np.flatnonzero(rng.random(n) < 0.05).tolist():
        m[i] = f"mxnone-{RUN}-{i}"
    for i, x in zip(rng.integers(0, n, len(extra_cards)).tolist(), extra_cards):
        c[i] = x
    for i, x in zip(rng.integers(0, n, len(extra_merchants)).tolist(), extra_merchants):
        m[i] = x
    return entities(c, m)


# ---- parity -----------------------------------------------------------------------------------


def test_the_fast_path_is_built_where_ci_runs(feature_store: Settings, manifest: ModelManifest) -> None:
    """The C framing (workers/features/_resp.c) is optional at install; CI must not lose it silently."""
    import os

    if os.environ.get("CI") and not NATIVE_AVAILABLE:
        pytest.fail("workers.features._resp was not built: `pip install -e .` needs a C compiler and Python headers")
    fast = FastRedisReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store)
    try:
        assert fast.parser == ("native" if NATIVE_AVAILABLE else "hiredis")
        # card_id's hash holds nothing but what the model reads: one HGETALL per card.
        assert fast._hgetall["card_id"] == NATIVE_AVAILABLE
    finally:
        fast.close()


def test_the_repo_uses_every_value_type(readers: tuple[FastRedisReader, FeastSdkReader]) -> None:
    fast, _ = readers
    kinds = {k for g in fast._groups for k in g.numeric_kinds}
    assert {"float_val", "double_val", "int64_val", "bool_val"} <= kinds
    assert any(g.string_refs for g in fast._groups)


@pytest.mark.parametrize("n", [1, 7, 64, 256, 1000])
def test_random_known_and_unknown_entities(readers: tuple[FastRedisReader, FeastSdkReader],
                                           world_ids: tuple[list[str], list[str]], n: int) -> None:
    fast, sdk = readers
    rng = np.random.default_rng(n)
    for _ in range(3):
        assert not assert_parity(fast, sdk, random_batch(rng, world_ids, n)).degraded


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("policy", ["default", "keep"])
def test_expired_partial_and_odd_entities(feature_store: Settings, manifest: ModelManifest,
                                          world_ids: tuple[list[str], list[str]],
                                          made_up: dict[str, list[str]], policy: StalePolicy,
                                          wire: dict[str, str]) -> None:
    fast, sdk = _readers(feature_store, manifest, policy, **wire)
    try:
        rng = np.random.default_rng(3)
        cards, merchants = made_up["cards"], made_up["merchants"]
        # All made-up rows side by side, then mixed into random batches.
        ents = entities(cards + cards[:3], (merchants * 4)[: len(cards) + 3])
        a, b = fast.fetch(ents), sdk.fetch(ents)
        assert_same(a, b)
        # The scenarios did happen (so parity is not vacuous):
        assert b.stale["card_velocity"][3:5].all() and b.stale["card_profile"][5:7].all()
        assert b.missing["card_velocity"][7] and b.missing["card_profile"][8]
        assert b.missing["card_profile"][10] and b.missing["card_profile"][11]
        assert b.stale["merchant_risk"].any() and not b.missing["merchant_risk"].any()
        assert a.extra["protobuf_cells"] > 0  # c9 odd cells went through protobuf
        for _ in range(5):
            assert_parity(fast, sdk, random_batch(rng, world_ids, 300, cards, merchants))
    finally:
        fast.close()
        sdk.close()


def test_ttl_edge_follows_feasts_microsecond_rounding(readers: tuple[FastRedisReader, FeastSdkReader],
                                                     made_up: dict[str, list[str]]) -> None:
    fast, sdk = readers
    edge = made_up["cards"][9]
    a, b = fast.fetch(entities([edge], ["m00001"])), sdk.fetch(entities([edge], ["m00001"]))
    assert_same(a, b)
    raw_ts = (int(NOW) - 86_400) + EDGE_NANOS * 1e-9
    assert NOW - raw_ts > 86_400  # read without Feast's rounding it would be stale ...
    assert b.stale["card_velocity"].tolist() == a.stale["card_velocity"].tolist() == [False]  # ... it is not
    assert not b.missing["card_velocity"][0]


# ---- cache ------------------------------------------------------------------------------------


def test_merchant_cache_counts_hits_and_expires(feature_store: Settings, manifest: ModelManifest,
                                                world_ids: tuple[list[str], list[str]]) -> None:
    clock = [100.0]
    fast, sdk = _readers(feature_store, manifest, cached_views=["merchant_risk"], cache_ttl_ms=1000,
                         clock_s=lambda: clock[0])
    try:
        ents = random_batch(np.random.default_rng(9), world_ids, 200)
        n_merchants = len(set(ents["merchant_id"].tolist()))
        first = fast.fetch(ents)
        assert (first.extra["cache_hits"], first.extra["cache_misses"]) == (0, n_merchants)
        clock[0] += 0.5
        second = fast.fetch(ents)
        assert (second.extra["cache_hits"], second.extra["cache_misses"]) == (n_merchants, 0)
        assert second.extra["redis_keys"] == len(set(ents["card_id"].tolist()))
        assert_parity(fast, sdk, ents)  # served from the cache, still exactly Feast's answer
        clock[0] += 0.6  # past the 1 s TTL of the entries stored by the first fetch
        third = fast.fetch(ents)
        assert third.extra["cache_misses"] == n_merchants
        assert fast.cache_misses == 2 * n_merchants and fast.cache_hits >= 2 * n_merchants
    finally:
        fast.close()
        sdk.close()


def test_cached_values_change_only_after_the_ttl(feature_store: Settings, manifest: ModelManifest) -> None:
    from feast import FeatureStore

    clock = [0.0]
    fast = FastRedisReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store,
                           cached_views=["merchant_risk"], cache_ttl_ms=1000, clock_s=lambda: clock[0])
    repo = feature_store.feature_repo.resolve()
    store = FeatureStore(repo_path=str(repo), config=repo_config(repo, feature_store))
    mid = f"mxcache-{RUN}"
    col = manifest.online_numeric.index("merchant_risk:age_days")

    def write(age_days: int) -> None:
        ts = datetime.now(timezone.utc)
        store.write_to_online_store("merchant_risk", pd.DataFrame({
            "merchant_id": [mid], "event_timestamp": [ts], "created": [ts], "fraud_rate": [0.1],
            "chargeback_rate": np.float32([0.1]), "avg_amount": np.float32([1.0]),
            "category_risk": np.float32([0.1]), "age_days": [age_days], "is_online": [True]}))

    try:
        write(10)
        assert fast.fetch(entities(["c000001"], [mid])).numeric[0, col] == 10
        time.sleep(0.01)
        write(20)
        assert fast.fetch(entities(["c000001"], [mid])).numeric[0, col] == 10  # cached
        clock[0] += 1.5
        assert fast.fetch(entities(["c000001"], [mid])).numeric[0, col] == 20
    finally:
        fast.close()
        redis.Redis.from_url(feature_store.redis_url).delete(
            _feast_key(store.config.project, "merchant_id", mid))


def test_cache_configuration_errors(feature_store: Settings, manifest: ModelManifest) -> None:
    def make(views: list[str]) -> None:
        FastRedisReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store,
                        cached_views=views, cache_ttl_ms=1000)

    with pytest.raises(FeatureStoreError, match="not views the model reads"):
        make(["no_such_view"])
    with pytest.raises(FeatureStoreError, match="share the card_id key"):
        make(["card_profile"])


def test_topology_picks_parser_and_command(feature_store: Settings, manifest: ModelManifest) -> None:
    topology = load_topology(PROJECT_ROOT / "topologies" / "fraud.yaml")
    spec = topology.features.model_copy(update={"parser": "hiredis", "command": "hmget"})
    reader = FastRedisReader.from_topology(topology.model_copy(update={"features": spec}), feature_store, manifest)
    assert reader.parser == "hiredis"
    reader.close()
    with pytest.raises(FeatureStoreError, match="native parser only"):
        FastRedisReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store,
                        parser="hiredis", command="hgetall")


# ---- failure ----------------------------------------------------------------------------------


def _assert_all_defaults(out: OnlineFeatures, manifest: ModelManifest, n: int) -> None:
    assert out.degraded and len(out) == n
    np.testing.assert_array_equal(out.numeric, np.tile(np.asarray(manifest.numeric_defaults(), np.float32), (n, 1)))
    assert all(out.missing[v].all() for v in VIEWS) and not any(out.stale[v].any() for v in VIEWS)
    for ref in manifest.online_strings:
        assert out.strings[ref].tolist() == [manifest.defaults[ref]] * n


def test_unreachable_redis_degrades_fast(feature_store: Settings, manifest: ModelManifest) -> None:
    bogus = feature_store.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    fast = FastRedisReader(bogus.feature_repo, manifest.feature_service, manifest, settings=bogus)
    try:
        t0 = time.perf_counter()
        out = fast.fetch(entities(["c000001", "c000002"], ["m00001", "m00002"]))
        first_s = time.perf_counter() - t0
        again = fast.fetch(entities(["c000001"], ["m00001"]))  # inside the retry-after: no new attempt
    finally:
        fast.close()
    _assert_all_defaults(out, manifest, 2)
    _assert_all_defaults(again, manifest, 1)
    assert fast.last_error is not None and "127.0.0.1:1 is unreachable" in fast.last_error
    assert out.unavailable == again.unavailable == "unreachable"
    assert first_s < 2.0


def test_silent_redis_times_out_within_the_budget(feature_store: Settings, manifest: ModelManifest) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    conns: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: conns.append(server.accept()[0]), daemon=True)
    accepting.start()
    port = server.getsockname()[1]
    silent = feature_store.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    fast = FastRedisReader(silent.feature_repo, manifest.feature_service, manifest, settings=silent, timeout_ms=50)
    try:
        t0 = time.perf_counter()
        out = fast.fetch(entities(["c000001"], ["m00001"]))
        took = time.perf_counter() - t0
        # a slow store is tried again soon (~100 ms), not after the full 1 s retry_after_ms
        assert fast._down_until - time.monotonic() <= 0.1
    finally:
        fast.close()
        for c in conns:
            c.close()
        server.close()
    _assert_all_defaults(out, manifest, 1)
    assert took < 1.0, took  # one 50 ms timeout, not redis-py's retries with backoff


def test_reconnects_after_the_connection_is_killed(feature_store: Settings, manifest: ModelManifest,
                                                  world_ids: tuple[list[str], list[str]]) -> None:
    fast, sdk = _readers(feature_store, manifest, retry_after_ms=50)
    admin = redis.Redis.from_url(feature_store.redis_url)
    try:
        ents = random_batch(np.random.default_rng(5), world_ids, 50)
        assert not fast.fetch(ents).degraded
        port = fast._conn._sock.getsockname()[1]
        mine = [c for c in admin.client_list() if c["addr"].endswith(f":{port}")]
        assert len(mine) == 1
        admin.client_kill_filter(_id=mine[0]["id"])  # only this reader's connection
        outs = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            outs.append(fast.fetch(ents))
            if not outs[-1].degraded and len(outs) > 1:
                break
            time.sleep(0.06)
        assert not outs[-1].degraded, fast.last_error
        assert_parity(fast, sdk, ents)
        for o in outs[:-1]:
            if o.degraded:
                _assert_all_defaults(o, manifest, 50)
    finally:
        admin.close()
        fast.close()
        sdk.close()


def test_cluster_is_a_documented_refusal(tmp_path: Path, feature_store: Settings, manifest: ModelManifest) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(feature_store.feature_repo, repo)
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("  type: redis\n", "  type: redis\n  redis_type: redis_cluster\n"))
    with pytest.raises(FeatureStoreError, match="Redis Cluster"):
        FastRedisReader(repo, manifest.feature_service, manifest, settings=feature_store)


# ---- the benchmark's own check --------------------------------------------------------------------


def test_bench_quick_writes_the_agreed_json(feature_store: Settings, tmp_path: Path) -> None:
    from workers.bench.features import main

    out = tmp_path / "results" / "bench.json"  # a folder that does not exist yet, as in a fresh clone
    assert main(["--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [b["batch"] for b in data["batches"]] == [1, 64, 256, 512, 2048]
    for b in data["batches"]:
        agreed = ("batch", "fast_us_per_key", "feast_sdk_us_per_key", "batch_p50_ms", "batch_p99_ms")
        assert all(isinstance(b[k], (int, float)) and b[k] > 0 for k in agreed)
    assert isinstance(data["single_event_p99_ms"], float)
    assert data["parity_checked"] > 0 and data["parity_mismatches"] == 0
