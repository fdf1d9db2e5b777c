"""Decode stage: raw Kafka messages -> validated ``EventBatch`` columns + dead letters.

Bad input is data, not an exception: every message that cannot become an event becomes a
``DeadLetter`` carrying the original bytes, where it came from and a machine-readable reason. The
worker never stops on bad input. Python runs once per message here (one ``orjson.loads`` each);
everything after this stage is per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from workers.events import EventBatch
from workers.topology import EventSchema, FieldSpec


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` decode uses (fakes in unit tests satisfy it)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def error(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


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


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _check_field(name: str, spec: FieldSpec, v: object) -> object:
    if spec.type == "string":
        if not isinstance(v, str):
            raise _Rejected(f"wrong_type:{name}", f"{name} must be a string, got {type(v).__name__}")
        if not v:
            raise _Rejected(f"empty:{name}", f"{name} must not be empty")
        if spec.max_length is not None and len(v) > spec.max_length:
            raise _Rejected(f"too_long:{name}", f"{name} longer than {spec.max_length} characters")
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
    if spec.type == "integer" and not (-(2**63) <= int(v) < 2**63):
        raise _Rejected(f"out_of_range:{name}", f"{name}={v!r} does not fit in 64 bits")
    return v


class Decoder:
    """Turns a list of messages into (EventBatch, dead letters), validating against the schema."""

    def __init__(self, schema: EventSchema, max_payload_bytes: int) -> None:
        self._fields = list(schema.fields.items())
        self._names = [n for n, _ in self._fields]
        inf = float("inf")
        # (name, spec, kind 0=string 1=number 2=integer, max_length, min, max); NaN never passes
        # `lo <= v <= hi`, so non-finite values fall through to the slow path and are rejected.
        self._plan = [
            (
                n, f, {"string": 0, "number": 1, "integer": 2}[f.type],
                f.max_length if f.max_length is not None else 1 << 62,
                max(f.min, -(2**63)) if f.type == "integer" and f.min is not None
                else (-(2**63) if f.type == "integer" else (f.min if f.min is not None else -inf)),
                min(f.max, 2**63 - 1) if f.type == "integer" and f.max is not None
                else (2**63 - 1 if f.type == "integer" else (f.max if f.max is not None else inf)),
            )
            for n, f in self._fields
        ]
        self._max_payload = max_payload_bytes

    def _decode_one(self, raw: bytes | None) -> tuple[object, ...]:
        if raw is None:
            raise _Rejected("empty_payload", "message has no value (tombstone?)")
        if len(raw) > self._max_payload:
            raise _Rejected(
                "oversize", f"payload is {len(raw)} bytes, limit is {self._max_payload} "
                "(input.max_payload_bytes)"
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = str(exc)
            if "UTF-8" in msg:
                raise _Rejected("invalid_encoding", f"payload is not UTF-8: {msg}") from None
            raise _Rejected("invalid_json", msg) from None
        if not isinstance(obj, dict):
            raise _Rejected("not_an_object", f"event must be a JSON object, got {type(obj).__name__}")
        out: list[object] = []
        get = obj.get
        # Fast path per field: the common valid case costs two or three checks; anything unusual
        # goes to _check_field, which names the exact problem.
        for name, spec, kind, max_len, lo, hi in self._plan:
            v = get(name)
            if v is None:
                if spec.required:
                    raise _Rejected(f"missing_field:{name}", f"required field {name!r} is missing")
                out.append(None)
            elif kind == 0:
                if type(v) is str and 0 < len(v) <= max_len:
                    out.append(v)
                else:
                    out.append(_check_field(name, spec, v))
            elif kind == 1 and (type(v) is int or (type(v) is float and v - v == 0.0)) and (
                lo <= v <= hi
            ):
                out.append(v)  # v - v == 0 is False for inf and NaN
            elif kind == 2 and type(v) is int and lo <= v <= hi:
                out.append(v)
            else:
                out.append(_check_field(name, spec, v))
        return tuple(out)

    def decode(self, messages: Sequence[KafkaMessage]) -> tuple[EventBatch, list[DeadLetter]]:
        rows: list[tuple[object, ...]] = []
        keys: list[bytes | None] = []
        topics: list[str] = []
        parts: list[int] = []
        offs: list[int] = []
        stamps: list[int] = []
        dead: list[DeadLetter] = []
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        for m in messages:
            topic, part, off = m.topic() or "", m.partition() or 0, m.offset() or 0
            try:
                row = self._decode_one(m.value())
            except _Rejected as rej:
                dead.append(DeadLetter(m.value(), m.key(), topic, part, off, rej.reason, rej.detail))
                continue
            except Exception as exc:  # a decoder bug must not stop the stream either
                dead.append(DeadLetter(m.value(), m.key(), topic, part, off, "decode_error", repr(exc)))
                continue
            rows.append(row)
            keys.append(m.key())
            topics.append(topic)
            parts.append(part)
            offs.append(off)
            ts_type, ts = m.timestamp()
            stamps.append(ts if ts_type != 0 and ts > 0 else now_ms)  # 0: not available
        n = len(rows)
        if n == 0:
            return EventBatch.empty(), dead
        cols = list(zip(*rows))
        by_name = dict(zip(self._names, cols))

        def obj(name: str) -> np.ndarray[Any, np.dtype[np.object_]]:
            a = np.empty(n, dtype=object)
            a[:] = by_name.get(name, (None,) * n)
            return a

        batch = EventBatch(
            event_id=obj("event_id"),
            card_id=obj("card_id"),
            merchant_id=obj("merchant_id"),
            amount=np.asarray(by_name["amount"], dtype=np.float64),
            currency=obj("currency"),
            country=obj("country"),
            device_id=obj("device_id"),
            event_time_ms=np.asarray(by_name["event_time_ms"], dtype=np.int64),
            trace_id=obj("trace_id"),
            key=_obj_array(keys),
            topic=_obj_array(topics),
            partition=np.asarray(parts, dtype=np.int64),
            offset=np.asarray(offs, dtype=np.int64),
            received_ns=np.full(n, now_ns, dtype=np.int64),
            kafka_ts_ms=np.asarray(stamps, dtype=np.int64),
        )
        return batch, dead


def _obj_array(values: Sequence[object]) -> np.ndarray[Any, np.dtype[np.object_]]:
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a
