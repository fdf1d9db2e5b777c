"""Cross-key micro-batching of the whole consumed stream.

A batch is flushed when it holds ``max_batch`` events or when its oldest event has waited
``max_wait_ms``, whichever comes first — or at once when the caller says the scorer is idle
(``flush=True``: natural batching, so waiting buys nothing when nothing else is being scored; under
load the scorer is busy and batches fill up). Pieces arrive as ``EventBatch`` column chunks (one per
``consume`` call) and are concatenated once per flush, not per event.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from workers.events import EventBatch


class MicroBatcher:
    def __init__(self, max_batch: int, max_wait_ms: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait_ns = max_wait_ms * 1_000_000
        self._pieces: list[EventBatch] = []
        self._size = 0
        self._oldest_ns: int | None = None

    def __len__(self) -> int:
        return self._size

    def room(self) -> int:
        """How many events the next consume call should ask for."""
        return max(1, self.max_batch - self._size)

    def offer(self, batch: EventBatch, now_ns: int, flush: bool = False) -> EventBatch | None:
        """``add`` + ``ready`` in one call: a whole batch arriving at an empty batcher (or any
        batch with ``flush``) passes straight through; otherwise the next ready batch, if any
        (call ``ready`` for more)."""
        n = len(batch)
        if self._size == 0 and 0 < n <= self.max_batch and (flush or n == self.max_batch):
            return batch
        self.add(batch, now_ns)
        return self.ready(now_ns, flush)

    def add(self, batch: EventBatch, now_ns: int) -> None:
        if len(batch) == 0:
            return
        if self._oldest_ns is None:
            self._oldest_ns = now_ns
        self._pieces.append(batch)
        self._size += len(batch)

    def time_left_s(self, now_ns: int) -> float:
        """Seconds until the current batch must flush (max_wait if empty)."""
        if self._oldest_ns is None:
            return self.max_wait_ns / 1e9
        return max(0.0, (self._oldest_ns + self.max_wait_ns - now_ns) / 1e9)

    def ready(self, now_ns: int, flush: bool = False) -> EventBatch | None:
        """The next batch if full or timed out (or anything pending, with ``flush``), else None.
        Call until it returns None."""
        size = self._size
        if size == 0:
            return None
        if size == self.max_batch and len(self._pieces) == 1:  # the common full batch: as it came
            whole = self._pieces[0]
            self._pieces, self._size, self._oldest_ns = [], 0, None
            return whole
        if size < self.max_batch and not flush and self.time_left_s(now_ns) > 0:
            return None
        return self._take(now_ns)

    def drain(self, now_ns: int) -> list[EventBatch]:
        """Everything pending, in batches of at most max_batch (used at shutdown)."""
        out = []
        while self._size:
            out.append(self._take(now_ns))
        return out

    def _take(self, now_ns: int) -> EventBatch:
        whole = EventBatch.concat(self._pieces)
        if len(whole) <= self.max_batch:
            self._pieces, self._size, self._oldest_ns = [], 0, None
            return whole
        head = whole.take(np.arange(self.max_batch))
        rest = whole.take(np.arange(self.max_batch, len(whole)))
        self._pieces, self._size = [rest], len(rest)
        # The remainder has waited since the original oldest event: it may flush right away.
        return head


def expired(stream_ts_ms: npt.NDArray[np.int64], deadline_ms: int, now_ms: int) -> npt.NDArray[np.bool_]:
    """Rows whose deadline (record timestamp + ``deadline_ms``) has passed; none when 0 (off).

    Such rows are not scored: they get a fallback decision at once (load shedding under overload).
    """
    if deadline_ms <= 0:
        return np.zeros(stream_ts_ms.shape[0], dtype=np.bool_)
    return np.asarray(stream_ts_ms + deadline_ms < now_ms, dtype=np.bool_)


class Backpressure:
    """When to pause and resume the input, from the scoring queue's depth.

    Pause at ``max_inflight`` queued batches; resume only once the queue is down to half, so a
    slow engine causes a few long pauses rather than a pause/resume per batch.
    """

    def __init__(self, max_inflight: int) -> None:
        self.high = max(1, max_inflight)
        self.low = self.high // 2
        self.paused = False
        self.pauses = 0

    def update(self, queued: int) -> bool:
        """Feed the current depth; returns whether input should be paused now."""
        if not self.paused and queued >= self.high:
            self.paused = True
            self.pauses += 1
        elif self.paused and queued <= self.low:
            self.paused = False
        return self.paused
