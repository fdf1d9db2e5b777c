"""Feast's Redis layout for one feature view, as the aggregation job writes it.

``layout_from_registry`` reads the view from the Feast registry and checks it against the
topology's aggregates (one string join key, features and aggregates 1:1, a value type per op);
``FeastRedisLayout.hset_commands`` turns (key, values) rows into the HSETs Feast's own
materialization would write: same key, same murmur3 field hashes, ``ValueProto`` values and a
``_ts:<view>`` timestamp, so the scorer's readers cannot tell the two writers apart.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import mmh3

from workers.features.layout import feast_key_builder, string_key_builder
from workers.settings import Settings
from workers.streaming.aggregates import AggregationConfigError, AggregationTopology, Values

# Feast ValueType name -> the ValueProto field our values go into.
_VALUE_FIELDS: dict[str, str] = {
    "INT64": "int64_val", "INT32": "int32_val", "FLOAT": "float_val", "DOUBLE": "double_val",
}
_INTEGRAL = frozenset({"int64_val", "int32_val"})


def feast_hash_field(view: str, feature: str) -> bytes:
    """Feast's hash field for ``view:feature``: murmur3-32 (unsigned) as 4 little-endian bytes."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_bytes(epoch_s: float) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` (what Feast stores in ``_ts:<view>``)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    secs = math.floor(epoch_s)
    out: bytes = Timestamp(seconds=secs, nanos=int((epoch_s - secs) * 1e9)).SerializeToString()
    return out


@dataclass(frozen=True)
class FeastRedisLayout:
    """How Feast stores one feature view of a single string-keyed entity in Redis.

    Key: ``serialize_entity_key(EntityKey([join_key], [string_val]), version) + project`` — the
    same hash as every other view of the entity, so writers HSET only their own fields and never
    delete the key. Fields: ``feast_hash_field`` per feature, ``_ts:<view>`` for the timestamp.
    """

    project: str
    view: str  # as stored: with a version suffix when the repo versions online views
    join_key: str
    key_version: int
    ttl_s: float
    features: tuple[str, ...]
    value_fields: tuple[str, ...]  # ValueProto oneof per feature: int64_val, float_val, ...

    @cached_property
    def hash_fields(self) -> tuple[bytes, ...]:
        return tuple(feast_hash_field(self.view, f) for f in self.features)

    @property
    def ts_field(self) -> bytes:
        return f"_ts:{self.view}".encode()

    @cached_property
    def _key_of(self) -> Callable[[Any], bytes]:
        """Feast's Redis key for an entity id: the fast builder if it reproduces Feast's own."""
        from feast.value_type import ValueType

        slow = feast_key_builder(self.join_key, ValueType.STRING, self.project, self.key_version)
        if self.key_version == 3:
            fast = string_key_builder(self.join_key, self.project)
            probe = "probe-\u00e9"
            # Guard against a Feast format change: fall back to Feast's own (slower) encoder.
            if fast(probe) == slow(probe):
                return fast
        return slow

    def redis_key(self, entity: str) -> bytes:
        return self._key_of(entity)

    def hset_commands(
        self, rows: Sequence[tuple[str, Values]], ts: bytes
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """``(key, mapping)`` per entity, for ``HSET key mapping``; ``ts`` from ``timestamp_bytes``."""
        from feast.protos.feast.types.Value_pb2 import Value

        fields = self.hash_fields
        kinds = self.value_fields
        ts_field = self.ts_field
        out: list[tuple[bytes, dict[bytes, bytes]]] = []
        for key, values in rows:
            mapping = {ts_field: ts}
            for hf, vf, v in zip(fields, kinds, values):
                proto = Value()
                setattr(proto, vf, int(v) if vf in _INTEGRAL else float(v))
                mapping[hf] = proto.SerializeToString()
            out.append((self.redis_key(key), mapping))
        return out


def layout_from_registry(topo: AggregationTopology, settings: Settings) -> FeastRedisLayout:
    """Read the feature view from the Feast registry (``feast apply`` output) and check it."""
    from feast import FeatureStore

    from workers.features.feast_repo import repo_config

    repo = Path(settings.feature_repo).resolve()
    cfg = repo_config(repo, settings)
    store = FeatureStore(repo_path=str(repo), config=cfg)
    try:
        fv = store.get_feature_view(topo.feature_view)
    except Exception as e:  # registry missing or view unknown: both mean "set up first"
        raise AggregationConfigError(
            f"{topo.source_path or 'topology'}: feature_view {topo.feature_view!r} is not in "
            f"{repo}'s Feast registry ({e}) — run `streamscore setup`"
        ) from e
    versioning = bool(getattr(cfg.registry, "enable_online_feature_view_versioning", False))
    return layout_for_view(topo, fv, cfg.project, cfg.entity_key_serialization_version, versioning)


def layout_for_view(
    topo: AggregationTopology, fv: Any, project: str, key_version: int, versioning: bool = False
) -> FeastRedisLayout:
    """The layout of Feast ``FeatureView`` ``fv``, checked against the topology's aggregates."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    where = f"{topo.source_path or 'topology'}: feature_view {topo.feature_view!r}"
    if fv.name != topo.feature_view:
        raise AggregationConfigError(f"{where}: got Feast view {fv.name!r}")
    if len(fv.entity_columns) != 1 or fv.entity_columns[0].dtype.to_value_type().name != "STRING":
        raise AggregationConfigError(f"{where}: only views of one string join key are supported")
    dtypes: dict[str, str] = {f.name: f.dtype.to_value_type().name for f in fv.features}
    if set(dtypes) != set(topo.aggregates):
        raise AggregationConfigError(
            f"{where} has features {sorted(dtypes)} but aggregates define {sorted(topo.aggregates)}; "
            "make them match (a feature left unwritten would go stale)"
        )
    value_fields: list[str] = []
    for name, agg in topo.aggregates.items():
        vf = _VALUE_FIELDS.get(dtypes[name])
        integral = agg.op != "sum"
        if vf is None or (vf in _INTEGRAL) != integral:
            want = "Int64 or Int32" if integral else "Float32 or Float64"
            raise AggregationConfigError(f"{where}: feature {name!r} is {dtypes[name]}; op {agg.op} needs {want}")
        value_fields.append(vf)
    layout = FeastRedisLayout(
        project=project,
        view=compute_versioned_name(fv, versioning),
        join_key=fv.entity_columns[0].name,
        key_version=key_version,
        ttl_s=fv.ttl.total_seconds() if fv.ttl else 0.0,
        features=topo.features,
        value_fields=tuple(value_fields),
    )
    layout.redis_key(topo.feature_view)  # checks the fast key path now, not on the first flush
    return layout
