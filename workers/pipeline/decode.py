"""Decode stage: raw Kafka messages -> validated ``EventBatch`` columns + dead letters.

Bad input is data, not an exception: every message that cannot become an event becomes a
``DeadLetter`` carrying the original bytes (value, key and headers; a null value stays null),
where it came from and a machine-readable reason. The worker never stops on bad input. Python runs
once per message here; everything after this stage is per batch. A plainly valid event is decoded
and validated in one msgspec call (``decode_fast.py``); any other goes through ``orjson.loads`` and
the checks below, which say exactly what is wrong.

Before any decoding, the message's value, key and headers are held to the topology's limits
(``input.max_payload_bytes``, ``max_key_bytes``, ``max_headers_bytes``): ``payload_too_large``,
``key_too_large``, ``headers_too_large``. A null value (a tombstone, or a headers-only message) is
``null_payload``, an empty or blank one ``empty_payload``. Duplicate object keys are refused
(``duplicate_key``): orjson keeps the last one, so ``"amount": -1, ..., "amount": 5`` would pass.
Checking costs one count of ``:`` per message (``_scan.c``): a payload with no more colons than
keys in its top-level object and the schema's nested objects has no room for a duplicate; the few
others (colons in strings, objects the schema does not name) are checked exactly (``duplicates.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import methodcaller
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from workers.events import BoolArray, EventBatch
# colons: memchr from C (workers/pipeline/_scan.c; bytes.count without a compiler, ~10x per event)
from workers.pipeline.decode_fast import UNSET, FastDecoder
from workers.pipeline.decode_fast import colons as _colons
from workers.pipeline.duplicates import duplicate_keys
from workers.schema import EventSchema, FieldSpec, split_path

if TYPE_CHECKING:
    from workers.topology import InputSpec

Headers = Sequence[tuple[str, str | bytes | None]]
# What confluent-kafka's Message.headers() is typed to return (consumed messages: a list of tuples).
RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` decode uses (fakes in unit tests satisfy it)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def error(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> RawHeaders | None: ...


@dataclass(frozen=True)
class DeadLetter:
    """One rejected input message. ``reason`` is a stable code; ``detail`` is for humans."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    headers: Headers | None = None  # the original message's headers


def headers_list(headers: RawHeaders | None) -> Headers | None:
    return list(headers.items()) if isinstance(headers, dict) else headers


def headers_bytes(headers: Headers) -> int:
    """Names + values of a message's headers, the size ``max_headers_bytes`` limits."""
    return sum(len(k) + len(v or b"") for k, v in headers)


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_STRING, _NUMBER, _INTEGER, _BOOLEAN = 0, 1, 2, 3
_KINDS = {"string": _STRING, "number": _NUMBER, "integer": _INTEGER, "boolean": _BOOLEAN}
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _check_field(name: str, spec: FieldSpec, v: object) -> object:
    """The slow path: says exactly what is wrong with ``v``, or returns it (normalized)."""
    if spec.type == "string":
        if not isinstance(v, str):
            raise _Rejected(f"wrong_type:{name}", f"{name} must be a string, got {type(v).__name__}")
        if not v and not spec.allow_empty:
            raise _Rejected(f"empty:{name}", f"{name} must not be empty")
        if spec.max_length is not None and len(v) > spec.max_length:
            raise _Rejected(f"too_long:{name}", f"{name} longer than {spec.max_length} characters")
        if spec.values is not None and v not in spec.values:
            raise _Rejected(f"not_allowed:{name}", f"{name}={v[:64]!r} is not one of {list(spec.values)[:20]}")
        return v
    if spec.type == "boolean":
        if not isinstance(v, bool):
            raise _Rejected(f"wrong_type:{name}", f"{name} must be true or false, got {type(v).__name__}")
        return v
    # bool is an int subclass in Python; JSON true/false is never a number here.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Rejected(f"wrong_type:{name}", f"{name} must be a {spec.type}, got {type(v).__name__}")
    if spec.type == "integer" and not isinstance(v, int):
        if not (isinstance(v, float) and v.is_integer()):
            raise _Rejected(f"wrong_type:{name}", f"{name} must be an integer, got {v!r}")
        v = int(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise _Rejected(f"not_finite:{name}", f"{name} must be finite, got {v!r}")
    if spec.min is not None and v < spec.min:
        raise _Rejected(f"out_of_range:{name}", f"{name}={v!r} is below the minimum {spec.min}")
    if spec.max is not None and v > spec.max:
        raise _Rejected(f"out_of_range:{name}", f"{name}={v!r} is above the maximum {spec.max}")
    if spec.type == "integer" and not (_I64_MIN <= int(v) <= _I64_MAX):
        raise _Rejected(f"out_of_range:{name}", f"{name}={v!r} does not fit in 64 bits")
    return v


def _nested(obj: dict[str, Any], path: tuple[str, ...], name: str) -> object:
    """``obj[a][b]...`` for a dotted field path; None where a level is absent or null."""
    v: Any = obj
    for i, seg in enumerate(path):
        if type(v) is not dict:
            if v is None:
                return None
            where = ".".join(path[:i])
            raise _Rejected(f"wrong_type:{where}", f"{where} must be an object (it holds {name}), "
                                                   f"got {type(v).__name__}")
        v = v.get(seg)
    return v


def _nested_get(obj: dict[str, Any], first: str, rest: tuple[str, ...]) -> object:
    v: Any = obj.get(first)
    for seg in rest:
        if type(v) is not dict:
            return None
        v = v.get(seg)
    return v


@dataclass(frozen=True)
class _FieldPlan:
    """One field's checks, precomputed so the common valid value costs two or three comparisons."""

    name: str
    path: tuple[str, ...] | None  # None: a top-level key
    spec: FieldSpec
    kind: int
    min_len: int
    max_len: int
    lo: float
    hi: float
    values: frozenset[str] | None

    @staticmethod
    def of(name: str, f: FieldSpec) -> _FieldPlan:
        inf = float("inf")
        if f.type == "integer":
            lo = max(f.min, _I64_MIN) if f.min is not None else _I64_MIN
            hi = min(f.max, _I64_MAX) if f.max is not None else _I64_MAX
        else:
            lo = f.min if f.min is not None else -inf
            hi = f.max if f.max is not None else inf
        path = split_path(name)
        return _FieldPlan(
            name, path if len(path) > 1 else None, f, _KINDS[f.type], 0 if f.allow_empty else 1,
            f.max_length if f.max_length is not None else 1 << 62, lo, hi,
            frozenset(f.values) if f.values is not None else None,
        )


_VALUE, _KEY, _HEADERS = methodcaller("value"), methodcaller("key"), methodcaller("headers")
_TOPIC, _PARTITION, _OFFSET = methodcaller("topic"), methodcaller("partition"), methodcaller("offset")
_TIMESTAMP = methodcaller("timestamp")


class Decoder:
    """Turns a list of messages into (EventBatch, dead letters), validating against the schema."""

    def __init__(self, schema: EventSchema, max_payload_bytes: int, max_key_bytes: int = 4096,
                 max_headers_bytes: int = 16_384) -> None:
        self._plan = [_FieldPlan.of(n, f) for n, f in schema.fields.items()]
        self._max_payload = max_payload_bytes
        self._max_key = max_key_bytes
        self._max_headers = max_headers_bytes
        self._fast = FastDecoder.of(schema)  # plainly valid events in one C pass (decode_fast.py)
        # Objects the schema reaches into ("device" of device.id; "a" and "a.b" of a.b.c): their
        # keys are counted against the payload's colons without walking the whole tree.
        nested = sorted({p[:i] for p in (split_path(n) for n in schema.fields) for i in range(1, len(p))})
        self._objects: list[tuple[str, tuple[str, ...] | None]] = [
            (p[0], None) if len(p) == 1 else (p[0], p[1:]) for p in nested]

    @classmethod
    def of(cls, spec: InputSpec) -> Decoder:
        """The decoder of a topology's ``input`` section (its schema and limits)."""
        return cls(spec.schema_, spec.max_payload_bytes, spec.max_key_bytes, spec.max_headers_bytes)

    def _limits(self, raw: bytes | None, key: bytes | None, headers: RawHeaders | None) -> bytes:
        """The checks before decoding: sizes, then a value to decode at all (returned)."""
        if raw is not None and len(raw) > self._max_payload:
            raise _Rejected("payload_too_large", f"payload is {len(raw)} bytes, limit is "
                            f"{self._max_payload} (input.max_payload_bytes)")
        if key is not None and len(key) > self._max_key:
            raise _Rejected("key_too_large", f"key is {len(key)} bytes, limit is {self._max_key} "
                            "(input.max_key_bytes)")
        if headers and (size := headers_bytes(headers_list(headers) or ())) > self._max_headers:
            raise _Rejected("headers_too_large", f"{len(headers)} headers of {size} bytes, limit is "
                            f"{self._max_headers} (input.max_headers_bytes)")
        if raw is None:
            raise _Rejected("null_payload", "message has a null value (a tombstone or headers only)")
        return raw

    def _decode_one(self, raw: bytes) -> tuple[object, ...]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = str(exc)
            if "UTF-8" in msg:
                raise _Rejected("invalid_encoding", f"payload is not UTF-8: {msg}") from None
            if "empty" in msg:  # "input data is empty" (blank), "zero-length, empty document"
                raise _Rejected("empty_payload", "message value is empty or blank") from None
            if "depth limit" in msg:
                raise _Rejected("too_deep", f"payload nests deeper than orjson's 1024 levels: {msg}") from None
            raise _Rejected("invalid_json", msg) from None
        if type(obj) is not dict:
            raise _Rejected("not_an_object", f"event must be a JSON object, got {type(obj).__name__}")
        get = obj.get
        keys = len(obj)
        if self._objects:
            for a, b in self._objects:  # the schema's nested objects (see the module doc)
                v = get(a) if b is None else _nested_get(obj, a, b)
                if type(v) is dict:
                    keys += len(v)
        if _colons(raw) != keys:
            dup = duplicate_keys(raw, obj)
            if dup is not None:
                raise _Rejected("duplicate_key", f"key {dup[:64]!r} appears more than once in an object")
        out: list[object] = []
        # Fast path per field: the common valid case costs two or three checks; anything unusual
        # goes to _check_field, which names the exact problem. NaN never passes `lo <= v <= hi`.
        for p in self._plan:
            v = get(p.name) if p.path is None else _nested(obj, p.path, p.name)
            kind = p.kind
            if v is None:
                if p.spec.required:
                    raise _Rejected(f"missing_field:{p.name}", f"required field {p.name!r} is missing")
                out.append(None)
            elif kind == _STRING:
                if type(v) is str and p.min_len <= len(v) <= p.max_len and (p.values is None or v in p.values):
                    out.append(v)
                else:
                    out.append(_check_field(p.name, p.spec, v))
            elif kind == _NUMBER and (type(v) is int or (type(v) is float and v - v == 0.0)) and (
                p.lo <= v <= p.hi
            ):
                out.append(v)  # v - v == 0 is False for inf and NaN
            elif kind == _INTEGER and type(v) is int and p.lo <= v <= p.hi:
                out.append(v)
            elif kind == _BOOLEAN and type(v) is bool:
                out.append(v)
            else:
                out.append(_check_field(p.name, p.spec, v))
        return tuple(out)

    def decode(self, messages: Sequence[KafkaMessage]) -> tuple[EventBatch, list[DeadLetter]]:
        rows: list[tuple[object, ...]] = []
        dead: list[DeadLetter] = []
        bad: set[int] = set()
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        limits, max_payload, max_key = self._limits, self._max_payload, self._max_key
        exact = self._decode_one
        fast = self._fast.decode if self._fast is not None else None
        # Each accessor over the batch in one C loop (map), not three Python calls per message.
        keys: list[bytes | None] = list(map(_KEY, messages))
        for i, (raw, key, hdrs) in enumerate(zip(map(_VALUE, messages), keys, map(_HEADERS, messages))):
            try:
                if raw is None or hdrs is not None or len(raw) > max_payload or (
                        key is not None and len(key) > max_key):
                    raw = limits(raw, key, hdrs)
                # The fast path only accepts; what it does not take, the exact path takes or names.
                rows.append((fast(raw) if fast is not None else None) or exact(raw))
                continue
            except _Rejected as rej:
                reason, detail = rej.reason, rej.detail
            except Exception as exc:  # a decoder bug must not stop the stream either
                reason, detail = "decode_error", repr(exc)
            m = messages[i]
            dead.append(DeadLetter(raw, key, m.topic() or "", m.partition() or 0, m.offset() or 0,
                                   reason, detail, headers_list(hdrs)))
            bad.add(i)
        n = len(rows)
        if n == 0:
            return EventBatch.empty(), dead
        if bad:
            messages = [m for i, m in enumerate(messages) if i not in bad]
            keys = [k for i, k in enumerate(keys) if i not in bad]
        topics: list[str | None] = list(map(_TOPIC, messages))
        parts: list[int | None] = list(map(_PARTITION, messages))
        offs: list[int | None] = list(map(_OFFSET, messages))
        if None in topics or None in parts or None in offs:  # never from a consumer (a produced Message)
            topics, parts, offs = [t or "" for t in topics], [p or 0 for p in parts], [o or 0 for o in offs]
        stamps = [ts if ts_type != 0 and ts > 0 else now_ms  # 0: not available
                  for ts_type, ts in map(_TIMESTAMP, messages)]
        fields: dict[str, npt.NDArray[Any]] = {}
        nulls: dict[str, BoolArray] = {}
        for p, col in zip(self._plan, zip(*rows)):
            fields[p.name], mask = _column(p, col, n)
            if mask is not None:
                nulls[p.name] = mask
        batch = EventBatch(
            fields, nulls,
            key=_obj_array(keys),
            topic=_obj_array(topics),
            partition=np.asarray(parts, dtype=np.int64),
            offset=np.asarray(offs, dtype=np.int64),
            received_ns=np.full(n, now_ns, dtype=np.int64),
            kafka_ts_ms=np.asarray(stamps, dtype=np.int64),
        )
        return batch, dead


_DTYPES = {_NUMBER: np.float64, _INTEGER: np.int64, _BOOLEAN: np.bool_}
_FILL: dict[int, object] = {_INTEGER: 0, _BOOLEAN: False}


def _column(p: _FieldPlan, col: tuple[object, ...], n: int) -> tuple[npt.NDArray[Any], BoolArray | None]:
    """One field's values as a typed column, and its null mask (optional fields only)."""
    if p.kind == _STRING and p.spec.required:
        return _obj_array(col), None
    if p.spec.required:
        return np.asarray(col, dtype=_DTYPES[p.kind]), None
    if UNSET in col:  # optional fields the fast path found absent (decode_fast.py)
        col = tuple([None if v is UNSET else v for v in col])
    mask = np.fromiter((v is None for v in col), dtype=np.bool_, count=n)
    if p.kind == _STRING:
        return _obj_array(col), mask
    dtype = _DTYPES[p.kind]
    if p.kind == _NUMBER:
        return np.asarray(col, dtype=np.float64), mask  # None -> NaN
    fill = _FILL[p.kind]
    return np.asarray([fill if v is None else v for v in col], dtype=dtype), mask


def _obj_array(values: Sequence[object]) -> np.ndarray[Any, np.dtype[np.object_]]:
    # fromiter stores each value as it is (a list value is not broadcast); half the time of a[:] = list.
    return np.fromiter(values, dtype=object, count=len(values))
