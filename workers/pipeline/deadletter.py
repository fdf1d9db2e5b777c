"""Dead-letter records: the original bytes, where they came from and why, in Kafka headers.

Headers (all UTF-8 strings):
``x-dlq-reason`` (stable code, e.g. ``invalid_json``, ``missing_field:amount``), ``x-dlq-detail``
(human text), ``x-dlq-source-topic``, ``x-dlq-source-partition``, ``x-dlq-source-offset``,
``x-dlq-stage`` (topology id), ``x-dlq-time-ms``. The value is the original payload, unchanged;
the key is the original key.
"""

from __future__ import annotations

import time

from workers.pipeline.decode import DeadLetter

REASON = "x-dlq-reason"
DETAIL = "x-dlq-detail"
SOURCE_TOPIC = "x-dlq-source-topic"
SOURCE_PARTITION = "x-dlq-source-partition"
SOURCE_OFFSET = "x-dlq-source-offset"
STAGE = "x-dlq-stage"
TIME_MS = "x-dlq-time-ms"


def headers_for(dl: DeadLetter, stage: str) -> list[tuple[str, str | bytes | None]]:
    return [
        (REASON, dl.reason.encode()),
        (DETAIL, dl.detail[:1024].encode("utf-8", "replace")),
        (SOURCE_TOPIC, dl.topic.encode()),
        (SOURCE_PARTITION, str(dl.partition).encode()),
        (SOURCE_OFFSET, str(dl.offset).encode()),
        (STAGE, stage.encode()),
        (TIME_MS, str(time.time_ns() // 1_000_000).encode()),
    ]


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (headers or []) if k.startswith("x-dlq-")}
