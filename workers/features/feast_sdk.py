"""Feast set-up and the Feast-SDK feature reader.

``setup_features`` fills the online store from the generated world (deterministic per seed).
``FeastSdkReader`` answers one micro-batch with one ``get_online_features`` call.

Where Redis lives comes from ``Settings`` only (``STREAMSCORE_REDIS_URL``,
``STREAMSCORE_REDIS_PASSWORD``): the repository's ``feature_store.yaml`` is loaded and its
``online_store.connection_string`` replaced, so the yaml's literal only serves hand-run feast CLI
calls. (Feast 0.67 does run ``os.path.expandvars`` over the yaml, but an unset variable stays a
literal ``${...}``, and a second Redis knob would be a second way to configure one thing.)

Feast is imported lazily: importing it costs seconds, and most of the worker does not need it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from examples.fraud import datagen
from workers.events import BoolArray, ObjArray, OnlineFeatures
from workers.features.base import FeatureDefaults
from workers.model.manifest import ModelManifest
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

log = logging.getLogger("streamscore.featurestore")

FEATURE_DEFINITIONS = "features.py"
DATA_DIR = "data"
# Short socket timeouts: a reader that cannot reach Redis must fall back to defaults within a
# batch's budget, not hang. Setup uses the same string; its operations are small per command.
REDIS_CONNECT_TIMEOUT_S = 0.5
REDIS_SOCKET_TIMEOUT_S = 2.0


class FeatureStoreError(RuntimeError):
    """Set-up or reader construction failed; the message says what to do."""


# ---- configuration ------------------------------------------------------------------------


def redis_connection_string(settings: Settings) -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=..][,ssl=true],...``)."""
    u = urlparse(settings.redis_url)
    host, port = settings.redis_host_port
    parts = [f"{host}:{port}", f"db={settings.redis_db}"]
    password = (
        settings.redis_password.get_secret_value()
        if settings.redis_password is not None
        else (unquote(u.password) if u.password else None)
    )
    if password:
        if "," in password or "=" in password:
            # Feast splits the string on ',' and '='; such a password cannot be expressed.
            raise FeatureStoreError("Redis password contains ',' or '=', which Feast's connection string cannot carry")
        parts.append(f"password={password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    parts += [f"socket_connect_timeout={REDIS_CONNECT_TIMEOUT_S}", f"socket_timeout={REDIS_SOCKET_TIMEOUT_S}"]
    return ",".join(parts)


def repo_config(repo_path: Path, settings: Settings) -> RepoConfig:
    """``feature_store.yaml`` of ``repo_path`` with the online store pointed per ``settings``."""
    from feast.repo_config import load_repo_config

    repo_path = Path(repo_path).resolve()
    yaml_path = repo_path / "feature_store.yaml"
    if not yaml_path.is_file():
        raise FeatureStoreError(f"{yaml_path} does not exist — is {repo_path} the Feast repository?")
    cfg = load_repo_config(repo_path, yaml_path)
    if getattr(cfg.online_store, "type", None) != "redis":
        raise FeatureStoreError(f"{yaml_path}: online_store.type must be redis")
    cfg.online_store.connection_string = redis_connection_string(settings)
    return cfg


def _redis_unreachable(settings: Settings) -> str:
    host, port = settings.redis_host_port
    return f"Redis at {host}:{port} did not answer — is `streamscore dev up` running?"


def _ping_redis(settings: Settings, timeout_s: float = 2.0) -> None:
    import redis

    pw = settings.redis_password.get_secret_value() if settings.redis_password is not None else None
    client = redis.Redis.from_url(
        settings.redis_url, password=pw, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as e:
        raise FeatureStoreError(f"Redis at {settings.redis_url} refused the credentials: {e}") from e
    except (redis.exceptions.RedisError, OSError) as e:
        raise FeatureStoreError(f"{_redis_unreachable(settings)} ({e})") from e
    finally:
        client.close()


def _load_definitions(repo_path: Path) -> ModuleType:
    path = repo_path / FEATURE_DEFINITIONS
    spec = importlib.util.spec_from_file_location("streamscore_feature_repo", path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- set-up --------------------------------------------------------------------------------


def setup_features(settings: Settings, seed: int = 7) -> None:
    """Generate the world, write the offline parquet, ``apply`` the repo, materialize to Redis.

    Idempotent: re-running rewrites the same values with a newer timestamp. Raises
    ``FeatureStoreError`` with what to do when Redis is unreachable or the repo is broken.
    """
    from feast import FeatureStore

    t0 = time.perf_counter()
    repo = Path(settings.feature_repo).resolve()
    cfg = repo_config(repo, settings)
    _ping_redis(settings)

    world = datagen.generate(seed)
    # Whole seconds: Feast stores second+nanos, and a round stamp makes re-runs easy to compare.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    datagen.write_offline(world, repo / DATA_DIR, now)
    t_data = time.perf_counter()

    definitions = _load_definitions(repo)
    objects = getattr(definitions, "OBJECTS", None)
    if not objects:
        raise FeatureStoreError(f"{repo / FEATURE_DEFINITIONS} defines no OBJECTS list to apply")
    store = FeatureStore(repo_path=str(repo), config=cfg)
    store.apply(objects)
    t_apply = time.perf_counter()
    longest_ttl = max((fv.ttl for fv in store.list_feature_views() if fv.ttl), default=timedelta(days=1))
    try:
        store.materialize(start_date=now - longest_ttl - timedelta(hours=1), end_date=now + timedelta(seconds=1))
    except Exception as e:
        import redis

        if isinstance(e, (redis.exceptions.RedisError, OSError)):
            raise FeatureStoreError(f"{_redis_unreachable(settings)} ({e})") from e
        raise
    log.info(
        "features set up: %d cards, %d merchants; data %.1fs, apply %.1fs, materialize %.1fs",
        len(world.cards), len(world.merchants), t_data - t0, t_apply - t_data, time.perf_counter() - t_apply,
    )


# ---- reader --------------------------------------------------------------------------------

StalePolicy = Literal["default", "keep"]


@dataclass(frozen=True)
class _ViewInfo:
    ttl_s: float  # 0 = never stale
    numeric_cols: list[int]  # indices into manifest.online_numeric
    string_refs: list[str]


def _value_reader(none: float) -> Callable[[Any], float]:
    def read(v: Any) -> float:
        kind = v.WhichOneof("val")
        return none if kind is None else float(getattr(v, kind))

    return read


class FeastSdkReader:
    """Online features for a micro-batch through the Feast SDK (one ``get_online_features`` call).

    Rows with the same (card_id, merchant_id) are fetched once. Per feature view:
    ``missing`` — the entity has no value (Feast 0.67's Redis store reports such rows as PRESENT
    with an empty value and a zero timestamp, so emptiness is what is checked); ``stale`` — the
    value's timestamp is older than the view's TTL (that store never reports OUTSIDE_MAX_AGE
    itself). Missing values get the manifest's defaults; stale ones too with
    ``stale_policy="default"`` (Feast's own TTL meaning), or are kept with ``"keep"``.

    If Redis cannot be read, ``fetch`` returns every row with defaults and ``degraded=True``
    instead of raising, and does not try Redis again for ``retry_after_ms``.
    Not thread-safe: one reader per worker thread.
    """

    def __init__(
        self,
        repo_path: Path,
        feature_service: str,
        manifest: ModelManifest,
        *,
        settings: Settings | None = None,
        stale_policy: StalePolicy = "default",
        retry_after_ms: float = 1000.0,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        from feast import FeatureStore

        self._settings = settings if settings is not None else get_settings()
        self._manifest = manifest
        self._stale_policy = stale_policy
        self._retry_after_s = retry_after_ms / 1000.0
        self._now_s = now_s
        self._down_until = 0.0
        self.last_error: str | None = None
        repo = Path(repo_path).resolve()
        self._store: FeatureStore = FeatureStore(repo_path=str(repo), config=repo_config(repo, self._settings))
        try:
            self._service = self._store.get_feature_service(feature_service)
        except Exception as e:  # registry missing or service unknown: both mean "set up first"
            raise FeatureStoreError(
                f"feature service {feature_service!r} not found in {repo}'s registry ({e}) — "
                "run `streamscore setup`"
            ) from e
        self._join_keys = self._entity_join_keys()
        self._views = self._view_infos()
        self._fill = FeatureDefaults(manifest)
        self._defaults = self._fill.numeric
        self._string_defaults = self._fill.strings
        self._no_retry_redis()

    # -- construction helpers

    def _entity_join_keys(self) -> list[str]:
        keys: list[str] = []
        for proj in self._service.feature_view_projections:
            fv = self._store.get_feature_view(proj.name)
            for ec in fv.entity_columns:
                if ec.name not in keys:
                    keys.append(ec.name)
        return keys

    def _view_infos(self) -> dict[str, _ViewInfo]:
        served = {
            f"{p.name}:{f.name}" for p in self._service.feature_view_projections for f in p.features
        }
        refs = (*self._manifest.online_numeric, *self._manifest.online_strings)
        absent = [r for r in refs if r not in served]
        if absent:
            raise FeatureStoreError(
                f"feature service {self._service.name!r} does not serve {absent} that model "
                f"{self._manifest.name} v{self._manifest.version} needs"
            )
        views: dict[str, _ViewInfo] = {}
        for p in self._service.feature_view_projections:
            fv = self._store.get_feature_view(p.name)
            ttl = fv.ttl.total_seconds() if fv.ttl else 0.0
            views[p.name] = _ViewInfo(
                ttl_s=ttl,
                numeric_cols=[i for i, r in enumerate(self._manifest.online_numeric) if r.split(":")[0] == p.name],
                string_refs=[r for r in self._manifest.online_strings if r.split(":")[0] == p.name],
            )
        return views

    def _no_retry_redis(self) -> None:
        # redis-py 6+ retries a failed command 3 times with up-to-seconds backoff by default; on
        # the hot path a dead Redis must cost one short connect timeout, then the cooldown.
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            online: Any = self._store._get_provider().online_store  # no public accessor in Feast 0.67
            client = online._get_client(self._store.config.online_store)
            client.set_retry(Retry(NoBackoff(), 0))
        except Exception as e:  # pragma: no cover - Feast internals moved; reads still work
            log.warning("could not disable redis-py retries (%s); a dead Redis may stall batches longer", e)

    # -- reading

    @property
    def join_keys(self) -> list[str]:
        """Entity columns ``fetch`` expects (``card_id``, ``merchant_id``)."""
        return list(self._join_keys)

    def fetch(self, entities: dict[str, ObjArray]) -> OnlineFeatures:
        """Features for rows given as entity columns (e.g. ``{"card_id": ..., "merchant_id": ...}``)."""
        t0 = time.perf_counter()
        missing_keys = [k for k in self._join_keys if k not in entities]
        if missing_keys:
            raise ValueError(f"fetch needs entity columns {self._join_keys}, missing {missing_keys}")
        cols = [np.asarray(entities[k], dtype=object) for k in self._join_keys]
        n = int(cols[0].shape[0]) if cols else 0
        if n == 0:
            return self._all_defaults(0, degraded=False, t0=t0)
        if time.monotonic() < self._down_until:
            return self._all_defaults(n, degraded=True, t0=t0)

        # Dedupe whole entity rows: factorize each key column, combine the codes.
        codes = np.zeros(n, dtype=np.int64)
        for col in cols:
            c, uniq = pd.factorize(col)
            codes = codes * (len(uniq) + 1) + c
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        rows = {k: col[first].tolist() for k, col in zip(self._join_keys, cols)}
        try:
            t_call = time.perf_counter()
            response = self._store.get_online_features(
                features=self._service, entity_rows=rows, full_feature_names=True
            )
            feast_ms = (time.perf_counter() - t_call) * 1000.0
        except Exception as e:
            if not self._is_connection_error(e):
                raise
            self._down_until = time.monotonic() + self._retry_after_s
            self.last_error = f"{_redis_unreachable(self._settings)} ({type(e).__name__}: {e})"
            log.warning("%s; serving defaults for %.0f ms", self.last_error, self._retry_after_s * 1000.0)
            return self._all_defaults(n, degraded=True, t0=t0)
        self.last_error = None
        return self._decode(response.proto, len(first), inverse, t0, feast_ms)

    @staticmethod
    def _is_connection_error(e: BaseException) -> bool:
        import redis

        return isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError))

    def _decode(self, proto: Any, m: int, inverse: np.ndarray, t0: float, feast_ms: float) -> OnlineFeatures:
        by_name = dict(zip(proto.metadata.feature_names.val, proto.results))
        man = self._manifest
        numeric = np.empty((m, len(man.online_numeric)), dtype=np.float32)
        present = np.empty((m, len(man.online_numeric)), dtype=bool)
        read = _value_reader(math.nan)
        for j, ref in enumerate(man.online_numeric):
            vec = by_name[ref.replace(":", "__", 1)]
            vals = np.fromiter((read(v) for v in vec.values), dtype=np.float64, count=m)
            present[:, j] = ~np.isnan(vals)
            numeric[:, j] = vals
        strings: dict[str, ObjArray] = {}
        str_present: dict[str, BoolArray] = {}
        for ref in man.online_strings:
            vec = by_name[ref.replace(":", "__", 1)]
            has = [v.WhichOneof("val") == "string_val" for v in vec.values]
            str_present[ref] = np.asarray(has, dtype=bool)
            strings[ref] = np.array([v.string_val for v in vec.values], dtype=object)
        now = self._now_s()
        missing: dict[str, BoolArray] = {}
        stale: dict[str, BoolArray] = {}
        for view, info in self._views.items():
            refs = [man.online_numeric[c] for c in info.numeric_cols] + info.string_refs
            if not refs:
                continue
            vec = by_name[refs[0].replace(":", "__", 1)]
            ts = np.fromiter((t.seconds + t.nanos * 1e-9 for t in vec.event_timestamps), dtype=np.float64, count=m)
            any_present = np.zeros(m, dtype=bool)
            for c in info.numeric_cols:
                any_present |= present[:, c]
            for r in info.string_refs:
                any_present |= str_present[r]
            miss = ~any_present | (ts <= 0.0)
            old = ~miss & (info.ttl_s > 0) & (now - ts > info.ttl_s)
            missing[view], stale[view] = miss, old
            if self._stale_policy == "default":
                # A value past its TTL counts as absent for the model, as in Feast's semantics.
                for c in info.numeric_cols:
                    present[:, c] &= ~old
                for r in info.string_refs:
                    str_present[r] &= ~old
        numeric = np.where(present, numeric, self._defaults[None, :]).astype(np.float32, copy=False)
        for ref in man.online_strings:
            strings[ref] = np.where(str_present[ref], strings[ref], self._string_defaults[ref])[inverse]
        return OnlineFeatures(
            numeric=numeric[inverse],
            strings=strings,
            missing={k: v[inverse] for k, v in missing.items()},
            stale={k: v[inverse] for k, v in stale.items()},
            degraded=False,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
            extra={"unique_rows": float(m), "feast_ms": feast_ms},
        )

    def _all_defaults(self, n: int, *, degraded: bool, t0: float) -> OnlineFeatures:
        return self._fill.rows(n, self._views, degraded=degraded, t0=t0)

    def close(self) -> None:
        try:
            online = self._store._get_provider().online_store
            client = getattr(online, "_client", None)
            if client is not None:
                client.close()
        except Exception as e:  # closing is best effort
            log.debug("closing the Redis client failed: %s", e)
