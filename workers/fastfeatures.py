"""``redis_fast`` feature reader: Feast's Redis online store read directly, one round trip per batch.

Same data and same answers as ``FeastSdkReader`` (Feast's ``get_online_features``), at a fraction of
its cost. What makes it fast:

* Everything about the layout is derived once, at start-up, from the Feast registry
  (``feast apply`` output): views of the feature service, their TTLs, value types, join keys, the
  project, the entity-key serialization version, the murmur3 hash of every ``view:feature``.
* A micro-batch costs ONE pipelined write of ``HMGET`` commands and reading their replies: one
  command per distinct entity id (all views of one entity live in one Redis hash, so a card's
  ``card_profile`` and ``card_velocity`` come back together). Request bytes are joined from cached
  per-id pieces: serializing an entity key in Python costs more than fetching it.
* Decoding is per column of the batch, not per value: numpy reads the protobuf wire format
  (``float_val`` = tag + 4 bytes LE, ``double_val`` = tag + 8, ints and bools are varints,
  ``_ts:<view>`` is a ``Timestamp`` of two varints). Cells that do not have the expected shape
  (another value type, extra fields) are parsed by protobuf, so odd data is read as Feast reads it.

Semantics are ``FeastSdkReader``'s (see its docstring): a view is ``missing`` for a row when none of
its features has a value or its timestamp is 0; ``stale`` when older than the view's TTL; missing
and (with ``stale_policy="default"``) stale values get the manifest's defaults. Timestamps are
rounded to microseconds exactly as Feast's datetime round trip does, so TTL edges agree too.

Failure: Redis down, slow (socket timeouts of ``features.timeout_ms``) or answering nonsense ->
``fetch`` returns defaults with ``degraded=True`` and every view missing, and does not try again
for ``retry_after_ms``; the next call after that reconnects. It never raises for the store.

Limitations (documented, checked at start-up): a single Redis node only. Feast's keys carry no
hash tag, so on Redis Cluster the keys of one batch fall into many slots and one pipeline to one
node cannot serve them; a ``redis_type`` other than ``redis`` in ``feature_store.yaml`` is refused
with a clear error (use ``reader: feast_sdk`` there). Views whose entity has several join keys are
refused likewise. Values Feast itself cannot parse (truncated protobuf) may be read leniently here
where Feast would raise. Not thread-safe: one reader per worker thread.
"""

from __future__ import annotations

import logging
import math
import operator
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from workers.events import BoolArray, F64Array, ObjArray, OnlineFeatures
from workers.featurestore import FeatureStoreError, StalePolicy, repo_config
from workers.manifest import ModelManifest
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    import redis

    from workers.topology import Topology

log = logging.getLogger("streamscore.fastfeatures")

U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
IntpArray = npt.NDArray[np.intp]

# ---- wire format ---------------------------------------------------------------------------
# Tags ((field number << 3) | wire type) of feast.types.Value's oneof members and of
# google.protobuf.Timestamp. Written out so the decoders need no Feast import; the reader checks
# them against the protobuf descriptors at start-up, so a changed .proto fails loudly.
TAGS: dict[str, int] = {
    "string_val": 0x12,  # field 2, length-delimited
    "int32_val": 0x18,  # field 3, varint
    "int64_val": 0x20,  # field 4, varint
    "double_val": 0x29,  # field 5, 64-bit
    "float_val": 0x35,  # field 6, 32-bit
    "bool_val": 0x38,  # field 7, varint
    "unix_timestamp_val": 0x40,  # field 8, varint
}
TS_SECONDS_TAG = 0x08  # Timestamp.seconds, varint
TS_NANOS_TAG = 0x10  # Timestamp.nanos, varint
FIXED_WIDTH: dict[str, tuple[int, str]] = {"float_val": (4, "<f4"), "double_val": (8, "<f8")}
VARINT_KINDS = frozenset({"int32_val", "int64_val", "bool_val", "unix_timestamp_val"})
# numpy stores None as b"None" in a bytes ("S") array. 0x4E would be wire type 6, which does not
# exist, so a cell starting with it can only be a None (no value in Redis).
_NONE_BYTE = ord("N")
_VARINT_MAX = 10
_LANES = np.arange(_VARINT_MAX)

Cells = Sequence[bytes | None]


def cell_matrix(cells: Cells, width: int) -> U8Array:
    """Cells as a ``[k, width]`` zero-padded byte matrix in one C-level pass (None reads b"None").

    Longer cells are cut: callers size ``width`` one byte past the longest valid encoding and
    require that byte to be the zero padding, which sends longer cells to the protobuf path.
    """
    if not cells:
        return np.zeros((0, width), dtype=np.uint8)
    return np.array(cells, dtype=f"S{width}").view(np.uint8).reshape(len(cells), width)


def decode_varints(win: U8Array) -> tuple[U64Array, IntpArray, BoolArray]:
    """Protobuf varints starting at column 0 of ``win`` (``[k, >=10]`` bytes).

    Returns (value as uint64, encoded length in bytes, ok). Not ok: no terminating byte within 10
    bytes, or a 10th byte carrying more than bit 63. Work is per byte position up to the longest
    varint of the batch (1-2 for counts, 5 for epoch seconds), not per cell.
    """
    w = win[:, :_VARINT_MAX]
    last = w < 0x80
    ok = last.any(axis=1)
    n = last.argmax(axis=1) + 1
    value = np.zeros(w.shape[0], dtype=np.uint64)
    width = int(n.max()) if w.shape[0] else 0
    for lane in range(width):
        b = w[:, lane] & 0x7F
        if lane:  # bytes past a varint's end belong to whatever follows it
            b = b * (n > lane)
        value |= b.astype(np.uint64) << np.uint64(7 * lane)
    if width == _VARINT_MAX:
        ok &= ~((n == _VARINT_MAX) & (w[:, _VARINT_MAX - 1] > 1))
    return value, n.astype(np.intp), ok


def _absent(first: U8Array) -> BoolArray:
    # b"" (an unset Value, or no such field in the hash) and None both mean "no value".
    out: BoolArray = (first == 0) | (first == _NONE_BYTE)
    return out


def decode_numbers(cells: Cells, kind: str) -> tuple[F64Array, BoolArray]:
    """Numeric cells expected to hold ``kind`` (a Value oneof name) -> (float64, odd).

    Absent cells read NaN, as ``FeastSdkReader`` reads them. ``odd`` marks cells of another shape;
    their value is NaN here and the caller parses them with protobuf (``slow_number``).
    """
    k = len(cells)
    out = np.full(k, np.nan, dtype=np.float64)
    if kind in FIXED_WIDTH:
        width, dtype = FIXED_WIDTH[kind]
        m = cell_matrix(cells, width + 2)
        absent = _absent(m[:, 0])
        ok = (m[:, 0] == TAGS[kind]) & (m[:, width + 1] == 0)
        if ok.any():
            payload = np.ascontiguousarray(m[ok, 1 : width + 1])
            out[ok] = payload.view(dtype).ravel()
        return out, ~absent & ~ok
    if kind in VARINT_KINDS:
        m = cell_matrix(cells, _VARINT_MAX + 2)
        absent = _absent(m[:, 0])
        v, n, ok = decode_varints(m[:, 1:])
        ok &= (m[:, 0] == TAGS[kind]) & (m[np.arange(len(cells)), n + 1] == 0)
        if kind == "bool_val":
            vals = (v != 0).astype(np.float64)
        elif kind == "int32_val":
            # Python's protobuf keeps the low 32 bits of an int32 varint, sign-extended.
            vals = (v & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32).astype(np.float64)
        else:
            vals = v.view(np.int64).astype(np.float64)
        out[ok] = vals[ok]
        return out, ~absent & ~ok
    return out, ~_absent(cell_matrix(cells, 1)[:, 0])


def feast_seconds(seconds: I64Array, nanos: I64Array) -> F64Array:
    """Timestamps as ``FeastSdkReader`` sees them, in float seconds.

    Feast's Redis store turns ``seconds + nanos / 1e9`` into a datetime (microseconds, rounded half
    to even like CPython's ``datetime.fromtimestamp``) and back into a Timestamp; the reader then
    computes ``seconds + nanos * 1e-9``. Same arithmetic here, vectorized.
    """
    d = seconds.astype(np.float64) + nanos.astype(np.float64) / 1_000_000_000.0
    ip = np.trunc(d)
    us = np.rint((d - ip) * 1e6)
    up = us >= 1e6
    down = us < 0
    us = np.where(up, us - 1e6, np.where(down, us + 1e6, us))
    ip = ip + up - down
    out: F64Array = ip + (us * 1000.0) * 1e-9
    return out


def decode_timestamps(cells: Cells) -> tuple[F64Array, BoolArray]:
    """``_ts:<view>`` cells (serialized google.protobuf.Timestamp) -> (float seconds, odd).

    Absent cells read 0.0, which the reader counts as missing (as Feast reports them).
    """
    k = len(cells)
    width = 2 + 2 * _VARINT_MAX + 1
    m = cell_matrix(cells, width)
    absent = _absent(m[:, 0])
    sec, n1, ok = decode_varints(m[:, 1 : 1 + _VARINT_MAX])
    ok &= m[:, 0] == TS_SECONDS_TAG
    rows = np.arange(k)
    after = m[rows, 1 + n1]
    nanos = np.zeros(k, dtype=np.uint64)
    has_nanos = after == TS_NANOS_TAG
    if has_nanos.any():
        idx = np.flatnonzero(has_nanos)
        start = 2 + n1[idx]
        nv, n2, ok2 = decode_varints(m[idx[:, None], start[:, None] + _LANES[None, :]])
        nanos[idx] = nv
        ok[idx] &= ok2 & (m[idx, start + n2] == 0)
        ok &= (after == 0) | has_nanos
    else:
        ok &= after == 0
    out = np.zeros(k, dtype=np.float64)
    if ok.any():
        out[ok] = feast_seconds(sec[ok].view(np.int64), nanos[ok].view(np.int64))
    return out, ~absent & ~ok


# ---- the protobuf path for odd cells (rare: imported lazily, Feast's import costs seconds) ----

_PROTO: dict[str, Any] = {}


def _protos() -> tuple[Any, Any]:
    if not _PROTO:
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        _PROTO["value"], _PROTO["timestamp"] = Value, Timestamp
    return _PROTO["value"], _PROTO["timestamp"]


def slow_number(raw: bytes | None) -> float:
    """One cell as ``FeastSdkReader`` reads it: ``float(<whichever oneof is set>)``, else NaN.

    Where Feast would raise (unparsable bytes, a non-numeric string) this returns NaN: the value
    is absent and gets its default rather than failing the batch.
    """
    if not raw:
        return math.nan
    value_cls, _ = _protos()
    try:
        v = value_cls.FromString(raw)
        kind = v.WhichOneof("val")
        return math.nan if kind is None else float(getattr(v, kind))
    except Exception:
        return math.nan


def slow_string(raw: bytes | None) -> str | None:
    """A string cell: its ``string_val``, or None when it holds no string (absent, other type)."""
    if not raw:
        return None
    if raw[0] == TAGS["string_val"] and raw[1] < 0x80 and len(raw) == 2 + raw[1]:
        try:
            return raw[2:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    value_cls, _ = _protos()
    try:
        v = value_cls.FromString(raw)
    except Exception:
        return None
    return str(v.string_val) if v.WhichOneof("val") == "string_val" else None


def slow_timestamp(raw: bytes | None) -> float:
    if not raw:
        return 0.0
    _, ts_cls = _protos()
    try:
        t = ts_cls.FromString(raw)
    except Exception:
        return 0.0
    return float(feast_seconds(np.array([t.seconds], np.int64), np.array([t.nanos], np.int64))[0])


class StringCells:
    """Decodes string cells through a bounded raw-bytes -> str cache.

    String features are mostly categorical or per entity, so the same bytes come back batch after
    batch; a dict lookup per cell runs in C via ``map`` instead of a Python decode per cell.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._max = max_entries
        self._cache: dict[bytes | None, str | None] = {None: None, b"": None}

    def decode(self, cells: Cells) -> tuple[ObjArray, BoolArray]:
        miss = object()
        got: list[Any] = list(map(self._cache.get, cells, repeat(miss)))
        for i, v in enumerate(got):
            if v is miss:
                raw = cells[i]
                got[i] = s = slow_string(raw)
                if len(self._cache) >= self._max:
                    self._cache = {None: None, b"": None}
                self._cache[raw] = s
        present = np.fromiter(map(operator.is_not, got, repeat(None)), dtype=bool, count=len(got))
        values = np.empty(len(got), dtype=object)
        values[:] = got
        return values, present


# ---- the plan: derived from the Feast registry once --------------------------------------------


@dataclass(frozen=True)
class _View:
    name: str
    ttl_s: float  # 0 = never stale
    numeric: IntpArray  # columns of the group's numeric cells
    strings: IntpArray  # columns of the group's string cells


@dataclass
class _Group:
    """Views read together: they share one entity, so one Redis hash and one HMGET per id."""

    join_key: str
    views: list[_View]
    numeric_kinds: list[str]  # Value oneof per numeric cell
    numeric_out: IntpArray  # manifest.online_numeric column of each numeric cell
    string_refs: list[str]
    fields: list[bytes]  # HMGET fields: numeric cells, string cells, then _ts per view
    key_of: Callable[[Any], bytes]  # entity id -> Redis key
    cache: _RowCache | None = None
    kind_cols: dict[str, IntpArray] = field(default_factory=dict)
    head: bytes = b""
    tail: bytes = b""

    def __post_init__(self) -> None:
        for kind in dict.fromkeys(self.numeric_kinds):
            self.kind_cols[kind] = np.array(
                [i for i, k in enumerate(self.numeric_kinds) if k == kind], dtype=np.intp
            )
        # RESP of "HMGET <key> <fields...>": the request for a batch is head.join(keys) framing.
        self.head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(self.fields))
        self.tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)

    @property
    def n_cells(self) -> int:
        return len(self.fields)

    def request(self, key_parts: list[bytes]) -> bytes:
        return self.head + (self.tail + self.head).join(key_parts) + self.tail


@dataclass
class _Rows:
    """Decoded values of one group for some entity ids (one row per id)."""

    numbers: F64Array  # [u, numeric cells], NaN = no value
    strings: ObjArray  # [u, string cells]
    has_string: BoolArray  # [u, string cells]
    ts: F64Array  # [u, views], Feast-rounded seconds, 0 = none

    @staticmethod
    def empty(g: _Group, u: int) -> _Rows:
        return _Rows(
            np.full((u, len(g.numeric_kinds)), np.nan), np.full((u, len(g.string_refs)), None, object),
            np.zeros((u, len(g.string_refs)), bool), np.zeros((u, len(g.views))),
        )


class _RowCache:
    """Decoded rows of a slowly changing view group per entity id, for ``ttl_s``; FIFO-bounded."""

    def __init__(self, g: _Group, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self._slot: dict[Any, int] = {}
        self._owner: list[Any] = [None] * max_entries
        self._next = 0
        self._rows = _Rows.empty(g, max_entries)
        self._expires = np.zeros(max_entries)
        self.hits = 0
        self.misses = 0

    def lookup(self, ids: list[Any], now: float) -> tuple[IntpArray, BoolArray]:
        slots = np.fromiter(map(self._slot.get, ids, repeat(-1)), dtype=np.intp, count=len(ids))
        hit = slots >= 0
        hit[hit] = self._expires[slots[hit]] > now
        h = int(hit.sum())
        self.hits += h
        self.misses += len(ids) - h
        return slots, hit

    def take(self, slots: IntpArray) -> _Rows:
        r = self._rows
        return _Rows(r.numbers[slots], r.strings[slots], r.has_string[slots], r.ts[slots])

    def store(self, ids: list[Any], rows: _Rows, now: float) -> None:
        cap = len(self._owner)
        slots = np.empty(len(ids), dtype=np.intp)
        for i, key in enumerate(ids):
            s = self._slot.get(key)
            if s is None:
                s = self._next
                self._next = (s + 1) % cap
                old = self._owner[s]
                if old is not None:
                    del self._slot[old]
                self._owner[s] = key
                self._slot[key] = s
            slots[i] = s
        r = self._rows
        r.numbers[slots], r.strings[slots], r.has_string[slots], r.ts[slots] = (
            rows.numbers, rows.strings, rows.has_string, rows.ts,
        )
        self._expires[slots] = now + self.ttl_s


class _KeyCache:
    """Entity id -> RESP-framed Redis key (``$<len>\\r\\n<key>\\r\\n``); bounded, oldest dropped."""

    def __init__(self, key_of: Callable[[Any], bytes], max_entries: int) -> None:
        self._key_of = key_of
        self._max = max_entries
        self._parts: dict[Any, bytes] = {}

    def parts(self, ids: list[Any]) -> list[bytes]:
        got: list[Any] = list(map(self._parts.get, ids))
        if None in got:
            for i, v in enumerate(got):
                if v is None:
                    key = self._key_of(ids[i])
                    got[i] = part = b"$%d\r\n%s\r\n" % (len(key), key)
                    if len(self._parts) >= self._max:
                        for old in list(self._parts)[: self._max // 4 + 1]:
                            del self._parts[old]
                    self._parts[ids[i]] = part
        return got


def _string_key_builder(join_key: str, project: str) -> Callable[[Any], bytes]:
    # Feast's serialize_entity_key (version 3) for one STRING join key, without building protos:
    # <n keys=1><STRING><len(name)><name><STRING><len(value)><value>, then the project name.
    from feast.value_type import ValueType

    name = join_key.encode("utf-8")
    string_type = int(ValueType.STRING.value)
    head = struct.pack("<III", 1, string_type, len(name)) + name + struct.pack("<I", string_type)
    suffix = project.encode("utf-8")
    pack = struct.Struct("<I").pack

    def key_of(v: Any) -> bytes:
        b = (v if isinstance(v, str) else str(v)).encode("utf-8")
        return head + pack(len(b)) + b + suffix

    return key_of


def _feast_key_builder(join_key: str, value_type: Any, project: str, version: int) -> Callable[[Any], bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    suffix = project.encode("utf-8")

    def key_of(v: Any) -> bytes:
        val = python_values_to_proto_values([v], value_type)[0]
        ek = EntityKey(join_keys=[join_key], entity_values=[val])
        return bytes(serialize_entity_key(ek, entity_key_serialization_version=version)) + suffix

    return key_of


# ---- the reader ------------------------------------------------------------------------------


class FastRedisReader:
    """Online features for a micro-batch straight from Feast's Redis layout (see module doc)."""

    def __init__(
        self,
        repo_path: Path,
        feature_service: str,
        manifest: ModelManifest,
        *,
        settings: Settings | None = None,
        timeout_ms: float = 50.0,
        cache_ttl_ms: float = 0.0,
        cache_max_entries: int = 100_000,
        cached_views: Sequence[str] = (),
        stale_policy: StalePolicy = "default",
        retry_after_ms: float = 1000.0,
        key_cache_max_entries: int = 500_000,
        now_s: Callable[[], float] = time.time,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings if settings is not None else get_settings()
        self._manifest = manifest
        self._stale_policy = stale_policy
        self._retry_after_s = retry_after_ms / 1000.0
        self._timeout_s = timeout_ms / 1000.0
        self._now_s = now_s
        self._clock_s = clock_s
        self._down_until = 0.0
        self.last_error: str | None = None
        self._defaults = np.asarray(manifest.numeric_defaults(), dtype=np.float32)
        self._string_defaults = {r: str(manifest.defaults[r]) for r in manifest.online_strings}
        self._strings = StringCells()
        self._groups, self._service_views = self._plan(Path(repo_path).resolve(), feature_service)
        self._keys = [_KeyCache(g.key_of, key_cache_max_entries) for g in self._groups]
        self._setup_cache(cached_views, cache_ttl_ms / 1000.0, cache_max_entries)
        self._pool = self._make_pool()
        # redis-py's connection classes are untyped; only send_packed_command/read_response are used.
        self._conn: Any = None

    @classmethod
    def from_topology(cls, topology: Topology, settings: Settings, manifest: ModelManifest) -> FastRedisReader:
        spec = topology.features
        return cls(
            settings.feature_repo, spec.feature_service, manifest, settings=settings,
            timeout_ms=spec.timeout_ms, cache_ttl_ms=spec.cache_ttl_ms,
            cache_max_entries=spec.cache_max_entries, cached_views=spec.cached_views,
        )

    # -- construction

    def _plan(self, repo: Path, feature_service: str) -> tuple[list[_Group], list[str]]:
        from feast import FeatureStore
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
        from feast.type_map import VALUE_TYPE_TO_PROTO_VALUE_MAP
        from feast.value_type import ValueType

        self._check_wire_tags()
        cfg = repo_config(repo, self._settings)
        redis_type = str(getattr(cfg.online_store.redis_type, "value", cfg.online_store.redis_type))
        if redis_type != "redis":
            raise FeatureStoreError(
                f"{repo / 'feature_store.yaml'}: redis_type {redis_type} — the redis_fast reader reads one "
                "Redis node with one pipeline, and Feast's keys carry no hash tag to keep a batch on one "
                "cluster slot; use `features.reader: feast_sdk` for Redis Cluster or Sentinel"
            )
        store = FeatureStore(repo_path=str(repo), config=cfg)
        try:
            service = store.get_feature_service(feature_service)
        except Exception as e:  # registry missing or service unknown: both mean "set up first"
            raise FeatureStoreError(
                f"feature service {feature_service!r} not found in {repo}'s registry ({e}) — "
                "run `streamscore features setup`"
            ) from e
        man = self._manifest
        served = {f"{p.name}:{f.name}": f for p in service.feature_view_projections for f in p.features}
        refs = (*man.online_numeric, *man.online_strings)
        absent = [r for r in refs if r not in served]
        if absent:
            raise FeatureStoreError(
                f"feature service {service.name!r} does not serve {absent} that model "
                f"{man.name} v{man.version} needs"
            )
        versioned = bool(cfg.registry.enable_online_feature_view_versioning)
        version = int(cfg.entity_key_serialization_version)
        by_key: dict[str, list[Any]] = {}
        service_views: list[str] = []
        for p in service.feature_view_projections:
            fv = store.get_feature_view(p.name)
            service_views.append(p.name)
            cols = list(fv.entity_columns)
            if len(cols) != 1:
                raise FeatureStoreError(
                    f"feature view {p.name!r} has join keys {[c.name for c in cols]}; the redis_fast "
                    "reader supports views of one entity with one join key — use `features.reader: feast_sdk`"
                )
            by_key.setdefault(cols[0].name, []).append((p, fv, cols[0]))
        groups: list[_Group] = []
        for join_key, members in by_key.items():
            kinds: list[str] = []
            out_cols: list[int] = []
            string_refs: list[str] = []
            num_fields: list[bytes] = []
            str_fields: list[bytes] = []
            ts_fields: list[bytes] = []
            view_cells: list[tuple[str, float, list[int], list[int]]] = []
            for p, fv, _ in members:
                table = compute_versioned_name(fv, versioned)
                num_idx, str_idx = [], []
                for j, ref in enumerate(man.online_numeric):
                    view, feat = ref.split(":", 1)
                    if view == p.name:
                        vt = served[ref].dtype.to_value_type()
                        num_idx.append(len(kinds))
                        kinds.append(VALUE_TYPE_TO_PROTO_VALUE_MAP.get(vt, "other"))
                        out_cols.append(j)
                        num_fields.append(_mmh3(f"{table}:{feat}"))
                for ref in man.online_strings:
                    view, feat = ref.split(":", 1)
                    if view == p.name:
                        str_idx.append(len(string_refs))
                        string_refs.append(ref)
                        str_fields.append(_mmh3(f"{table}:{feat}"))
                if not num_idx and not str_idx:
                    continue  # FeastSdkReader reports no flags for a view the model does not use
                ts_fields.append(f"_ts:{table}".encode("utf-8"))
                view_cells.append((p.name, fv.ttl.total_seconds() if fv.ttl else 0.0, num_idx, str_idx))
            if not view_cells:
                continue
            n_num = len(kinds)
            views = [
                _View(name, ttl, np.array(ni, np.intp), np.array(si, np.intp)) for name, ttl, ni, si in view_cells
            ]
            col = members[0][2]
            vt = col.dtype.to_value_type()
            key_of = (
                _string_key_builder(join_key, cfg.project)
                if vt == ValueType.STRING and version == 3
                else _feast_key_builder(join_key, vt, cfg.project, version)
            )
            if vt == ValueType.STRING and version == 3:
                self._check_key_builder(key_of, join_key, vt, cfg.project, version)
            groups.append(_Group(
                join_key, views, kinds, np.array(out_cols, np.intp), string_refs,
                num_fields + str_fields + ts_fields, key_of,
            ))
            assert len(groups[-1].fields) == n_num + len(string_refs) + len(views)
        return groups, service_views

    @staticmethod
    def _check_wire_tags() -> None:
        value_cls, ts_cls = _protos()
        wire = {5: 0, 3: 0, 13: 0, 8: 0, 1: 1, 2: 5, 9: 2, 12: 2}  # descriptor type -> wire type
        for name, tag in TAGS.items():
            f = value_cls.DESCRIPTOR.fields_by_name[name]
            if (f.number << 3 | wire[f.type]) != tag:
                raise FeatureStoreError(f"feast.types.Value.{name} changed its wire tag; update workers/fastfeatures.py")
        ts = ts_cls.DESCRIPTOR.fields_by_name
        if (ts["seconds"].number << 3, ts["nanos"].number << 3) != (TS_SECONDS_TAG, TS_NANOS_TAG):
            raise FeatureStoreError("google.protobuf.Timestamp changed its wire tags")

    @staticmethod
    def _check_key_builder(key_of: Callable[[Any], bytes], join_key: str, vt: Any, project: str, version: int) -> None:
        reference = _feast_key_builder(join_key, vt, project, version)
        for sample in ("c000001", "", "zürich-ü", "x" * 300):
            if key_of(sample) != reference(sample):
                raise FeatureStoreError(
                    "Feast's entity key serialization changed; workers/fastfeatures.py's key builder "
                    f"disagrees for {sample!r}"
                )

    def _setup_cache(self, cached_views: Sequence[str], ttl_s: float, max_entries: int) -> None:
        wanted = set(cached_views)
        known = {v for g in self._groups for v in (x.name for x in g.views)}
        unknown = sorted(wanted - known)
        if unknown:
            raise FeatureStoreError(f"features.cached_views names {unknown}, not views the model reads ({sorted(known)})")
        for g in self._groups:
            names = {v.name for v in g.views}
            if not names & wanted:
                continue
            if not names <= wanted:
                # One HMGET reads all views of an entity; caching part of it saves no round trip.
                raise FeatureStoreError(
                    f"features.cached_views: {sorted(names)} share the {g.join_key} key; cache all of them or none"
                )
            if ttl_s > 0:
                g.cache = _RowCache(g, ttl_s, max_entries)

    def _make_pool(self) -> redis.ConnectionPool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        s = self._settings
        pw = s.redis_password.get_secret_value() if s.redis_password is not None else None
        kwargs: dict[str, Any] = {
            "socket_timeout": self._timeout_s,
            "socket_connect_timeout": self._timeout_s,
            # redis-py retries with backoff by default; a dead Redis must cost one timeout.
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if pw is not None:
            kwargs["password"] = pw
        return redis.ConnectionPool.from_url(s.redis_url, **kwargs)

    # -- reading

    @property
    def join_keys(self) -> list[str]:
        return [g.join_key for g in self._groups]

    @property
    def cache_hits(self) -> int:
        return sum(g.cache.hits for g in self._groups if g.cache is not None)

    @property
    def cache_misses(self) -> int:
        return sum(g.cache.misses for g in self._groups if g.cache is not None)

    def fetch(self, entities: dict[str, ObjArray]) -> OnlineFeatures:
        """Features for rows given as entity columns (e.g. ``{"card_id": ..., "merchant_id": ...}``)."""
        t0 = time.perf_counter()
        missing_keys = [g.join_key for g in self._groups if g.join_key not in entities]
        if missing_keys:
            raise ValueError(f"fetch needs entity columns {self.join_keys}, missing {missing_keys}")
        n = len(entities[self._groups[0].join_key]) if self._groups else 0
        if n == 0:
            return self._all_defaults(0, degraded=False, t0=t0)
        if self._clock_s() < self._down_until:
            return self._all_defaults(n, degraded=True, t0=t0)
        try:
            return self._fetch(entities, n, t0)
        except Exception as e:
            self._failed(e)
            return self._all_defaults(n, degraded=True, t0=t0)

    def _failed(self, e: Exception) -> None:
        import redis

        if self._conn is not None:
            self._conn.disconnect()  # a half-read pipeline leaves replies on the socket
        self._down_until = self._clock_s() + self._retry_after_s
        host, port = self._settings.redis_host_port
        what = str(e) or type(e).__name__
        self.last_error = (
            f"Redis at {host}:{port} did not answer — is `streamscore dev up` running? ({type(e).__name__}: {what})"
        )
        if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, _StoreError)):
            log.warning("%s; serving defaults for %.0f ms", self.last_error, self._retry_after_s * 1000.0)
        else:  # a bug, not the store: keep scoring with defaults, but say where
            log.exception("redis_fast reader failed; serving defaults for %.0f ms", self._retry_after_s * 1000.0)

    def _fetch(self, entities: dict[str, ObjArray], n: int, t0: float) -> OnlineFeatures:
        clock = self._clock_s()
        plans: list[tuple[_Group, IntpArray, list[Any], IntpArray, BoolArray | None, list[Any]]] = []
        requests: list[bytes] = []
        for g, keys in zip(self._groups, self._keys):
            # Duplicate ids are fetched once; pandas' hash factorize is ~5x np.unique on objects.
            codes, uniq = pd.factorize(np.asarray(entities[g.join_key], dtype=object), use_na_sentinel=False)
            ids: list[Any] = uniq.tolist()
            slots = hit = None
            todo = ids
            if g.cache is not None:
                slots, hit = g.cache.lookup(ids, clock)
                todo = [ids[i] for i in np.flatnonzero(~hit).tolist()] if not hit.all() else []
            if todo:
                requests.append(g.request(keys.parts(todo)))
            plans.append((g, codes.astype(np.intp, copy=False), ids,
                          slots if slots is not None else np.empty(0, np.intp), hit, todo))
        t_req = time.perf_counter()
        fetched = sum(len(p[5]) for p in plans)
        conn = None
        if fetched:
            if self._conn is None:
                self._conn = self._pool.make_connection()
            conn = self._conn
            conn.send_packed_command([b"".join(requests)], check_health=False)
        io_s = decode_s = 0.0
        odd = 0
        results: list[_Rows] = []
        for g, codes, ids, slots, hit, todo in plans:
            t1 = time.perf_counter()
            replies = self._read(conn, len(todo)) if todo else []
            t2 = time.perf_counter()
            got, k = self._decode(g, replies)
            odd += k
            if g.cache is not None and hit is not None:
                rows = _Rows.empty(g, len(ids))
                if hit.any():
                    cached = g.cache.take(slots[hit])
                    _assign(rows, hit, cached)
                if todo:
                    _assign(rows, ~hit, got)
                    g.cache.store(todo, got, clock)
                got = rows
            results.append(got)
            t3 = time.perf_counter()
            io_s += t2 - t1
            decode_s += t3 - t2
        self.last_error = None
        out = self._assemble(plans, results, n, t0)
        out.extra.update({
            "redis_keys": float(fetched),
            "request_ms": (t_req - t0) * 1000.0,
            "redis_ms": io_s * 1000.0,
            "decode_ms": decode_s * 1000.0,
            "odd_values": float(odd),
            "cache_hits": float(sum(int(p[4].sum()) for p in plans if p[4] is not None)),
            "cache_misses": float(sum(len(p[5]) for p in plans if p[4] is not None)),
        })
        return out

    @staticmethod
    def _read(conn: Any, k: int) -> list[Any]:
        from redis.exceptions import ResponseError

        assert conn is not None
        out: list[Any] = []
        append, read = out.append, conn.read_response
        for _ in range(k):
            try:
                append(read())
            except ResponseError as e:  # one bad key (e.g. WRONGTYPE) must not cost the batch
                append(e)
        return out

    def _decode(self, g: _Group, replies: list[Any]) -> tuple[_Rows, int]:
        u, f = len(replies), g.n_cells
        try:
            flat: list[Any] = list(chain.from_iterable(replies))
        except TypeError:
            flat = []
        if len(flat) != u * f:
            flat = self._clean(g, replies)
        n_num, n_str = len(g.numeric_kinds), len(g.string_refs)
        numbers = np.empty((u, n_num), dtype=np.float64)
        odd_count = 0
        for kind, cols in g.kind_cols.items():
            cells: list[Any] = []
            for j in cols.tolist():
                cells += flat[j::f]
            vals, odd = decode_numbers(cells, kind)
            if odd.any():
                for i in np.flatnonzero(odd).tolist():
                    vals[i] = slow_number(cells[i])
                odd_count += int(odd.sum())
            numbers[:, cols] = vals.reshape(len(cols), u).T
        strings = np.empty((u, n_str), dtype=object)
        has_string = np.empty((u, n_str), dtype=bool)
        for s in range(n_str):
            strings[:, s], has_string[:, s] = self._strings.decode(flat[n_num + s :: f])
        cells = []
        for v in range(len(g.views)):
            cells += flat[n_num + n_str + v :: f]
        ts, odd = decode_timestamps(cells)
        if odd.any():
            for i in np.flatnonzero(odd).tolist():
                ts[i] = slow_timestamp(cells[i])
            odd_count += int(odd.sum())
        return _Rows(numbers, strings, has_string, ts.reshape(len(g.views), u).T), odd_count

    @staticmethod
    def _clean(g: _Group, replies: list[Any]) -> list[Any]:
        """Replies with error or malformed entries: such keys read as having no values."""
        f = g.n_cells
        flat: list[Any] = []
        for r in replies:
            if isinstance(r, Exception):
                msg = str(r)
                if msg.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")):
                    raise _StoreError(f"Redis answered {msg!r}: the redis_fast reader does not support Redis Cluster")
                log.warning("Redis answered %r for a %s key; reading it as missing", msg, g.join_key)
            if isinstance(r, list) and len(r) == f:
                flat += r
            else:
                flat += [None] * f
        return flat

    def _assemble(self, plans: list[Any], results: list[_Rows], n: int, t0: float) -> OnlineFeatures:
        now = self._now_s()
        man = self._manifest
        numeric = np.empty((n, len(man.online_numeric)), dtype=np.float32)
        strings: dict[str, ObjArray] = {}
        missing: dict[str, BoolArray] = {}
        stale: dict[str, BoolArray] = {}
        keep = self._stale_policy == "keep"
        unique_rows = 0
        for (g, codes, ids, *_), rows in zip(plans, results):
            unique_rows += len(ids)
            present = ~np.isnan(rows.numbers)
            has_string = rows.has_string.copy()
            for vi, v in enumerate(g.views):
                ts = rows.ts[:, vi]
                any_present = present[:, v.numeric].any(axis=1) | has_string[:, v.strings].any(axis=1)
                miss = ~any_present | (ts <= 0.0)
                old = ~miss & (v.ttl_s > 0) & (now - ts > v.ttl_s)
                missing[v.name], stale[v.name] = miss[codes], old[codes]
                if not keep and old.any():
                    # A value past its TTL counts as absent for the model, as in Feast's semantics.
                    present[:, v.numeric] &= ~old[:, None]
                    has_string[:, v.strings] &= ~old[:, None]
            values = np.where(present, rows.numbers.astype(np.float32), self._defaults[g.numeric_out])
            numeric[:, g.numeric_out] = values[codes]
            for s, ref in enumerate(g.string_refs):
                strings[ref] = np.where(has_string[:, s], rows.strings[:, s], self._string_defaults[ref])[codes]
        order = {v: i for i, v in enumerate(self._service_views)}
        return OnlineFeatures(
            numeric=numeric,
            strings={r: strings[r] for r in man.online_strings},
            missing=dict(sorted(missing.items(), key=lambda kv: order[kv[0]])),
            stale=dict(sorted(stale.items(), key=lambda kv: order[kv[0]])),
            degraded=False,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
            extra={"unique_ids": float(unique_rows)},
        )

    def _all_defaults(self, n: int, *, degraded: bool, t0: float) -> OnlineFeatures:
        man = self._manifest
        return OnlineFeatures(
            numeric=np.broadcast_to(self._defaults, (n, len(man.online_numeric))).copy(),
            strings={r: np.full(n, self._string_defaults[r], dtype=object) for r in man.online_strings},
            # Degraded: no view could be read, so every row counts as missing (never as stale).
            missing={v: np.full(n, degraded, dtype=bool) for v in self._service_views},
            stale={v: np.zeros(n, dtype=bool) for v in self._service_views},
            degraded=degraded,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
        self._pool.disconnect()


class _StoreError(RuntimeError):
    """The store answered, but not in a way this reader can use (e.g. a cluster redirect)."""


def _assign(dst: _Rows, mask: BoolArray, src: _Rows) -> None:
    dst.numbers[mask], dst.strings[mask], dst.has_string[mask], dst.ts[mask] = (
        src.numbers, src.strings, src.has_string, src.ts,
    )
