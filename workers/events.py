"""Columnar batch types passed between stages.

A micro-batch travels as columns (numpy arrays), never as a list of dicts: stages call Python once
per batch. ``EventBatch`` is what decode produces from valid events; ``OnlineFeatures`` is what a
feature reader returns for the same rows, in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.schema import KAFKA_KEY, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TIMESTAMP_MS, KAFKA_TOPIC

ObjArray = npt.NDArray[np.object_]
F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SourceRef:
    """Where an event came from: enough to commit its offset and to dead-letter it."""

    topic: str
    partition: int
    offset: int


_META = ("key", "topic", "partition", "offset", "received_ns", "kafka_ts_ms")


@dataclass(frozen=True)
class EventBatch:
    """Valid events of one micro-batch, as columns. Row i of every column is event i.

    ``fields`` holds one column per schema field, by its path (``amount``, ``device.id``):
    strings as object arrays (None where null), numbers as float64 (NaN where null), integers as
    int64 and booleans as bool (0 / False where null). ``nulls`` marks, for optional fields only,
    the rows where the field was absent or null. The Kafka metadata is kept beside them and is
    also readable by name through ``column`` (``_kafka.key``, ``_kafka.timestamp_ms``, ...).
    """

    fields: Mapping[str, npt.NDArray[Any]]
    nulls: Mapping[str, BoolArray]
    key: ObjArray  # bytes or None: the input message key
    topic: ObjArray
    partition: I64Array
    offset: I64Array
    received_ns: I64Array  # time.time_ns() when the consumer handed the message over
    kafka_ts_ms: I64Array  # the Kafka record timestamp: when the event entered the stream

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def column(self, name: str) -> npt.NDArray[Any]:
        """A field by path, or a Kafka metadata column (``_kafka.key`` as str, decoded)."""
        col = self.fields.get(name)
        if col is not None:
            return col
        if name == KAFKA_KEY:
            return _keys_as_str(self.key)
        if name == KAFKA_TOPIC:
            return self.topic
        if name == KAFKA_PARTITION:
            return self.partition
        if name == KAFKA_OFFSET:
            return self.offset
        if name == KAFKA_TIMESTAMP_MS:
            return self.kafka_ts_ms
        raise KeyError(f"the batch has no column {name!r}; fields: {sorted(self.fields)}")

    def null_mask(self, name: str) -> BoolArray | None:
        """Rows where ``name`` is null (None: the column has no nulls)."""
        return self.nulls.get(name)

    def take(self, idx: npt.NDArray[np.intp]) -> EventBatch:
        """Rows ``idx`` of this batch, as a new batch (used to split off fallback rows)."""
        return EventBatch(
            {k: v[idx] for k, v in self.fields.items()}, {k: v[idx] for k, v in self.nulls.items()},
            *(getattr(self, k)[idx] for k in _META),
        )

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return EventBatch(
            {k: np.concatenate([b.fields[k] for b in batches]) for k in first.fields},
            {k: np.concatenate([b.nulls[k] for b in batches]) for k in first.nulls},
            *(np.concatenate([getattr(b, k) for b in batches]) for k in _META),
        )

    @staticmethod
    def empty() -> EventBatch:
        o = np.empty(0, dtype=object)
        i = np.empty(0, dtype=np.int64)
        return EventBatch({}, {}, o, o, i, i, i, i)


def _keys_as_str(keys: ObjArray) -> ObjArray:
    out = np.empty(keys.shape[0], dtype=object)
    out[:] = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in keys.tolist()]
    return out


@dataclass(frozen=True)
class OnlineFeatures:
    """Online features for the rows of one batch, as returned by a feature reader.

    ``numeric`` holds the manifest's ``online_numeric`` features, in that order, as float32, with
    documented defaults already filled in where an entity was missing. ``strings`` holds string
    features (e.g. a card's home country) as object arrays, defaults filled likewise.
    """

    numeric: F32Array  # [n, len(online_numeric)]
    strings: dict[str, ObjArray]
    missing: dict[str, BoolArray]  # feature view name -> row had no value in the online store
    stale: dict[str, BoolArray]  # feature view name -> value older than the view's TTL
    degraded: bool = False  # the store could not be read at all: every row got defaults
    unavailable: str | None = None  # why, when degraded (workers/features/health.py CAUSES)
    fetch_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.numeric.shape[0])
