"""Streaming velocity features: per-card sliding windows over transactions, in Feast's Redis layout.

The typed core of the Faust job; ``workers/streaming/app.py`` only wires Kafka, the Faust table and
a Redis client to it. The path of one event: ``decode_event`` (bytes -> ``Txn`` or a skip reason)
-> ``VelocityState.apply`` (the card's window entries, kept in a ``StateStore`` = the Faust table)
-> ``VelocityState.drain`` (values of the cards that changed) -> ``FeastRedisLayout.hset`` (one
HSET per card, all of a micro-batch in one pipelined round trip).

Semantics are training's (``datagen.velocity``): for an event at ``t`` a window of ``W`` ms holds
the same card's *earlier* events with ``t - W <= t_j <= t`` (equal times count in arrival order),
the event itself excluded. When the scorer looks up event k+1 it must therefore find the windows
over events 1..k evaluated at k+1's time. The job cannot know that time in advance, so:

* A card's windows are evaluated at its partition's *stream time*: the largest event time seen on
  that Kafka partition. Right after event k is processed that is (about) ``t_k`` and the value
  includes event k — what k+1 needs if it comes soon, as in a fraud burst.
* A card is written again whenever stream time passes the moment one of its entries leaves a
  window (an expiry schedule per partition). The brief suggested evaluating at the card's own
  latest event time only; then an idle card would keep e.g. ``txn_count_10m = 1`` for ever (Feast's
  TTL is wall-clock, 1 day), so most ordinary events would be scored with velocity that training
  never saw for them. With the schedule, what the scorer reads differs from training only by
  events that left a window between the job's last flush and the new event's time.
* Event time, not arrival time: the load producer emits simulated event times at training density.

Bounds: entries older than the longest window (relative to stream time) are pruned, at most
``max_entries_per_card`` are kept (oldest dropped, counted as ``capped``), and a card whose last
entry leaves the longest window is written once more (all zeros) and deleted from the store.
Replays after a crash are idempotent: each card remembers the offset of the last event applied to
it (a card's events all come from one partition, keyed by card id), and older offsets are skipped.
"""

from __future__ import annotations

import bisect
import heapq
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

import mmh3
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.features.layout import feast_key_builder, string_key_builder
from workers.settings import Settings
from workers.topology import TRANSACTION_FIELDS, TopologyError, parse_yaml_model, read_yaml_model

# ---- topology ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class VelocityInput(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(ge=1, description="must equal the topic's partition count")
    consumer_group: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$", description="also the Faust app id")
    entity_field: str = Field("card_id", description="event field holding the view's join key")
    event_time_field: str = Field("event_time_ms", description="event field holding event time (ms)")

    @model_validator(mode="after")
    def _known_fields(self) -> VelocityInput:
        if TRANSACTION_FIELDS.get(self.entity_field) != "string":
            raise ValueError(f"entity_field {self.entity_field!r} is not a string field of the event")
        if TRANSACTION_FIELDS.get(self.event_time_field) != "integer":
            raise ValueError(f"event_time_field {self.event_time_field!r} is not an integer field of the event")
        return self


class AggregateSpec(_Model):
    op: Literal["count", "sum", "count_distinct"]
    window_ms: int = Field(gt=0, le=30 * 86_400_000)
    field: str | None = Field(None, description="event field: a number for sum, any for count_distinct")

    @model_validator(mode="after")
    def _field_fits_op(self) -> AggregateSpec:
        if self.op == "count":
            if self.field is not None:
                raise ValueError("op count takes no field")
        elif self.field is None:
            raise ValueError(f"op {self.op} needs a field")
        elif self.field not in TRANSACTION_FIELDS:
            raise ValueError(f"field {self.field!r} is not an event field; known: {sorted(TRANSACTION_FIELDS)}")
        elif self.op == "sum" and TRANSACTION_FIELDS[self.field] == "string":
            raise ValueError(f"op sum needs a numeric field, {self.field!r} is a string")
        return self


class StateSpec(_Model):
    max_entries_per_card: int = Field(1000, ge=1, le=1_000_000)


class SinkSpec(_Model):
    flush_interval_ms: int = Field(100, ge=1, le=60_000)
    max_batch: int = Field(512, ge=1, le=65_536, description="events per micro-batch; cards per pipeline")
    redis_timeout_ms: int = Field(500, ge=1, le=60_000)
    retry_after_ms: int = Field(1000, ge=0, le=600_000)


class FaustSpec(_Model):
    store: str = Field("memory://", pattern=r"^(memory|rocksdb|aerospike)://")
    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    commit_interval_ms: int = Field(1000, ge=10, le=600_000)
    replication_factor: int = Field(1, ge=1)
    web_port: int = Field(0, ge=0, le=65_535, description="0 = Faust's web server off")


class VelocityTopology(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="stable stage id")
    input: VelocityInput
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
    def columns(self) -> tuple[str, ...]:
        """Event fields kept per window entry besides the time, in a fixed order."""
        return tuple(sorted({a.field for a in self.aggregates.values() if a.field is not None}))

    @property
    def max_window_ms(self) -> int:
        return max(a.window_ms for a in self.aggregates.values())


_SHAPE = "keys id, input, feature_view, aggregates, ..."


def parse_velocity_topology(text: str, path: Path) -> VelocityTopology:
    return parse_yaml_model(text, path, VelocityTopology, _SHAPE)


def load_velocity_topology(path: str | Path) -> VelocityTopology:
    return read_yaml_model(path, VelocityTopology, _SHAPE, "topologies/velocity.yaml")


# ---- decode --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Txn:
    """One transaction as the windows need it; ``values`` follow ``VelocityTopology.columns``."""

    card: str
    t_ms: int
    values: tuple[Any, ...]
    partition: int = 0
    offset: int = -1  # -1: not from Kafka (tests); never deduplicated


def decode_event(raw: bytes | None, topo: VelocityTopology, partition: int, offset: int) -> Txn | str:
    """A ``Txn``, or the reason the message is skipped (``invalid_json``, ``bad_field:<name>``...).

    Skipping is all this job does with bad input: the scorer reads the same topic and dead-letters
    it, so a second dead-letter copy here would only duplicate it.
    """
    if not raw:
        return "empty"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_an_object"
    card = obj.get(topo.input.entity_field)
    if not isinstance(card, str) or not card:
        return f"bad_field:{topo.input.entity_field}"
    t = obj.get(topo.input.event_time_field)
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        return f"bad_field:{topo.input.event_time_field}"
    values: list[Any] = []
    for name in topo.columns:
        v = obj.get(name)
        if TRANSACTION_FIELDS[name] == "string":
            ok = isinstance(v, str)
        else:  # amounts are non-negative in the event schema (topologies/fraud.yaml)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok:
            return f"bad_field:{name}"
        values.append(v)
    return Txn(card, t, tuple(values), partition, offset)


# ---- window state --------------------------------------------------------------------------


class CardState(TypedDict):
    """One card's window entries; JSON-serializable because it is the Faust table's value."""

    p: int  # partition of the card's latest event
    o: int  # offset of the latest event applied (replays at or below it are skipped)
    t: list[int]  # event times, ascending
    c: list[list[Any]]  # one list per VelocityTopology.columns, aligned with t


class StateStore(Protocol):
    """Where card states live: the Faust table in the job, a dict in tests."""

    def get(self, card: str) -> CardState | None: ...
    def put(self, card: str, partition: int, state: CardState) -> None: ...
    def delete(self, card: str, partition: int) -> None: ...
    def items(self) -> Iterable[tuple[str, CardState]]: ...


class DictStore:
    """An in-process ``StateStore``."""

    def __init__(self) -> None:
        self.data: dict[str, CardState] = {}

    def get(self, card: str) -> CardState | None:
        return self.data.get(card)

    def put(self, card: str, partition: int, state: CardState) -> None:
        self.data[card] = state

    def delete(self, card: str, partition: int) -> None:
        self.data.pop(card, None)

    def items(self) -> Iterable[tuple[str, CardState]]:
        return list(self.data.items())


@dataclass
class VelocityStats:
    applied: int = 0
    late: int = 0  # older than the longest window at the partition's stream time: cannot count
    replayed: int = 0  # at or below the card's last applied offset (redelivery after a restart)
    capped: int = 0  # entries dropped by max_entries_per_card
    expired_cards: int = 0  # deleted from the store once every entry left every window
    skipped: Counter[str] = field(default_factory=Counter)  # decode_event's reasons


Values = tuple[float, ...]


class VelocityState:
    """Per-card sliding windows over a ``StateStore``, and the set of cards whose values changed.

    Not thread-safe; the Faust agent calls it from one task.
    """

    def __init__(self, topo: VelocityTopology, store: StateStore) -> None:
        self._store = store
        self._ncols = len(topo.columns)
        self._max_window = topo.max_window_ms
        self._max_entries = topo.state.max_entries_per_card
        col = {name: i for i, name in enumerate(topo.columns)}
        # (op, window_ms, column index or -1) per feature, in feature order.
        self._aggs = tuple(
            (a.op, a.window_ms, col[a.field] if a.field is not None else -1) for a in topo.aggregates.values()
        )
        self._windows = tuple(sorted({a.window_ms for a in topo.aggregates.values()}))
        self._zeros: Values = tuple(0.0 if op == "sum" else 0 for op, _, _ in self._aggs)
        self._stream_time: dict[int, int] = {}
        # Expiry schedule: per partition a heap of (stream time at which the card's values next
        # change, card); _due holds each card's current entry so superseded ones are skipped.
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[str, int] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set: oldest changes flush first
        self.stats = VelocityStats()

    # -- input

    def apply(self, txns: Iterable[Txn]) -> None:
        """Add events to their cards' windows; the cards become dirty."""
        touched: dict[str, CardState] = {}
        for tx in txns:
            p = tx.partition
            now = self._stream_time.get(p, tx.t_ms)
            if tx.t_ms > now:
                now = tx.t_ms
            self._stream_time[p] = now
            if tx.t_ms < now - self._max_window:
                self.stats.late += 1
                continue
            st = touched.get(tx.card) or self._store.get(tx.card)
            if st is None:
                st = CardState(p=p, o=-1, t=[], c=[[] for _ in range(self._ncols)])
            elif tx.offset >= 0 and st["p"] == p and tx.offset <= st["o"]:
                self.stats.replayed += 1
                continue
            times = st["t"]
            if not times or tx.t_ms >= times[-1]:
                times.append(tx.t_ms)
                for c, v in zip(st["c"], tx.values):
                    c.append(v)
            else:  # out of order within the card: keep entries sorted, ties in arrival order
                i = bisect.bisect_right(times, tx.t_ms)
                times.insert(i, tx.t_ms)
                for c, v in zip(st["c"], tx.values):
                    c.insert(i, v)
            # Offsets only compare within a partition; a card that moved starts afresh.
            st["o"] = max(tx.offset, st["o"]) if st["p"] == p else tx.offset
            st["p"] = p
            touched[tx.card] = st
            self._dirty[tx.card] = None
            self.stats.applied += 1
        for card, st in touched.items():
            self._prune(st, self._stream_time[st["p"]])
            self._store.put(card, st["p"], st)

    def advance(self, partition: int, t_ms: int) -> None:
        """Move a partition's stream time without an event (its cards' windows slide)."""
        if t_ms > self._stream_time.get(partition, t_ms - 1):
            self._stream_time[partition] = t_ms

    def _prune(self, st: CardState, now: int) -> None:
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

    def values_at(self, card: str, as_of_ms: int) -> Values:
        """Each feature over the card's stored entries with ``as_of - W <= t_j <= as_of``."""
        st = self._store.get(card)
        if st is None or not st["t"]:
            return self._zeros
        return self._evaluate(st, as_of_ms)

    def _evaluate(self, st: CardState, as_of: int) -> Values:
        times = st["t"]
        hi = bisect.bisect_right(times, as_of)
        lo = {w: bisect.bisect_left(times, as_of - w, 0, hi) for w in self._windows}
        out: list[float] = []
        for op, w, ci in self._aggs:
            i = lo[w]
            if op == "count":
                out.append(hi - i)
            elif op == "sum":
                out.append(float(sum(st["c"][ci][i:hi])))
            else:
                out.append(len(set(st["c"][ci][i:hi])))
        return tuple(out)

    def _next_change(self, st: CardState, as_of: int) -> int | None:
        """Stream time at which the card's oldest in-window entry leaves some window."""
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
                due, card = heapq.heappop(heap)
                if self._due.get(card) == due:
                    del self._due[card]
                    self._dirty[card] = None

    def drain(self, max_cards: int) -> list[tuple[str, Values]]:
        """Up to ``max_cards`` changed cards with their values at their partition's stream time.

        The caller writes them; on failure it hands them back with ``requeue``. Cards whose last
        entry left every window come out as zeros and are deleted from the store.
        """
        self._collect_due()
        out: list[tuple[str, Values]] = []
        while self._dirty and len(out) < max_cards:
            card = next(iter(self._dirty))
            del self._dirty[card]
            st = self._store.get(card)
            if st is None:
                out.append((card, self._zeros))
                continue
            p = st["p"]
            # Never before the card's own newest entry (a card that moved to a partition whose
            # stream time lags must not look expired).
            now = max(self._stream_time.get(p, 0), st["t"][-1] if st["t"] else 0)
            due = self._next_change(st, now)
            if due is None:
                self._store.delete(card, p)
                self._due.pop(card, None)
                self.stats.expired_cards += 1
                out.append((card, self._zeros))
                continue
            out.append((card, self._evaluate(st, now)))
            if self._due.get(card) != due:
                self._due[card] = due
                heapq.heappush(self._heaps.setdefault(p, []), (due, card))
        self._compact_heaps()
        return out

    def requeue(self, cards: Iterable[str]) -> None:
        """Cards whose write failed: written again by a later ``drain``."""
        for card in cards:
            self._dirty[card] = None

    def _compact_heaps(self) -> None:
        # Superseded schedule entries are skipped lazily; rebuild when they dominate, so the
        # heaps stay proportional to the number of cards.
        total = sum(len(h) for h in self._heaps.values())
        if total > 4 * len(self._due) + 1024:
            heaps: dict[int, list[tuple[int, str]]] = {}
            for card, due in self._due.items():
                st = self._store.get(card)
                if st is not None:
                    heaps.setdefault(st["p"], []).append((due, card))
            for h in heaps.values():
                heapq.heapify(h)
            self._heaps = heaps

    def reindex(self, partitions: set[int] | None = None) -> int:
        """Rebuild stream times and the expiry schedule from the store (after a restart or rebalance).

        Only cards of ``partitions`` (None: all) are kept in the schedule; every such card is
        marked dirty, so Redis is brought in line with the recovered state. Returns their number.
        """
        self._heaps, self._due = {}, {}
        self._stream_time = {}
        owned: list[str] = []
        for card, st in self._store.items():
            p = st["p"]
            if (partitions is not None and p not in partitions) or not st["t"]:
                continue
            owned.append(card)
            if st["t"][-1] > self._stream_time.get(p, -1):
                self._stream_time[p] = st["t"][-1]
        for card in owned:
            self._dirty[card] = None
        return len(owned)


# ---- Feast's Redis layout ------------------------------------------------------------------

# Feast ValueType name -> the ValueProto field our values go into.
_VALUE_FIELDS: dict[str, str] = {
    "INT64": "int64_val", "INT32": "int32_val", "FLOAT": "float_val", "DOUBLE": "double_val",
}
_INTEGRAL = frozenset({"int64_val", "int32_val"})


def feast_hash_field(view: str, feature: str) -> bytes:
    """Feast's hash field for ``view:feature``: murmur3-32 (unsigned) as 4 little-endian bytes."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_bytes(epoch_s: float) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` (what Feast stores in ``_ts:<view>``)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    secs = math.floor(epoch_s)
    out: bytes = Timestamp(seconds=secs, nanos=int((epoch_s - secs) * 1e9)).SerializeToString()
    return out


@dataclass(frozen=True)
class FeastRedisLayout:
    """How Feast stores one feature view of a single string-keyed entity in Redis.

    Key: ``serialize_entity_key(EntityKey([join_key], [string_val]), version) + project`` — the
    same hash as every other view of the entity, so writers HSET only their own fields and never
    delete the key. Fields: ``feast_hash_field`` per feature, ``_ts:<view>`` for the timestamp.
    """

    project: str
    view: str  # as stored: with a version suffix when the repo versions online views
    join_key: str
    key_version: int
    ttl_s: float
    features: tuple[str, ...]
    value_fields: tuple[str, ...]  # ValueProto oneof per feature: int64_val, float_val, ...

    @cached_property
    def hash_fields(self) -> tuple[bytes, ...]:
        return tuple(feast_hash_field(self.view, f) for f in self.features)

    @property
    def ts_field(self) -> bytes:
        return f"_ts:{self.view}".encode()

    @cached_property
    def _key_of(self) -> Callable[[Any], bytes]:
        """Feast's Redis key for an entity id: the fast builder if it reproduces Feast's own."""
        from feast.value_type import ValueType

        slow = feast_key_builder(self.join_key, ValueType.STRING, self.project, self.key_version)
        if self.key_version == 3:
            fast = string_key_builder(self.join_key, self.project)
            probe = "probe-\u00e9"
            # Guard against a Feast format change: fall back to Feast's own (slower) encoder.
            if fast(probe) == slow(probe):
                return fast
        return slow

    def redis_key(self, entity: str) -> bytes:
        return self._key_of(entity)

    def hset_commands(
        self, rows: Sequence[tuple[str, Values]], ts: bytes
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """``(key, mapping)`` per card, for ``HSET key mapping``; ``ts`` from ``timestamp_bytes``."""
        from feast.protos.feast.types.Value_pb2 import Value

        fields = self.hash_fields
        kinds = self.value_fields
        ts_field = self.ts_field
        out: list[tuple[bytes, dict[bytes, bytes]]] = []
        for card, values in rows:
            mapping = {ts_field: ts}
            for hf, vf, v in zip(fields, kinds, values):
                proto = Value()
                setattr(proto, vf, int(v) if vf in _INTEGRAL else float(v))
                mapping[hf] = proto.SerializeToString()
            out.append((self.redis_key(card), mapping))
        return out


class VelocityAppError(RuntimeError):
    """The velocity job cannot start as configured; the message says what to do."""


class VelocityConfigError(TopologyError):
    """The topology does not fit the Feast registry; the message says what to change."""


def layout_from_registry(topo: VelocityTopology, settings: Settings) -> FeastRedisLayout:
    """Read the feature view from the Feast registry (``feast apply`` output) and check it."""
    from feast import FeatureStore

    from workers.features.feast_sdk import repo_config

    repo = Path(settings.feature_repo).resolve()
    cfg = repo_config(repo, settings)
    store = FeatureStore(repo_path=str(repo), config=cfg)
    try:
        fv = store.get_feature_view(topo.feature_view)
    except Exception as e:  # registry missing or view unknown: both mean "set up first"
        raise VelocityConfigError(
            f"{topo.source_path or 'topology'}: feature_view {topo.feature_view!r} is not in "
            f"{repo}'s Feast registry ({e}) — run `streamscore setup`"
        ) from e
    versioning = bool(getattr(cfg.registry, "enable_online_feature_view_versioning", False))
    return layout_for_view(topo, fv, cfg.project, cfg.entity_key_serialization_version, versioning)


def layout_for_view(
    topo: VelocityTopology, fv: Any, project: str, key_version: int, versioning: bool = False
) -> FeastRedisLayout:
    """The layout of Feast ``FeatureView`` ``fv``, checked against the topology's aggregates."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    where = f"{topo.source_path or 'topology'}: feature_view {topo.feature_view!r}"
    if fv.name != topo.feature_view:
        raise VelocityConfigError(f"{where}: got Feast view {fv.name!r}")
    if len(fv.entity_columns) != 1 or fv.entity_columns[0].dtype.to_value_type().name != "STRING":
        raise VelocityConfigError(f"{where}: only views of one string join key are supported")
    dtypes: dict[str, str] = {f.name: f.dtype.to_value_type().name for f in fv.features}
    if set(dtypes) != set(topo.aggregates):
        raise VelocityConfigError(
            f"{where} has features {sorted(dtypes)} but aggregates define {sorted(topo.aggregates)}; "
            "make them match (a feature left unwritten would go stale)"
        )
    value_fields: list[str] = []
    for name, agg in topo.aggregates.items():
        vf = _VALUE_FIELDS.get(dtypes[name])
        integral = agg.op != "sum"
        if vf is None or (vf in _INTEGRAL) != integral:
            want = "Int64 or Int32" if integral else "Float32 or Float64"
            raise VelocityConfigError(f"{where}: feature {name!r} is {dtypes[name]}; op {agg.op} needs {want}")
        value_fields.append(vf)
    layout = FeastRedisLayout(
        project=project,
        view=compute_versioned_name(fv, versioning),
        join_key=fv.entity_columns[0].name,
        key_version=key_version,
        ttl_s=fv.ttl.total_seconds() if fv.ttl else 0.0,
        features=topo.features,
        value_fields=tuple(value_fields),
    )
    layout.redis_key(topo.feature_view)  # checks the fast key path now, not on the first flush
    return layout
