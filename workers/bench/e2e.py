"""``streamscore bench e2e``: streamscore vs the Kafka ceiling, Faust and Quix Streams, end to end.

On the local broker and Redis (``streamscore setup`` for each topology), one system at a time, in
one run, each with 1 and 2 worker processes in one consumer group:

* ``passthrough`` — the ceiling: confluent-kafka batch consume -> produce the same bytes -> commit
  after delivery (``workers/bench/peers/passthrough.py``);
* ``streamscore:<topology id>`` — the worker, for each example topology;
* ``faust`` and ``quix`` — the same job (decode and validate, the same Feast features, ONNX model
  and decision records) written as each framework's documentation shows a user
  (``workers/bench/peers/``); their decisions are checked equal to streamscore's.

Per system, on fresh topics (input and output stamped with the broker's ``LogAppendTime``) and
the same pre-serialized events:

1. **maximum throughput** — the processes join their group on an empty input topic, then a
   backlog of ``--events`` events is produced; the rate is the output records the broker appended
   after the backlog was complete, over the time until the last (broker timestamps);
2. **latency** at offered rates (``--rates``, default 1k, 5k, 20k events/s, and 80% of the
   system's own maximum; rates above its maximum are not offered, they cannot be sustained):
   broker append of the event -> broker append of its decision, read back by a consumer after the
   system stopped; p50/p95/p99/p99.9;
3. worker CPU seconds (psutil, all of a system's processes) and peak RSS (the kernel's VmHWM).

streamscore's per-stage breakdown comes from the fields its decision records carry. ``--quick``
is the smoke run (fraud only, 1 worker, small counts). ``--soak 600`` runs streamscore alone at
``--soak-rate`` for that long and reports RSS growth. ``--profile DIR`` records py-spy (per
thread) on the first streamscore process of each topology while it runs.

    streamscore bench e2e [--quick] [--json PATH] [--plots DIR] [--soak S] [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workers.bench import plots, readback, report
from workers.bench.load import BenchError, Loader, Pool, create_topics, make_pool
from workers.bench.progress import Progress
from workers.bench.supervise import Procs, skip_to_end, wait_stable
from workers.settings import PROJECT_ROOT, Settings, get_settings
from workers.topology import Topology, load_topology

QUIX_PYTHON = PROJECT_ROOT / ".venv-quix" / "bin" / "python"
KINDS = ("passthrough", "streamscore", "faust", "quix")


@dataclass(frozen=True)
class Plan:
    events: int
    rates: tuple[int, ...]
    rate_s: float
    workers: tuple[int, ...]
    max_s: float  # cap on the backlog phase
    quick: bool
    run_dir: Path
    profile_dir: Path | None = None
    # In every topic and group name: a run never reads what an earlier run left in a topic of the
    # same name (a reused --plots folder gave peers' positions that did not match the reference's).
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4])


@dataclass(frozen=True)
class System:
    kind: str
    topology_path: str
    topology: Topology

    @property
    def name(self) -> str:
        return f"streamscore:{self.topology.id}" if self.kind == "streamscore" else self.kind

    @property
    def decides(self) -> bool:
        return self.kind != "passthrough"


@dataclass
class Run:
    """What one system run leaves for the report, the plots and the equality check."""

    entry: dict[str, Any]
    cdf: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    offered: list[tuple[float, float]] = field(default_factory=list)
    max_phase: readback.PhaseResult | None = None


def _python_for(kind: str) -> str:
    if kind != "quix":
        return sys.executable
    if not QUIX_PYTHON.exists():
        raise BenchError(f"the Quix Streams peer runs in its own virtualenv ({QUIX_PYTHON} is missing): "
                         "run `make bench-quix` (Quix Streams pins an older confluent-kafka)")
    return str(QUIX_PYTHON)


def _module(kind: str) -> str:
    return {"passthrough": "passthrough", "streamscore": "streamscore", "faust": "faust_peer",
            "quix": "quix_peer"}[kind]


def _out_count(settings: Settings, topic: str) -> int:
    return sum(readback.watermarks(settings, topic).values())


class SystemRun:
    def __init__(self, settings: Settings, system: System, workers: int, pool: Pool, plan: Plan,
                 progress: Progress) -> None:
        self.s = settings
        self.sys = system
        self.w = workers
        self.pool = pool
        self.plan = plan
        self.progress = progress
        # The topology is in every name: pass-through runs once per topology, on its own topics.
        slug = system.name.replace(":", "-") if system.kind == "streamscore" else f"{system.kind}-{system.topology.id}"
        self.prefix = f"e2e-{plan.run_id}-{slug}-w{workers}"
        self.group = f"{self.prefix}-g"
        self.src, self.out, self.dlq = create_topics(settings, system.topology, self.prefix)
        stats = plan.run_dir / "stats"
        stats.mkdir(parents=True, exist_ok=True)
        self.stats_path = stats / f"{slug}-w{workers}-{{i}}.json"
        cmd = [_python_for(system.kind), "-m", f"workers.bench.peers.{_module(system.kind)}",
               "--topology", system.topology_path, "--input", self.src, "--output", self.out,
               "--dead-letter", self.dlq, "--group", self.group, "--stats", str(self.stats_path)]
        self.procs = Procs(cmd, workers, plan.run_dir / "logs", f"{slug}-w{workers}")
        self.loader = Loader(settings, pool)
        self.phases: list[readback.Phase] = []
        self.phase_meta: list[dict[str, Any]] = []
        self.spy: subprocess.Popen[bytes] | None = None

    # ---- helpers ---------------------------------------------------------------------------
    def _tick(self, what: str, target: int | None = None) -> None:
        self.procs.sample()
        n = _out_count(self.s, self.out)
        tgt = f"/{target:,}" if target is not None else ""
        self.progress.update(f"{what}: out {n:,}{tgt}  cpu {self.procs.cpu_s:.1f}s  "
                             f"rss {self.procs.rss_mb:.0f} MB")

    def _start(self) -> None:
        self.procs = Procs(self.procs.cmd, self.w, self.procs.log_dir, self.procs.name)
        self.procs.start()
        self.progress.update("starting", force=True)
        wait_stable(self.s, self.group, self.w, self.procs, 180.0,
                    tick=lambda: self.progress.update("waiting for the group to be stable"))

    def _wait_out(self, target: int, timeout_s: float, what: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.procs.check_alive()
            if _out_count(self.s, self.out) >= target:
                return True
            self._tick(what, target)
            time.sleep(0.25)
        return False

    def _restart_past_backlog(self) -> None:
        self.procs.stop()
        skip_to_end(self.s, self.group, self.src, readback.watermarks(self.s, self.src))
        self._start()

    def _profile_start(self) -> None:
        d = self.plan.profile_dir
        if d is None or self.sys.kind != "streamscore" or self.w != 1:
            return
        d.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        raw = d / f"{self.sys.topology.id}.pyspy.txt"
        self.spy = subprocess.Popen(
            [str(spy), "record", "--pid", str(self.procs.pids[0]), "--rate", "200", "--threads",
             "--nonblocking", "--format", "raw", "-o", str(raw), "--duration", "3600"],
            stdout=(d / "py-spy.log").open("ab"), stderr=subprocess.STDOUT)

    def _profile_stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
            self.spy = None

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> Run:
        p = self.progress
        p.prefix = f"[{self.sys.name} x{self.w}]"
        self._start()
        self._profile_start()
        try:
            max_est, capped = self._max_phase()
            rates = sorted({*self.plan.rates, int(round(0.8 * max_est, -2)) or 100})
            for r in rates:
                self._latency_phase(r, max_est)
        finally:
            self.procs.sample()
            codes = self.procs.stop()
            self._profile_stop()
        stats = [self._read_stats(i) for i in range(self.w)]
        return self._analyse(stats, codes, capped, max_est, rates)

    def _max_phase(self) -> tuple[float, bool]:
        n = self.plan.events
        start = readback.watermarks(self.s, self.src)
        self.procs.sample()
        cpu0, t0 = self.procs.cpu_s, time.time()
        self.loader.fill(self.src, n, tick=lambda: self._tick("backlog: producing"))
        fill_end = time.time()
        drained = self._wait_out(n, self.plan.max_s, "backlog: draining")
        t_end = time.time()
        out_end = _out_count(self.s, self.out)
        self.procs.sample()
        end = readback.watermarks(self.s, self.src)
        self.phases.append(readback.Phase("max", start, end))
        self.phase_meta.append({"name": "max", "offered": None, "fill_end_ms": int(fill_end * 1000),
                                "cpu_s": self.procs.cpu_s - cpu0, "wall_s": t_end - t0,
                                "drained": drained})
        # The rate the 80% phase is offered at: from the broker's timestamps, as reported.
        est = max_rate([r.ts_ms for r in readback.read_topic(self.s, self.out)], int(fill_end * 1000))[0]
        self.progress.done(f"max: {out_end:,} of {n:,} out, {est:,.0f}/s (broker timestamps)" + ("" if drained else f"; capped at {self.plan.max_s:.0f} s"))
        if not drained:
            self._restart_past_backlog()
        return est, not drained

    def _latency_phase(self, rate: int, max_est: float) -> None:
        if rate > max_est:
            self.phase_meta.append({"name": str(rate), "offered": rate, "skipped": "above this system's "
                                    f"maximum (~{max_est:,.0f}/s): it cannot be sustained"})
            now = readback.watermarks(self.s, self.src)
            self.phases.append(readback.Phase(str(rate), now, now))  # empty: nothing offered
            return
        start = readback.watermarks(self.s, self.src)
        before = _out_count(self.s, self.out)
        self.procs.sample()
        cpu0, t0 = self.procs.cpu_s, time.time()
        sent = self.loader.paced(self.src, rate, self.plan.rate_s, lambda: self._tick(f"{rate}/s offered"))
        drained = self._wait_out(before + sent, max(10.0, self.plan.rate_s), f"{rate}/s draining")
        self.procs.sample()
        end = readback.watermarks(self.s, self.src)
        self.phases.append(readback.Phase(str(rate), start, end))
        self.phase_meta.append({"name": str(rate), "offered": rate, "sent": sent, "drained": drained,
                                "cpu_s": self.procs.cpu_s - cpu0, "wall_s": time.time() - t0})
        self.progress.done(f"{rate}/s: {sent:,} offered" + ("" if drained else " — NOT drained in time"))
        if not drained:
            self._restart_past_backlog()
        time.sleep(0.5)

    def _read_stats(self, i: int) -> dict[str, Any]:
        path = Path(str(self.stats_path).replace("{i}", str(i)))
        try:
            out: dict[str, Any] = orjson.loads(path.read_bytes())
            return out
        except (OSError, orjson.JSONDecodeError):
            return {"error": f"no stats written ({path}); see {self.procs.log(i)}"}

    def _analyse(self, stats: list[dict[str, Any]], codes: list[int], capped: bool, max_est: float,
                 rates: list[int]) -> Run:
        self.progress.update("reading back", force=True)
        inputs = readback.read_topic(self.s, self.src)
        outputs = readback.read_topic(self.s, self.out)
        index = readback.InputIndex(inputs, self.phases)
        results = readback.analyse(index, outputs, decisions=self.sys.decides, keep_decisions_of=0)
        mx = results[0]
        max_eps, max_note = max_rate(mx.out_ts_ms, int(self.phase_meta[0]["fill_end_ms"]))
        run = Run(entry={})
        latency: dict[str, Any] = {}
        detail: dict[str, Any] = {}
        stages: dict[str, Any] = {}
        key80 = str(int(round(0.8 * max_est, -2)) or 100)
        for ph, meta, res in zip(self.phases, self.phase_meta, results):
            if ph.name == "max":
                continue
            if "skipped" in meta:
                latency[ph.name] = None
                detail[ph.name] = {"skipped": meta["skipped"]}
                continue
            latency[ph.name] = readback.percentiles(res.latencies_ms)
            ts = sorted(res.out_ts_ms)
            achieved = (len(ts) / max((ts[-1] - ts[0]) / 1000.0, 1e-3)) if len(ts) > 1 else 0.0
            detail[ph.name] = {
                "offered": meta["offered"], "sent": meta["sent"], "out": len(res.latencies_ms),
                "missing": ph.count - len(res.latencies_ms), "duplicates": res.duplicates,
                "drained": meta["drained"], "achieved_events_per_s": round(achieved, 1),
                "max_ms": max(res.latencies_ms) if res.latencies_ms else None,
                "cpu_s": round(meta["cpu_s"], 2), "wall_s": round(meta["wall_s"], 2),
                "degraded": res.degraded, "fallbacks": res.fallbacks,
                "is_80pct_of_max": ph.name == key80,
            }
            if res.stages:
                stages[ph.name] = {k: readback.percentiles(v) for k, v in res.stages.items()}
            run.cdf[ph.name] = plots.cdf_points(res.latencies_ms)
            run.offered.append((float(meta["offered"]), achieved))
        m0 = self.phase_meta[0]
        stage_totals: dict[str, float] = {}
        for st in stats:
            for k, v in (st.get("stage_ms") or {}).items():
                stage_totals[k] = round(stage_totals.get(k, 0.0) + float(v), 1)
        run.entry = {
            "name": self.sys.name, "topology": self.sys.topology.id, "workers": self.w,
            "max_events_per_s": round(max_eps, 1),
            "latency_ms": latency,
            "cpu_s": round(m0["cpu_s"], 2),
            "peak_rss_mb": round(self.procs.peak_rss_mb, 1),
            "cpu_us_per_event": round(m0["cpu_s"] / max(1, len(mx.latencies_ms)) * 1e6, 1),
            "max_phase": {"events": self.plan.events, "out": len(mx.latencies_ms), "duplicates": mx.duplicates,
                          "capped_at_s": self.plan.max_s if capped else None, "note": max_note,
                          "degraded": mx.degraded, "fallbacks": mx.fallbacks,
                          "wall_s": round(m0["wall_s"], 2)},
            "latency_detail": detail,
            "latency_80pct_key": key80 if key80 in latency else None,
            "stages_ms": stages or None,
            "stage_ms_total": stage_totals or None,
            "exit_codes": codes,
            "process_stats": stats,
        }
        if self.sys.decides:
            run.max_phase = mx
        self.progress.done(f"max {max_eps:,.0f}/s; "
                           + "; ".join(f"{k}/s p99 {v['p99']} ms" for k, v in latency.items() if v))
        return run


def max_rate(out_ts_ms: list[int], fill_end_ms: int) -> tuple[float, str | None]:
    """Records appended after the backlog was complete, per second until the last one; when the
    system kept up with the backlog producer, the rate over all of them (a lower bound, noted)."""
    after = sorted(t for t in out_ts_ms if t > fill_end_ms)
    if len(after) >= 100 and after[-1] - fill_end_ms >= 200:
        return len(after) / ((after[-1] - fill_end_ms) / 1000.0), None
    ts = sorted(out_ts_ms)
    rate = len(ts) / max((ts[-1] - ts[0]) / 1000.0, 1e-3) if len(ts) > 1 else 0.0
    return rate, "the system kept up with the backlog producer: this is a lower bound"


# ---- the whole run -------------------------------------------------------------------------

def preflight(settings: Settings, systems: Sequence[System] = ()) -> None:
    """The stack answers and every topology's features are materialized: a run against an empty
    store would time every system on default features (each decision flagged degraded) and report
    the goals as missed for a reason that is not the system's."""
    from workers.dev import stack as devstack

    st = devstack.status(settings)
    if not st.kafka_running:
        raise BenchError(f"Kafka broker at {settings.kafka_bootstrap} did not answer — start the stack and "
                         "the features with `streamscore setup --topology topologies/fraud.yaml` "
                         "(and --topology topologies/ato.yaml)")
    if not st.redis_running:
        raise BenchError(f"Redis at {settings.redis_url} did not answer — run `streamscore setup "
                         "--topology topologies/fraud.yaml`")
    seen: dict[str, str] = {}
    for s in systems:
        if s.topology.features is not None and s.decides:
            seen.setdefault(s.topology.id, s.topology_path)
    for tid, path in seen.items():
        empty = unmaterialized_views(settings, path)
        if empty:
            raise BenchError(f"topology {tid}: the online store at {settings.redis_url} holds no materialized "
                             f"features for views {empty} — run `streamscore setup --topology {path}` first")


def unmaterialized_views(settings: Settings, topology_path: str) -> list[str]:
    """The topology's feature views that ``setup`` has not materialized into the online store;
    a BenchError when its reader cannot even be built (no Feast registry, a missing model)."""
    from workers.features.factory import make_reader
    from workers.features.health import GuardedReader
    from workers.model.manifest import load_manifest
    from workers.model.registry import resolve

    topology = load_topology(topology_path)
    models = settings.models_dir
    try:
        manifest = load_manifest(models, topology.model.name,
                                 resolve(models, topology.model.name, topology.model.version),
                                 variant=topology.model.variant)
        reader = make_reader(topology, settings, manifest)
    except Exception as exc:  # noqa: BLE001 - said with what to do
        raise BenchError(f"topology {topology.id}: its model or feature reader could not be built ({exc}) — "
                         f"run `streamscore setup --topology {topology_path}` first") from exc
    try:
        return reader.empty_views() if isinstance(reader, GuardedReader) else []
    finally:
        reader.close()


def systems_for(topology_paths: list[str], kinds: list[str], peer_topology: str) -> list[System]:
    out: list[System] = []
    for path in topology_paths:
        t = load_topology(path)
        for k in kinds:
            if k in ("faust", "quix") and Path(path).resolve() != Path(peer_topology).resolve():
                continue
            out.append(System(k, path, t))
    return out


def run_bench(plan: Plan, systems: list[System], progress: Progress) -> dict[str, Any]:
    settings = get_settings()
    preflight(settings, systems)
    load_start, ticks_start = os.getloadavg(), report.cpu_ticks()
    pools: dict[str, Pool] = {}
    runs: list[Run] = []
    references: dict[tuple[str, int], readback.PhaseResult] = {}
    for s in systems:
        if s.topology.id not in pools:
            progress.update(f"generating {max(plan.events, 1000):,} {s.topology.id} events", force=True)
            pools[s.topology.id] = make_pool(s.topology, min(max(plan.events, 1000), 200_000))
    for w in plan.workers:
        for s in systems:
            ticks = report.cpu_ticks()
            r = SystemRun(settings, s, w, pools[s.topology.id], plan, progress).run()
            r.entry["cpu_steal_pct"] = report.steal_pct(ticks, report.cpu_ticks())
            if r.max_phase is not None:
                ref_key = (s.topology.id, plan.workers[0])
                if s.kind == "streamscore" and w == plan.workers[0]:
                    references[ref_key] = r.max_phase
                    r.entry["decisions"] = {"is_reference": True, "compared": len(r.max_phase.decided)}
                elif ref_key in references:
                    cmp = readback.compare(r.max_phase, references[ref_key])
                    cmp["reference_system"] = f"streamscore:{s.topology.id} x{plan.workers[0]}"
                    r.entry["decisions"] = cmp
                r.max_phase = None if s.kind != "streamscore" or w != plan.workers[0] else r.max_phase
            runs.append(r)
            # A long run that is stopped still leaves the systems measured so far.
            (plan.run_dir / "e2e.partial.json").write_bytes(orjson.dumps(
                {"machine": report.machine(load_start, os.getloadavg()), "partial": True,
                 "systems": [x.entry for x in runs]}, option=orjson.OPT_INDENT_2))
    load_end, steal = os.getloadavg(), report.steal_pct(ticks_start, report.cpu_ticks())
    doc: dict[str, Any] = {
        "machine": report.machine(load_start, load_end, steal),
        "run": {"events": plan.events, "rates": list(plan.rates), "rate_s": plan.rate_s,
                "workers": list(plan.workers), "quick": plan.quick, "max_s": plan.max_s,
                "load_average_start": [round(x, 2) for x in load_start],
                "load_average_end": [round(x, 2) for x in load_end],
                "cpu_steal_pct": steal,
                "event_bytes": {t: round(p.mean_bytes, 1) for t, p in pools.items()},
                "latency": "broker LogAppendTime of the input event -> broker LogAppendTime of its "
                           "decision (or pass-through record), read back by a consumer after each "
                           "system stopped; 1 ms resolution",
                "commit": report.git_commit()},
        "systems": [r.entry for r in runs],
    }
    doc["goals"] = report.goals(doc["systems"])

    def label(e: dict[str, Any]) -> str:
        # The pass-through runs once per topology's events: name which, or the panels overwrite.
        events = f" ({e['topology']} events)" if e["name"] == "passthrough" else ""
        return f"{e['name']}{events} x{e['workers']}"

    out_dir = plan.run_dir
    title = f"streamscore bench e2e — {doc['machine']}"
    doc["plots"] = {
        "latency_cdf": str(plots.latency_cdf(out_dir / "latency-cdf.png",
                                             {label(r.entry): r.cdf for r in runs}, title)),
        "throughput": str(plots.throughput(out_dir / "throughput.png", throughput_panels(runs, label), title)),
    }
    return doc


def throughput_panels(runs: Sequence[Run], label: Callable[[dict[str, Any]], str]
                      ) -> dict[str, dict[str, tuple[float | None, list[tuple[float, float]]]]]:
    """The throughput plot's panels: one per topology's events and worker count, in run order."""
    panels: dict[str, dict[str, tuple[float | None, list[tuple[float, float]]]]] = {}
    for r in runs:
        e = r.entry
        group = f"{e['topology']} events, {e['workers']} worker process{'es' if e['workers'] != 1 else ''}"
        panels.setdefault(group, {})[label(e)] = (e["max_events_per_s"], r.offered)
    return panels


def run_soak(seconds: float, rate: int, topology_path: str, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """streamscore alone at ``rate`` for ``seconds``: RSS sampled every 5 s; growth after warm-up."""
    settings = get_settings()
    t = load_topology(topology_path)
    preflight(settings, [System("streamscore", topology_path, t)])
    plan = Plan(0, (), 0.0, (1,), 0.0, False, run_dir)
    sr = SystemRun(settings, System("streamscore", topology_path, t), 1, make_pool(t, 100_000), plan, progress)
    progress.prefix = f"[soak {sr.sys.name}]"
    sr._start()
    series: list[tuple[float, float]] = []
    t0 = time.monotonic()
    last = [0.0]

    def tick() -> None:
        sr.procs.check_alive()
        now = time.monotonic() - t0
        if now - last[0] >= 5.0:
            sr.procs.sample()
            series.append((round(now, 1), round(sr.procs.rss_mb, 1)))
            last[0] = now
            progress.update(f"{now:.0f}/{seconds:.0f} s at {rate}/s  rss {sr.procs.rss_mb:.0f} MB")

    try:
        sent = sr.loader.paced(sr.src, rate, seconds, tick)
        drained = sr._wait_out(sent, 60.0, "draining")
        sr.procs.sample()
        cpu = sr.procs.cpu_s
    finally:
        sr.procs.stop()
    warm_after = min(60.0, seconds * 0.1)
    warm = next((r for s, r in series if s >= warm_after), series[0][1] if series else 0.0)
    end = series[-1][1] if series else 0.0
    growth = (end - warm) / warm * 100.0 if warm else None
    out = {"topology": t.id, "seconds": seconds, "rate": rate, "sent": sent, "drained": drained,
           "cpu_s": round(cpu, 1), "rss_mb_after_warmup": warm, "rss_mb_end": end,
           "growth_pct": round(growth, 2) if growth is not None else None,
           "peak_rss_mb": round(sr.procs.peak_rss_mb, 1), "warmup_s": warm_after,
           "goal": "< 5% growth", "met": growth is not None and growth < 5.0, "rss_series": series}
    progress.done(f"soak: RSS {warm} -> {end} MB ({out['growth_pct']}%), peak {out['peak_rss_mb']} MB")
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="streamscore bench e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fraud only, 1 worker, small counts")
    ap.add_argument("--json", default=None, help="write the results here (default <run dir>/e2e.json)")
    ap.add_argument("--plots", default=None, help="folder for the run's PNGs, logs and stats "
                                                  "(default bench-results/e2e-<time>)")
    ap.add_argument("--topologies", default="topologies/fraud.yaml,topologies/ato.yaml",
                    help="comma-separated topologies streamscore runs")
    ap.add_argument("--peer-topology", default="topologies/fraud.yaml",
                    help="the topology whose job the Faust and Quix peers do")
    ap.add_argument("--systems", default=",".join(KINDS), help=f"subset of {','.join(KINDS)}")
    ap.add_argument("--events", type=int, default=None, help="backlog for the maximum (default 100000; quick 3000)")
    ap.add_argument("--rates", default="1000,5000,20000", help="offered events/s (80%% of each max is added)")
    ap.add_argument("--rate-seconds", type=float, default=None, help="seconds per offered rate (default 20; quick 2)")
    ap.add_argument("--workers", default=None, help="worker process counts (default 1,2; quick 1)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="cap on draining the backlog")
    ap.add_argument("--soak", type=float, default=None, help="soak: run streamscore alone this many seconds")
    ap.add_argument("--soak-rate", type=int, default=5000, help="offered events/s during --soak")
    ap.add_argument("--profile", default=None, help="record py-spy on streamscore (1 worker) into this folder")
    a = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    run_dir = Path(a.plots) if a.plots else PROJECT_ROOT / "bench-results" / f"e2e-{stamp}"
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(a.json) if a.json else run_dir / "e2e.json"
    progress = Progress()
    try:
        if a.soak is not None:
            doc: dict[str, Any] = {"machine": report.machine(os.getloadavg(), None),
                                   "soak": run_soak(a.soak, a.soak_rate, a.peer_topology, run_dir, progress)}
        else:
            kinds = [k.strip() for k in a.systems.split(",") if k.strip()]
            unknown = sorted(set(kinds) - set(KINDS))
            if unknown:
                raise BenchError(f"--systems: unknown {unknown}; choose from {', '.join(KINDS)}")
            topos = ["topologies/fraud.yaml"] if a.quick else [x for x in a.topologies.split(",") if x]
            plan = Plan(
                events=a.events or (3000 if a.quick else 100_000),
                rates=_ints(a.rates) if not a.quick or a.rates != "1000,5000,20000" else (1000,),
                rate_s=a.rate_seconds or (2.0 if a.quick else 20.0),
                workers=_ints(a.workers) if a.workers else ((1,) if a.quick else (1, 2)),
                max_s=a.max_seconds, quick=a.quick, run_dir=run_dir, run_id=stamp,
                profile_dir=Path(a.profile).resolve() if a.profile else None,
            )
            doc = run_bench(plan, systems_for(topos, kinds, a.peer_topology), progress)
            print()
            print(report.table(doc))
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        print(f"\nJSON: {json_path}")
        for k, v in (doc.get("plots") or {}).items():
            print(f"plot ({k}): {v}")
        if a.profile:
            from workers.bench.profile import summarize_dir

            print(summarize_dir(Path(a.profile)))
        return 0
    except BenchError as exc:
        print(f"\nstreamscore bench e2e: {exc}", file=sys.stderr)
        return 2
