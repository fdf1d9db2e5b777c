"""At-least-once offset tracking.

Every consumed message is registered in consume order; it is *done* once everything it produced
(a decision or a dead letter) was acknowledged by the broker. The committable offset of a partition
is one past the longest done prefix, so a crash never commits past an unacknowledged message.
Thread-safe: delivery callbacks may run on the scoring thread or the consumer thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], deque[int]] = {}
        self._done: dict[tuple[str, int], set[int]] = {}
        self._next_commit: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self.failed: list[str] = []

    def register(self, tp: tuple[str, int], offsets: Iterable[int]) -> None:
        with self._lock:
            self._pending.setdefault(tp, deque()).extend(offsets)
            self._done.setdefault(tp, set())

    def mark_done(self, tp: tuple[str, int], offset: int) -> None:
        with self._lock:
            done = self._done.get(tp)
            if done is not None:  # None: partition was revoked meanwhile; nothing to commit
                done.add(offset)

    def mark_done_rows(self, topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int],
                       rows: Iterable[int]) -> None:
        """``mark_done`` for the messages at ``rows`` of the three parallel columns, locked once."""
        with self._lock:
            done_of = self._done.get
            last: tuple[str, int] | None = None
            done: set[int] | None = None
            for i in rows:
                tp = (topics[i], partitions[i])
                if tp != last:
                    last, done = tp, done_of(tp)
                if done is not None:  # None: partition was revoked meanwhile; nothing to commit
                    done.add(offsets[i])

    def mark_failed(self, reason: str) -> None:
        with self._lock:
            self.failed.append(reason)

    def committable(self) -> dict[tuple[str, int], int]:
        """Offsets (next to read) that advanced since the last call to ``mark_committed``."""
        out: dict[tuple[str, int], int] = {}
        with self._lock:
            for tp, q in self._pending.items():
                done = self._done[tp]
                last = None
                while q and q[0] in done:
                    last = q.popleft()
                    done.discard(last)
                if last is not None:
                    self._next_commit[tp] = last + 1
                nxt = self._next_commit.get(tp)
                if nxt is not None and nxt != self._committed.get(tp):
                    out[tp] = nxt
        return out

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        with self._lock:
            self._committed.update(offsets)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._pending.values())

    def forget(self, tps: Iterable[tuple[str, int]]) -> None:
        """Drop partitions that were revoked; their uncommitted messages are redelivered."""
        with self._lock:
            for tp in tps:
                self._pending.pop(tp, None)
                self._done.pop(tp, None)
                self._next_commit.pop(tp, None)
                self._committed.pop(tp, None)
