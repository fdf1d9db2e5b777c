"""``streamscore bench features``: the redis_fast reader against Feast's SDK, same entities, same data.

For each batch size (1, 64, 256, 512, 2048) it takes consecutive events of the topology's generated
stream (``dev.events``; for fraud: the world's cards and merchants, bursts, ~1% unknown ids) as
micro-batches and measures, on the same batches:

- **fast**: ``FastRedisReader.fetch`` (fetch + decode + defaults/flags: everything the worker
  waits for), with the in-process cache OFF — the headline figure;
- **fast+cache**: the same with the topology's ``cached_views`` (fraud: ``merchant_risk`` for 1 s),
  cache warm — what a worker with that setting pays (the uncached reader again when it has none);
- **Feast SDK**: ``FeatureStore.get_online_features`` for the topology's feature service, called
  directly (no dedupe or decoding of ours around it).

A "key" is one entity ROW of the batch = one event, i.e. its lookups of every entity (fraud: card_id
and merchant_id; ids repeated within a batch are fetched once, as both readers do). µs per key = median batch time /
batch size; p50/p99 are over calls made back to back. Every benchmarked fast batch is then compared
with ``FeastSdkReader`` (Feast's SDK plus the same defaults/flags) at the same "now"; a mismatch is
re-read once before it counts, because a streaming job may be writing velocity features meanwhile.
Between those checks, one lookup in every 25 is timed apart: right after Feast's SDK ran, with CPU
caches cold, as after other work in a worker's loop (``cold_batch_p50_ms``). Figures are printed
and written as JSON; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.dev.producer import event_source, get_path
from workers.events import ObjArray, OnlineFeatures
from workers.model.manifest import load_manifest
from workers.model.registry import resolve
from workers.settings import PROJECT_ROOT, get_settings
from workers.topology import load_topology

BATCHES = (1, 64, 256, 512, 2048)
# (fast calls, SDK calls) per batch size: enough for a p99 where it is cheap, bounded where the
# SDK takes ~100 ms a call. 256 has a p99 goal: 1000 calls put ten behind it (400 put four, and
# one noisy neighbour moved it by half a millisecond).
CALLS = {1: (3000, 300), 64: (600, 60), 256: (1000, 30), 512: (300, 20), 2048: (100, 8)}
QUICK_CALLS = {1: (300, 20), 64: (40, 5), 256: (30, 3), 512: (20, 3), 2048: (6, 2)}
# Timed calls run back to back; their outputs are then checked against Feast, with one more timed
# ("cold") lookup after every this many checks.
CHECK_EVERY = 25
GOALS = {"us_per_key_at_512": 3.0, "speedup_at_512": 20.0, "single_event_p99_ms": 1.0, "batch_256_p99_ms": 1.0}


def first_difference(a: OnlineFeatures, b: OnlineFeatures) -> str | None:
    """None when two readers' outputs are identical (values, strings, flags), else what differs."""
    if a.degraded or b.degraded:
        return f"degraded fast={a.degraded} sdk={b.degraded}"
    if a.numeric.shape != b.numeric.shape or a.numeric.dtype != b.numeric.dtype:
        return f"numeric shape/dtype {a.numeric.shape}/{a.numeric.dtype} vs {b.numeric.shape}/{b.numeric.dtype}"
    diff = ~((a.numeric == b.numeric) | (np.isnan(a.numeric) & np.isnan(b.numeric)))
    if diff.any():
        r, c = np.argwhere(diff)[0].tolist()
        return f"numeric[{r}, {c}] {a.numeric[r, c]!r} vs {b.numeric[r, c]!r}"
    for name, x, y in (("strings", a.strings, b.strings), ("missing", a.missing, b.missing), ("stale", a.stale, b.stale)):
        if list(x) != list(y):
            return f"{name} keys {list(x)} vs {list(y)}"
        for k in y:
            if x[k].tolist() != y[k].tolist():
                return f"{name}[{k}] differs"
    return None


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


class _Bench:
    def __init__(self, topology_path: Path, seed: int, quick: bool) -> None:
        from workers.features.redis_fast import FastRedisReader
        from workers.features.feast_repo import repo_config, setup_features
        from workers.features.feast_sdk import FeastSdkReader

        self.settings = settings = get_settings()
        self.topology = t = load_topology(topology_path)
        self.manifest = man = load_manifest(settings.models_dir, t.model.name,
                                                resolve(settings.models_dir, t.model.name, t.model.version))
        self.quick = quick
        self._now = time.time()
        now_s = self._clock  # both readers judge staleness at the same instant

        spec = t.features
        if spec is None:
            raise SystemExit(f"streamscore bench features: {topology_path} reads no online features")
        self.cache_views = spec.cached_views  # empty: +cache measures the uncached reader again
        self.cache_ttl_ms = spec.cache_ttl_ms or 1000
        repo = settings.feature_repo
        if not (repo / "data" / "registry.db").is_file():  # a clean clone: nothing applied yet
            print("[bench] no Feast registry yet: running Feast apply + materialize ...", flush=True)
            setup_features(settings, t, seed=seed)
        n_events = sum(c for c, _ in (QUICK_CALLS if quick else CALLS).values()) + 4 * max(BATCHES)
        gen = event_source(t, seed, 1_800_000_000_000)
        events = [next(gen) for _ in range(n_events)]
        self.entities = {jk: np.array([get_path(e, f) for e in events], dtype=object)
                         for jk, f in t.entities.items()}
        self.fast = FastRedisReader(repo, spec.feature_service, man, settings=settings, timeout_ms=spec.timeout_ms,
                                    now_s=now_s)
        probe = self.fast.fetch({k: v[:1] for k, v in self.entities.items()})
        if probe.degraded:
            raise SystemExit(f"streamscore bench features: {self.fast.last_error}")
        if probe.missing and all(m.all() for m in probe.missing.values()):
            print("[bench] the online store has no features yet: running Feast apply + materialize ...", flush=True)
            setup_features(settings, t, seed=seed)
        self.cached = FastRedisReader(repo, spec.feature_service, man, settings=settings, timeout_ms=spec.timeout_ms,
                                      now_s=now_s, cached_views=self.cache_views, cache_ttl_ms=self.cache_ttl_ms,
                                      cache_max_entries=spec.cache_max_entries)
        self.sdk_reader = FeastSdkReader(repo, spec.feature_service, man, settings=settings, now_s=now_s)
        from feast import FeatureStore

        self.store = FeatureStore(repo_path=str(repo.resolve()), config=repo_config(repo.resolve(), settings))
        self.service = self.store.get_feature_service(spec.feature_service)
        self.parity_checked = 0
        self.parity_mismatches = 0
        self.parity_retried = 0
        self.first_mismatch: str | None = None
        self.keys: list[float] = []
        self.stages: list[dict[str, float]] = []

    def _clock(self) -> float:
        return self._now

    def batch(self, i: int, size: int) -> dict[str, ObjArray]:
        n = len(next(iter(self.entities.values())))
        start = (i * size) % (n - size)
        return {k: v[start : start + size] for k, v in self.entities.items()}

    def check(self, ents: dict[str, ObjArray], now: float, got: OnlineFeatures, reader: Any) -> None:
        self.parity_checked += 1
        self._now = now
        diff = first_difference(got, self.sdk_reader.fetch(ents))
        if diff is not None:  # re-read both: a concurrent writer, or a real difference?
            self.parity_retried += 1
            self._now = time.time()
            diff = first_difference(reader.fetch(ents), self.sdk_reader.fetch(ents))
            if diff is not None:
                self.parity_mismatches += 1
                self.first_mismatch = self.first_mismatch or diff

    def timed(self, reader: Any, size: int, calls: int, offset: int) -> tuple[list[float], list[float]]:
        """Timed back to back (the reader alone, as a worker's scoring loop calls it), then every
        output is compared with Feast's answer for the same rows at the same "now".

        Also returns "cold" lookups: one timed call after every ``CHECK_EVERY`` parity checks,
        i.e. right after Feast's SDK has run through the CPU caches, as other work in a worker's
        loop would; they are reported apart (and checked too)."""
        for i in range(3):  # warm-up: connection, key cache, intern tables
            reader.fetch(self.batch(offset + i, size))
        ms: list[float] = []
        done = []
        for i in range(calls):
            ents = self.batch(offset + i, size)
            self._now = now = time.time()
            t0 = time.perf_counter()
            out = reader.fetch(ents)
            ms.append((time.perf_counter() - t0) * 1000.0)
            done.append((ents, now, out))
        self.keys = [out.extra.get("redis_keys", 0.0) for _, _, out in done]
        self.stages = [out.extra for _, _, out in done]
        cold: list[float] = []
        for j, (ents, now, out) in enumerate(done, 1):
            self.check(ents, now, out, reader)
            if j % CHECK_EVERY == 0:
                ents = self.batch(offset + calls + len(cold), size)
                self._now = now = time.time()
                t0 = time.perf_counter()
                out = reader.fetch(ents)
                cold.append((time.perf_counter() - t0) * 1000.0)
                self.check(ents, now, out, reader)
        return ms, cold

    def sdk_timed(self, size: int, calls: int) -> list[float]:
        ms = []
        for i in range(calls + 1):
            ents = self.batch(i, size)
            rows = {k: v.tolist() for k, v in ents.items()}
            t0 = time.perf_counter()
            self.store.get_online_features(features=self.service, entity_rows=rows, full_feature_names=True)
            if i:  # the first call warms Feast's caches
                ms.append((time.perf_counter() - t0) * 1000.0)
        return ms

    def run(self) -> dict[str, Any]:
        gc.collect()
        gc.freeze()  # as the worker does: start-up objects out of the GC's way
        calls = QUICK_CALLS if self.quick else CALLS
        rows = []
        single_p99 = float("nan")
        for size in BATCHES:
            n_fast, n_sdk = calls[size]
            fast, cold = self.timed(self.fast, size, n_fast, 0)
            keys = statistics.median(self.keys)
            stages = {k: round(statistics.median(x.get(f"{k}_ms", 0.0) for x in self.stages), 4)
                      for k in ("prepare", "redis", "decode")}
            cached, _ = self.timed(self.cached, size, max(3, n_fast // 3), 0)
            sdk = self.sdk_timed(size, n_sdk)
            p50 = statistics.median(fast)
            row: dict[str, Any] = {
                "batch": size,
                "fast_us_per_key": round(p50 * 1000.0 / size, 3),
                "feast_sdk_us_per_key": round(statistics.median(sdk) * 1000.0 / size, 3),
                "batch_p50_ms": round(p50, 4),
                "batch_p99_ms": round(_pct(fast, 99), 4),
                "fast_cached_us_per_key": round(statistics.median(cached) * 1000.0 / size, 3),
                "fast_cached_p99_ms": round(_pct(cached, 99), 4),
                "feast_sdk_p50_ms": round(statistics.median(sdk), 3),
                "redis_keys_p50": keys,
                "fast_us_per_redis_key": round(p50 * 1000.0 / keys, 3),
                "speedup": round(statistics.median(sdk) / p50, 1),
                "fast_stages_p50_ms": stages,  # prepare+send, waiting/reading replies, decoding
                # A lookup right after other work (Feast SDK parity checks): cold CPU caches.
                "cold_batch_p50_ms": round(statistics.median(cold), 4) if cold else None,
                "cold_calls": len(cold),
                "fast_calls": len(fast),
                "sdk_calls": len(sdk),
            }
            rows.append(row)
            if size == 1:
                single_p99 = row["batch_p99_ms"]
        return {"batches": rows, "single_event_p99_ms": float(single_p99)}

    def close(self) -> None:
        self.fast.close()
        self.cached.close()
        self.sdk_reader.close()


def _goals(result: dict[str, Any]) -> dict[str, Any]:
    by = {b["batch"]: b for b in result["batches"]}
    b512, b256 = by[512], by[256]
    return {
        "us_per_key_at_512": {"goal": f"<= {GOALS['us_per_key_at_512']}", "value": b512["fast_us_per_key"],
                              "met": b512["fast_us_per_key"] <= GOALS["us_per_key_at_512"],
                              "with_cache": b512["fast_cached_us_per_key"],
                              "met_with_cache": b512["fast_cached_us_per_key"] <= GOALS["us_per_key_at_512"]},
        "speedup_at_512": {"goal": f">= {GOALS['speedup_at_512']}x", "value": b512["speedup"],
                           "met": b512["speedup"] >= GOALS["speedup_at_512"]},
        "single_event_p99_ms": {"goal": f"< {GOALS['single_event_p99_ms']}", "value": result["single_event_p99_ms"],
                                "met": result["single_event_p99_ms"] < GOALS["single_event_p99_ms"]},
        "batch_256_p99_ms": {"goal": f"< {GOALS['batch_256_p99_ms']}", "value": b256["batch_p99_ms"],
                             "met": b256["batch_p99_ms"] < GOALS["batch_256_p99_ms"],
                             "with_cache": b256["fast_cached_p99_ms"],
                             "met_with_cache": b256["fast_cached_p99_ms"] < GOALS["batch_256_p99_ms"]},
    }


def _print(result: dict[str, Any]) -> None:
    print("\nOnline features: redis_fast reader vs Feast SDK (key = one event row: its entity lookups)")
    head = (f"{'batch':>6} {'fast us/key':>12} {'p50 ms':>8} {'p99 ms':>8} {'cold p50':>9} {'+cache us/key':>14} "
            f"{'+cache p99':>11} {'SDK us/key':>11} {'SDK p50 ms':>11} {'speedup':>8}")
    print(head)
    print("-" * len(head))
    for b in result["batches"]:
        cold = f"{b['cold_batch_p50_ms']:>9.3f}" if b["cold_batch_p50_ms"] is not None else f"{'-':>9}"
        print(f"{b['batch']:>6} {b['fast_us_per_key']:>12.2f} {b['batch_p50_ms']:>8.3f} {b['batch_p99_ms']:>8.3f} {cold} "
              f"{b['fast_cached_us_per_key']:>14.2f} {b['fast_cached_p99_ms']:>11.3f} "
              f"{b['feast_sdk_us_per_key']:>11.2f} {b['feast_sdk_p50_ms']:>11.3f} {b['speedup']:>7.1f}x")
    print(f"single-event p99: {result['single_event_p99_ms']:.3f} ms; parity: {result['parity_checked']} batches "
          f"checked, {result['parity_mismatches']} mismatches ({result['parity_retried']} re-read)")
    for name, g in result["goals"].items():
        extra = f" (with cache: {g['with_cache']}, met={g['met_with_cache']})" if "with_cache" in g else ""
        print(f"  goal {name} {g['goal']}: {g['value']} -> {'met' if g['met'] else 'NOT met'}{extra}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="streamscore bench features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--quick", action="store_true", help="few calls per size (a smoke run, not figures)")
    p.add_argument("--topology", default=str(PROJECT_ROOT / "topologies" / "fraud.yaml"),
                   help="whose feature service to read (default topologies/fraud.yaml)")
    p.add_argument("--seed", type=int, default=7, help="world seed (the one `setup` materialized)")
    args = p.parse_args(argv)

    bench = _Bench(Path(args.topology), args.seed, args.quick)
    try:
        t0 = time.perf_counter()
        result = bench.run()
    finally:
        bench.close()
    result.update({
        "parity_checked": bench.parity_checked,
        "parity_mismatches": bench.parity_mismatches,
        "parity_retried": bench.parity_retried,
        "first_mismatch": bench.first_mismatch,
        "key": "one entity row of the batch = one event: its lookups of every entity "
               "(ids repeated within a batch fetched once); us per key = median batch time / batch size",
        "cache": {"views": list(bench.cache_views), "ttl_ms": bench.cache_ttl_ms},
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    })
    result["goals"] = _goals(result)
    _print(result)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)  # bench-results/ is not in a fresh clone
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if bench.parity_mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
