"""Reading a system's topics back after it stopped, and what the bench computes from them.

Latency is the output record's broker append time minus its input event's broker append time,
both stamped by the same broker (``LogAppendTime``, millisecond resolution) and read back by a
consumer after the system stopped: nothing inside a system is trusted to time itself, and reading
afterwards costs the systems nothing. A decision names its input (``source.partition`` /
``source.offset``); a pass-through record is its input's bytes, matched to the latest input with
the same bytes appended before it (the pool repeats, seconds apart).
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from workers.bench.load import BenchError
from workers.settings import Settings

# Fields of a decision that record when and how fast, not what was decided: left out of equality.
_NOT_DECIDED = ("timings_ms", "in_worker", "decided_at_ms")
_TEXT_KEPT = 200  # per partition: decisions kept as text for the examples of a difference


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    ts_ms: int
    value: bytes


def _consumer(settings: Settings) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False})


def watermarks(settings: Settings, topic: str, consumer: Consumer | None = None) -> dict[int, int]:
    """High watermark (next offset) per partition."""
    c = consumer or _consumer(settings)
    try:
        md = c.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    except KafkaException as exc:
        raise BenchError(f"reading offsets of {topic} failed ({exc}); is the broker up? "
                         "(`streamscore dev status`)") from None
    finally:
        if consumer is None:
            c.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 120.0) -> list[Record]:
    """Every record of ``topic`` up to its current high watermarks."""
    import time

    c = _consumer(settings)
    try:
        ends = watermarks(settings, topic, c)
        want = sum(ends.values())
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for m in c.consume(num_messages=10_000, timeout=0.5):
                if m.error() is None and (m.offset() or 0) < ends[m.partition() or 0]:
                    out.append(Record(m.partition() or 0, m.offset() or 0, m.timestamp()[1], m.value() or b""))
        if len(out) < want:
            raise BenchError(f"read {len(out)} of {want} records of {topic} in {timeout_s:.0f} s")
        return out
    finally:
        c.close()


@dataclass(frozen=True)
class Phase:
    """Input records ``[start, end)`` per partition that one phase of the bench produced."""

    name: str
    start: Mapping[int, int]
    end: Mapping[int, int]

    @property
    def count(self) -> int:
        return sum(self.end[p] - self.start.get(p, 0) for p in self.end)


class InputIndex:
    """Append time of every input record by (partition, offset), and which phase it belongs to."""

    def __init__(self, records: Iterable[Record], phases: list[Phase]) -> None:
        self.ts: dict[int, npt.NDArray[np.int64]] = {}
        by_p: dict[int, list[tuple[int, int]]] = {}
        self._by_value: dict[bytes, list[tuple[int, int, int]]] = {}
        self._records = list(records)
        for r in self._records:
            by_p.setdefault(r.partition, []).append((r.offset, r.ts_ms))
        for p, rows in by_p.items():
            rows.sort()
            arr = np.zeros(rows[-1][0] + 1, dtype=np.int64)
            for o, t in rows:
                arr[o] = t
            self.ts[p] = arr
        self.phases = phases
        # Per partition: sorted phase start offsets, to find a record's phase with one bisect.
        self._starts = {p: [ph.start.get(p, 0) for ph in phases] for p in self.ts}

    def phase_of(self, partition: int, offset: int) -> int | None:
        starts = self._starts.get(partition)
        if starts is None:
            return None
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0 or offset >= self.phases[i].end.get(partition, 0):
            return None
        return i

    def by_value(self) -> dict[bytes, list[tuple[int, int, int]]]:
        """Input bytes -> [(append ms, partition, offset)] in append order (for pass-through)."""
        if not self._by_value:
            for r in sorted(self._records, key=lambda r: r.ts_ms):
                self._by_value.setdefault(r.value, []).append((r.ts_ms, r.partition, r.offset))
        return self._by_value


@dataclass
class PhaseResult:
    latencies_ms: list[float] = field(default_factory=list)
    out_ts_ms: list[int] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    duplicates: int = 0
    degraded: int = 0
    fallbacks: int = 0
    # Per-event stage times of decisions (ms): from the fields each decision record carries.
    stages: dict[str, list[float]] = field(default_factory=dict)
    # Max phase only: a digest of each normalized decision by input position, and the full text
    # of the first few per partition (for the examples of a difference).
    decided: dict[tuple[int, int], bytes] = field(default_factory=dict)
    decided_text: dict[tuple[int, int], bytes] = field(default_factory=dict)


def normalized(rec: dict[str, Any]) -> bytes:
    """A decision without its timing fields and its topic names: equal for equal decisions."""
    d = {k: v for k, v in rec.items() if k not in _NOT_DECIDED}
    src = dict(d.get("source") or {})
    src.pop("topic", None)
    src.pop("timestamp_ms", None)  # the input's append time differs per system's topic
    d["source"] = src
    return orjson.dumps(d, option=orjson.OPT_SORT_KEYS)


def _stage(res: PhaseResult, name: str, v: float) -> None:
    res.stages.setdefault(name, []).append(v)


def analyse(index: InputIndex, outputs: Iterable[Record], *, decisions: bool,
            keep_decisions_of: int | None = 0) -> list[PhaseResult]:
    """Per phase: latencies, duplicates, degraded/fallback counts, stage times, and (for phase
    ``keep_decisions_of``) the normalized decisions by input position."""
    results = [PhaseResult() for _ in index.phases]
    by_value = None if decisions else index.by_value()
    for r in outputs:
        if decisions:
            rec = orjson.loads(r.value)
            src = rec["source"]
            p, o = int(src["partition"]), int(src["offset"])
            arr = index.ts.get(p)
            if arr is None or o >= arr.shape[0]:
                continue
            in_ts = int(arr[o])
        else:
            cands = by_value.get(r.value) if by_value is not None else None
            if not cands:
                continue
            i = bisect.bisect_right(cands, (r.ts_ms, 1 << 62, 1 << 62)) - 1
            if i < 0:
                continue
            in_ts, p, o = cands[i]
            rec = {}
        ph = index.phase_of(p, o)
        if ph is None:
            continue
        res = results[ph]
        if (p, o) in res.seen:
            res.duplicates += 1
            continue
        res.seen.add((p, o))
        res.latencies_ms.append(float(r.ts_ms - in_ts))
        res.out_ts_ms.append(r.ts_ms)
        if decisions:
            flags = rec.get("flags") or []
            if "degraded" in flags:
                res.degraded += 1
            if any(isinstance(f, str) and f.startswith("fallback:") for f in flags):
                res.fallbacks += 1
            tm = rec.get("timings_ms") or {}
            decided_at, in_worker = rec.get("decided_at_ms"), tm.get("in_worker")
            if isinstance(decided_at, int) and isinstance(in_worker, (int, float)):
                _stage(res, "broker_to_worker", decided_at - in_ts - in_worker)
                work = sum(float(tm.get(k, 0.0)) for k in ("features", "assemble", "inference"))
                _stage(res, "batch_wait_and_queue", max(0.0, in_worker - work))
                for k in ("features", "assemble", "inference"):
                    if k in tm:
                        _stage(res, k, float(tm[k]))
                _stage(res, "produce_to_append", r.ts_ms - decided_at)
            if keep_decisions_of is not None and ph == keep_decisions_of:
                norm = normalized(rec)
                res.decided[(p, o)] = hashlib.blake2b(norm, digest_size=12).digest()
                if o < _TEXT_KEPT:
                    res.decided_text[(p, o)] = norm
    return results


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [50, 95, 99, 99.9])
    return {"p50": round(float(q[0]), 2), "p95": round(float(q[1]), 2), "p99": round(float(q[2]), 2),
            "p999": round(float(q[3]), 2)}


def compare(ours: PhaseResult, reference: PhaseResult, examples: int = 3) -> dict[str, Any]:
    """Decisions for the same input positions: how many were compared, differ, or are missing."""
    a, b = ours.decided, reference.decided
    common = a.keys() & b.keys()
    diff = sorted(k for k in common if a[k] != b[k])
    out: dict[str, Any] = {"compared": len(common), "different": len(diff),
                           "only_here": len(a.keys() - b.keys()), "only_in_reference": len(b.keys() - a.keys())}
    shown = [k for k in diff if k in ours.decided_text and k in reference.decided_text][:examples]
    if shown:
        out["examples"] = [{"position": list(k), "here": ours.decided_text[k].decode(),
                            "reference": reference.decided_text[k].decode()} for k in shown]
    return out
