"""The Feast-SDK feature reader: one ``get_online_features`` call per micro-batch.

Where Redis lives comes from ``Settings`` only (``workers/features/feast_repo.py``). Feast is
imported lazily: importing it costs seconds, and most of the worker does not need it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workers.events import BoolArray, ObjArray, OnlineFeatures
from workers.features.base import FeatureDefaults, FeatureStoreError, StalePolicy
from workers.features.feast_repo import repo_config
from workers.features.health import cause_of, describe
from workers.model.manifest import ModelManifest
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger("streamscore.feast_sdk")


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
        self.last_cause: str | None = None
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

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        """Features for rows given as entity columns (e.g. ``{"card_id": ..., "merchant_id": ...}``).
        ``timeout_s`` is not used: Feast's client keeps the socket timeout of its connection string."""
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
            self.last_cause = cause_of(e)
            self.last_error = describe(self.last_cause, self._settings, e)
            log.error("%s; the feature policy decides for %.0f ms", self.last_error, self._retry_after_s * 1000.0)
            return self._all_defaults(n, degraded=True, t0=t0)
        self.last_error = self.last_cause = None
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
        return self._fill.rows(n, self._views, degraded=degraded, t0=t0, unavailable=self.last_cause)

    @property
    def views(self) -> list[str]:
        """The feature service's views (the names ``missing`` and ``features.on_missing`` use)."""
        return list(self._views)

    @property
    def project(self) -> str:
        return str(self._store.project)

    def close(self) -> None:
        try:
            online = self._store._get_provider().online_store
            client = getattr(online, "_client", None)
            if client is not None:
                client.close()
        except Exception as e:  # closing is best effort
            log.debug("closing the Redis client failed: %s", e)
