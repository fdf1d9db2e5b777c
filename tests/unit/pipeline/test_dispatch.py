"""ScoringStage: inline scoring of small batches while the scorer is idle, order, exactly once,
errors, and the bounded queue (pure logic, no services)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from workers.bench.engine import synthetic_events
from workers.pipeline.dispatch import ScoringStage
from workers.events import EventBatch


def batch(n: int, first: int = 0) -> EventBatch:
    return dataclasses.replace(synthetic_events(n), offset=np.arange(first, first + n, dtype=np.int64))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []  # (first offset, thread name)
        self.gate = threading.Event()
        self.gate.set()

    def score(self, b: EventBatch) -> None:
        self.gate.wait(5)
        self.seen.append((int(b.offset[0]), threading.current_thread().name))


def test_small_batches_are_scored_inline_while_the_scorer_is_idle() -> None:
    rec = Recorder()
    stage = ScoringStage(rec.score, lambda b, e: None, max_inflight=4, inline_max_batch=8)
    stage.start()
    assert stage.submit(batch(8, 0)) and stage.submit(batch(9, 100))
    stage.stop(5)
    here = threading.current_thread().name
    assert rec.seen == [(0, here), (100, "scorer")]
    assert stage.inline_batches == 1


def test_order_is_kept_when_a_batch_is_still_being_scored() -> None:
    rec = Recorder()
    rec.gate.clear()  # the scorer holds the first batch
    stage = ScoringStage(rec.score, lambda b, e: None, max_inflight=4, inline_max_batch=64)
    stage.start()
    assert stage.idle()
    assert stage.submit(batch(100, 0))  # too big for inline: queued
    assert not stage.idle()  # the consumer's batcher keeps waiting for a fuller batch
    assert stage.submit(batch(1, 1000))  # small, but a batch is in flight: queued behind it
    rec.gate.set()
    stage.join()
    assert stage.idle()
    assert [o for o, _ in rec.seen] == [0, 1000]
    assert all(t == "scorer" for _, t in rec.seen) and stage.inline_batches == 0
    assert stage.submit(batch(1, 2000))  # idle again: inline
    assert rec.seen[-1] == (2000, threading.current_thread().name)
    stage.stop(5)


def test_every_batch_exactly_once_from_a_busy_source() -> None:
    rec = Recorder()
    stage = ScoringStage(rec.score, lambda b, e: None, max_inflight=2, inline_max_batch=16)
    stage.start()
    rng = np.random.default_rng(0)
    first = 0
    sent = []
    for _ in range(500):
        n = int(rng.integers(1, 40))
        while not stage.submit(batch(n, first), timeout=0.01):
            pass
        sent.append(first)
        first += n
    stage.stop(10)
    assert [o for o, _ in rec.seen] == sent  # each once, in order, whichever thread scored it


def test_full_queue_refuses_then_drained_wakes_the_source() -> None:
    rec = Recorder()
    rec.gate.clear()
    stage = ScoringStage(rec.score, lambda b, e: None, max_inflight=2, inline_max_batch=0)
    stage.start()
    assert stage.submit(batch(1, 0))  # taken by the scorer, which blocks on the gate
    for _ in range(1000):
        if stage.qsize() == 0:
            break
        threading.Event().wait(0.01)
    assert stage.qsize() == 0, "the scorer never took the first batch"
    assert stage.submit(batch(1, 1), timeout=5) and stage.submit(batch(1, 2), timeout=5)
    assert not stage.submit(batch(1, 3), timeout=0)  # bounded: the caller must pause
    stage.drained.clear()
    rec.gate.set()
    assert stage.drained.wait(5)
    stage.stop(5)
    assert [o for o, _ in rec.seen] == [0, 1, 2]


def test_errors_become_fallbacks_and_double_failures_are_reported() -> None:
    handled: list[tuple[int, str]] = []

    def boom(b: EventBatch) -> None:
        raise ValueError("engine on fire")

    def fallback(b: EventBatch, exc: Exception) -> None:
        handled.append((len(b), str(exc)))
        if len(b) == 3:
            raise RuntimeError("sink gone too")

    stage = ScoringStage(boom, fallback, max_inflight=2, inline_max_batch=4)
    stage.start()
    assert stage.submit(batch(2)) and stage.submit(batch(50)) and stage.submit(batch(3))
    stage.stop(5)
    assert sorted(handled) == [(2, "engine on fire"), (3, "engine on fire"), (50, "engine on fire")]
    assert len(stage.failed) == 1 and "sink gone too" in stage.failed[0]
