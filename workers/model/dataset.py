"""Training sets: historical events with the online features as they were at each event's time.

A training frame is a DataFrame sorted by time with the event fields (dotted paths as column
names), one column per online feature (``view:feature``; NaN / None where the entity had no
value) and the label. It comes from one of two places, as the training spec says:

* ``dataset.hook``: ``module:function(seed, **params) -> DataFrame`` that builds it itself (the
  fraud example: static profiles plus per-event velocity from its generator);
* ``dataset.feast``: Feast's offline store. ``entities`` (``module:function(seed, **params)``)
  gives the entity frame (join keys, ``event_timestamp``, event fields, label); optionally
  ``offline_data`` writes the offline files first (``(data_dir, now, seed)``), the repository is
  applied, and ``get_historical_features`` joins every feature of the feature service point in
  time (the latest value at or before each event, within the view's TTL). Feast 0.67 drops an
  entity row whose entity has feature rows only *later* than the row (FACTS.md); those rows are
  put back with null features, which training then treats as missing, like the readers do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workers.events import OnlineFeatures
from workers.hooks import load_hook
from workers.settings import Settings

log = logging.getLogger("streamscore.dataset")

ROW_ID = "__row"


class DatasetError(ValueError):
    """The training set cannot be built; the message says why."""


def from_hook(ref: str, seed: int, params: Mapping[str, Any]) -> pd.DataFrame:
    frame = load_hook(ref, "dataset.hook")(seed, **params)
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(f"dataset.hook {ref} returned {type(frame).__name__}, not a pandas DataFrame")
    return frame.reset_index(drop=True)


def from_feast(entities_ref: str, offline_ref: str | None, feature_service: str, seed: int,
               params: Mapping[str, Any], settings: Settings, time_column: str) -> pd.DataFrame:
    """The entity frame joined point in time with every feature of ``feature_service``."""
    from feast import FeatureStore

    from workers.features.feast_repo import DATA_DIR, apply_definitions, repo_config

    t0 = time.perf_counter()
    repo = Path(settings.feature_repo).resolve()
    entity_df = load_hook(entities_ref, "dataset.feast.entities")(seed, **params)
    if not isinstance(entity_df, pd.DataFrame) or "event_timestamp" not in entity_df:
        raise DatasetError(f"dataset.feast.entities {entities_ref} must return a DataFrame with an "
                           "`event_timestamp` column (tz-aware UTC) and the views' join keys")
    if offline_ref:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        load_hook(offline_ref, "dataset.feast.offline_data")(repo / DATA_DIR, now, seed)
    store = FeatureStore(repo_path=str(repo), config=repo_config(repo, settings))
    apply_definitions(store, repo)
    service = store.get_feature_service(feature_service)
    entity_df = entity_df.reset_index(drop=True).copy()
    entity_df[ROW_ID] = np.arange(len(entity_df), dtype=np.int64)
    t1 = time.perf_counter()
    job = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=True)
    joined = job.to_df()
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    renamed = {r.replace(":", "__", 1): r for r in refs}
    joined = joined.rename(columns=renamed)[[ROW_ID, *refs]]
    out = entity_df.merge(joined, on=ROW_ID, how="left", validate="one_to_one")  # dropped rows: nulls
    dropped = int(out[refs].isna().all(axis=1).sum())
    out = out.sort_values([time_column, ROW_ID], kind="stable").drop(columns=[ROW_ID]).reset_index(drop=True)
    log.info("feast: %d entity rows joined point in time with %d features in %.1fs (+%.1fs data); "
             "%d rows without any feature value", len(out), len(refs), time.perf_counter() - t1, t1 - t0, dropped)
    return out


def online_features(frame: pd.DataFrame, numeric: Sequence[str], strings: Sequence[str],
                    defaults: Mapping[str, float | str]) -> OnlineFeatures:
    """What a feature reader would have returned for each row: defaults where the value is missing,
    a view ``missing`` where none of its features has a value (as the readers flag it)."""
    n = len(frame)
    num = np.empty((n, len(numeric)), dtype=np.float32)
    present_by_view: dict[str, np.ndarray] = {}
    for j, ref in enumerate(numeric):
        col = pd.to_numeric(frame[ref], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) \
            if frame[ref].dtype == object else frame[ref].to_numpy(dtype=np.float64, na_value=np.nan)
        has = ~np.isnan(col)
        view = ref.split(":", 1)[0]
        present_by_view[view] = present_by_view.get(view, np.zeros(n, bool)) | has
        num[:, j] = np.where(has, col, float(defaults[ref])).astype(np.float32)
    strs: dict[str, Any] = {}
    for ref in strings:
        raw = frame[ref].astype(object).to_numpy()
        has = np.fromiter((isinstance(v, str) for v in raw.tolist()), bool, n)
        view = ref.split(":", 1)[0]
        present_by_view[view] = present_by_view.get(view, np.zeros(n, bool)) | has
        strs[ref] = np.where(has, raw, defaults[ref]).astype(object)
    missing = {v: ~p for v, p in present_by_view.items()}
    stale = {v: np.zeros(n, bool) for v in present_by_view}
    return OnlineFeatures(num, strs, missing, stale)


def numeric_defaults(frame: pd.DataFrame, numeric: Sequence[str], n_train: int) -> dict[str, float]:
    """Per online numeric feature: the median over the training rows that have a value (float32)."""
    out: dict[str, float] = {}
    head = frame.iloc[:n_train]
    for ref in numeric:
        col = head[ref].to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
        has = col[~np.isnan(col)]
        out[ref] = float(np.float32(np.median(has))) if has.size else 0.0
    return out
