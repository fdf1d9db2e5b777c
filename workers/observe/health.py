"""Health probes and the HTTP server that serves them beside ``/metrics``.

``/healthz`` (liveness): the process answers and the consumer loop went round within
``liveness_timeout_s`` (a loop stuck in a call that never returns fails it; Kubernetes restarts
the pod). ``/readyz`` (readiness): the engine is warmed up, the consumer has partitions, the broker
answered the last probe, the feature store answered it too (or the worker is allowed to serve
degraded decisions: setting ``ready_when_degraded``), and the worker is not draining. Both answer
JSON naming each check, with 200 or 503. Probes of the broker and the store run on a background
thread (``Prober``), never in a request or on the hot path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import make_server

import orjson
from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

log = logging.getLogger(__name__)


@dataclass
class Health:
    liveness_timeout_s: float = 30.0
    ready_when_degraded: bool = False
    warmed: bool = False
    draining: bool = False
    broker_ok: bool | None = None  # None: not probed yet
    store_ok: bool | None = None  # None: not probed yet, or no store
    has_store: bool = True
    assigned: Callable[[], bool] = field(default=lambda: False)
    beat_s: float = field(default_factory=time.monotonic)
    on_ready_change: Callable[[bool], None] | None = None
    _last_ready: bool | None = None

    def beat(self) -> None:
        self.beat_s = time.monotonic()

    def live(self) -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - self.beat_s
        ok = since <= self.liveness_timeout_s
        return ok, {"loop_seconds_since_beat": round(since, 3), "limit_s": self.liveness_timeout_s}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        store = (not self.has_store or self.store_ok is True
                 or (self.ready_when_degraded and self.store_ok is not None))
        checks = {
            "engine_warmed": self.warmed,
            "partitions_assigned": self.assigned(),
            "broker_reachable": self.broker_ok is True,
            "store_reachable": (self.store_ok if self.has_store else None),
            "store_ok_or_degraded_allowed": store,
            "not_draining": not self.draining,
        }
        ok = all(v for k, v in checks.items() if k != "store_reachable")
        if ok != self._last_ready:
            self._last_ready = ok
            if self.on_ready_change is not None:
                self.on_ready_change(ok)
        return ok, checks


class Prober:
    """Runs ``checks`` every ``interval_s`` on one daemon thread; a check never raises out.
    ``at_exit`` runs on that thread when it stops (closing the clients the checks use there, so no
    other thread closes a client while a check is inside a call on it)."""

    def __init__(self, checks: Iterable[Callable[[], None]], interval_s: float,
                 at_exit: Callable[[], None] | None = None) -> None:
        self._checks = list(checks)
        self._interval_s = interval_s
        self._at_exit = at_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="observe-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def interrupt(self) -> None:
        """Stop after the call in progress (does not wait)."""
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop; True if the thread ended within ``timeout_s`` (a check waiting on an unreachable
        peer may not: it is left to end on its own, the process need not wait for it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        try:
            while True:
                for check in self._checks:
                    if self._stop.is_set():
                        return
                    try:
                        check()
                    except Exception:  # a probe that fails is a failed probe, not a dead thread
                        log.debug("probe failed", exc_info=True)
                if self._stop.wait(self._interval_s):
                    return
        finally:
            if self._at_exit is not None:
                try:
                    self._at_exit()
                except Exception:
                    log.debug("probe clean-up failed", exc_info=True)


def redis_ping(url: str, timeout_s: float) -> Callable[[], bool]:
    """A function that PINGs the Redis at ``url`` (True: it answered within ``timeout_s``)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except Exception:
            return False

    return ping


class _App:
    def __init__(self, health: Health | None) -> None:
        self._health = health
        self._metrics = make_wsgi_app(REGISTRY)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            if self._health is None:
                ok, body = True, {"checks": "no worker in this process"}
            else:
                ok, body = self._health.live() if path == "/healthz" else self._health.ready()
            data = orjson.dumps({"ok": ok, **body})
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        out: Iterable[bytes] = self._metrics(environ, start_response)
        return out


class ObserveServer:
    """``/metrics``, ``/healthz``, ``/readyz`` on ``addr:port`` (port 0: any free port), served
    by a daemon thread."""

    def __init__(self, addr: str, port: int, health: Health | None = None) -> None:
        self._httpd = make_server(addr, port, _App(health), ThreadingWSGIServer, handler_class=_SilentHandler)
        self.port = int(self._httpd.server_port)
        self.addr = addr
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="observe-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
