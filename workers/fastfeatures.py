"""``redis_fast`` feature reader: Feast's Redis online store read directly, one round trip per batch.

Same answers as ``FeastSdkReader`` (Feast's ``get_online_features``) at a fraction of its cost:

* The layout is derived once, at start-up, from the Feast registry (``feast apply`` output): views
  of the feature service, TTLs, value types, join keys, project, entity-key serialization version,
  the murmur3 field of every ``view:feature``. Nothing about the repo is written down here.
* A micro-batch is ONE pipelined write of ``HMGET`` commands, one per distinct entity id (all views
  of an entity live in one Redis hash: a card's ``card_profile`` and ``card_velocity`` come back
  together), then reading the replies with hiredis in one loop. Request bytes are joined from
  cached per-id pieces: serializing an entity key in Python costs more than fetching it.
* Decoding is per batch, not per value: the replies become one byte matrix (numpy, one C pass) and
  numpy reads protobuf's wire format column-wise (``float_val`` = tag + 4 bytes LE, ``double_val``
  = tag + 8, ints and bools are varints, ``_ts:<view>`` a ``Timestamp`` of two varints). Cells of
  another shape (other value type, extra fields) go through protobuf, read as Feast reads them;
  so do replies of a few keys, where numpy's fixed cost per call exceeds protobuf's per cell.
  Replies are decoded in chunks as they stream in, overlapping with Redis working on the rest.
* Optional in-process cache (``cached_views``, ``cache_ttl_ms``, ``cache_max_entries``) for slowly
  changing views: decoded rows per entity id, hit/miss counted. Views sharing an entity are read by
  one HMGET, so they are cached together or not at all (a partial list is refused).

Semantics are ``FeastSdkReader``'s: a view is ``missing`` for a row when none of its features has a
value or its timestamp is 0; ``stale`` when older than the view's TTL; missing and (with
``stale_policy="default"``) stale values get the manifest's defaults. Timestamps are rounded to
microseconds exactly as Feast's datetime round trip rounds them, so TTL edges agree too.

Failure: Redis down or slow (socket timeouts of ``features.timeout_ms``) -> ``fetch`` returns
defaults with ``degraded=True`` and every view missing, does not try again for
``retry_after_ms``, then reconnects by itself. It never raises for the store.

Limitations, checked at start-up: one Redis node. Feast's keys carry no hash tag, so on Redis
Cluster one batch spans many slots and one pipeline to one node cannot serve it; ``redis_type``
other than ``redis`` in ``feature_store.yaml`` is refused with a clear error (use ``reader:
feast_sdk`` there), and a MOVED reply degrades with the same message. Views keyed by several join
keys are refused likewise. Bytes that protobuf itself cannot parse may be read leniently here where
Feast raises. Not thread-safe: one reader per worker thread.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

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
Cells = Sequence[bytes | None]

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
_VARINT_MAX = 10
# Longest cell decoded from the matrix (Timestamp: tag + 10 + tag + 10) plus one byte of padding
# that must be zero: a longer cell fails that check and goes to protobuf.
CELL_WIDTH = 2 + 2 * _VARINT_MAX + 1
# numpy stores None as b"None" in a bytes ("S") array. 0x4E would be wire type 6, which does not
# exist, so a cell starting with it can only be a None (no such field in Redis).
_NONE_BYTE = ord("N")
_LANES = np.arange(_VARINT_MAX)
# Up to this many cells (keys x fields) a reply is read with protobuf per cell (~1.1 us a cell):
# the vectorized decode's fixed cost (~60 us a call) only pays off above it.
SMALL_BATCH_CELLS = 48


def cell_matrix(cells: Cells | Sequence[Sequence[bytes | None]], width: int = CELL_WIDTH) -> U8Array:
    """Cells (or rows of cells) as a zero-padded byte matrix ``[..., width]`` in one C pass."""
    a = np.array(cells, dtype=f"S{width}")
    return a.view(np.uint8).reshape(*a.shape, width)


def decode_varints(win: U8Array) -> tuple[U64Array, IntpArray, BoolArray]:
    """Protobuf varints starting at byte 0 of the last axis of ``win`` (``[..., >=10]`` bytes).

    Returns (value as uint64, encoded length, ok); not ok: no end within 10 bytes, or a 10th byte
    above 1. Work is per byte position up to the batch's longest varint (1-2 for counts, 5 for
    epoch seconds), each a few operations over all cells at once.
    """
    b = win[..., 0]
    value: U64Array = (b & 0x7F).astype(np.uint64)
    more = b >= 0x80
    n: IntpArray = np.ones(b.shape, dtype=np.intp)
    lane = 1
    while lane < _VARINT_MAX and more.any():
        b = win[..., lane]
        value |= ((b & 0x7F) * more).astype(np.uint64) << np.uint64(7 * lane)
        n += more
        more &= b >= 0x80
        lane += 1
    ok: BoolArray = ~more
    if lane == _VARINT_MAX:
        ok &= ~((n == _VARINT_MAX) & (win[..., _VARINT_MAX - 1] > 1))
    return value, n, ok


# b"" (an unset Value) and None (no such field) both mean "no value": first byte 0 or "N".
_ABSENT_FIRST = np.zeros(256, dtype=bool)
_ABSENT_FIRST[[0, _NONE_BYTE]] = True


def _absent(first: U8Array) -> BoolArray:
    out: BoolArray = _ABSENT_FIRST[first]
    return out


def _byte_at(m: U8Array, pos: IntpArray) -> U8Array:
    """``m[..., pos]`` per cell (``take_along_axis`` costs 3x more on these small arrays)."""
    w = m.shape[-1]
    flat = np.ascontiguousarray(m).reshape(-1)
    out: U8Array = flat[(np.arange(pos.size) * w).reshape(pos.shape) + pos]
    return out


_FAMILY = {"float_val": 0, "double_val": 1, **{k: 2 for k in VARINT_KINDS}}


@dataclass(frozen=True)
class NumericLayout:
    """Numeric columns sorted by decoder (floats, doubles, varints, others), so each decoder reads
    one contiguous slice of the cell matrix. ``NumericLayout.order(kinds)`` gives that order."""

    tags: U8Array  # expected first byte per column; 0xFF (no such tag): always the protobuf path
    f4: slice
    f8: slice
    varint: slice
    varint_bool: BoolArray  # per varint column: bool_val
    varint_int32: BoolArray  # per varint column: int32_val

    @staticmethod
    def order(kinds: Sequence[str]) -> list[int]:
        return sorted(range(len(kinds)), key=lambda j: _FAMILY.get(kinds[j], 3))

    @staticmethod
    def of(kinds: Sequence[str]) -> NumericLayout:
        """Layout of columns of these Value kinds, which must already be in ``order``."""
        fam = [_FAMILY.get(k, 3) for k in kinds]
        if fam != sorted(fam):
            raise ValueError("numeric columns must be sorted by NumericLayout.order")
        bounds = [fam.count(f) for f in range(3)]
        a, b, c = bounds[0], bounds[0] + bounds[1], sum(bounds)
        varint = kinds[b:c]
        return NumericLayout(
            np.array([TAGS[k] if k in _FAMILY else 0xFF for k in kinds], np.uint8),
            slice(0, a), slice(a, b), slice(b, c),
            np.array([k == "bool_val" for k in varint], bool), np.array([k == "int32_val" for k in varint], bool),
        )


def decode_numbers(m: U8Array, layout: NumericLayout) -> tuple[F64Array, BoolArray]:
    """Numeric cells ``[u, columns, CELL_WIDTH]`` -> (float64 ``[u, columns]``, odd).

    Values as ``FeastSdkReader`` reads them (``float(value)``, bools 0/1); absent cells read NaN.
    ``odd`` cells have another shape (other value type, extra fields, non-canonical encoding):
    NaN here, for the caller to parse with ``slow_number``.
    """
    first = m[:, :, 0]
    ok = first == layout.tags
    vals = np.zeros(first.shape, dtype=np.float64)
    for cols, width, dtype in ((layout.f4, 4, "<f4"), (layout.f8, 8, "<f8")):
        if cols.stop > cols.start:
            block = m[:, cols]
            ok[:, cols] &= block[:, :, width + 1] == 0
            vals[:, cols] = np.ascontiguousarray(block[:, :, 1 : width + 1]).view(dtype)[:, :, 0]
    if layout.varint.stop > layout.varint.start:
        block = m[:, layout.varint]
        v, n, vok = decode_varints(block[:, :, 1:])
        ok[:, layout.varint] &= vok & (_byte_at(block, n + 1) == 0)
        ints = v.view(np.int64)
        got = ints.astype(np.float64)
        if layout.varint_bool.any():
            got[:, layout.varint_bool] = ints[:, layout.varint_bool] != 0
        if layout.varint_int32.any():  # protobuf keeps the low 32 bits, sign-extended
            got[:, layout.varint_int32] = (ints[:, layout.varint_int32] & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        vals[:, layout.varint] = got
    out: F64Array = np.where(ok, vals, np.nan)
    return out, ~ok & ~_absent(first)


def feast_seconds(seconds: I64Array, nanos: I64Array) -> F64Array:
    """Timestamps as ``FeastSdkReader`` sees them, in float seconds.

    Feast's Redis store turns ``seconds + nanos / 1e9`` into a datetime (microseconds, rounded half
    to even as CPython's ``datetime.fromtimestamp`` does) and back into a Timestamp; the reader then
    computes ``seconds + nanos * 1e-9``. The same arithmetic, vectorized.
    """
    d = seconds.astype(np.float64) + nanos.astype(np.float64) / 1_000_000_000.0
    ip = np.trunc(d)
    us = np.rint((d - ip) * 1e6)
    up, down = us >= 1e6, us < 0
    us = np.where(up, us - 1e6, np.where(down, us + 1e6, us))
    out: F64Array = (ip + up - down) + (us * 1000.0) * 1e-9
    return out


def decode_timestamps(m: U8Array) -> tuple[F64Array, BoolArray]:
    """``_ts:<view>`` cells (``[k, CELL_WIDTH]`` bytes of a Timestamp) -> (float seconds, odd).

    Absent cells read 0.0, which the reader counts as missing (as Feast reports them).
    """
    first = m[:, 0]
    absent = _absent(first)
    # Whole seconds of this era (2^28..2^35 s: 1978-3058) are a 5-byte varint and no nanos field;
    # Feast's rounding leaves them as they are. The general decoder takes the other cells.
    whole = (first == TS_SECONDS_TAG) & (m[:, 1:5] >= 0x80).all(axis=1) & (m[:, 5] < 0x80) & (m[:, 6] == 0)
    out = ((m[:, 1:6] & 0x7F).astype(np.int64) @ _SECONDS_WEIGHTS).astype(np.float64)
    out[~whole] = 0.0
    rest = ~whole & ~absent
    odd = np.zeros(m.shape[0], dtype=bool)
    if rest.any():
        idx = np.flatnonzero(rest)
        out[idx], odd[idx] = _timestamps_general(m[idx])
    return out, odd


_SECONDS_WEIGHTS = np.array([1 << (7 * i) for i in range(5)], dtype=np.int64)


def _timestamps_general(m: U8Array) -> tuple[F64Array, BoolArray]:
    k = m.shape[0]
    sec, n1, ok = decode_varints(m[:, 1 : 1 + _VARINT_MAX])
    ok &= m[:, 0] == TS_SECONDS_TAG
    after = _byte_at(m, 1 + n1)
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
    return out, ~_absent(m[:, 0]) & ~ok


# ---- the protobuf path for odd cells (rare; Feast's import costs seconds, so it is lazy) ----

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
    gets its default rather than failing the batch.
    """
    if not raw:
        return math.nan
    try:
        v = _protos()[0].FromString(raw)
        kind = v.WhichOneof("val")
        return math.nan if kind is None else float(getattr(v, kind))
    except Exception:
        return math.nan


def slow_string(raw: bytes | None) -> str | None:
    """A string cell's ``string_val``, or None when it holds no string (absent, another type)."""
    if not raw:
        return None
    if len(raw) >= 2 and raw[0] == TAGS["string_val"] and len(raw) == 2 + raw[1]:  # len < 128
        try:
            return raw[2:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        v = _protos()[0].FromString(raw)
    except Exception:
        return None
    return str(v.string_val) if v.WhichOneof("val") == "string_val" else None


def slow_timestamp(raw: bytes | None) -> float:
    """A ``_ts`` cell as ``FeastSdkReader`` sees it: through Feast's float -> datetime -> Timestamp."""
    if not raw:
        return 0.0
    ts_cls = _protos()[1]
    try:
        t = ts_cls.FromString(raw)
        back = ts_cls()
        back.FromDatetime(datetime.fromtimestamp(t.seconds + t.nanos / 1_000_000_000.0, tz=timezone.utc))
        return float(back.seconds + back.nanos * 1e-9)
    except Exception:  # unparsable, or outside datetime's range (where Feast would raise)
        return 0.0


class StringCells:
    """String cells -> (str object array, has-a-string flags), through a bounded intern table.

    String features are categorical or per entity: the same bytes come back batch after batch, so
    cells map to codes in C (``map`` over a dict) and codes to strings by numpy fancy indexing.
    Code 0 is "no string" (absent, or another value type), as ``FeastSdkReader`` sees it.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._max = max_entries
        self._reset()

    def _reset(self) -> None:
        self._codes: dict[bytes | None, int] = {None: 0, b"": 0}
        self._by_str: dict[str, int] = {}
        self._strings: ObjArray = np.empty(1024, dtype=object)
        self._strings[0] = ""
        self._n = 1

    def decode(self, cells: Cells) -> tuple[ObjArray, BoolArray]:
        codes = np.fromiter(map(self._codes.get, cells, repeat(-1)), dtype=np.intp, count=len(cells))
        todo = np.flatnonzero(codes < 0)
        if len(todo):
            if len(self._codes) + len(todo) > self._max:
                self._reset()
            for i in todo.tolist():
                s = slow_string(cells[i])
                codes[i] = self._codes[cells[i]] = 0 if s is None else self._intern(s)
        return self._strings[codes], codes > 0

    def _intern(self, s: str) -> int:
        code = self._by_str.get(s)
        if code is None:
            if self._n == len(self._strings):
                grown = np.empty(2 * self._n, dtype=object)
                grown[: self._n] = self._strings
                self._strings = grown
            code = self._by_str[s] = self._n
            self._strings[code] = s
            self._n += 1
        return code


# ---- the plan: derived from the Feast registry once --------------------------------------------


@dataclass(frozen=True)
class _View:
    name: str
    ttl_s: float  # 0 = never stale
    numeric: IntpArray  # the group's numeric cells of this view
    strings: IntpArray  # the group's string cells of this view


@dataclass
class _Group:
    """Views read together: one entity, so one Redis hash and one HMGET per id.

    HMGET fields, in this order: numeric cells, string cells, ``_ts`` of each view.
    """

    join_key: str
    views: list[_View]
    numeric_kinds: list[str]  # Value oneof per numeric cell
    numeric_out: IntpArray  # manifest.online_numeric column of each numeric cell
    string_refs: list[str]
    fields: list[bytes]
    key_of: Callable[[Any], bytes]  # entity id -> Redis key
    cache: _RowCache | None = None
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


@dataclass
class _Rows:
    """Decoded values of one group, one row per entity id."""

    numbers: F64Array  # [u, numeric cells], NaN = no value
    strings: ObjArray  # [u, string cells]
    has_string: BoolArray  # [u, string cells]
    ts: F64Array  # [u, views], Feast-rounded seconds, 0 = none

    @staticmethod
    def empty(g: _Group, u: int) -> _Rows:
        ns = len(g.string_refs)
        return _Rows(np.full((u, len(g.numeric_kinds)), np.nan), np.full((u, ns), "", object),
                     np.zeros((u, ns), bool), np.zeros((u, len(g.views))))

    def put(self, where: IntpArray | BoolArray, src: _Rows) -> None:
        self.numbers[where], self.strings[where], self.has_string[where], self.ts[where] = (
            src.numbers, src.strings, src.has_string, src.ts)

    def take(self, where: IntpArray) -> _Rows:
        return _Rows(self.numbers[where], self.strings[where], self.has_string[where], self.ts[where])

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("numbers", "strings", "has_string", "ts")))


class _RowCache:
    """Decoded rows of a slowly changing view group per entity id, for ``ttl_s``; FIFO-bounded.

    Absent entities are cached too: an unknown merchant is asked for again only after the TTL.
    Staleness is still judged at read time from the cached timestamps.
    """

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
        return self._rows.take(slots)

    def store(self, ids: list[Any], rows: _Rows, now: float) -> None:
        slots = np.empty(len(ids), dtype=np.intp)
        for i, key in enumerate(ids):
            s = self._slot.get(key)
            if s is None:
                s = self._next
                self._next = (s + 1) % len(self._owner)
                old = self._owner[s]
                if old is not None:
                    del self._slot[old]
                self._owner[s] = key
                self._slot[key] = s
            slots[i] = s
        self._rows.put(slots, rows)
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


class _StoreError(RuntimeError):
    """The store answered in a way this reader cannot use (e.g. a cluster redirect)."""


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
        key_cache_max_entries: int = 200_000,  # ~40 MB at most; a hit saves ~1 us of Python per key
        decode_chunk_keys: int = 256,
        now_s: Callable[[], float] = time.time,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        import hiredis

        self._settings = settings if settings is not None else get_settings()
        self._manifest = manifest
        self._stale_policy = stale_policy
        self._retry_after_s = retry_after_ms / 1000.0
        self._timeout_s = timeout_ms / 1000.0
        self._chunk_keys = max(1, decode_chunk_keys)
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
        # redis-py connects, authenticates, selects the db and applies timeouts/TLS; replies are
        # then read here with hiredis in one loop (redis-py's read_response costs ~1 us per reply).
        self._conn: Any = None  # redis-py's Connection classes are untyped
        self._hiredis = hiredis
        self._reader: Any = hiredis.Reader()
        self._buf = bytearray(1 << 18)

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
                "run `streamscore features setup`"
            ) from e
        man = self._manifest
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
        groups: list[_Group] = []
        for join_key, members in by_key.items():
            kinds: list[str] = []
            out_cols: list[int] = []
            string_refs: list[str] = []
            fields: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
            views: list[_View] = []
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
                    views.append(_View(name, ttl, np.array(num_idx, np.intp), np.array(str_idx, np.intp)))
            if not views:
                continue
            # Numeric cells sorted by decoder, so each decodes one slice of the reply matrix.
            order = NumericLayout.order(kinds)
            pos = np.empty(len(order), np.intp)
            pos[order] = np.arange(len(order))
            kinds, out_cols = [kinds[j] for j in order], [out_cols[j] for j in order]
            fields[0][:] = [fields[0][j] for j in order]
            views = [_View(v.name, v.ttl_s, pos[v.numeric], v.strings) for v in views]
            vt = members[0][2].dtype.to_value_type()
            key_of = feast_key_builder(join_key, vt, cfg.project, version)
            if vt == ValueType.STRING and version == 3:
                fast = string_key_builder(join_key, cfg.project)
                for sample in ("c000001", "", "zürich-ü", "x" * 300):
                    if fast(sample) != key_of(sample):
                        raise FeatureStoreError(
                            f"Feast's entity key serialization changed (differs for {sample!r}); "
                            "update string_key_builder in workers/fastfeatures.py"
                        )
                key_of = fast
            groups.append(_Group(join_key, views, kinds, np.array(out_cols, np.intp), string_refs,
                                 [*fields[0], *fields[1], *fields[2]], key_of))
        return groups, [p.name for p in service.feature_view_projections]

    @staticmethod
    def _check_wire_tags() -> None:
        value_cls, ts_cls = _protos()
        wire_type = {1: 1, 2: 5, 3: 0, 5: 0, 8: 0, 9: 2}  # descriptor field type -> wire type
        for name, tag in TAGS.items():
            f = value_cls.DESCRIPTOR.fields_by_name[name]
            if (f.number << 3 | wire_type[f.type]) != tag:
                raise FeatureStoreError(f"feast.types.Value.{name} changed its wire tag; update TAGS in workers/fastfeatures.py")
        ts = ts_cls.DESCRIPTOR.fields_by_name
        if (ts["seconds"].number << 3, ts["nanos"].number << 3 | 0) != (TS_SECONDS_TAG, TS_NANOS_TAG):
            raise FeatureStoreError("google.protobuf.Timestamp changed its wire tags")

    def _setup_cache(self, cached_views: Sequence[str], ttl_s: float, max_entries: int) -> None:
        wanted = set(cached_views)
        known = {v.name for g in self._groups for v in g.views}
        if wanted - known:
            raise FeatureStoreError(
                f"features.cached_views names {sorted(wanted - known)}, not views the model reads ({sorted(known)})"
            )
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
        kwargs: dict[str, Any] = {
            "socket_timeout": self._timeout_s,
            "socket_connect_timeout": self._timeout_s,
            "retry": Retry(NoBackoff(), 0),  # redis-py retries with backoff by default; fail fast
            "health_check_interval": 0,
        }
        if s.redis_password is not None:
            kwargs["password"] = s.redis_password.get_secret_value()
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

        self._disconnect()  # a half-read pipeline leaves replies on the socket
        self._down_until = self._clock_s() + self._retry_after_s
        host, port = self._settings.redis_host_port
        if isinstance(e, _StoreError):
            self.last_error = str(e)
        else:
            self.last_error = (f"Redis at {host}:{port} did not answer — is `streamscore dev up` running? "
                               f"({type(e).__name__}: {e})")
        if isinstance(e, (redis.exceptions.RedisError, OSError, _StoreError)):
            log.warning("%s; serving defaults for %.0f ms", self.last_error, self._retry_after_s * 1000.0)
        else:  # a bug, not the store: keep scoring with defaults, but say where
            log.exception("redis_fast reader failed; serving defaults for %.0f ms", self._retry_after_s * 1000.0)

    def _socket(self) -> Any:
        if self._conn is None:
            self._conn = self._pool.make_connection()
        if getattr(self._conn, "_sock", None) is None:
            self._conn.connect()
            self._reader = self._hiredis.Reader()
        return self._conn._sock

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._reader = self._hiredis.Reader()

    def _fetch(self, entities: dict[str, ObjArray], n: int, t0: float) -> OnlineFeatures:
        clock = self._clock_s()
        plans: list[tuple[_Group, IntpArray, list[Any], IntpArray, BoolArray | None, list[Any]]] = []
        sock = None
        for g, keys in zip(self._groups, self._keys):
            # Duplicate ids are fetched once. A dict in first-seen order: ~4x faster than np.unique
            # on object arrays (which sorts with Python comparisons), and faster than pandas.
            first: dict[Any, int] = {}
            codes = np.array([first.setdefault(x, len(first)) for x in np.asarray(entities[g.join_key]).tolist()],
                             dtype=np.intp)
            ids: list[Any] = list(first)
            slots, hit, todo = np.empty(0, np.intp), None, ids
            if g.cache is not None:
                slots, hit = g.cache.lookup(ids, clock)
                todo = [] if hit.all() else [ids[i] for i in np.flatnonzero(~hit).tolist()]
            if todo:
                # Sent per group at once: Redis starts on this one while the next is prepared.
                sock = sock or self._socket()
                sock.sendall(g.request(keys.parts(todo)))
            plans.append((g, codes, ids, slots, hit, todo))
        t_sent = time.perf_counter()
        io_s = decode_s = 0.0
        odd = 0
        results: list[_Rows] = []
        for g, _, ids, slots, hit, todo in plans:
            # Replies stream back as Redis works through the pipeline; decoding them in chunks
            # overlaps the client's decode with the server's work on the rest of the batch.
            parts: list[_Rows] = []
            n_chunks = max(1, round(len(todo) / self._chunk_keys))  # even chunks, ~chunk_keys each
            bounds = [len(todo) * c // n_chunks for c in range(n_chunks + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                t1 = time.perf_counter()
                replies = self._recv(sock, hi - lo)
                t2 = time.perf_counter()
                rows, k = self._decode(g, replies)
                parts.append(rows)
                odd += k
                io_s += t2 - t1
                decode_s += time.perf_counter() - t2
            t2 = time.perf_counter()
            rows = parts[0] if len(parts) == 1 else _Rows.concat(parts) if parts else _Rows.empty(g, 0)
            if g.cache is not None and hit is not None:
                merged = _Rows.empty(g, len(ids))
                if hit.any():
                    merged.put(hit, g.cache.take(slots[hit]))
                if todo:
                    merged.put(~hit, rows)
                    g.cache.store(todo, rows, clock)
                rows = merged
            results.append(rows)
            decode_s += time.perf_counter() - t2
        self.last_error = None
        out = self._assemble(plans, results, n, t0)
        out.extra.update({
            "redis_keys": float(sum(len(p[5]) for p in plans)),
            "prepare_ms": (t_sent - t0) * 1000.0,
            "redis_ms": io_s * 1000.0,
            "decode_ms": decode_s * 1000.0,
            "protobuf_cells": float(odd),
            "cache_hits": float(sum(int(p[4].sum()) for p in plans if p[4] is not None)),
            "cache_misses": float(sum(len(p[5]) for p in plans if p[4] is not None)),
        })
        return out

    def _recv(self, sock: Any, k: int) -> list[Any]:
        """The next ``k`` replies (error replies come back as exception objects, not raised)."""
        out: list[Any] = []
        if not k:
            return out
        reader, buf, append = self._reader, self._buf, out.append
        left = k
        while True:
            r = reader.gets()
            while r is not False:
                append(r)
                left -= 1
                if not left:
                    return out
                r = reader.gets()
            nbytes = sock.recv_into(buf)
            if not nbytes:
                raise ConnectionError("Redis closed the connection")
            reader.feed(buf, 0, nbytes)

    def _decode(self, g: _Group, replies: list[Any]) -> tuple[_Rows, int]:
        u, f = len(replies), len(g.fields)
        if not u:
            return _Rows.empty(g, 0), 0
        if u * f <= SMALL_BATCH_CELLS:
            return self._decode_small(g, replies)
        try:
            m = cell_matrix(replies)
            if m.shape[:2] != (u, f):
                raise ValueError("not one list of fields per key")
        except (ValueError, TypeError):
            replies = self._clean(g, replies)
            m = cell_matrix(replies)
        odd = 0
        ns, nn = len(g.string_refs), len(g.numeric_kinds)
        numbers, bad = decode_numbers(m[:, :nn], g.layout)
        if bad.any():
            odd += self._slow(numbers, bad, replies, 0, slow_number)
        ts, bad = decode_timestamps(m[:, nn + ns :].reshape(-1, CELL_WIDTH))
        ts = ts.reshape(u, len(g.views))
        if bad.any():
            odd += self._slow(ts, bad.reshape(u, -1), replies, nn + ns, slow_timestamp)
        strings = np.empty((u, ns), dtype=object)
        has_string = np.empty((u, ns), dtype=bool)
        for s in range(ns):
            strings[:, s], has_string[:, s] = self._strings.decode(list(map(itemgetter(nn + s), replies)))
        return _Rows(numbers, strings, has_string, ts), odd

    def _decode_small(self, g: _Group, replies: list[Any]) -> tuple[_Rows, int]:
        """A few keys: protobuf per cell (Feast's own reading) beats numpy's fixed cost per call."""
        f = len(g.fields)
        if not all(type(r) is list and len(r) == f for r in replies):
            replies = self._clean(g, replies)
        nn, ns = len(g.numeric_kinds), len(g.string_refs)
        u = len(replies)
        numbers = np.array([[slow_number(r[j]) for j in range(nn)] for r in replies], np.float64).reshape(u, nn)
        ts = np.array([[slow_timestamp(r[j]) for j in range(nn + ns, f)] for r in replies], np.float64)
        strings = np.empty((u, ns), dtype=object)
        has_string = np.empty((u, ns), dtype=bool)
        for s in range(ns):
            strings[:, s], has_string[:, s] = self._strings.decode(list(map(itemgetter(nn + s), replies)))
        return _Rows(numbers, strings, has_string, ts.reshape(u, len(g.views))), u * (nn + len(g.views))

    @staticmethod
    def _slow(vals: F64Array, bad: BoolArray, replies: list[Any], first: int,
              parse: Callable[[bytes | None], float]) -> int:
        """Cells the vectorized decoders could not read, through protobuf (``vals``/``bad``: [u, c])."""
        rows, cols = np.nonzero(bad)
        for r, c in zip(rows.tolist(), cols.tolist()):
            vals[r, c] = parse(replies[r][first + c])
        return len(rows)

    @staticmethod
    def _clean(g: _Group, replies: list[Any]) -> list[Any]:
        """Replies with errors or of the wrong shape: such keys read as having no values."""
        f = len(g.fields)
        clean: list[Any] = []
        for r in replies:
            if isinstance(r, Exception):
                msg = str(r)
                if msg.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")):
                    raise _StoreError(f"Redis answered {msg!r}: the redis_fast reader does not support "
                                      "Redis Cluster — use `features.reader: feast_sdk`")
                log.warning("Redis answered %r for a %s key; reading it as missing", msg, g.join_key)
            ok = isinstance(r, list) and len(r) == f and all(x is None or isinstance(x, bytes) for x in r)
            clean.append(r if ok else [None] * f)
        return clean

    def _assemble(self, plans: list[Any], results: list[_Rows], n: int, t0: float) -> OnlineFeatures:
        now = self._now_s()
        man = self._manifest
        numeric = np.empty((n, len(man.online_numeric)), dtype=np.float32)
        strings: dict[str, ObjArray] = {}
        missing: dict[str, BoolArray] = {}
        stale: dict[str, BoolArray] = {}
        unique_ids = 0
        for (g, codes, ids, *_), rows in zip(plans, results):
            unique_ids += len(ids)
            present = ~np.isnan(rows.numbers)
            has_string = rows.has_string.copy()
            for vi, v in enumerate(g.views):
                ts = rows.ts[:, vi]
                any_present = present[:, v.numeric].any(axis=1) | has_string[:, v.strings].any(axis=1)
                miss = ~any_present | (ts <= 0.0)
                old = ~miss & (v.ttl_s > 0) & (now - ts > v.ttl_s)
                missing[v.name], stale[v.name] = miss[codes], old[codes]
                if self._stale_policy == "default" and old.any():
                    # A value past its TTL counts as absent for the model, as in Feast's semantics.
                    present[:, v.numeric] &= ~old[:, None]
                    has_string[:, v.strings] &= ~old[:, None]
            values = np.where(present, rows.numbers.astype(np.float32), self._defaults[g.numeric_out])
            numeric[:, g.numeric_out] = values[codes]
            for s, ref in enumerate(g.string_refs):
                strings[ref] = np.where(has_string[:, s], rows.strings[:, s], self._string_defaults[ref])[codes]
        return OnlineFeatures(
            numeric=numeric,
            strings={r: strings[r] for r in man.online_strings},
            missing={v: missing[v] for v in self._service_views if v in missing},
            stale={v: stale[v] for v in self._service_views if v in stale},
            degraded=False,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
            extra={"unique_ids": float(unique_ids)},
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
        self._disconnect()
        self._conn = None
        self._pool.disconnect()
