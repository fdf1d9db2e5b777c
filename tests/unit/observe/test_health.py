"""Liveness and readiness decisions, served over HTTP beside /metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from workers.observe.health import Health, ObserveServer
from workers.observe.status import bucket_quantile

import numpy as np


def _ready(**kw: object) -> Health:
    h = Health(liveness_timeout_s=30, warmed=True, broker_ok=True, store_ok=True, assigned=lambda: True)
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def test_readiness_needs_every_check() -> None:
    assert _ready().ready()[0]
    for bad in ({"warmed": False}, {"broker_ok": False}, {"broker_ok": None}, {"store_ok": False},
                {"draining": True}, {"assigned": lambda: False}):
        ok, checks = _ready(**bad).ready()
        assert not ok, bad


def test_store_down_is_ready_only_when_degraded_serving_is_allowed() -> None:
    assert not _ready(store_ok=False).ready()[0]
    assert _ready(store_ok=False, ready_when_degraded=True).ready()[0]
    assert _ready(has_store=False, store_ok=None).ready()[0]


def test_liveness_fails_when_the_loop_stalls() -> None:
    h = _ready(liveness_timeout_s=0.05)
    h.beat()
    assert h.live()[0]
    h.beat_s = time.monotonic() - 1
    assert not h.live()[0]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_answers_probes_and_metrics() -> None:
    h = _ready()
    srv = ObserveServer("127.0.0.1", 0, h)
    try:
        assert _get(srv.port, "/healthz")[0] == 200
        status, body = _get(srv.port, "/readyz")
        assert status == 200 and orjson.loads(body)["ok"]
        h.draining = True
        status, body = _get(srv.port, "/readyz")
        assert status == 503 and orjson.loads(body)["not_draining"] is False
        status, body = _get(srv.port, "/metrics")
        assert status == 200 and b"# TYPE" in body
    finally:
        srv.close()


def test_bucket_quantile_reads_like_histogram_quantile_upper_bounds() -> None:
    bounds = [0.001, 0.01, 0.1]
    assert bucket_quantile(bounds, np.array([0, 0, 0, 0]), 0.99) is None
    assert bucket_quantile(bounds, np.array([98, 1, 1, 0]), 0.99) == 0.01
    assert bucket_quantile(bounds, np.array([0, 0, 99, 1]), 0.99) == 0.1
    assert bucket_quantile(bounds, np.array([0, 0, 0, 5]), 0.5) == float("inf")


def test_status_line_reports_the_interval_since_the_last_one(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from workers.observe.metrics import StageMetrics
    from workers.observe.status import Counts, StatusReporter

    state = {"c": Counts(0, 0, 0, 0, 0, None, False)}
    m = StageMetrics("unit-status")
    r = StatusReporter("unit-status", lambda: state["c"], interval_s=0)
    state["c"] = Counts(1000, 990, 10, 99, 9, 42, False)
    m.acked(np.full(990, 0.004))
    with caplog.at_level(logging.INFO, logger="workers.status"):
        f = r.report()
    assert f["dead_letters"] == 10 and f["lag"] == 42 and f["e2e_p99_ms_at_most"] == 5.0
    assert f["degraded_share"] == 0.1 and f["fallback_share"] == round(9 / 990, 4)
    assert "lag 42" in caplog.text
    f = r.report()  # nothing new since
    assert f["dead_letters"] == 0 and f["e2e_p99_ms_at_most"] is None and f["degraded_share"] == 0.0
