"""FeastSdkReader against the real Redis, after ``setup_features`` (the ``feature_store`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from examples.fraud import datagen
from workers.events import ObjArray
from workers.features.base import FeatureStoreError
from workers.features.feast_repo import setup_features
from workers.features.feast_sdk import FeastSdkReader
from workers.model.manifest import ModelManifest, load_manifest
from workers.topology import Topology
from workers.settings import Settings

pytestmark = pytest.mark.integration

VIEWS = ("card_profile", "merchant_risk", "card_velocity")


@pytest.fixture(scope="module")
def manifest(feature_store: Settings) -> ModelManifest:
    return load_manifest(feature_store.models_dir, "fraud_mlp", 1)


@pytest.fixture(scope="module")
def world() -> datagen.World:
    return datagen.generate(7)  # what the feature_store fixture materialized


@pytest.fixture(scope="module")
def reader(feature_store: Settings, manifest: ModelManifest) -> Iterator[FeastSdkReader]:
    r = FeastSdkReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store)
    yield r
    r.close()


def entities(cards: list[str], merchants: list[str]) -> dict[str, ObjArray]:
    return {"card_id": np.array(cards, dtype=object), "merchant_id": np.array(merchants, dtype=object)}


def expected_numeric(world: datagen.World, m: ModelManifest, card: str, merchant: str) -> list[float]:
    c = world.cards.set_index("card_id").loc[card]
    mr = world.merchants.set_index("merchant_id").loc[merchant]
    v = datagen.velocity_at(world, world.end_ms).set_index("card_id").loc[card]
    src = {"card_profile": c, "merchant_risk": mr, "card_velocity": v}
    return [float(np.float32(src[r.split(":")[0]][r.split(":")[1]])) for r in m.online_numeric]


def test_known_entities_get_their_values(reader: FeastSdkReader, world: datagen.World, manifest: ModelManifest) -> None:
    cards = ["c000000", "c000017", "c004999", "c000017"]
    merchants = ["m00000", "m00042", "m00499", "m00042"]
    out = reader.fetch(entities(cards, merchants))
    assert not out.degraded and len(out) == 4
    assert out.extra["unique_rows"] == 3  # the repeated (card, merchant) row was fetched once
    for i, (c, m) in enumerate(zip(cards, merchants)):
        assert out.numeric[i].tolist() == expected_numeric(world, manifest, c, m)
    prof = world.cards.set_index("card_id")
    assert out.strings["card_profile:home_country"].tolist() == prof.loc[cards, "home_country"].tolist()
    assert out.strings["card_profile:primary_device"].tolist() == prof.loc[cards, "primary_device"].tolist()
    for v in VIEWS:
        assert not out.missing[v].any() and not out.stale[v].any()
    assert out.numeric.dtype == np.float32 and out.fetch_ms > 0


def test_unknown_entities_get_defaults_and_missing_flags(reader: FeastSdkReader, manifest: ModelManifest) -> None:
    out = reader.fetch(entities(["cxdeadbeef", "c000001", "cxdeadbeef"], ["m00001", "mxbad", "mxbad"]))
    assert out.missing["card_profile"].tolist() == [True, False, True]
    assert out.missing["card_velocity"].tolist() == [True, False, True]
    assert out.missing["merchant_risk"].tolist() == [False, True, True]
    defaults = np.asarray(manifest.numeric_defaults(), dtype=np.float32)
    card_cols = [i for i, r in enumerate(manifest.online_numeric) if not r.startswith("merchant_risk:")]
    merch_cols = [i for i, r in enumerate(manifest.online_numeric) if r.startswith("merchant_risk:")]
    np.testing.assert_array_equal(out.numeric[0, card_cols], defaults[card_cols])
    np.testing.assert_array_equal(out.numeric[1, merch_cols], defaults[merch_cols])
    np.testing.assert_array_equal(out.numeric[2], defaults)
    assert out.strings["card_profile:home_country"][0] == manifest.defaults["card_profile:home_country"] == ""
    assert not out.degraded


def test_values_past_ttl_are_flagged_stale(feature_store: Settings, manifest: ModelManifest) -> None:
    later = time.time() + 2 * 86_400.0  # past card_velocity's 1-day TTL, inside the profiles' 30 days
    ents = entities(["c000017"], ["m00042"])
    vel = [i for i, r in enumerate(manifest.online_numeric) if r.startswith("card_velocity:")]
    for policy in ("default", "keep"):
        r = FeastSdkReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store,
                           stale_policy=policy, now_s=lambda: later)
        try:
            out = r.fetch(ents)
        finally:
            r.close()
        assert out.stale["card_velocity"].tolist() == [True]
        assert not out.stale["card_profile"].any() and not out.missing["card_velocity"].any()
        if policy == "default":
            assert out.numeric[0, vel].tolist() == [manifest.numeric_defaults()[i] for i in vel]


def test_unreachable_redis_degrades_instead_of_raising(feature_store: Settings, manifest: ModelManifest) -> None:
    bogus = feature_store.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    r = FeastSdkReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=bogus)
    try:
        t0 = time.perf_counter()
        out = r.fetch(entities(["c000001", "c000002"], ["m00001", "m00002"]))
        first_s = time.perf_counter() - t0
        again = r.fetch(entities(["c000001"], ["m00001"]))  # inside the cool-down: no new attempt
    finally:
        r.close()
    assert out.degraded and again.degraded
    assert all(out.missing[v].all() for v in VIEWS)
    np.testing.assert_array_equal(out.numeric, np.tile(np.asarray(manifest.numeric_defaults(), np.float32), (2, 1)))
    assert r.last_error is not None and "127.0.0.1:1 is unreachable" in r.last_error
    assert out.unavailable == again.unavailable == "unreachable"
    assert first_s < 5.0  # no multi-second retry backoff on the hot path


def test_setup_against_unreachable_redis_says_what_to_do(feature_store: Settings, fraud_topology: Topology) -> None:
    bogus = feature_store.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(FeatureStoreError, match=r"Redis at 127.0.0.1:1 did not answer — is `streamscore dev up` running\?"):
        setup_features(bogus, fraud_topology)


def test_reader_needs_a_registry(tmp_path: Path, feature_store: Settings, manifest: ModelManifest) -> None:
    (tmp_path / "feature_store.yaml").write_text(
        (feature_store.feature_repo / "feature_store.yaml").read_text()
    )
    with pytest.raises(FeatureStoreError, match="`streamscore setup`"):
        FeastSdkReader(tmp_path, manifest.feature_service, manifest, settings=feature_store)


def test_setup_is_idempotent(feature_store: Settings, manifest: ModelManifest, world: datagen.World,
                             fraud_topology: Topology) -> None:
    setup_features(feature_store, fraud_topology)
    r = FeastSdkReader(feature_store.feature_repo, manifest.feature_service, manifest, settings=feature_store)
    try:
        out = r.fetch(entities(["c000017"], ["m00042"]))
    finally:
        r.close()
    assert out.numeric[0].tolist() == expected_numeric(world, manifest, "c000017", "m00042")


def test_fetch_256_rows_timing(reader: FeastSdkReader) -> None:
    events = list(datagen.iter_events(7, datagen.WorldParams(), 1_800_000_000_000, limit=256))
    ents = entities([str(e["card_id"]) for e in events], [str(e["merchant_id"]) for e in events])
    reader.fetch(ents)  # warm-up
    ms = sorted(reader.fetch(ents).fetch_ms for _ in range(30))
    print(f"\nFeastSdkReader.fetch, 256 rows: p50 {ms[15]:.1f} ms, max {ms[-1]:.1f} ms")
