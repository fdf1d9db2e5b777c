"""Dead-letter records: the original bytes, where they came from and why, in Kafka headers.

Headers (all UTF-8 strings) after the original message's own headers:
``x-dlq-reason`` (stable code, e.g. ``invalid_json``, ``missing_field:amount``), ``x-dlq-detail``
(human text), ``x-dlq-source-topic``, ``x-dlq-source-partition``, ``x-dlq-source-offset``,
``x-dlq-stage`` (topology id), ``x-dlq-time-ms``. The value and key are the original ones,
unchanged (a null value stays null).

A dead letter always fits: a record that would exceed the producer's ``message.max.bytes``
(the broker accepts up to ~1,048,588 bytes by default, the producer sends up to 1,000,000) is
written truncated instead of failing the produce, which would stop the worker on every restart.
Original headers that take more than a quarter of the room are dropped, a key likewise is cut to
a quarter, the value to what is left; ``x-dlq-truncated`` lists what was cut (``value,key,headers``)
and ``x-dlq-original-{value,key,headers}-bytes`` (+ ``-sha256`` of the value's and key's original
bytes) say what it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from workers.pipeline.decode import DeadLetter, Headers

REASON = "x-dlq-reason"
DETAIL = "x-dlq-detail"
SOURCE_TOPIC = "x-dlq-source-topic"
SOURCE_PARTITION = "x-dlq-source-partition"
SOURCE_OFFSET = "x-dlq-source-offset"
STAGE = "x-dlq-stage"
TIME_MS = "x-dlq-time-ms"
TRUNCATED = "x-dlq-truncated"
ORIGINAL_VALUE_BYTES = "x-dlq-original-value-bytes"
ORIGINAL_VALUE_SHA256 = "x-dlq-original-value-sha256"
ORIGINAL_KEY_BYTES = "x-dlq-original-key-bytes"
ORIGINAL_KEY_SHA256 = "x-dlq-original-key-sha256"
ORIGINAL_HEADERS_BYTES = "x-dlq-original-headers-bytes"

# librdkafka's default producer limit.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
# librdkafka counts the record's framing too (a v2 record: attributes, deltas, varint lengths;
# ~40 bytes); this leaves room for it and for the truncation headers.
RECORD_OVERHEAD_BYTES = 1024
_DETAIL_MAX_CHARS = 1024

OutHeaders = list[tuple[str, str | bytes | None]]  # as confluent-kafka's produce() takes them


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None
    headers: OutHeaders
    size: int  # value + key + headers, as the producer's size check counts them (less framing)


def headers_size(headers: Headers | OutHeaders | None) -> int:
    """Bytes the headers add to a record (names + values + two varint lengths each, at most)."""
    if not headers:
        return 0
    return sum(len(k.encode("utf-8", "surrogateescape")) + len(v or b"") + 10 for k, v in headers)


def max_message_bytes(producer_conf: Mapping[str, object]) -> int:
    v = producer_conf.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)
    return int(v) if isinstance(v, (int, str)) else DEFAULT_MESSAGE_MAX_BYTES


def headers_for(dl: DeadLetter, stage: str) -> OutHeaders:
    """The ``x-dlq-*`` headers of a dead letter."""
    return [
        (REASON, dl.reason.encode()),
        (DETAIL, dl.detail[:_DETAIL_MAX_CHARS].encode("utf-8", "replace")),
        (SOURCE_TOPIC, dl.topic.encode()),
        (SOURCE_PARTITION, str(dl.partition).encode()),
        (SOURCE_OFFSET, str(dl.offset).encode()),
        (STAGE, stage.encode()),
        (TIME_MS, str(time.time_ns() // 1_000_000).encode()),
    ]


def record(dl: DeadLetter, stage: str, max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES) -> Record:
    """The dead-letter record of ``dl``: original value, key and headers, then ours; truncated
    (see the module doc) where the whole would not fit ``max_message_bytes``."""
    ours = headers_for(dl, stage)
    original: OutHeaders = list(dl.headers or [])
    value, key = dl.value, dl.key
    vlen, klen, hlen = len(value or b""), len(key or b""), headers_size(original)
    own = headers_size(ours)
    budget = max_message_bytes - RECORD_OVERHEAD_BYTES - own
    if vlen + klen + hlen <= budget:
        return Record(value, key, original + ours, vlen + klen + hlen + own)
    cut: list[str] = []
    info: OutHeaders = []
    quarter = budget // 4
    headers_cut = hlen > quarter
    if headers_cut:
        original, hlen = [], 0
    key_cut = key is not None and klen > quarter
    if key is not None and key_cut:
        info += [(ORIGINAL_KEY_BYTES, str(klen).encode()),
                 (ORIGINAL_KEY_SHA256, hashlib.sha256(key).hexdigest().encode())]
        key = key[:quarter]
        klen = len(key)
    room = max(budget - klen - hlen, 0)
    if value is not None and vlen > room:
        cut.append("value")
        info = [(ORIGINAL_VALUE_BYTES, str(vlen).encode()),
                (ORIGINAL_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode())] + info
        value = value[:room]
        vlen = len(value)
    if key_cut:
        cut.append("key")
    if headers_cut:
        cut.append("headers")
        info.append((ORIGINAL_HEADERS_BYTES, str(headers_size(dl.headers)).encode()))
    tail = ours + [(TRUNCATED, ",".join(cut).encode())] + info
    return Record(value, key, original + tail, vlen + klen + hlen + headers_size(tail))


def parse_headers(headers: Headers | OutHeaders | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers or []:
        if k.startswith("x-dlq-"):
            out[k] = v if isinstance(v, str) else (v or b"").decode("utf-8", "replace")
    return out
