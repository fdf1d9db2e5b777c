"""Columnar batch types passed between stages.

A micro-batch travels as columns (numpy arrays), never as a list of dicts: stages call Python once
per batch. ``EventBatch`` is what decode produces from valid events; ``OnlineFeatures`` is what a
feature reader returns for the same rows, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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


@dataclass(frozen=True)
class EventBatch:
    """Valid transaction events of one micro-batch, as columns. Row i of every column is event i."""

    event_id: ObjArray
    card_id: ObjArray
    merchant_id: ObjArray
    amount: F64Array
    currency: ObjArray
    country: ObjArray
    device_id: ObjArray
    event_time_ms: I64Array
    trace_id: ObjArray  # str or None per row
    # Kafka metadata per row
    key: ObjArray  # bytes or None: the input message key, reused for the decision
    topic: ObjArray
    partition: I64Array
    offset: I64Array
    received_ns: I64Array  # time.time_ns() when the consumer handed the message over
    kafka_ts_ms: I64Array  # the Kafka record timestamp: when the event entered the stream

    def __len__(self) -> int:
        return len(self.amount)

    def take(self, idx: npt.NDArray[np.intp]) -> EventBatch:
        """Rows ``idx`` of this batch, as a new batch (used to split off fallback rows)."""
        return EventBatch(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        if len(batches) == 1:
            return batches[0]
        return EventBatch(
            **{
                k: np.concatenate([getattr(b, k) for b in batches])
                for k in EventBatch.__dataclass_fields__
            }
        )

    @staticmethod
    def empty() -> EventBatch:
        o = np.empty(0, dtype=object)
        i = np.empty(0, dtype=np.int64)
        return EventBatch(
            event_id=o, card_id=o, merchant_id=o, amount=np.empty(0, dtype=np.float64),
            currency=o, country=o, device_id=o, event_time_ms=i, trace_id=o, key=o, topic=o,
            partition=i, offset=i, received_ns=i, kafka_ts_ms=i,
        )


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
    fetch_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.numeric.shape[0])
