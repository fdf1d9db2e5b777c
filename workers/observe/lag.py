"""Consumer lag per assigned partition, read by a background thread from the broker.

Lag is the partition's high watermark minus the group's committed offset (what a restart would
redeliver from), the figure operators scale consumer groups by. It is read with a client of its
own (same group id, never subscribed, so it never joins the group): the worker's consumer is not
touched, and the figure keeps rising while the worker's partitions are paused or its loop is
stuck, which is when it matters. A successful read also tells readiness that the broker answers.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from workers.observe import metrics

log = logging.getLogger(__name__)


class LagMonitor:
    def __init__(self, client_config: dict[str, Any], group: str, stage: str,
                 assignment: Callable[[], list[tuple[str, int]]], timeout_s: float = 5.0) -> None:
        self._consumer = Consumer({**client_config, "group.id": group, "enable.auto.commit": False,
                                   "client.id": f"streamscore-{stage}-lag"}, logger=log)
        self._stage = stage
        self._assignment = assignment
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._lag: dict[tuple[str, int], int] = {}
        self.broker_ok: bool | None = None
        self._interrupted = threading.Event()  # a stop: no further broker call in this read

    def refresh(self) -> bool:
        """Read lag of the current assignment into the gauges; False if the broker did not answer."""
        tps = self._assignment()
        try:
            if not tps:
                self._consumer.list_topics(timeout=self._timeout_s)  # still tells if the broker answers
                self._set({})
                self.broker_ok = True
                return True
            committed = self._consumer.committed([TopicPartition(t, p) for t, p in tps],
                                                 timeout=self._timeout_s)
            lag: dict[tuple[str, int], int] = {}
            for tp in committed:
                if self._interrupted.is_set():
                    return False  # each call may wait out its timeout on an unreachable broker
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=self._timeout_s, cached=False)
                start = tp.offset if tp.offset >= 0 else low  # nothing committed: from the start
                lag[(tp.topic, tp.partition)] = max(0, high - start)
        except KafkaException as exc:
            log.debug("lag read failed: %s", exc)
            self.broker_ok = False
            return False
        self._set(lag)
        self.broker_ok = True
        return True

    def _set(self, lag: dict[tuple[str, int], int]) -> None:
        with self._lock:
            gone = set(self._lag) - set(lag)
            self._lag = lag
        for t, p in gone:  # a revoked partition is another worker's to report
            with warnings.catch_warnings():
                # Feast's import sets PROMETHEUS_MULTIPROC_DIR; our metrics are in-process all the same.
                warnings.simplefilter("ignore", UserWarning)
                try:
                    metrics.LAG.remove(self._stage, t, str(p))
                except KeyError:
                    pass
        for (t, p), v in lag.items():
            metrics.LAG.labels(self._stage, t, str(p)).set(v)

    def total(self) -> int | None:
        """Sum over the assigned partitions at the last read (None: not read yet)."""
        with self._lock:
            return sum(self._lag.values()) if self._lag or self.broker_ok else None

    def interrupt(self) -> None:
        """A read in progress makes no further broker call (does not wait)."""
        self._interrupted.set()

    def close(self) -> None:
        self._consumer.close()
        self._set({})
