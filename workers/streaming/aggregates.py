"""Streaming aggregation features: per-key sliding windows over a topic, in Feast's Redis layout.

A topology (``topologies/velocity.yaml``: per-card fraud velocity over transactions;
``topologies/ato_velocity.yaml``: per-user login velocity) names everything this job knows about
its events: the topic, the field holding the Feast view's join key, the event-time field, and one
aggregate per feature of the view (``count``, ``sum`` or ``count_distinct`` over a window,
optionally only over events whose field equals a value). The code never names a field.

The typed core of the Faust job; ``workers/streaming/app.py`` only wires Kafka, the Faust table and
a Redis client to it. The path of one event: ``EventDecoder`` (bytes -> ``Event`` or a skip reason)
-> ``AggregationState.apply`` (the key's window entries, kept in a ``StateStore`` = the Faust
table) -> ``AggregationState.drain`` (values of the keys that changed) -> ``FeastRedisLayout.hset``
(one HSET per key, all of a micro-batch in one pipelined round trip).

Semantics are those of fraud training (``examples.fraud.datagen.velocity``): for an event at ``t``
a window of ``W`` ms holds the same key's *earlier* events with ``t - W <= t_j <= t`` (equal times
count in arrival order), the event itself excluded. When the scorer looks up event k+1 it must
therefore find the windows over events 1..k evaluated at k+1's time. The job cannot know that
time in advance, so:

* A key's windows are evaluated at its partition's *stream time*: the largest event time seen on
  that Kafka partition. Right after event k is processed that is (about) ``t_k`` and the value
  includes event k — what k+1 needs if it comes soon, as in a fraud burst.
* A key is written again whenever stream time passes the moment one of its entries leaves a
  window (an expiry schedule per partition). Evaluating at the key's own latest event time only
  would leave an idle card at e.g. ``txn_count_10m = 1`` for ever (Feast's TTL is wall-clock,
  1 day), so most ordinary events would be scored with velocity that training never saw for
  them. With the schedule, what the scorer reads differs from training only by events that left
  a window between the job's last flush and the new event's time.
* Event time, not arrival time: the load producer emits simulated event times at training density.

A ``where`` filter makes an aggregate skip the key's events whose field does not equal the
value (absent or of another JSON type included); such an event still moves stream time and is
still an entry for the other aggregates. Each entry keeps one value per ``Column``: a ``sum`` or
``count_distinct`` field (0 or None where its filter failed) or a filter's 0/1 flag for a
filtered ``count``. Columns are positional in the stored state, so a topology whose columns
change needs a new ``input.consumer_group`` (a fresh changelog).

Bounds: entries older than the longest window (relative to stream time) are pruned, at most
``max_entries_per_key`` are kept (oldest dropped, counted as ``capped``), and a key whose last
entry leaves the longest window is written once more (all zeros) and deleted from the store.
Replays after a crash are idempotent: each key remembers the offset of the last event applied to
it (a key's events all come from one partition, as producers key messages by it), and older
offsets are skipped.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypedDict

import mmh3
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.schema import PATH_PATTERN
from workers.topology import TopologyError, parse_yaml_model, read_yaml_model

# ---- topology ------------------------------------------------------------------------------

_PATH = re.compile(PATH_PATTERN)  # the syntax of workers/schema.py's field paths


def _field_path(v: str) -> str:
    if not _PATH.match(v):
        raise ValueError(
            f"{v!r} is not a field path: names of letters, digits, '_' or '-' joined by '.' for "
            "nested objects (e.g. device.id)"
        )
    return v


FieldPath = Annotated[str, AfterValidator(_field_path)]
Scalar = str | bool | int | float


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AggregationInput(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(ge=1, description="must equal the topic's partition count")
    consumer_group: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$", description="also the Faust app id")
    key_field: FieldPath = Field(description="event field holding the view's join key (a non-empty string)")
    event_time_field: FieldPath = Field(description="event field holding event time (epoch ms, an integer)")


class WhereSpec(_Model):
    field: FieldPath
    equals: Scalar = Field(description="a string, number or boolean; a boolean never equals a number")

    @field_validator("equals", mode="before")
    @classmethod
    def _json_scalar(cls, v: object) -> object:
        if not isinstance(v, (str, int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError("equals must be a string, a finite number or a boolean")
        return v

    @property
    def key(self) -> tuple[str, str, Scalar]:
        """(path, JSON type, value): ``equals: 1`` and ``equals: true`` are different filters."""
        e = self.equals
        kind = "boolean" if isinstance(e, bool) else "string" if isinstance(e, str) else "number"
        return (self.field, kind, e)


class AggregateSpec(_Model):
    op: Literal["count", "sum", "count_distinct"]
    window_ms: int = Field(gt=0, le=30 * 86_400_000)
    field: FieldPath | None = Field(
        None, description="sum: a finite number (not a boolean); count_distinct: a string, integer or boolean"
    )
    where: WhereSpec | None = Field(None, description="only the events whose where.field equals where.equals")

    @model_validator(mode="after")
    def _field_fits_op(self) -> AggregateSpec:
        if self.op == "count":
            if self.field is not None:
                raise ValueError("op count takes no field (to count only some events, use where)")
        elif self.field is None:
            raise ValueError(f"op {self.op} needs a field")
        return self


class StateSpec(_Model):
    max_entries_per_key: int = Field(1000, ge=1, le=1_000_000)


class SinkSpec(_Model):
    flush_interval_ms: int = Field(100, ge=1, le=60_000)
    max_batch: int = Field(512, ge=1, le=65_536, description="events per micro-batch; keys per pipeline")
    redis_timeout_ms: int = Field(500, ge=1, le=60_000)
    retry_after_ms: int = Field(1000, ge=0, le=600_000)


class FaustSpec(_Model):
    store: str = Field("memory://", pattern=r"^(memory|rocksdb|aerospike)://")
    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    commit_interval_ms: int = Field(1000, ge=10, le=600_000)
    replication_factor: int = Field(1, ge=1)
    web_port: int = Field(0, ge=0, le=65_535, description="0 = Faust's web server off")


@dataclass(frozen=True, slots=True)
class Column:
    """One value kept per window entry: what the aggregates read of an event.

    ``number``: a sum's field (0 where the filter failed); ``scalar``: a count_distinct's field
    (None where the filter failed); ``match``: 1 or 0, whether the event passed ``where``
    (``field`` is then the filter's path).
    """

    kind: Literal["number", "scalar", "match"]
    field: str
    where: tuple[str, str, Scalar] | None = None  # WhereSpec.key


def column_of(agg: AggregateSpec) -> Column | None:
    """The column an aggregate reads; None for an unfiltered count (it reads times only)."""
    where = agg.where.key if agg.where is not None else None
    if agg.op == "count":
        return None if agg.where is None else Column("match", agg.where.field, where)
    assert agg.field is not None  # checked by AggregateSpec
    return Column("number" if agg.op == "sum" else "scalar", agg.field, where)


class AggregationTopology(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="stable stage id")
    input: AggregationInput
    feature_view: str = Field(min_length=1)
    aggregates: dict[str, AggregateSpec] = Field(min_length=1)
    state: StateSpec = StateSpec()
    sink: SinkSpec = SinkSpec()
    faust: FaustSpec = FaustSpec()
    source_path: str = ""

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names in declaration order: the order of every values tuple."""
        return tuple(self.aggregates)

    @property
    def columns(self) -> tuple[Column, ...]:
        """Values kept per window entry besides the time, in a fixed order (the stored state's)."""
        cols = {c for c in map(column_of, self.aggregates.values()) if c is not None}
        return tuple(sorted(cols, key=lambda c: (c.field, c.kind, c.where is not None, c.where or ())))

    @property
    def max_window_ms(self) -> int:
        return max(a.window_ms for a in self.aggregates.values())


_SHAPE = "keys id, input, feature_view, aggregates, ..."


def parse_aggregation_topology(text: str, path: Path) -> AggregationTopology:
    return parse_yaml_model(text, path, AggregationTopology, _SHAPE)


def load_aggregation_topology(path: str | Path) -> AggregationTopology:
    return read_yaml_model(path, AggregationTopology, _SHAPE, "topologies/velocity.yaml")


# ---- decode --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the windows need it; ``values`` follow ``AggregationTopology.columns``."""

    key: str
    t_ms: int
    values: tuple[Any, ...]
    partition: int = 0
    offset: int = -1  # -1: not from Kafka (tests); never deduplicated


# Python's set merges True with 1 and False with 0; JSON does not. No float reaches a scalar
# column (floats are refused there) and a non-integral float equals no int or str, so these
# stand for the booleans in count_distinct, and survive the JSON changelog unchanged.
_BOOL_SCALARS: dict[bool, float] = {False: 0.5, True: 1.5}
_NUMBER, _SCALAR, _MATCH = 0, 1, 2
_KINDS = {"number": _NUMBER, "scalar": _SCALAR, "match": _MATCH}
_EQ_BOOL, _EQ_STR, _EQ_NUMBER = 0, 1, 2


def _split(path: str) -> tuple[str, tuple[str, ...]]:
    head, *rest = path.split(".")
    return head, tuple(rest)


def _dig(v: Any, rest: tuple[str, ...]) -> Any:
    """``v[rest[0]][rest[1]]...``; None where a step is not an object or lacks the name."""
    for seg in rest:
        if type(v) is not dict:
            return None
        v = v.get(seg)
    return v


class EventDecoder:
    """Message bytes -> an ``Event``, or the reason it is skipped (``invalid_json``, ``bad_field:<path>``...).

    Paths and the per-column plan are compiled once per topology; per event there is one
    ``orjson.loads`` and a short loop over the columns. A field is checked only where an
    aggregate reads it: a sum's field must be a finite number (not a boolean), a
    count_distinct's a string, integer or boolean; one that fails skips the event. A filter's
    field is never checked: a value other than ``equals`` fails the filter.

    Skipping is all this job does with bad input: the scorer reads the same topic and dead-letters
    it, so a second dead-letter copy here would only duplicate it.
    """

    def __init__(self, topo: AggregationTopology) -> None:
        self._key = _split(topo.input.key_field)
        self._time = _split(topo.input.event_time_field)
        self._bad_key = f"bad_field:{topo.input.key_field}"
        self._bad_time = f"bad_field:{topo.input.event_time_field}"
        columns = topo.columns
        wheres = list(dict.fromkeys(c.where for c in columns if c.where is not None))
        modes = {"boolean": _EQ_BOOL, "string": _EQ_STR, "number": _EQ_NUMBER}
        # (head, rest, mode, value) per distinct filter.
        self._wheres = tuple((*_split(p), modes[kind], eq) for p, kind, eq in wheres)
        # (kind, head, rest, filter index or -1, skip reason) per column.
        self._plan = tuple(
            (_KINDS[c.kind], *_split(c.field), wheres.index(c.where) if c.where is not None else -1,
             f"bad_field:{c.field}")
            for c in columns
        )

    def __call__(self, raw: bytes | None, partition: int, offset: int) -> Event | str:
        if not raw:
            return "empty"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "invalid_json"
        if type(obj) is not dict:
            return "not_an_object"
        head, rest = self._key
        key = obj.get(head)
        if rest:
            key = _dig(key, rest)
        if type(key) is not str or not key:
            return self._bad_key
        head, rest = self._time
        t = obj.get(head)
        if rest:
            t = _dig(t, rest)
        if type(t) is not int or t < 0:  # type(), not isinstance: a bool is no time
            return self._bad_time
        v: Any  # a JSON value (from a dict's .get, which mypy types Any | None)
        matched: list[bool] = []
        for head, rest, mode, eq in self._wheres:
            v = obj.get(head)
            if rest:
                v = _dig(v, rest)
            if mode == _EQ_BOOL:
                matched.append(v is eq)
            elif mode == _EQ_STR:
                matched.append(type(v) is str and v == eq)
            else:
                matched.append((type(v) is int or type(v) is float) and v == eq)
        values: list[Any] = []
        for kind, head, rest, wi, reason in self._plan:
            if wi >= 0 and not matched[wi]:
                values.append(None if kind == _SCALAR else 0)  # read by no aggregate
                continue
            if kind == _MATCH:
                values.append(1)
                continue
            v = obj.get(head)
            if rest:
                v = _dig(v, rest)
            tv = type(v)
            if kind == _NUMBER:
                if tv is float:
                    if not math.isfinite(v):
                        return reason
                elif tv is not int:
                    return reason
            elif tv is bool:
                v = _BOOL_SCALARS[v]
            elif tv is not str and tv is not int:
                return reason
            values.append(v)
        return Event(key, t, tuple(values), partition, offset)


# ---- window state --------------------------------------------------------------------------


class KeyState(TypedDict):
    """One key's window entries; JSON-serializable because it is the Faust table's value."""

    p: int  # partition of the key's latest event
    o: int  # offset of the latest event applied (replays at or below it are skipped)
    t: list[int]  # event times, ascending
    c: list[list[Any]]  # one list per AggregationTopology.columns, aligned with t


class StateStore(Protocol):
    """Where key states live: the Faust table in the job, a dict in tests."""

    def get(self, key: str) -> KeyState | None: ...
    def put(self, key: str, partition: int, state: KeyState) -> None: ...
    def delete(self, key: str, partition: int) -> None: ...
    def items(self) -> Iterable[tuple[str, KeyState]]: ...


class DictStore:
    """An in-process ``StateStore``."""

    def __init__(self) -> None:
        self.data: dict[str, KeyState] = {}

    def get(self, key: str) -> KeyState | None:
        return self.data.get(key)

    def put(self, key: str, partition: int, state: KeyState) -> None:
        self.data[key] = state

    def delete(self, key: str, partition: int) -> None:
        self.data.pop(key, None)

    def items(self) -> Iterable[tuple[str, KeyState]]:
        return list(self.data.items())


@dataclass
class AggregationStats:
    applied: int = 0
    late: int = 0  # older than the longest window at the partition's stream time: cannot count
    replayed: int = 0  # at or below the key's last applied offset (redelivery after a restart)
    capped: int = 0  # entries dropped by max_entries_per_key
    expired_keys: int = 0  # deleted from the store once every entry left every window
    skipped: Counter[str] = field(default_factory=Counter)  # EventDecoder's reasons


Values = tuple[float, ...]


class AggregationState:
    """Per-key sliding windows over a ``StateStore``, and the set of keys whose values changed.

    Not thread-safe; the Faust agent calls it from one task.
    """

    def __init__(self, topo: AggregationTopology, store: StateStore) -> None:
        self._store = store
        columns = topo.columns
        self._ncols = len(columns)
        self._max_window = topo.max_window_ms
        self._max_entries = topo.state.max_entries_per_key
        col = {c: i for i, c in enumerate(columns)}
        # (op, window_ms, column index or -1) per feature, in feature order.
        aggs: list[tuple[str, int, int]] = []
        for a in topo.aggregates.values():
            c = column_of(a)
            aggs.append((a.op, a.window_ms, col[c] if c is not None else -1))
        self._aggs = tuple(aggs)
        self._windows = tuple(sorted({a.window_ms for a in topo.aggregates.values()}))
        self._zeros: Values = tuple(0.0 if op == "sum" else 0 for op, _, _ in self._aggs)
        self._stream_time: dict[int, int] = {}
        # Expiry schedule: per partition a heap of (stream time at which the key's values next
        # change, key); _due holds each key's current entry so superseded ones are skipped.
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[str, int] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set: oldest changes flush first
        self.stats = AggregationStats()

    # -- input

    def apply(self, events: Iterable[Event]) -> None:
        """Add events to their keys' windows; the keys become dirty."""
        touched: dict[str, KeyState] = {}
        for ev in events:
            p = ev.partition
            now = self._stream_time.get(p, ev.t_ms)
            if ev.t_ms > now:
                now = ev.t_ms
            self._stream_time[p] = now
            if ev.t_ms < now - self._max_window:
                self.stats.late += 1
                continue
            st = touched.get(ev.key) or self._store.get(ev.key)
            if st is None:
                st = KeyState(p=p, o=-1, t=[], c=[[] for _ in range(self._ncols)])
            elif ev.offset >= 0 and st["p"] == p and ev.offset <= st["o"]:
                self.stats.replayed += 1
                continue
            times = st["t"]
            if not times or ev.t_ms >= times[-1]:
                times.append(ev.t_ms)
                for c, v in zip(st["c"], ev.values):
                    c.append(v)
            else:  # out of order within the key: keep entries sorted, ties in arrival order
                i = bisect.bisect_right(times, ev.t_ms)
                times.insert(i, ev.t_ms)
                for c, v in zip(st["c"], ev.values):
                    c.insert(i, v)
            # Offsets only compare within a partition; a key that moved starts afresh.
            st["o"] = max(ev.offset, st["o"]) if st["p"] == p else ev.offset
            st["p"] = p
            touched[ev.key] = st
            self._dirty[ev.key] = None
            self.stats.applied += 1
        for key, st in touched.items():
            self._prune(st, self._stream_time[st["p"]])
            self._store.put(key, st["p"], st)

    def advance(self, partition: int, t_ms: int) -> None:
        """Move a partition's stream time without an event (its keys' windows slide)."""
        if t_ms > self._stream_time.get(partition, t_ms - 1):
            self._stream_time[partition] = t_ms

    def _prune(self, st: KeyState, now: int) -> None:
        times = st["t"]
        cut = bisect.bisect_left(times, now - self._max_window)
        over = len(times) - cut - self._max_entries
        if over > 0:
            self.stats.capped += over
            cut += over
        if cut:
            del times[:cut]
            for c in st["c"]:
                del c[:cut]

    # -- values

    def values_at(self, key: str, as_of_ms: int) -> Values:
        """Each feature over the key's stored entries with ``as_of - W <= t_j <= as_of``."""
        st = self._store.get(key)
        if st is None or not st["t"]:
            return self._zeros
        return self._evaluate(st, as_of_ms)

    def _evaluate(self, st: KeyState, as_of: int) -> Values:
        times = st["t"]
        cols = st["c"]
        hi = bisect.bisect_right(times, as_of)
        lo = {w: bisect.bisect_left(times, as_of - w, 0, hi) for w in self._windows}
        out: list[float] = []
        for op, w, ci in self._aggs:
            i = lo[w]
            if ci < 0:
                out.append(hi - i)
            elif op == "sum":
                out.append(float(sum(cols[ci][i:hi])))
            elif op == "count":
                out.append(sum(cols[ci][i:hi]))  # a filtered count: the filter's 0/1 flags
            else:
                s = set(cols[ci][i:hi])
                out.append(len(s) - (None in s))  # None: an entry its filter left out
        return tuple(out)

    def _next_change(self, st: KeyState, as_of: int) -> int | None:
        """Stream time at which the key's oldest in-window entry leaves some window."""
        times = st["t"]
        hi = bisect.bisect_right(times, as_of)
        due: int | None = None
        for w in self._windows:
            i = bisect.bisect_left(times, as_of - w, 0, hi)
            if i < hi:
                d = times[i] + w + 1  # included while as_of <= t_i + w
                due = d if due is None else min(due, d)
        return due

    # -- output

    @property
    def dirty_count(self) -> int:
        return len(self._dirty)

    def _collect_due(self) -> None:
        for p, heap in self._heaps.items():
            now = self._stream_time.get(p)
            if now is None:
                continue
            while heap and heap[0][0] <= now:
                due, key = heapq.heappop(heap)
                if self._due.get(key) == due:
                    del self._due[key]
                    self._dirty[key] = None

    def drain(self, max_keys: int) -> list[tuple[str, Values]]:
        """Up to ``max_keys`` changed keys with their values at their partition's stream time.

        The caller writes them; on failure it hands them back with ``requeue``. Keys whose last
        entry left every window come out as zeros and are deleted from the store.
        """
        self._collect_due()
        out: list[tuple[str, Values]] = []
        while self._dirty and len(out) < max_keys:
            key = next(iter(self._dirty))
            del self._dirty[key]
            st = self._store.get(key)
            if st is None:
                out.append((key, self._zeros))
                continue
            p = st["p"]
            # Never before the key's own newest entry (a key that moved to a partition whose
            # stream time lags must not look expired).
            now = max(self._stream_time.get(p, 0), st["t"][-1] if st["t"] else 0)
            due = self._next_change(st, now)
            if due is None:
                self._store.delete(key, p)
                self._due.pop(key, None)
                self.stats.expired_keys += 1
                out.append((key, self._zeros))
                continue
            out.append((key, self._evaluate(st, now)))
            if self._due.get(key) != due:
                self._due[key] = due
                heapq.heappush(self._heaps.setdefault(p, []), (due, key))
        self._compact_heaps()
        return out

    def requeue(self, keys: Iterable[str]) -> None:
        """Keys whose write failed: written again by a later ``drain``."""
        for key in keys:
            self._dirty[key] = None

    def _compact_heaps(self) -> None:
        # Superseded schedule entries are skipped lazily; rebuild when they dominate, so the
        # heaps stay proportional to the number of keys.
        total = sum(len(h) for h in self._heaps.values())
        if total > 4 * len(self._due) + 1024:
            heaps: dict[int, list[tuple[int, str]]] = {}
            for key, due in self._due.items():
                st = self._store.get(key)
                if st is not None:
                    heaps.setdefault(st["p"], []).append((due, key))
            for h in heaps.values():
                heapq.heapify(h)
            self._heaps = heaps

    def reindex(self, partitions: set[int] | None = None) -> int:
        """Rebuild stream times and the expiry schedule from the store (after a restart or rebalance).

        Only keys of ``partitions`` (None: all) are kept in the schedule; every such key is
        marked dirty, so Redis is brought in line with the recovered state. Returns their number.
        """
        self._heaps, self._due = {}, {}
        self._stream_time = {}
        owned: list[str] = []
        for key, st in self._store.items():
            p = st["p"]
            if (partitions is not None and p not in partitions) or not st["t"]:
                continue
            owned.append(key)
            if st["t"][-1] > self._stream_time.get(p, -1):
                self._stream_time[p] = st["t"][-1]
        for key in owned:
            self._dirty[key] = None
        return len(owned)


class AggregationAppError(RuntimeError):
    """The aggregation job cannot start as configured; the message says what to do."""


class AggregationConfigError(TopologyError):
    """The topology does not fit the Feast registry; the message says what to change."""


