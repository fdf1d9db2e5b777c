"""Logging off the hot path: records go through a bounded queue to a background thread.

When the queue is full a record is dropped and counted (``dropped_records``) rather than blocking
the consumer or scoring thread.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

dropped_records = 0


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    def enqueue(self, record: logging.LogRecord) -> None:
        global dropped_records
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            dropped_records += 1


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str = "WARNING", max_queued_records: int = 10_000) -> None:
    global _listener
    if _listener is not None:
        return
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=max_queued_records)
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [_DroppingQueueHandler(q)]
    root.setLevel(level.upper())
    _listener = logging.handlers.QueueListener(q, out)
    _listener.start()
    atexit.register(_listener.stop)
