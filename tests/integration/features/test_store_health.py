"""The store's conditions against the real Redis: a password required and not given (NOAUTH replies,
which read as "every entity missing" before), a wrong password, and a reachable store without
materialized data (another db: no sentinels) — each a degraded read with its cause."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import SecretStr

from workers.events import ObjArray
from workers.features.factory import make_reader
from workers.features.health import redis_client, sentinel_key
from workers.features.redis_fast import FastRedisReader
from workers.model.manifest import ModelManifest, load_manifest
from workers.settings import Settings
from workers.topology import Topology

PASSWORD = "it-health-requirepass"


@pytest.fixture(scope="module")
def manifest(feature_store: Settings) -> ModelManifest:
    return load_manifest(feature_store.models_dir, "fraud_gbm", 2)


def _ents() -> dict[str, ObjArray]:
    return {"card_id": np.array(["c000001", "c000002"], dtype=object),
            "merchant_id": np.array(["m00001", "m00002"], dtype=object)}


@pytest.fixture()
def requirepass(feature_store: Settings) -> Iterator[None]:
    c = redis_client(feature_store)
    c.config_set("requirepass", PASSWORD)
    c.close()
    try:
        yield
    finally:
        admin = redis_client(feature_store.model_copy(update={"redis_password": SecretStr(PASSWORD)}))
        admin.config_set("requirepass", "")
        admin.close()


@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["none", "wrong"])
def test_a_refused_password_is_auth_not_missing(feature_store: Settings, manifest: ModelManifest,
                                                requirepass: None, password: str | None) -> None:
    s = feature_store.model_copy(update={"redis_password": SecretStr(password) if password else None})
    r = FastRedisReader(s.feature_repo, manifest.feature_service, manifest, settings=s)
    try:
        out = r.fetch(_ents())
    finally:
        r.close()
    assert out.degraded and out.unavailable == "auth"
    assert r.last_error is not None and "refused the credentials" in r.last_error
    assert "dev up" not in r.last_error


def test_a_store_without_materialized_data_is_empty_store(feature_store: Settings, fraud_topology: Topology,
                                                          manifest: ModelManifest) -> None:
    c = redis_client(feature_store)
    assert c.exists(sentinel_key("streamscore", "card_profile"))  # setup wrote them
    c.close()
    empty_db = feature_store.model_copy(update={"redis_url": feature_store.redis_url.rsplit("/", 1)[0] + "/7"})
    reader = make_reader(fraud_topology, empty_db, manifest)
    try:
        out = reader.fetch(_ents())
    finally:
        reader.close()
    assert out.degraded and out.unavailable == "empty_store"
    full = make_reader(fraud_topology, feature_store, manifest)
    try:
        assert not full.fetch(_ents()).degraded
    finally:
        full.close()
