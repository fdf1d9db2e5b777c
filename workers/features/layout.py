"""Where Feast keeps a feature service's values in Redis, derived once from the Feast registry.

The ``redis_fast`` reader (``workers/features/redis_fast.py``) reads Feast's Redis online store without
Feast; this module works out, at start-up, what to ask for. Nothing about the repo is written down
here: views of the feature service, TTLs, value types, join keys, project, entity-key
serialization version and the murmur3 field of every ``view:feature`` all come from the registry
(``feast apply`` output).

All views of one entity live in one Redis hash, so views are planned in groups per join key
(``GroupPlan``): one ``HMGET`` per entity id reads every field the model needs from that hash.
Views keyed by several join keys, and ``redis_type`` other than ``redis``, are refused with a
clear error (use ``reader: feast_sdk`` there).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.features.wire import IntpArray, NumericLayout, check_wire_tags
from workers.features.base import FeatureStoreError
from workers.features.feast_repo import repo_config
from workers.model.manifest import ModelManifest
from workers.settings import Settings


@dataclass(frozen=True)
class ViewPlan:
    name: str
    ttl_s: float  # 0 = never stale
    numeric: IntpArray  # the group's numeric cells of this view
    strings: IntpArray  # the group's string cells of this view


@dataclass
class GroupPlan:
    """Views read together: one entity, so one Redis hash and one HMGET per id.

    HMGET fields, in this order: numeric cells, string cells, ``_ts`` of each view.
    """

    join_key: str
    views: list[ViewPlan]
    numeric_kinds: list[str]  # Value oneof per numeric cell
    numeric_out: IntpArray  # manifest.online_numeric column of each numeric cell
    string_refs: list[str]
    fields: list[bytes]
    key_of: Callable[[Any], bytes]  # entity id -> Redis key
    # Fields Feast writes into this entity's hash (every registered view of the join key, plus a
    # _ts each); 0 = unknown. When the model reads most of them, one HGETALL per id costs Redis
    # less than an HMGET naming each field (its request is parsed per argument).
    hash_fields: int = 0
    layout: NumericLayout = field(init=False)
    head: bytes = b""
    tail: bytes = b""

    def __post_init__(self) -> None:
        self.layout = NumericLayout.of(self.numeric_kinds)
        # RESP of "HMGET <key> <fields...>": a batch's request is head + (tail + head).join(keys) + tail.
        self.head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(self.fields))
        self.tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)

    def request(self, key_parts: list[bytes]) -> bytes:
        return self.head + (self.tail + self.head).join(key_parts) + self.tail

    @property
    def prefers_hgetall(self) -> bool:
        return 0 < self.hash_fields <= 2 * len(self.fields)

    @staticmethod
    def hgetall_request(key_parts: list[bytes]) -> bytes:
        return _HGETALL + _HGETALL.join(key_parts)


_HGETALL = b"*2\r\n$7\r\nHGETALL\r\n"


def string_key_builder(join_key: str, project: str) -> Callable[[Any], bytes]:
    """Feast's ``serialize_entity_key`` (version 3) + project for one STRING join key, sans protos.

    Layout: <1 key><STRING><len(name)><name><STRING><len(value)><value>, uint32 LE each; checked
    against Feast's own function at start-up.
    """
    string_type = 2  # feast.value_type.ValueType.STRING
    name = join_key.encode("utf-8")
    head = struct.pack("<III", 1, string_type, len(name)) + name + struct.pack("<I", string_type)
    suffix = project.encode("utf-8")
    pack = struct.Struct("<I").pack

    def key_of(v: Any) -> bytes:
        b = (v if isinstance(v, str) else str(v)).encode("utf-8")
        return head + pack(len(b)) + b + suffix

    return key_of


def feast_key_builder(join_key: str, value_type: Any, project: str, version: int) -> Callable[[Any], bytes]:
    """The Redis key as Feast builds it (slow; used for non-string keys and to check the fast one)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    suffix = project.encode("utf-8")

    def key_of(v: Any) -> bytes:
        ek = EntityKey(join_keys=[join_key], entity_values=python_values_to_proto_values([v], value_type))
        return bytes(serialize_entity_key(ek, entity_key_serialization_version=version)) + suffix

    return key_of


def plan_groups(repo: Path, feature_service: str, manifest: ModelManifest,
                settings: Settings) -> tuple[list[GroupPlan], list[str]]:
    """The HMGETs that read ``manifest``'s online features of ``feature_service``, grouped per join
    key, and the names of the service's views (in the service's order)."""
    from feast import FeatureStore
    from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
    from feast.type_map import VALUE_TYPE_TO_PROTO_VALUE_MAP
    from feast.value_type import ValueType

    check_wire_tags()
    cfg = repo_config(repo, settings)
    redis_type = str(getattr(cfg.online_store.redis_type, "value", cfg.online_store.redis_type))
    if redis_type != "redis":
        raise FeatureStoreError(
            f"{repo / 'feature_store.yaml'}: redis_type {redis_type} — the redis_fast reader reads "
            "one Redis node with one pipeline, and Feast's keys carry no hash tag to keep a batch "
            "on one cluster slot; use `features.reader: feast_sdk` for Redis Cluster or Sentinel"
        )
    store = FeatureStore(repo_path=str(repo), config=cfg)
    try:
        service = store.get_feature_service(feature_service)
    except Exception as e:  # registry missing or service unknown: both mean "set up first"
        raise FeatureStoreError(
            f"feature service {feature_service!r} not found in {repo}'s registry ({e}) — "
            "run `streamscore setup`"
        ) from e
    man = manifest
    served = {f"{p.name}:{f.name}": f for p in service.feature_view_projections for f in p.features}
    absent = [r for r in (*man.online_numeric, *man.online_strings) if r not in served]
    if absent:
        raise FeatureStoreError(
            f"feature service {service.name!r} does not serve {absent} that model "
            f"{man.name} v{man.version} needs"
        )
    versioned = bool(cfg.registry.enable_online_feature_view_versioning)
    version = int(cfg.entity_key_serialization_version)
    by_key: dict[str, list[Any]] = {}
    for p in service.feature_view_projections:
        fv = store.get_feature_view(p.name)
        cols = list(fv.entity_columns)
        if len(cols) != 1:
            raise FeatureStoreError(
                f"feature view {p.name!r} has join keys {[c.name for c in cols]}; the redis_fast "
                "reader reads views of one join key — use `features.reader: feast_sdk`"
            )
        by_key.setdefault(cols[0].name, []).append((p.name, fv, cols[0]))
    hash_fields: dict[str, int] = {}  # per join key, over every view of the registry
    for fv in store.list_feature_views():
        cols = list(fv.entity_columns)
        if len(cols) == 1:
            hash_fields[cols[0].name] = hash_fields.get(cols[0].name, 0) + len(fv.features) + 1
    groups: list[GroupPlan] = []
    for join_key, members in by_key.items():
        kinds: list[str] = []
        out_cols: list[int] = []
        string_refs: list[str] = []
        fields: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
        views: list[ViewPlan] = []
        for name, fv, _ in members:
            table = compute_versioned_name(fv, versioned)  # what Feast hashes and stamps
            num_idx, str_idx = [], []
            for j, ref in enumerate(man.online_numeric):
                if ref.split(":", 1)[0] == name:
                    num_idx.append(len(kinds))
                    kinds.append(VALUE_TYPE_TO_PROTO_VALUE_MAP.get(served[ref].dtype.to_value_type(), "other"))
                    out_cols.append(j)
                    fields[0].append(_mmh3(f"{table}:{ref.split(':', 1)[1]}"))
            for ref in man.online_strings:
                if ref.split(":", 1)[0] == name:
                    str_idx.append(len(string_refs))
                    string_refs.append(ref)
                    fields[1].append(_mmh3(f"{table}:{ref.split(':', 1)[1]}"))
            if num_idx or str_idx:  # FeastSdkReader reports no flags for views the model skips
                fields[2].append(f"_ts:{table}".encode("utf-8"))
                ttl = fv.ttl.total_seconds() if fv.ttl else 0.0
                views.append(ViewPlan(name, ttl, np.array(num_idx, np.intp), np.array(str_idx, np.intp)))
        if not views:
            continue
        # Numeric cells sorted by decoder, so each decodes one slice of the reply matrix.
        order = NumericLayout.order(kinds)
        pos = np.empty(len(order), np.intp)
        pos[order] = np.arange(len(order))
        kinds, out_cols = [kinds[j] for j in order], [out_cols[j] for j in order]
        fields[0][:] = [fields[0][j] for j in order]
        views = [ViewPlan(v.name, v.ttl_s, pos[v.numeric], v.strings) for v in views]
        vt = members[0][2].dtype.to_value_type()
        key_of = feast_key_builder(join_key, vt, cfg.project, version)
        if vt == ValueType.STRING and version == 3:
            fast = string_key_builder(join_key, cfg.project)
            for sample in ("c000001", "", "zürich-ü", "x" * 300):
                if fast(sample) != key_of(sample):
                    raise FeatureStoreError(
                        f"Feast's entity key serialization changed (differs for {sample!r}); "
                        "update string_key_builder in workers/features/layout.py"
                    )
            key_of = fast
        groups.append(GroupPlan(join_key, views, kinds, np.array(out_cols, np.intp), string_refs,
                                [*fields[0], *fields[1], *fields[2]], key_of, hash_fields.get(join_key, 0)))
    return groups, [p.name for p in service.feature_view_projections]
