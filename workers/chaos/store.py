"""Chaos scenarios of the online store: Redis stopped 10 s, Redis restarted empty, a wrong password.

A worker (``streamscore run``, the fraud topology on fresh topics) decides events produced at a
steady rate while the fault is injected. Passing means: 0 lost, 0 duplicated, 0 contradictory;
the fault was seen (some decisions flagged ``degraded``); every decision flagged ``degraded``
carries its cause (``unavailable:<cause>``) and was decided by the topology's policy
(``features.on_unavailable: fallback``: the fallback verdict, no score,
``fallback:features_unavailable:<cause>``); the cause was logged (the reader's message) and
counted (the worker's ``unavailable`` count equals the flagged decisions); decisions after the
fault are scored again (``recover_s``: fault over -> first scored decision).

The dev Redis keeps no data on disk, so "stopped" takes a snapshot (``SAVE``) first and the
restart loads it (as a production Redis with persistence would); "restarted empty" restarts it
without one, then puts the snapshot back (what `streamscore setup` would redo by materializing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from workers.chaos import scaffold
from workers.chaos.ledger import count, end_offsets, outcomes
from workers.chaos.report import ScenarioResult
from workers.chaos.run import ChaosContext
from workers.dev import stack as devstack
from workers.features.health import redis_client
from workers.settings import Settings

PASSWORD = "chaos-requirepass-9f2"


def _dump(settings: Settings) -> Path:
    return devstack.StatePaths(settings.state_dir).redis_data / "dump.rdb"


def _restart_redis(settings: Settings, down_s: float, rdb: Path | None) -> None:
    """Stop Redis (no save), wait ``down_s``, start it again loading ``rdb`` if given (else empty)."""
    dump = _dump(settings)
    client = redis_client(settings)
    try:
        client.shutdown(nosave=True)
    finally:
        client.close()
    time.sleep(down_s)
    dump.unlink(missing_ok=True)
    if rdb is not None:
        rdb.replace(dump)
    devstack.up(settings)
    dump.unlink(missing_ok=True)  # later restarts of the dev stack start empty, as before


def _snapshot(settings: Settings, to: Path) -> Path:
    client = redis_client(settings)
    try:
        client.save()
    finally:
        client.close()
    _dump(settings).replace(to)
    return to


def _finish(w: scaffold.WorkerProcess, timeout_s: float = 180.0) -> int:
    """The worker's exit code once it stopped by itself (idle), else after SIGTERM."""
    code = w.wait(timeout_s)
    return w.stop() if code is None else code


Fault = Callable[[ChaosContext], tuple[float, float]]  # -> (fault start, fault end), epoch ms


def _stopped(ctx: ChaosContext) -> tuple[float, float]:
    snap = _snapshot(ctx.settings, ctx.workdir / "redis-stopped.rdb")
    t0 = time.time() * 1000
    _restart_redis(ctx.settings, 10.0, snap)
    return t0, time.time() * 1000


def _restarted_empty(ctx: ChaosContext) -> tuple[float, float]:
    snap = _snapshot(ctx.settings, ctx.workdir / "redis-before-empty.rdb")
    t0 = time.time() * 1000
    _restart_redis(ctx.settings, 1.0, None)  # back at once, without its data
    time.sleep(5.0 if ctx.quick else 10.0)
    _restart_redis(ctx.settings, 0.5, snap)  # the data restored
    return t0, time.time() * 1000


def _check(ctx: ChaosContext, name: str, t_topic: Any, recs: list[dict[str, Any]], logs: str,
           counted: dict[str, int], causes: set[str], fault: tuple[float, float], codes: list[int],
           fallback_verdict: str, must_log: str) -> ScenarioResult:
    s = ctx.settings
    c = count(end_offsets(s, t_topic.input.topic), outcomes(s, t_topic.output.topic, t_topic.dead_letter.topic))
    degraded = [r for r in recs if "degraded" in r["flags"]]
    seen = {f.split(":", 1)[1] for r in degraded for f in r["flags"] if f.startswith("unavailable:")}
    off_policy = [r for r in degraded if r["verdict"] != fallback_verdict or r["score"] is not None
                  or not any(f.startswith("fallback:features_unavailable:") for f in r["flags"])]
    uncaused = [r for r in degraded if not any(f.startswith("unavailable:") for f in r["flags"])]
    after = sorted(r["decided_at_ms"] for r in recs if r["decided_at_ms"] >= fault[1] and r["score"] is not None)
    recover_s = (after[0] - fault[1]) / 1000.0 if after else None
    # Read from the store while it was empty, yet not flagged: "new" on every view, not degraded.
    views = {f for r in recs for f in r["flags"] if f.startswith("missing:")}
    unflagged = [r for r in recs if fault[0] <= r["decided_at_ms"] <= fault[1] and "degraded" not in r["flags"]
                 and views and views <= set(r["flags"])]
    notes = [f"degraded {len(degraded)} of {len(recs)}, causes {sorted(seen)}, counted {counted}, "
             f"missing every view but not degraded during the fault {len(unflagged)}"]
    ok = True
    for cond, why in (
        (c.lost == 0 and c.duplicated == 0 and c.contradictory == 0, "lost/duplicated/contradictory"),
        (bool(degraded), "the fault was not seen: no degraded decision"),
        (not off_policy, f"{len(off_policy)} degraded decisions not decided by the policy"),
        (not uncaused, f"{len(uncaused)} degraded decisions without their cause"),
        (causes <= seen, f"cause(s) {sorted(causes - seen)} never flagged"),
        ("empty_store" not in causes or not unflagged, f"{len(unflagged)} decisions read from the empty store "
         f"unflagged, e.g. {[(r['decided_at_ms'] - fault[0], r.get('card_id'), r.get('merchant_id')) for r in unflagged[:3]]}"),
        (sum(counted.values()) == len(degraded), "the worker's count differs from the flagged decisions"),
        (must_log in logs, f"not logged: {must_log!r}"),
        (recover_s is not None, "no scored decision after the fault"),
        (all(code == 0 for code in codes), f"worker exit codes {codes}"),
    ):
        if not cond:
            ok = False
            notes.append("FAILED: " + why)
    return ScenarioResult(name, c, recover_s, ok,
                          f"0 lost; every degraded decision flagged with its cause and decided by the "
                          f"policy ({fallback_verdict}); {sorted(causes)} logged and counted",
                          notes, {"degraded": len(degraded), "causes": sorted(seen), "counted": counted})


def _with_fault(ctx: ChaosContext, name: str, fault: Fault, causes: set[str], must_log: str) -> ScenarioResult:
    s = ctx.settings
    t, path = scaffold.fresh_topology(ctx.workdir, name, settings=s)
    rate, seconds = (200.0, 22.0) if ctx.quick else (500.0, 45.0)
    w = scaffold.start_worker(path, ctx.workdir / f"{name}.log", idle_exit_s=10.0)
    scaffold.wait_ready(w)
    src = scaffold.good_events(t)
    n = int(rate * seconds)
    sender = threading.Thread(target=scaffold.produce, args=(s, t.input.topic, ((v, k, None) for v, k in
                                                                             (next(src) for _ in range(n)))),
                              kwargs={"rate": rate}, daemon=True)
    sender.start()
    time.sleep(4.0)
    window = fault(ctx)
    sender.join()
    code = _finish(w)
    recs = scaffold.decisions(s, t.output.topic)
    logs = w.text()
    assert t.features is not None
    return _check(ctx, name, t, recs, logs, scaffold.summary_counts(logs, "unavailable"), causes, window,
                  [code], t.decision.fallback_verdict, must_log)


def redis_stopped(ctx: ChaosContext) -> ScenarioResult:
    return _with_fault(ctx, "redis_stopped_10s", _stopped, {"unreachable"}, "is unreachable")


def redis_restarted_empty(ctx: ChaosContext) -> ScenarioResult:
    return _with_fault(ctx, "redis_restarted_empty", _restarted_empty, {"empty_store"},
                       "holds no materialized features")


def redis_wrong_password(ctx: ChaosContext) -> ScenarioResult:
    """Redis requires a password the worker does not have; then the worker is restarted with the
    right one (the operator's fix)."""
    s = ctx.settings
    t, path = scaffold.fresh_topology(ctx.workdir, "wrongpass", settings=s)
    client = redis_client(s)
    client.config_set("requirepass", PASSWORD)
    client.close()
    n = 1000 if ctx.quick else 5000
    src = scaffold.good_events(t)
    codes: list[int] = []
    logs = ""
    counted: dict[str, int] = {}
    try:
        w = scaffold.start_worker(path, ctx.workdir / "wrongpass-1.log", idle_exit_s=8.0,
                                  env={"STREAMSCORE_REDIS_PASSWORD": "not-the-password"})
        scaffold.wait_ready(w)
        scaffold.produce(s, t.input.topic, ((v, k, None) for v, k in (next(src) for _ in range(n))), rate=500.0)
        codes.append(_finish(w))
        logs += w.text()
        counted = scaffold.summary_counts(w.text(), "unavailable")
        t_fixed = time.time() * 1000
        w2 = scaffold.start_worker(path, ctx.workdir / "wrongpass-2.log", idle_exit_s=8.0,
                                   env={"STREAMSCORE_REDIS_PASSWORD": PASSWORD})
        scaffold.wait_ready(w2)
        scaffold.produce(s, t.input.topic, ((v, k, None) for v, k in (next(src) for _ in range(n // 2))),
                         rate=500.0)
        codes.append(_finish(w2))
        logs += w2.text()
        for k, v in scaffold.summary_counts(w2.text(), "unavailable").items():
            counted[k] = counted.get(k, 0) + v
    finally:
        admin = redis_client(s.model_copy(update={"redis_password": SecretStr(PASSWORD)}))
        admin.config_set("requirepass", "")
        admin.close()
    recs = scaffold.decisions(s, t.output.topic)
    return _check(ctx, "redis_wrong_password", t, recs, logs, counted, {"auth"}, (t_fixed, t_fixed), codes,
                  t.decision.fallback_verdict, "refused the credentials")


SCENARIOS = {
    "redis_stopped_10s": redis_stopped,
    "redis_restarted_empty": redis_restarted_empty,
    "redis_wrong_password": redis_wrong_password,
}
