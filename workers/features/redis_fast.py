"""``redis_fast`` feature reader: Feast's Redis online store read directly, one round trip per batch.

Same answers as ``FeastSdkReader`` (Feast's ``get_online_features``) at a fraction of its cost:

* The layout is derived once, at start-up, from the Feast registry (``feast apply`` output): views
  of the feature service, TTLs, value types, join keys, project, entity-key serialization version,
  the murmur3 field of every ``view:feature`` (``workers/features/layout.py``). Nothing about the repo
  is written down here.
* A micro-batch is ONE pipelined write: per distinct entity id, an ``HGETALL`` where the model
  reads most of the entity's hash (the registry says how many fields Feast writes there; Redis
  parses one argument instead of one per field, ~30% less server time) or else an ``HMGET`` of the
  model's fields. All views of an entity live in one Redis hash (a card's ``card_profile`` and
  ``card_velocity`` come back together). Request bytes are joined from cached per-id pieces:
  serializing an entity key in Python costs more than fetching it.
* Replies are read by a small C extension (``workers/features/_resp.c``) as their bytes arrive: framed
  straight from the socket buffer and protobuf's wire format read into numbers in the same pass
  (``float_val`` = tag + 4 bytes LE, ``double_val`` = tag + 8, ints and bools varints, ``_ts``
  a ``Timestamp`` of two varints), no Python object per cell; what has arrived is read while
  Redis works on the rest. String cells map to codes by their exact bytes in a C intern table
  (``Interner``); missing/stale flags, defaults and the gather into the batch's rows are one more
  C pass (``gather_rows``). Without the extension (no C compiler at install) replies go through
  hiredis and numpy's column-wise decoders (``workers/features/wire.py``, ``gather_numpy``): same
  answers, slower. Cells of another shape (other value type, extra fields) go through protobuf,
  read as Feast reads them; so do few-key replies on the hiredis path.
* Optional in-process cache (``cached_views``, ``cache_ttl_ms``, ``cache_max_entries``) for slowly
  changing views: decoded rows per entity id, hit/miss counted. Views sharing an entity are read by
  one HMGET, so they are cached together or not at all (a partial list is refused).

Semantics are ``FeastSdkReader``'s: a view is ``missing`` for a row when none of its features has a
value or its timestamp is 0; ``stale`` when older than the view's TTL; missing and (with
``stale_policy="default"``) stale values get the manifest's defaults. Timestamps are rounded to
microseconds exactly as Feast's datetime round trip rounds them, so TTL edges agree too.

Failure: Redis down, slow (past the batch's ``timeout_s``, by default ``features.timeout_ms``) or
refusing the credentials -> ``fetch`` returns defaults with ``degraded=True``, the cause in
``unavailable`` (``workers/features/health.py``) and every view missing, does not try again for
``retry_after_ms``, then reconnects by itself. It never raises for the store.

Limitations, checked at start-up: one Redis node. Feast's keys carry no hash tag, so on Redis
Cluster one batch spans many slots and one pipeline to one node cannot serve it; ``redis_type``
other than ``redis`` in ``feature_store.yaml`` is refused with a clear error (use ``reader:
feast_sdk`` there), and a MOVED reply degrades with the same message. Views keyed by several join
keys are refused likewise. Bytes that protobuf itself cannot parse may be read leniently here where
Feast raises. Not thread-safe: one reader per worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from workers.events import BoolArray, F32Array, F64Array, ObjArray, OnlineFeatures
from workers.features.base import FeatureDefaults, FeatureStoreError, StalePolicy
from workers.features.health import cause_of, describe
from workers.features.layout import GroupPlan, plan_groups
from workers.features.wire import (
    CELL_WIDTH,
    I32Array,
    I64Array,
    I8Array,
    IntpArray,
    U8Array,
    StringCells,
    cell_matrix,
    decode_numbers,
    decode_timestamps,
    feast_seconds,
    slow_number,
    slow_timestamp,
)
from workers.model.manifest import ModelManifest
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    import redis

    from workers.topology import Topology

log = logging.getLogger("streamscore.fastfeatures")

try:  # the C framing and decoding of HMGET replies (workers/features/_resp.c, built by `pip install`)
    from workers.features._resp import Interner as _Interner
    from workers.features._resp import gather_rows as _gather_rows
    from workers.features._resp import parse_hgetall as _parse_hgetall
    from workers.features._resp import parse_hmget as _parse_hmget
except ImportError:  # pragma: no cover - depends on the install having had a C compiler
    _parse_hmget = _parse_hgetall = _gather_rows = _Interner = None

NATIVE_AVAILABLE = _parse_hmget is not None
Parser = Literal["auto", "native", "hiredis"]
Command = Literal["auto", "hmget", "hgetall"]
# A reply buffer larger than this means something is wrong (a 2048-row batch needs ~300 KB).
MAX_REPLY_BYTES = 256 << 20

# Up to this many cells (keys x fields) a reply is read with protobuf per cell (~1.1 us a cell):
# the vectorized decode's fixed cost (~60 us a call) only pays off above it.
SMALL_BATCH_CELLS = 48
# Value kinds as workers/features/_resp.c's parsers name them (x: any other numeric kind, read by protobuf).
_KIND_CODES = {"float_val": "f", "double_val": "d", "int64_val": "l", "int32_val": "i", "bool_val": "b",
               "unix_timestamp_val": "u"}


def _string_columns(u: int, ns: int,
                    column: Callable[[int], tuple[ObjArray, BoolArray]]) -> tuple[ObjArray, BoolArray]:
    """A group's string cells ``[u, ns]`` and their has-a-string flags, one column at a time."""
    strings = np.empty((u, ns), dtype=object)
    has_string = np.empty((u, ns), dtype=bool)
    for s in range(ns):
        strings[:, s], has_string[:, s] = column(s)
    return strings, has_string


def _kinds(g: GroupPlan) -> bytes:
    return ("".join(_KIND_CODES.get(k, "x") for k in g.numeric_kinds) + "s" * len(g.string_refs)
            + "t" * len(g.views)).encode("ascii")


# ---- decoded rows and the reader's caches ----------------------------------------------------


@dataclass
class _Rows:
    """Decoded values of one group, one row per entity id."""

    numbers: F64Array  # [u, numeric cells], NaN = no value
    strings: ObjArray  # [u, string cells]
    has_string: BoolArray  # [u, string cells]
    ts: F64Array  # [u, views], Feast-rounded seconds, 0 = none

    @staticmethod
    def empty(g: GroupPlan, u: int) -> _Rows:
        ns = len(g.string_refs)
        return _Rows(np.full((u, len(g.numeric_kinds)), np.nan), np.full((u, ns), "", object),
                     np.zeros((u, ns), bool), np.zeros((u, len(g.views))))

    def put(self, where: IntpArray | BoolArray, src: _Rows) -> None:
        self.numbers[where], self.strings[where], self.has_string[where], self.ts[where] = (
            src.numbers, src.strings, src.has_string, src.ts)

    def take(self, where: IntpArray) -> _Rows:
        return _Rows(self.numbers[where], self.strings[where], self.has_string[where], self.ts[where])

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("numbers", "strings", "has_string", "ts")))


@dataclass(frozen=True)
class _GatherPlan:
    """A group's layout as ``workers.features._resp.gather_rows`` takes it."""

    views: list[str]
    string_refs: list[str]
    num_view: npt.NDArray[np.int32]  # view of each numeric cell
    str_view: npt.NDArray[np.int32]  # view of each string cell
    ttl: F64Array  # per view, 0 = never stale
    defaults: F32Array  # per numeric cell
    out_cols: npt.NDArray[np.int32]  # manifest.online_numeric column of each numeric cell

    @staticmethod
    def of(g: GroupPlan, defaults: F32Array) -> _GatherPlan:
        num_view = np.empty(len(g.numeric_kinds), np.int32)
        str_view = np.empty(len(g.string_refs), np.int32)
        for vi, v in enumerate(g.views):
            num_view[v.numeric], str_view[v.strings] = vi, vi
        return _GatherPlan([v.name for v in g.views], list(g.string_refs), num_view, str_view,
                           np.array([v.ttl_s for v in g.views], np.float64),
                           np.ascontiguousarray(defaults[g.numeric_out], np.float32),
                           np.asarray(g.numeric_out, np.int32))


def gather_numpy(g: GroupPlan, rows: _Rows, codes: IntpArray, now: float, drop_stale: bool, defaults: F32Array,
                 string_defaults: dict[str, str], numeric: F32Array, strings: dict[str, ObjArray],
                 missing: dict[str, BoolArray], stale: dict[str, BoolArray]) -> None:
    """A group's rows (one per entity id) into the batch's rows (``codes``: each row's id): its
    columns of ``numeric`` [n, online_numeric], its ``strings``, and per view ``missing`` / ``stale``
    (with ``drop_stale``, a value past its view's TTL reads as its default)."""
    present = ~np.isnan(rows.numbers)
    has_string = rows.has_string.copy()
    for vi, v in enumerate(g.views):
        ts = rows.ts[:, vi]
        any_present = present[:, v.numeric].any(axis=1) | has_string[:, v.strings].any(axis=1)
        miss = ~any_present | (ts <= 0.0)
        old = ~miss & (v.ttl_s > 0) & (now - ts > v.ttl_s)
        missing[v.name], stale[v.name] = miss[codes], old[codes]
        if drop_stale and old.any():
            # A value past its TTL counts as absent for the model, as in Feast's semantics.
            present[:, v.numeric] &= ~old[:, None]
            has_string[:, v.strings] &= ~old[:, None]
    values = np.where(present, rows.numbers.astype(np.float32), defaults[g.numeric_out])
    numeric[:, g.numeric_out] = values[codes]
    for s, ref in enumerate(g.string_refs):
        strings[ref] = np.where(has_string[:, s], rows.strings[:, s], string_defaults[ref])[codes]


def gather_native(plan: _GatherPlan, rows: _Rows, codes: IntpArray, now: float, drop_stale: bool,
                  string_defaults: dict[str, str], numeric: F32Array, strings: dict[str, ObjArray],
                  missing: dict[str, BoolArray], stale: dict[str, BoolArray]) -> None:
    """``gather_numpy`` with the numbers and flags in one C pass (``workers.features._resp.gather_rows``)."""
    assert _gather_rows is not None
    n, nv = len(codes), len(plan.views)
    miss, old = np.empty((nv, n), bool), np.empty((nv, n), bool)
    str_ok = np.empty((n, len(plan.str_view)), bool)
    _gather_rows(np.ascontiguousarray(rows.numbers, np.float64), np.ascontiguousarray(rows.ts, np.float64),
                 np.ascontiguousarray(rows.has_string, bool), plan.num_view, plan.str_view, plan.ttl, now,
                 drop_stale, plan.defaults, np.ascontiguousarray(codes, np.int64), numeric, plan.out_cols, miss,
                 old, str_ok)
    for vi, name in enumerate(plan.views):
        missing[name], stale[name] = miss[vi], old[vi]
    for s, ref in enumerate(plan.string_refs):
        strings[ref] = np.where(str_ok[:, s], rows.strings[codes, s], string_defaults[ref])


class _RowCache:
    """Decoded rows of a slowly changing view group per entity id, for ``ttl_s``; FIFO-bounded.

    Absent entities are cached too: an unknown merchant is asked for again only after the TTL.
    Staleness is still judged at read time from the cached timestamps.
    """

    def __init__(self, g: GroupPlan, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self._slot: dict[Any, int] = {}
        self._owner: list[Any] = [None] * max_entries
        self._next = 0
        self._rows = _Rows.empty(g, max_entries)
        self._expires = np.zeros(max_entries)
        self.hits = 0
        self.misses = 0

    def lookup(self, ids: list[Any], now: float) -> tuple[IntpArray, BoolArray]:
        slots = np.fromiter(map(self._slot.get, ids, repeat(-1)), dtype=np.intp, count=len(ids))
        hit = slots >= 0
        hit[hit] = self._expires[slots[hit]] > now
        h = int(hit.sum())
        self.hits += h
        self.misses += len(ids) - h
        return slots, hit

    def take(self, slots: IntpArray) -> _Rows:
        return self._rows.take(slots)

    def store(self, ids: list[Any], rows: _Rows, now: float) -> None:
        slots = np.empty(len(ids), dtype=np.intp)
        for i, key in enumerate(ids):
            s = self._slot.get(key)
            if s is None:
                s = self._next
                self._next = (s + 1) % len(self._owner)
                old = self._owner[s]
                if old is not None:
                    del self._slot[old]
                self._owner[s] = key
                self._slot[key] = s
            slots[i] = s
        self._rows.put(slots, rows)
        self._expires[slots] = now + self.ttl_s


class _KeyCache:
    """Entity id -> RESP-framed Redis key (``$<len>\\r\\n<key>\\r\\n``); bounded, oldest dropped."""

    def __init__(self, key_of: Callable[[Any], bytes], max_entries: int) -> None:
        self._key_of = key_of
        self._max = max_entries
        self._parts: dict[Any, bytes] = {}

    def parts(self, ids: list[Any]) -> list[bytes]:
        got: list[Any] = list(map(self._parts.get, ids))
        if None in got:
            for i, v in enumerate(got):
                if v is None:
                    key = self._key_of(ids[i])
                    got[i] = part = b"$%d\r\n%s\r\n" % (len(key), key)
                    if len(self._parts) >= self._max:
                        for old in list(self._parts)[: self._max // 4 + 1]:
                            del self._parts[old]
                    self._parts[ids[i]] = part
        return got


class _StoreError(RuntimeError):
    """The store answered in a way this reader cannot use (e.g. a cluster redirect)."""


# ---- the reader ------------------------------------------------------------------------------


class FastRedisReader:
    """Online features for a micro-batch straight from Feast's Redis layout (see module doc)."""

    def __init__(
        self,
        repo_path: Path,
        feature_service: str,
        manifest: ModelManifest,
        *,
        settings: Settings | None = None,
        timeout_ms: float = 50.0,
        cache_ttl_ms: float = 0.0,
        cache_max_entries: int = 100_000,
        cached_views: Sequence[str] = (),
        stale_policy: StalePolicy = "default",
        retry_after_ms: float = 1000.0,
        key_cache_max_entries: int = 200_000,  # ~40 MB at most; a hit saves ~1 us of Python per key
        decode_chunk_keys: int = 256,  # hiredis parser only: replies decoded this many at a time
        parser: Parser = "auto",
        command: Command = "auto",
        now_s: Callable[[], float] = time.time,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        import hiredis

        self._settings = settings if settings is not None else get_settings()
        self._manifest = manifest
        self._stale_policy = stale_policy
        self._retry_after_s = retry_after_ms / 1000.0
        self._timeout_s = timeout_ms / 1000.0
        self._chunk_keys = max(1, decode_chunk_keys)
        self._now_s = now_s
        self._clock_s = clock_s
        self._down_until = 0.0
        self.last_error: str | None = None
        self.last_cause: str | None = None
        self._fill = FeatureDefaults(manifest)
        self._defaults = self._fill.numeric
        self._string_defaults = self._fill.strings
        self._strings = StringCells(native_table=_Interner)
        self._groups, self._service_views = plan_groups(Path(repo_path).resolve(), feature_service, manifest,
                                                        self._settings)
        self._keys = [_KeyCache(g.key_of, key_cache_max_entries) for g in self._groups]
        self._caches: list[_RowCache | None] = [None] * len(self._groups)  # per group, if cached
        self._setup_cache(cached_views, cache_ttl_ms / 1000.0, cache_max_entries)
        self._pool = self._make_pool()
        # redis-py connects, authenticates, selects the db and applies timeouts/TLS; replies are
        # then read here with hiredis in one loop (redis-py's read_response costs ~1 us per reply).
        self._conn: Any = None  # redis-py's Connection classes are untyped
        self._hiredis = hiredis
        self._reader: Any = hiredis.Reader()
        self._buf = bytearray(1 << 18)
        if parser == "native" and not NATIVE_AVAILABLE:
            raise FeatureStoreError("features parser 'native' asked for, but workers.features._resp was not built "
                                    "(no C compiler at install?): reinstall with one, or use parser 'hiredis'")
        self.parser: Parser = "native" if parser != "hiredis" and NATIVE_AVAILABLE else "hiredis"
        if command == "hgetall" and self.parser != "native":
            raise FeatureStoreError("features command 'hgetall' is read by the native parser only "
                                    f"(parser here: {self.parser}): use command 'hmget' or 'auto'")
        # The native parser's socket buffer: replies land at [_end:], are framed from _pos.
        self._rbuf = bytearray(1 << 18)
        self._pos = self._end = 0
        self._cell_kinds = {g.join_key: _kinds(g) for g in self._groups}
        # The native parser's readers also gather rows into the batch in C (the numpy path is
        # the hiredis parser's; parity tests run both).
        self._gather = ({g.join_key: _GatherPlan.of(g, self._defaults) for g in self._groups}
                        if self.parser == "native" and _gather_rows is not None else None)
        # HGETALL (native parser only): where the model reads most of the entity's hash.
        self._hgetall = {g.join_key: self.parser == "native" and (command == "hgetall" or (
            command == "auto" and g.prefers_hgetall)) for g in self._groups}
        self._names = {g.join_key: (b"".join(g.fields), np.cumsum([len(f) for f in g.fields]).astype(np.int32))
                       for g in self._groups}

    @classmethod
    def from_topology(cls, topology: Topology, settings: Settings, manifest: ModelManifest) -> FastRedisReader:
        spec = topology.features
        assert spec is not None  # the factory hands out NoFeatures otherwise
        return cls(
            settings.feature_repo, spec.feature_service, manifest, settings=settings,
            timeout_ms=spec.timeout_ms, cache_ttl_ms=spec.cache_ttl_ms,
            cache_max_entries=spec.cache_max_entries, cached_views=spec.cached_views,
            parser=spec.parser, command=spec.command,
        )

    # -- construction

    def _setup_cache(self, cached_views: Sequence[str], ttl_s: float, max_entries: int) -> None:
        wanted = set(cached_views)
        known = {v.name for g in self._groups for v in g.views}
        if wanted - known:
            raise FeatureStoreError(
                f"features.cached_views names {sorted(wanted - known)}, not views the model reads ({sorted(known)})"
            )
        for i, g in enumerate(self._groups):
            names = {v.name for v in g.views}
            if not names & wanted:
                continue
            if not names <= wanted:
                # One HMGET reads all views of an entity; caching part of it saves no round trip.
                raise FeatureStoreError(
                    f"features.cached_views: {sorted(names)} share the {g.join_key} key; cache all of them or none"
                )
            if ttl_s > 0:
                self._caches[i] = _RowCache(g, ttl_s, max_entries)

    def _make_pool(self) -> redis.ConnectionPool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        s = self._settings
        kwargs: dict[str, Any] = {
            "socket_timeout": self._timeout_s,
            "socket_connect_timeout": self._timeout_s,
            "retry": Retry(NoBackoff(), 0),  # redis-py retries with backoff by default; fail fast
            "health_check_interval": 0,
        }
        if s.redis_password is not None:
            kwargs["password"] = s.redis_password.get_secret_value()
        return redis.ConnectionPool.from_url(s.redis_url, **kwargs)

    # -- reading

    @property
    def join_keys(self) -> list[str]:
        return [g.join_key for g in self._groups]

    @property
    def cache_hits(self) -> int:
        return sum(c.hits for c in self._caches if c is not None)

    @property
    def cache_misses(self) -> int:
        return sum(c.misses for c in self._caches if c is not None)

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        """Features for rows given as entity columns (e.g. ``{"card_id": ..., "merchant_id": ...}``);
        ``timeout_s``: how long reads may wait for Redis (default ``timeout_ms``)."""
        t0 = time.perf_counter()
        missing_keys = [g.join_key for g in self._groups if g.join_key not in entities]
        if missing_keys:
            raise ValueError(f"fetch needs entity columns {self.join_keys}, missing {missing_keys}")
        n = len(entities[self._groups[0].join_key]) if self._groups else 0
        if n == 0:
            return self._all_defaults(0, degraded=False, t0=t0)
        if self._clock_s() < self._down_until:
            return self._all_defaults(n, degraded=True, t0=t0)
        try:
            return self._fetch(entities, n, t0, timeout_s or self._timeout_s)
        except Exception as e:
            self._failed(e)
            return self._all_defaults(n, degraded=True, t0=t0)

    def _failed(self, e: Exception) -> None:
        import redis

        self._disconnect()  # a half-read pipeline leaves replies on the socket
        # A slow reply (Redis alive, host busy) is retried on the next batch but one; only a
        # refused or broken connection backs off for the full retry_after_ms.
        slow = isinstance(e, (TimeoutError, redis.exceptions.TimeoutError))
        backoff_s = min(self._retry_after_s, 0.1) if slow else self._retry_after_s
        self._down_until = self._clock_s() + backoff_s
        self.last_cause = "error" if isinstance(e, _StoreError) else cause_of(e)
        self.last_error = str(e) if isinstance(e, _StoreError) else describe(self.last_cause, self._settings, e)
        if isinstance(e, (redis.exceptions.RedisError, OSError, _StoreError)):
            log.error("%s; the feature policy decides for %.0f ms", self.last_error, backoff_s * 1000.0)
        else:  # a bug, not the store: keep scoring with defaults, but say where
            log.exception("redis_fast reader failed; serving defaults for %.0f ms", backoff_s * 1000.0)

    def _socket(self) -> Any:
        if self._conn is None:
            self._conn = self._pool.make_connection()
        if getattr(self._conn, "_sock", None) is None:
            self._conn.connect()
            self._reader = self._hiredis.Reader()
            self._pos = self._end = 0
        return self._conn._sock

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._reader = self._hiredis.Reader()
        self._pos = self._end = 0

    def _fetch(self, entities: dict[str, ObjArray], n: int, t0: float, timeout_s: float) -> OnlineFeatures:
        clock = self._clock_s()
        plans: list[tuple[GroupPlan, IntpArray, list[Any], IntpArray, BoolArray | None, list[Any]]] = []
        sock = None
        for g, keys, cache in zip(self._groups, self._keys, self._caches):
            # Duplicate ids are fetched once. A dict in first-seen order: ~4x faster than np.unique
            # on object arrays (which sorts with Python comparisons), and faster than pandas.
            first: dict[Any, int] = {}
            codes = np.array([first.setdefault(x, len(first)) for x in np.asarray(entities[g.join_key]).tolist()],
                             dtype=np.intp)
            ids: list[Any] = list(first)
            slots, hit, todo = np.empty(0, np.intp), None, ids
            if cache is not None:
                slots, hit = cache.lookup(ids, clock)
                todo = [] if hit.all() else [ids[i] for i in np.flatnonzero(~hit).tolist()]
            if todo:
                # Sent per group at once: Redis starts on this one while the next is prepared.
                if sock is None:
                    sock = self._socket()
                    sock.settimeout(timeout_s)  # the batch's budget (Worker: latency_budget_ms)
                key_parts = keys.parts(todo)
                sock.sendall(g.hgetall_request(key_parts) if self._hgetall[g.join_key] else g.request(key_parts))
            plans.append((g, codes, ids, slots, hit, todo))
        t_sent = time.perf_counter()
        io_s = decode_s = 0.0
        odd = 0
        results: list[_Rows] = []
        if self._pos == self._end:  # every reply of the last batch was read: start at the front
            self._pos = self._end = 0
        read = self._read_native if self.parser == "native" else self._read_hiredis
        for (g, _, ids, slots, hit, todo), cache in zip(plans, self._caches):
            # Replies stream back as Redis works through the pipeline; reading them as they arrive
            # (native: per recv; hiredis: in chunks) overlaps the client with the server.
            parts, k, io, dec = read(sock, g, len(todo))
            odd, io_s, decode_s = odd + k, io_s + io, decode_s + dec
            t2 = time.perf_counter()
            rows = parts[0] if len(parts) == 1 else _Rows.concat(parts) if parts else _Rows.empty(g, 0)
            if cache is not None and hit is not None:
                merged = _Rows.empty(g, len(ids))
                if hit.any():
                    merged.put(hit, cache.take(slots[hit]))
                if todo:
                    merged.put(~hit, rows)
                    cache.store(todo, rows, clock)
                rows = merged
            results.append(rows)
            decode_s += time.perf_counter() - t2
        self.last_error = self.last_cause = None
        out = self._assemble(plans, results, n, t0)
        out.extra.update({
            "redis_keys": float(sum(len(p[5]) for p in plans)),
            "prepare_ms": (t_sent - t0) * 1000.0,
            "redis_ms": io_s * 1000.0,
            "decode_ms": decode_s * 1000.0,
            "protobuf_cells": float(odd),
            "cache_hits": float(sum(int(p[4].sum()) for p in plans if p[4] is not None)),
            "cache_misses": float(sum(len(p[5]) for p in plans if p[4] is not None)),
        })
        return out

    def _read_hiredis(self, sock: Any, g: GroupPlan, k: int) -> tuple[list[_Rows], int, float, float]:
        """``k`` replies through hiredis (one bytes object per cell), decoded in chunks."""
        parts: list[_Rows] = []
        odd = 0
        io_s = decode_s = 0.0
        n_chunks = max(1, round(k / self._chunk_keys))  # even chunks, ~chunk_keys each
        bounds = [k * c // n_chunks for c in range(n_chunks + 1)]
        for lo, hi in zip(bounds, bounds[1:]):
            t1 = time.perf_counter()
            replies = self._recv(sock, hi - lo)
            t2 = time.perf_counter()
            rows, n = self._decode_replies(g, replies)
            parts.append(rows)
            odd += n
            io_s += t2 - t1
            decode_s += time.perf_counter() - t2
        return parts, odd, io_s, decode_s

    def _recv(self, sock: Any, k: int) -> list[Any]:
        """The next ``k`` replies (error replies come back as exception objects, not raised)."""
        out: list[Any] = []
        if not k:
            return out
        reader, buf, append = self._reader, self._buf, out.append
        left = k
        while True:
            r = reader.gets()
            while r is not False:
                append(r)
                left -= 1
                if not left:
                    return out
                r = reader.gets()
            nbytes = sock.recv_into(buf)
            if not nbytes:
                raise ConnectionError("Redis closed the connection")
            reader.feed(buf, 0, nbytes)

    def _read_native(self, sock: Any, g: GroupPlan, k: int) -> tuple[list[_Rows], int, float, float]:
        """``k`` replies framed and decoded by ``workers.features._resp`` straight from the socket buffer
        (no Python object per cell) as their bytes arrive: what Redis has answered is read while
        it works on the rest, leaving only strings and odd cells for the end."""
        assert _parse_hmget is not None and _parse_hgetall is not None
        if not k:
            return [], 0, 0.0, 0.0
        hgetall, (names, ends) = self._hgetall[g.join_key], self._names[g.join_key]
        kinds = self._cell_kinds[g.join_key]
        f, nn, nv = len(g.fields), len(g.numeric_kinds), len(g.views)
        lens: I32Array = np.empty((k, f), dtype=np.int32)
        offs: I64Array = np.empty((k, f), dtype=np.int64)
        status: I8Array = np.empty(k, dtype=np.int8)
        numbers: F64Array = np.empty((k, nn))
        sec, nanos = np.empty((k, nv), np.int64), np.empty((k, nv), np.int64)
        odd_cells: U8Array = np.empty((k, f), np.uint8)
        row = odd = 0
        t1 = time.perf_counter()
        while True:
            try:
                if hgetall:
                    self._pos, row, n = _parse_hgetall(self._rbuf, self._pos, self._end, row, k, names, ends, kinds,
                                                       lens, offs, status, numbers, sec, nanos, odd_cells)
                else:
                    self._pos, row, n = _parse_hmget(self._rbuf, self._pos, self._end, row, k, kinds, lens, offs,
                                                     status, numbers, sec, nanos, odd_cells)
            except ValueError as e:
                raise ConnectionError(str(e)) from None
            odd += n
            if row == k:
                break
            self._recv_more(sock)
        t2 = time.perf_counter()
        rows = self._finish_native(g, numbers, sec, nanos, odd_cells if odd else None, lens, offs, status)
        return [rows], odd, t2 - t1, time.perf_counter() - t2

    def _recv_more(self, sock: Any) -> None:
        """More reply bytes into ``_rbuf[_end:]``; the buffer grows (offsets stay valid)."""
        if self._end == len(self._rbuf):
            if len(self._rbuf) >= MAX_REPLY_BYTES:
                raise _StoreError(f"Redis replies for one batch exceed {MAX_REPLY_BYTES >> 20} MB: "
                                  "lower batching.max_batch")
            self._rbuf.extend(bytes(len(self._rbuf)))
        nbytes = sock.recv_into(memoryview(self._rbuf)[self._end :])
        if not nbytes:
            raise ConnectionError("Redis closed the connection")
        self._end += nbytes

    def _finish_native(self, g: GroupPlan, numbers: F64Array, sec: I64Array, nanos: I64Array,
                       odd_cells: U8Array | None, lens: I32Array, offs: I64Array, status: I8Array) -> _Rows:
        """Rows parsed by ``workers.features._resp``: error replies reported, odd cells read through
        protobuf, string cells through the intern table."""
        buf = self._rbuf

        def cell(r: int, j: int) -> bytes | None:
            n = int(lens[r, j])
            return None if n < 0 else bytes(buf[offs[r, j] : offs[r, j] + n])

        if status.any():  # error replies and other shapes read as missing (numbers are NaN)
            for r in np.flatnonzero(status == 1).tolist():
                self._reply_error(g, bytes(buf[offs[r, 0] : offs[r, 0] + lens[r, 0]]).decode("utf-8", "replace"))
            lens = lens.copy()
            lens[status != 0] = -1
        u, nn, ns = len(status), len(g.numeric_kinds), len(g.string_refs)
        ts: F64Array = feast_seconds(sec, nanos) if nanos.any() else sec.astype(np.float64)
        if odd_cells is not None:
            bad = odd_cells.view(bool)
            self._slow(numbers, bad[:, :nn], cell, 0, slow_number)
            self._slow(ts, bad[:, nn + ns :], cell, nn + ns, slow_timestamp)

        def strings_of(s: int) -> tuple[ObjArray, BoolArray]:
            col = nn + s
            return self._strings.decode_at(buf, offs, lens, col, lambda r: cell(r, col))

        return _Rows(numbers, *_string_columns(u, ns, strings_of), ts)

    def _decode_replies(self, g: GroupPlan, replies: list[Any]) -> tuple[_Rows, int]:
        u, f = len(replies), len(g.fields)
        if not u:
            return _Rows.empty(g, 0), 0
        if not all(type(r) is list and len(r) == f for r in replies):
            replies = self._clean(g, replies)

        def cell(r: int, j: int) -> bytes | None:
            c: bytes | None = replies[r][j]
            return c

        if u * f <= SMALL_BATCH_CELLS:
            return self._decode_small(g, u, cell)
        try:
            m = cell_matrix(replies)
            if m.shape[:2] != (u, f):
                raise ValueError("not one list of fields per key")
        except (ValueError, TypeError):
            replies = self._clean(g, replies)
            m = cell_matrix(replies)
        nn = len(g.numeric_kinds)

        def strings(s: int) -> tuple[ObjArray, BoolArray]:
            return self._strings.decode(list(map(itemgetter(nn + s), replies)))

        return self._decode(g, m, cell, strings)

    def _decode(self, g: GroupPlan, m: U8Array, cell: Callable[[int, int], bytes | None],
                strings_of: Callable[[int], tuple[ObjArray, BoolArray]]) -> tuple[_Rows, int]:
        """Cells ``[u, fields, CELL_WIDTH]`` read column-wise by numpy; odd cells via ``cell``."""
        u = m.shape[0]
        odd = 0
        ns, nn = len(g.string_refs), len(g.numeric_kinds)
        numbers, bad = decode_numbers(m[:, :nn], g.layout)
        if bad.any():
            odd += self._slow(numbers, bad, cell, 0, slow_number)
        ts, bad = decode_timestamps(m[:, nn + ns :].reshape(-1, CELL_WIDTH))
        ts = ts.reshape(u, len(g.views))
        if bad.any():
            odd += self._slow(ts, bad.reshape(u, -1), cell, nn + ns, slow_timestamp)
        return _Rows(numbers, *_string_columns(u, ns, strings_of), ts), odd

    def _decode_small(self, g: GroupPlan, u: int, cell: Callable[[int, int], bytes | None]) -> tuple[_Rows, int]:
        """A few keys: protobuf per cell (Feast's own reading) beats numpy's fixed cost per call."""
        f = len(g.fields)
        nn, ns = len(g.numeric_kinds), len(g.string_refs)
        numbers = np.array([[slow_number(cell(r, j)) for j in range(nn)] for r in range(u)],
                           np.float64).reshape(u, nn)
        ts = np.array([[slow_timestamp(cell(r, j)) for j in range(nn + ns, f)] for r in range(u)], np.float64)
        strings, has_string = _string_columns(
            u, ns, lambda s: self._strings.decode([cell(r, nn + s) for r in range(u)]))
        return _Rows(numbers, strings, has_string, ts.reshape(u, len(g.views))), u * (nn + len(g.views))

    @staticmethod
    def _slow(vals: F64Array, bad: BoolArray, cell: Callable[[int, int], bytes | None], first: int,
              parse: Callable[[bytes | None], float]) -> int:
        """Cells the vectorized decoders could not read, through protobuf (``vals``/``bad``: [u, c])."""
        rows, cols = np.nonzero(bad)
        for r, c in zip(rows.tolist(), cols.tolist()):
            vals[r, c] = parse(cell(r, first + c))
        return len(rows)

    @staticmethod
    def _reply_error(g: GroupPlan, msg: str) -> None:
        """An error reply for one key: a cluster redirect, missing credentials or a loading Redis fail
        the batch (every key answers the same), anything else reads missing."""
        import redis

        if msg.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise redis.exceptions.AuthenticationError(msg)
        if msg.startswith(("LOADING", "MASTERDOWN")):
            raise redis.exceptions.BusyLoadingError(msg)
        if msg.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")):
            raise _StoreError(f"Redis answered {msg!r}: the redis_fast reader does not support "
                              "Redis Cluster — use `features.reader: feast_sdk`")
        log.warning("Redis answered %r for a %s key; reading it as missing", msg, g.join_key)

    @classmethod
    def _clean(cls, g: GroupPlan, replies: list[Any]) -> list[Any]:
        """Replies with errors or of the wrong shape: such keys read as having no values."""
        f = len(g.fields)
        clean: list[Any] = []
        for r in replies:
            if isinstance(r, Exception):
                cls._reply_error(g, str(r))
            ok = isinstance(r, list) and len(r) == f and all(x is None or isinstance(x, bytes) for x in r)
            clean.append(r if ok else [None] * f)
        return clean

    def _assemble(self, plans: list[Any], results: list[_Rows], n: int, t0: float) -> OnlineFeatures:
        now = self._now_s()
        man = self._manifest
        numeric = np.empty((n, len(man.online_numeric)), dtype=np.float32)
        strings: dict[str, ObjArray] = {}
        missing: dict[str, BoolArray] = {}
        stale: dict[str, BoolArray] = {}
        unique_ids = 0
        for (g, codes, ids, *_), rows in zip(plans, results):
            unique_ids += len(ids)
            drop_stale = self._stale_policy == "default"
            if self._gather is not None:
                gather_native(self._gather[g.join_key], rows, codes, now, drop_stale, self._string_defaults,
                              numeric, strings, missing, stale)
            else:
                gather_numpy(g, rows, codes, now, drop_stale, self._defaults, self._string_defaults,
                             numeric, strings, missing, stale)
        return OnlineFeatures(
            numeric=numeric,
            strings={r: strings[r] for r in man.online_strings},
            missing={v: missing[v] for v in self._service_views if v in missing},
            stale={v: stale[v] for v in self._service_views if v in stale},
            degraded=False,
            fetch_ms=(time.perf_counter() - t0) * 1000.0,
            extra={"unique_ids": float(unique_ids)},
        )

    def _all_defaults(self, n: int, *, degraded: bool, t0: float) -> OnlineFeatures:
        return self._fill.rows(n, self._service_views, degraded=degraded, t0=t0, unavailable=self.last_cause)

    @property
    def views(self) -> list[str]:
        """The feature service's views (the names ``missing`` and ``features.on_missing`` use)."""
        return list(self._service_views)

    def close(self) -> None:
        self._disconnect()
        self._conn = None
        self._pool.disconnect()
