"""The hand-off between the consumer thread and scoring: a bounded queue, one scoring thread, and
inline scoring of small batches when the scorer is idle.

Handing a batch to another thread costs ~15-20 µs (queue lock, condition wake-up, the GIL moving
between threads). For a large batch that buys overlap: the consumer assembles the next batch while
the engine runs. For a small one it costs more than scoring it (a 26-feature MLP scores one row in
~7 µs): so a batch of at most ``inline_max_batch`` rows, submitted while nothing is queued or being
scored, is scored right away on the submitting thread. Order is kept: a batch is scored inline only
when every earlier batch is done. One lock makes scoring single-threaded, so the feature reader,
engine and decider (not thread-safe) are never used by two threads at once.

Every batch is scored exactly once. An exception that escapes ``score`` is handed to ``on_error``
with the batch (the worker emits fallback decisions for it); if that raises too, the batch is
recorded in ``failed`` and the caller must stop (its offsets will never be acknowledged).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from workers.events import EventBatch

log = logging.getLogger(__name__)

_STOP = object()


class ScoringStage:
    def __init__(
        self,
        score: Callable[[EventBatch], None],
        on_error: Callable[[EventBatch, Exception], None],
        *,
        max_inflight: int,
        inline_max_batch: int = 0,
        low_water: int | None = None,
        name: str = "scorer",
    ) -> None:
        self._score = score
        self._on_error = on_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, max_inflight))
        self.inline_max_batch = inline_max_batch
        self._low = max(1, max_inflight) // 2 if low_water is None else low_water
        self._lock = threading.Lock()  # held while a batch is scored, on either thread
        # Written by one thread each (no lock needed): submitted - completed = queued or scoring.
        self._submitted = 0
        self._completed = 0
        self.inline_batches = 0
        self.failed: list[str] = []
        # Set when the queue is down to the low-water mark: a paused consumer resumes at once.
        self.drained = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def qsize(self) -> int:
        return self._queue.qsize()

    def idle(self) -> bool:
        """Nothing queued or being scored on the scoring thread (read from the consumer thread: a
        stale answer only moves one flush by a loop turn)."""
        return self._submitted == self._completed

    def submit(self, batch: EventBatch, timeout: float | None = None) -> bool:
        """Score ``batch`` inline (small, scorer idle) or queue it; False if the queue stayed full
        for ``timeout`` seconds (the caller pauses its input and tries again)."""
        if len(batch) <= self.inline_max_batch and self._lock.acquire(False):
            try:
                if self._submitted == self._completed:
                    self.inline_batches += 1
                    self._run(batch)
                    return True
            finally:
                self._lock.release()
        self._submitted += 1
        try:
            self._queue.put(batch, timeout=timeout)
        except queue.Full:
            self._submitted -= 1
            return False
        return True

    def join(self) -> None:
        """Until every submitted batch has been scored."""
        self._queue.join()

    def stop(self, timeout: float | None = None) -> bool:
        """Score what is queued, then end the scoring thread; False if it did not end in time."""
        try:
            self._queue.put(_STOP, timeout=timeout)  # a full queue with a stuck scorer: give up
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self, batch: EventBatch) -> None:
        try:
            self._score(batch)
        except Exception as exc:  # never silence: the caller emits fallbacks for the batch
            try:
                self._on_error(batch, exc)
            except Exception as again:
                log.exception("a batch of %d could not even get fallback decisions", len(batch))
                self.failed.append(f"a batch of {len(batch)} could not be scored or given fallbacks: "
                                   f"{type(exc).__name__}: {exc}; then {type(again).__name__}: {again}")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, EventBatch)
                with self._lock:
                    self._run(item)
                    self._completed += 1
            finally:
                self._queue.task_done()
                if self._queue.qsize() <= self._low:
                    self.drained.set()
