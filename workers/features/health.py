"""Is the online store usable? Errors named by cause, and a store that answers but is empty.

A reader that cannot read the store returns defaults flagged ``degraded`` with a stable cause
(``OnlineFeatures.unavailable``): ``unreachable`` (refused, reset, closed), ``timeout`` (no answer
within the batch's budget), ``auth`` (the password was refused, or none was sent to a Redis
that requires one), ``loading`` (Redis is loading its data set), ``error`` (anything else, e.g. a
cluster redirect). ``describe`` words each one as what to do.

A Redis that restarted without persistence answers every key as absent: read naively, every
row is "a new card" scored with defaults. ``setup`` (materialize) writes a sentinel per view,
``streamscore:materialized:<project>:<view>``; ``StoreHealth`` checks that the views' sentinels
exist, at most once per ``interval_s`` on its own connection (and at once after a failed read or
a batch where every row of every view is missing), and ``GuardedReader`` turns a batch read from
a store without them into a degraded one (``empty_store``) for the policy to decide.
A sentinel is exact where a share of missing rows would have to guess: a burst of new cards and
an emptied store look alike by their rows.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from workers.events import ObjArray, OnlineFeatures
from workers.features.base import FeatureReader
from workers.settings import Settings

log = logging.getLogger(__name__)

SENTINEL_PREFIX = "streamscore:materialized"
CAUSES = ("unreachable", "timeout", "auth", "loading", "empty_store", "error")


def sentinel_key(project: str, view: str) -> str:
    return f"{SENTINEL_PREFIX}:{project}:{view}"


def redis_client(settings: Settings, timeout_s: float = 2.0) -> Any:
    """A redis-py client for ``settings`` (``redis.Redis``; untyped here to keep redis lazy)."""
    import redis

    pw = settings.redis_password.get_secret_value() if settings.redis_password is not None else None
    return redis.Redis.from_url(settings.redis_url, password=pw, socket_connect_timeout=timeout_s,
                                socket_timeout=timeout_s)


def mark_materialized(settings: Settings, project: str, views: Sequence[str]) -> None:
    """Write the views' sentinels (after a materialization into the online store)."""
    client = redis_client(settings)
    try:
        now_ms = str(time.time_ns() // 1_000_000)
        client.mset({sentinel_key(project, v): now_ms for v in views})
    finally:
        client.close()


def cause_of(exc: BaseException) -> str:
    import redis

    if isinstance(exc, redis.exceptions.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        return "auth"
    if isinstance(exc, (TimeoutError, redis.exceptions.TimeoutError)):
        return "timeout"
    if isinstance(exc, redis.exceptions.BusyLoadingError) or str(exc).startswith("LOADING"):
        return "loading"
    if isinstance(exc, (redis.exceptions.ConnectionError, ConnectionError, OSError)):
        return "unreachable"
    return "error"


def describe(cause: str, settings: Settings, exc: BaseException | None = None) -> str:
    """What happened and what to do, for the log."""
    host, port = settings.redis_host_port
    what = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return {
        "auth": f"Redis at {host}:{port} refused the credentials{what}: set STREAMSCORE_REDIS_PASSWORD "
                "(or the password in STREAMSCORE_REDIS_URL) to the server's requirepass",
        "timeout": f"Redis at {host}:{port} did not answer within the batch's latency budget{what}: "
                   "the host or Redis is overloaded (features.latency_budget_ms)",
        "loading": f"Redis at {host}:{port} is loading its data set{what}; it answers when done",
        "unreachable": f"Redis at {host}:{port} is unreachable{what} — is it running "
                       "(locally: `streamscore dev up`)? The reader reconnects by itself",
        "empty_store": f"Redis at {host}:{port} answers but holds no materialized features (no "
                       f"{SENTINEL_PREFIX}:* sentinel: restarted without persistence, or flushed) — "
                       "run `streamscore setup --topology <file>` (materialize) again",
    }.get(cause, f"the online store could not be read{what}")


class StoreHealth:
    """Whether the views' sentinels exist, asked at most once per ``interval_s``."""

    def __init__(self, settings: Settings, project: str, views: Sequence[str], *, interval_s: float = 1.0,
                 clock_s: Callable[[], float] = time.monotonic) -> None:
        self._keys = [sentinel_key(project, v) for v in views]
        self._views = list(views)
        self._settings = settings
        self._interval_s = interval_s
        self._clock_s = clock_s
        self._next = 0.0
        self._empty: list[str] = []
        self._client: Any = None
        self.unknown = False  # the last check could not ask the store (unreachable, auth)

    def recheck(self) -> None:
        """Ask again on the next call (the reader just failed: the store may come back empty)."""
        self._next = 0.0

    def empty_views(self) -> list[str]:
        """Views without a sentinel at the last check ([] while the store cannot be asked: the
        reader reports that itself)."""
        now = self._clock_s()
        if now < self._next or not self._keys:
            return self._empty
        self._next = now + self._interval_s
        for _ in range(2):  # a connection from before a Redis restart fails once: a new one
            try:
                if self._client is None:
                    self._client = redis_client(self._settings, timeout_s=0.2)
                if self._client.exists(*self._keys) == len(self._keys):
                    self._empty = []
                else:
                    found = self._client.mget(self._keys)
                    self._empty = [v for v, x in zip(self._views, found) if x is None]
                self.unknown = False
                return self._empty
            except Exception:  # unreachable / auth: the batch read says so, with its cause
                self._close()
        self._empty = []
        self.unknown = True
        self._next = 0.0  # could not ask: ask again next batch
        return self._empty

    def _close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing is best effort
                pass
        self._client = None

    def close(self) -> None:
        self._close()


class GuardedReader:
    """A reader whose reads from an empty store (no sentinels) come back degraded, ``empty_store``;
    logs each change of the store's condition once (not per batch)."""

    def __init__(self, reader: FeatureReader, health: StoreHealth, settings: Settings) -> None:
        self._reader = reader
        self._health = health
        self._settings = settings
        self._condition: str | None = None

    @property
    def join_keys(self) -> list[str]:
        return self._reader.join_keys

    @property
    def inner(self) -> FeatureReader:
        return self._reader

    def empty_views(self) -> list[str]:
        """The views without a materialization sentinel (asked now; [] when the store cannot be
        asked: a read says why)."""
        self._health.recheck()
        return self._health.empty_views()

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        out = self._reader.fetch(entities, timeout_s)
        if out.degraded:
            self._health.recheck()  # a store that comes back may come back empty
        elif len(out):
            all_missing = bool(out.missing) and all(m.all() for m in out.missing.values())
            if all_missing:
                self._health.recheck()  # every row of every view missing: a flushed store?
            empty = self._health.empty_views()
            if empty:
                out = dataclasses.replace(out, degraded=True, unavailable="empty_store")
                self._note("empty_store", f"{describe('empty_store', self._settings)}; views {empty}")
                return out
            if all_missing and self._health.unknown:
                # Nothing found and the store could not be asked whether it is empty (it went away
                # right after the read, e.g. restarting): not trusted as "every entity is new".
                out = dataclasses.replace(out, degraded=True, unavailable="unreachable")
                self._note("unreachable", f"{describe('unreachable', self._settings)} (every row missing "
                                          "and the store's sentinels could not be read)")
                return out
        self._note(out.unavailable if out.degraded else None, None)
        return out

    def _note(self, condition: str | None, message: str | None) -> None:
        if condition == self._condition:
            return
        if condition is None:
            log.warning("online store usable again (was: %s)", self._condition)
        elif message is not None:
            log.error("%s", message)
        self._condition = condition

    def close(self) -> None:
        self._health.close()
        self._reader.close()
