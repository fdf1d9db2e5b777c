"""``redis_fast`` feature reader: Feast's Redis online store read directly, one round trip per batch.

Same answers as ``FeastSdkReader`` (Feast's ``get_online_features``) at a fraction of its cost:

* The layout is derived once, at start-up, from the Feast registry (``feast apply`` output): views
  of the feature service, TTLs, value types, join keys, project, entity-key serialization version,
  the murmur3 field of every ``view:feature`` (``workers/feastlayout.py``). Nothing about the repo
  is written down here.
* A micro-batch is ONE pipelined write of ``HMGET`` commands, one per distinct entity id (all views
  of an entity live in one Redis hash: a card's ``card_profile`` and ``card_velocity`` come back
  together), then reading the replies with hiredis in one loop. Request bytes are joined from
  cached per-id pieces: serializing an entity key in Python costs more than fetching it.
* Decoding is per batch, not per value: the replies become one byte matrix (numpy, one C pass) and
  numpy reads protobuf's wire format column-wise (``float_val`` = tag + 4 bytes LE, ``double_val``
  = tag + 8, ints and bools are varints, ``_ts:<view>`` a ``Timestamp`` of two varints). Cells of
  another shape (other value type, extra fields) go through protobuf, read as Feast reads them;
  so do replies of a few keys, where numpy's fixed cost per call exceeds protobuf's per cell.
  The decoders are in ``workers/feastwire.py``; this module fetches, caches and assembles.
  Replies are decoded in chunks as they stream in, overlapping with Redis working on the rest.
* Optional in-process cache (``cached_views``, ``cache_ttl_ms``, ``cache_max_entries``) for slowly
  changing views: decoded rows per entity id, hit/miss counted. Views sharing an entity are read by
  one HMGET, so they are cached together or not at all (a partial list is refused).

Semantics are ``FeastSdkReader``'s: a view is ``missing`` for a row when none of its features has a
value or its timestamp is 0; ``stale`` when older than the view's TTL; missing and (with
``stale_policy="default"``) stale values get the manifest's defaults. Timestamps are rounded to
microseconds exactly as Feast's datetime round trip rounds them, so TTL edges agree too.

Failure: Redis down or slow (socket timeouts of ``features.timeout_ms``) -> ``fetch`` returns
defaults with ``degraded=True`` and every view missing, does not try again for
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
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.events import BoolArray, F64Array, ObjArray, OnlineFeatures
from workers.features import FeatureDefaults
from workers.feastlayout import GroupPlan, plan_groups
from workers.feastwire import (
    CELL_WIDTH,
    IntpArray,
    StringCells,
    cell_matrix,
    decode_numbers,
    decode_timestamps,
    slow_number,
    slow_timestamp,
)
from workers.featurestore import FeatureStoreError, StalePolicy
from workers.manifest import ModelManifest
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    import redis

    from workers.topology import Topology

log = logging.getLogger("streamscore.fastfeatures")

# Up to this many cells (keys x fields) a reply is read with protobuf per cell (~1.1 us a cell):
# the vectorized decode's fixed cost (~60 us a call) only pays off above it.
SMALL_BATCH_CELLS = 48


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
        decode_chunk_keys: int = 256,
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
        self._fill = FeatureDefaults(manifest)
        self._defaults = self._fill.numeric
        self._string_defaults = self._fill.strings
        self._strings = StringCells()
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

    @classmethod
    def from_topology(cls, topology: Topology, settings: Settings, manifest: ModelManifest) -> FastRedisReader:
        spec = topology.features
        return cls(
            settings.feature_repo, spec.feature_service, manifest, settings=settings,
            timeout_ms=spec.timeout_ms, cache_ttl_ms=spec.cache_ttl_ms,
            cache_max_entries=spec.cache_max_entries, cached_views=spec.cached_views,
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

    def fetch(self, entities: dict[str, ObjArray]) -> OnlineFeatures:
        """Features for rows given as entity columns (e.g. ``{"card_id": ..., "merchant_id": ...}``)."""
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
            return self._fetch(entities, n, t0)
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
        host, port = self._settings.redis_host_port
        if isinstance(e, _StoreError):
            self.last_error = str(e)
        else:
            self.last_error = (f"Redis at {host}:{port} did not answer — is `streamscore dev up` running? "
                               f"({type(e).__name__}: {e})")
        if isinstance(e, (redis.exceptions.RedisError, OSError, _StoreError)):
            log.warning("%s; serving defaults for %.0f ms", self.last_error, backoff_s * 1000.0)
        else:  # a bug, not the store: keep scoring with defaults, but say where
            log.exception("redis_fast reader failed; serving defaults for %.0f ms", backoff_s * 1000.0)

    def _socket(self) -> Any:
        if self._conn is None:
            self._conn = self._pool.make_connection()
        if getattr(self._conn, "_sock", None) is None:
            self._conn.connect()
            self._reader = self._hiredis.Reader()
        return self._conn._sock

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._reader = self._hiredis.Reader()

    def _fetch(self, entities: dict[str, ObjArray], n: int, t0: float) -> OnlineFeatures:
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
                sock = sock or self._socket()
                sock.sendall(g.request(keys.parts(todo)))
            plans.append((g, codes, ids, slots, hit, todo))
        t_sent = time.perf_counter()
        io_s = decode_s = 0.0
        odd = 0
        results: list[_Rows] = []
        for (g, _, ids, slots, hit, todo), cache in zip(plans, self._caches):
            # Replies stream back as Redis works through the pipeline; decoding them in chunks
            # overlaps the client's decode with the server's work on the rest of the batch.
            parts: list[_Rows] = []
            n_chunks = max(1, round(len(todo) / self._chunk_keys))  # even chunks, ~chunk_keys each
            bounds = [len(todo) * c // n_chunks for c in range(n_chunks + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                t1 = time.perf_counter()
                replies = self._recv(sock, hi - lo)
                t2 = time.perf_counter()
                rows, k = self._decode(g, replies)
                parts.append(rows)
                odd += k
                io_s += t2 - t1
                decode_s += time.perf_counter() - t2
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
        self.last_error = None
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

    def _decode(self, g: GroupPlan, replies: list[Any]) -> tuple[_Rows, int]:
        u, f = len(replies), len(g.fields)
        if not u:
            return _Rows.empty(g, 0), 0
        if u * f <= SMALL_BATCH_CELLS:
            return self._decode_small(g, replies)
        try:
            m = cell_matrix(replies)
            if m.shape[:2] != (u, f):
                raise ValueError("not one list of fields per key")
        except (ValueError, TypeError):
            replies = self._clean(g, replies)
            m = cell_matrix(replies)
        odd = 0
        ns, nn = len(g.string_refs), len(g.numeric_kinds)
        numbers, bad = decode_numbers(m[:, :nn], g.layout)
        if bad.any():
            odd += self._slow(numbers, bad, replies, 0, slow_number)
        ts, bad = decode_timestamps(m[:, nn + ns :].reshape(-1, CELL_WIDTH))
        ts = ts.reshape(u, len(g.views))
        if bad.any():
            odd += self._slow(ts, bad.reshape(u, -1), replies, nn + ns, slow_timestamp)
        strings = np.empty((u, ns), dtype=object)
        has_string = np.empty((u, ns), dtype=bool)
        for s in range(ns):
            strings[:, s], has_string[:, s] = self._strings.decode(list(map(itemgetter(nn + s), replies)))
        return _Rows(numbers, strings, has_string, ts), odd

    def _decode_small(self, g: GroupPlan, replies: list[Any]) -> tuple[_Rows, int]:
        """A few keys: protobuf per cell (Feast's own reading) beats numpy's fixed cost per call."""
        f = len(g.fields)
        if not all(type(r) is list and len(r) == f for r in replies):
            replies = self._clean(g, replies)
        nn, ns = len(g.numeric_kinds), len(g.string_refs)
        u = len(replies)
        numbers = np.array([[slow_number(r[j]) for j in range(nn)] for r in replies], np.float64).reshape(u, nn)
        ts = np.array([[slow_timestamp(r[j]) for j in range(nn + ns, f)] for r in replies], np.float64)
        strings = np.empty((u, ns), dtype=object)
        has_string = np.empty((u, ns), dtype=bool)
        for s in range(ns):
            strings[:, s], has_string[:, s] = self._strings.decode(list(map(itemgetter(nn + s), replies)))
        return _Rows(numbers, strings, has_string, ts.reshape(u, len(g.views))), u * (nn + len(g.views))

    @staticmethod
    def _slow(vals: F64Array, bad: BoolArray, replies: list[Any], first: int,
              parse: Callable[[bytes | None], float]) -> int:
        """Cells the vectorized decoders could not read, through protobuf (``vals``/``bad``: [u, c])."""
        rows, cols = np.nonzero(bad)
        for r, c in zip(rows.tolist(), cols.tolist()):
            vals[r, c] = parse(replies[r][first + c])
        return len(rows)

    @staticmethod
    def _clean(g: GroupPlan, replies: list[Any]) -> list[Any]:
        """Replies with errors or of the wrong shape: such keys read as having no values."""
        f = len(g.fields)
        clean: list[Any] = []
        for r in replies:
            if isinstance(r, Exception):
                msg = str(r)
                if msg.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")):
                    raise _StoreError(f"Redis answered {msg!r}: the redis_fast reader does not support "
                                      "Redis Cluster — use `features.reader: feast_sdk`")
                log.warning("Redis answered %r for a %s key; reading it as missing", msg, g.join_key)
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
            present = ~np.isnan(rows.numbers)
            has_string = rows.has_string.copy()
            for vi, v in enumerate(g.views):
                ts = rows.ts[:, vi]
                any_present = present[:, v.numeric].any(axis=1) | has_string[:, v.strings].any(axis=1)
                miss = ~any_present | (ts <= 0.0)
                old = ~miss & (v.ttl_s > 0) & (now - ts > v.ttl_s)
                missing[v.name], stale[v.name] = miss[codes], old[codes]
                if self._stale_policy == "default" and old.any():
                    # A value past its TTL counts as absent for the model, as in Feast's semantics.
                    present[:, v.numeric] &= ~old[:, None]
                    has_string[:, v.strings] &= ~old[:, None]
            values = np.where(present, rows.numbers.astype(np.float32), self._defaults[g.numeric_out])
            numeric[:, g.numeric_out] = values[codes]
            for s, ref in enumerate(g.string_refs):
                strings[ref] = np.where(has_string[:, s], rows.strings[:, s], self._string_defaults[ref])[codes]
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
        return self._fill.rows(n, self._service_views, degraded=degraded, t0=t0)

    def close(self) -> None:
        self._disconnect()
        self._conn = None
        self._pool.disconnect()
