"""The optional decision audit log: every decision record, written asynchronously in batches.

The scoring thread hands over each batch's decision values (the bytes it produced anyway) with one
``put_nowait`` on a bounded queue (``audit_queue_max_batches``); a background thread writes them,
to a file (JSON lines, appended) or to a Kafka topic with a producer of its own. A full queue drops
the batch and counts its records (``streamscore_audit_records_dropped_total``): the audit trail
never slows scoring. Decisions on the output topic remain the record of truth.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from workers.observe import metrics

log = logging.getLogger(__name__)

_STOP: list[bytes] = []


class AuditLog:
    def __init__(self, stage: str, *, path: Path | None = None, topic: str | None = None,
                 client_config: dict[str, Any] | None = None, max_queued_batches: int = 64) -> None:
        if (path is None) == (topic is None):
            raise ValueError("the audit log needs exactly one of a file path or a topic")
        self._stage = stage
        self._path = path
        self._topic = topic
        self._q: queue.Queue[list[bytes]] = queue.Queue(maxsize=max(1, max_queued_batches))
        self._dropped = metrics.AUDIT_DROPPED.labels(stage)
        self._written = metrics.AUDIT_WRITTEN.labels(stage)
        self.written = 0
        self._producer: Producer | None = None
        if topic is not None:
            self._producer = Producer({**(client_config or {}), "client.id": f"streamscore-{stage}-audit",
                                       "linger.ms": 50, "compression.type": "lz4"}, logger=log)
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
        self._thread = threading.Thread(target=self._loop, name="observe-audit", daemon=True)
        self._thread.start()

    def submit(self, values: Sequence[bytes]) -> None:
        """One batch of decision records; never blocks."""
        try:
            self._q.put_nowait(list(values))
        except queue.Full:
            self._dropped.inc(len(values))

    def _loop(self) -> None:
        while True:
            batch = self._q.get()
            if batch is _STOP:
                return
            try:
                self._write(batch)
            except Exception:
                log.exception("audit log: a batch of %d records could not be written", len(batch))
                self._dropped.inc(len(batch))

    def _write(self, batch: list[bytes]) -> None:
        if self._file is not None:
            self._file.write(b"\n".join(batch) + b"\n")
            self._file.flush()
        else:
            assert self._producer is not None and self._topic is not None
            for v in batch:
                while True:
                    try:
                        self._producer.produce(self._topic, v)
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            self._producer.poll(0)
        self.written += len(batch)
        self._written.inc(len(batch))

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued, then stop, within ``timeout_s``; False if records were left
        unwritten (the writer still busy, or the audit topic's broker not acknowledging them)."""
        deadline = time.monotonic() + timeout_s
        try:
            self._q.put(_STOP, timeout=max(0.0, timeout_s))
        except queue.Full:
            return False  # the writer is stuck; the file stays open for it
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return False
        if self._file is not None:
            self._file.close()
        if self._producer is not None:
            return int(self._producer.flush(max(0.0, deadline - time.monotonic()))) == 0
        return True
