"""Feast's online values on the wire: ``ValueProto`` and ``Timestamp`` cells read in bulk, no I/O.

What the ``redis_fast`` reader (``workers/features/redis_fast.py``) gets back from Redis is one protobuf
message per cell: a ``feast.types.Value`` per feature and a ``google.protobuf.Timestamp`` per
view's ``_ts`` field. Decoding here is per batch, not per value: the cells become one byte matrix
(numpy, one C pass) and numpy reads protobuf's wire format column-wise (``float_val`` = tag + 4
bytes LE, ``double_val`` = tag + 8, ints and bools are varints, a ``Timestamp`` is two varints).
Cells of another shape (other value type, extra fields, non-canonical encoding) are flagged "odd"
and read one by one through protobuf (``slow_*``), as Feast reads them. Strings go through a
bounded intern table (``StringCells``).

Values come out as ``FeastSdkReader`` sees them: ``float(<set oneof>)``, bools 0/1, timestamps
rounded to microseconds exactly as Feast's datetime round trip rounds them. Bytes that protobuf
itself cannot parse may be read leniently here where Feast raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.events import BoolArray, F64Array, ObjArray

U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
I32Array = npt.NDArray[np.int32]
I8Array = npt.NDArray[np.int8]
IntpArray = npt.NDArray[np.intp]
Cells = Sequence[bytes | None]

# ---- wire format ---------------------------------------------------------------------------
# Tags ((field number << 3) | wire type) of feast.types.Value's oneof members and of
# google.protobuf.Timestamp. Written out so the decoders need no Feast import; the reader checks
# them against the protobuf descriptors at start-up (``check_wire_tags``), so a changed .proto
# fails loudly.
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




def check_wire_tags() -> None:
    """Fail loudly, at start-up, if Feast's ``Value`` or protobuf's ``Timestamp`` moved a tag."""
    from workers.features.base import FeatureStoreError

    value_cls, ts_cls = _protos()
    wire_type = {1: 1, 2: 5, 3: 0, 5: 0, 8: 0, 9: 2}  # descriptor field type -> wire type
    for name, tag in TAGS.items():
        f = value_cls.DESCRIPTOR.fields_by_name[name]
        if (f.number << 3 | wire_type[f.type]) != tag:
            raise FeatureStoreError(f"feast.types.Value.{name} changed its wire tag; update TAGS in workers/features/wire.py")
    ts = ts_cls.DESCRIPTOR.fields_by_name
    if (ts["seconds"].number << 3, ts["nanos"].number << 3 | 0) != (TS_SECONDS_TAG, TS_NANOS_TAG):
        raise FeatureStoreError("google.protobuf.Timestamp changed its wire tags")


class StringCells:
    """String cells -> (str object array, has-a-string flags), through a bounded intern table.

    String features are categorical or per entity: the same bytes come back batch after batch, so
    cells map to codes in C (``map`` over a dict) and codes to strings by numpy fancy indexing.
    Code 0 is "no string" (absent, or another value type), as ``FeastSdkReader`` sees it.
    """

    def __init__(self, max_entries: int = 200_000, native_table: Callable[[], Any] | None = None) -> None:
        """``native_table``: ``workers.features._resp.Interner`` where the C helper is built (``decode_at``)."""
        self._max = max_entries
        self._new_table = native_table
        self._reset()

    def _reset(self) -> None:
        self._table: Any = self._new_table() if self._new_table is not None else None
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
                self._reset()  # every code so far is void: read the whole column again
                todo = np.flatnonzero(np.fromiter((c is not None and c != b"" for c in cells), bool, len(cells)))
                codes[:] = 0
            for i in todo.tolist():
                s = slow_string(cells[i])
                codes[i] = self._codes[cells[i]] = 0 if s is None else self._intern(s)
        return self._strings[codes], codes > 0

    def decode_at(self, buf: Any, offs: npt.NDArray[np.int64], lens: npt.NDArray[np.int32], col: int,
                  exact: Callable[[int], bytes | None]) -> tuple[ObjArray, BoolArray]:
        """The same for cells given by where they lie in ``buf`` (``offs``/``lens`` [u, fields],
        column ``col``; lens < 1: no string), looked up in C by their exact bytes (``native_table``):
        no Python object per cell, only for cells not seen before (``exact(i)``)."""
        if self._table is None:
            raise RuntimeError("StringCells.decode_at needs native_table (workers.features._resp.Interner)")
        u = len(offs)
        codes = np.empty(u, np.int64)
        if self._table.lookup(buf, offs, lens, offs.shape[1], col, codes):
            todo = np.flatnonzero(codes < 0)
            if len(self._table) + len(todo) > self._max:
                self._reset()  # every code so far is void: read the whole column again
                todo = np.flatnonzero(lens[:, col] > 0)
            for i in todo.tolist():
                cell = exact(i)
                s = slow_string(cell)
                codes[i] = code = 0 if s is None else self._intern(s)
                if cell:
                    self._table.add(cell, code)
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
