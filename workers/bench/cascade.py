"""``streamscore bench cascade``: the confidence-gated cascade vs the heavy model alone, and the
prediction cache, on the fraud example's data. Prints a table, writes JSON; asserts nothing on time.

Two data sets, both from the example's own generator:

- **held-out, labelled**: the last ``heldout_share`` of the training spec's frame (``--spec``, default
  ``examples/fraud/train_v2.yaml``: the rows neither model was trained on), with the online features
  as they were at each event's time. Gives the AUC of the heavy model alone, the cheap model alone
  and the cascade (a row's score is the heavy model's inside the band, the cheap one's outside),
  the heavy-model share, and how many verdicts differ from heavy-only.
- **demo stream** (unless ``--no-redis``): ``--events`` events of the topology's load generator
  (``dev.events``, the events ``streamscore demo`` produces), with online features read from the
  local Redis by the topology's reader (``streamscore setup`` first). No labels: heavy share,
  latency and throughput, and the prediction cache's hit rate over the stream in order.

Both time what the scoring thread does per micro-batch of ``--batch`` rows after the feature read:
assemble -> engine (-> second model) -> decide ("batch"; "models only" leaves decide out), for
heavy-only and for the cascade, interleaved batch by batch (the order alternates), ``--repeat``
passes; per batch the fastest pass counts, to keep other processes' noise out.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from workers.events import EventBatch, OnlineFeatures
from workers.pipeline.decode import Decoder
from workers.serving.cascade import Cascade
from workers.serving.live import LoadedModel, layout_of, load_model
from workers.serving.scoring import Part, Scored, decide_parts, score_rows, take_features
from workers.serving.spec import BandSpec, CacheSpec, CascadeSpec, ModelRef, ServingSpec
from workers.settings import get_settings
from workers.topology import Topology, load_topology


@dataclass
class _Msg:
    """A message as decode sees it."""

    _v: bytes
    _k: bytes | None
    _o: int

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes | None:
        return self._k

    def topic(self) -> str:
        return "bench"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def headers(self) -> None:
        return None

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def _decode(topology: Topology, events: list[dict[str, Any]], keys: list[bytes | None]) -> EventBatch:
    d = Decoder(topology.input.schema_, topology.input.max_payload_bytes)
    batch, dead = d.decode([_Msg(orjson.dumps(e), k, i) for i, (e, k) in enumerate(zip(events, keys))])
    if dead:
        raise RuntimeError(f"{len(dead)} bench events did not decode: {dead[0].reason}")
    return batch


def _chunks(n: int, size: int) -> list[np.ndarray[Any, np.dtype[np.intp]]]:
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def _parts(scored: list[Scored]) -> list[Part]:
    return [Part(s.model.decider, s.rows, s.out, s.x, s.why, s.timings) for s in scored]


def _one(b: EventBatch, f: OnlineFeatures, heavy: LoadedModel, cascade: Cascade | None, stage: str
         ) -> tuple[float, float, np.ndarray[Any, np.dtype[np.float32]], list[bytes], int]:
    """One micro-batch: (ms in all, ms of the models, final score per row, verdicts, heavy rows)."""
    t = time.perf_counter()
    scored = cascade.score(heavy, b, f) if cascade is not None else [score_rows(heavy, b, f, "live", stage)]
    models_ms = (time.perf_counter() - t) * 1e3
    d = decide_parts(b, f, _parts(scored))
    ms = (time.perf_counter() - t) * 1e3
    s = np.full(len(b), np.nan, dtype=np.float32)
    heavy_rows = 0
    for p in scored:
        sc, _ = p.model.decider.head(p.out)
        s[p.rows if p.rows is not None else slice(None)] = sc
        if p.model is heavy:
            heavy_rows += len(p.why)
    return ms, models_ms, s, [orjson.loads(v)["verdict"].encode() for v in d.values], heavy_rows


def _time(batches: list[tuple[EventBatch, OnlineFeatures]], heavy: LoadedModel, cascade: Cascade,
          stage: str, repeat: int) -> dict[str, dict[str, Any]]:
    """Heavy-only and cascade on the same batches, interleaved (the order alternates per batch and
    pass, so the machine's noise falls on both alike); per batch the fastest of ``repeat`` passes."""
    systems: dict[str, Cascade | None] = {"heavy_only": None, "cascade": cascade}
    nb = len(batches)
    ms = {k: np.full((repeat, nb), np.inf) for k in systems}
    mm = {k: np.full((repeat, nb), np.inf) for k in systems}
    scores: dict[str, list[np.ndarray[Any, np.dtype[np.float32]]]] = {k: [] for k in systems}
    verdicts: dict[str, list[bytes]] = {k: [] for k in systems}
    heavy_rows = {k: 0 for k in systems}
    for r in range(repeat):
        for j, (b, f) in enumerate(batches):
            order = list(systems) if (j + r) % 2 == 0 else list(systems)[::-1]
            for k in order:
                ms[k][r, j], mm[k][r, j], sc, v, hr = _one(b, f, heavy, systems[k], stage)
                if r == 0:
                    scores[k].append(sc)
                    verdicts[k] += v
                    heavy_rows[k] += hr
    rows = sum(len(b) for b, _ in batches)
    out = {}
    for k in systems:
        best, best_m = ms[k].min(axis=0), mm[k].min(axis=0)
        out[k] = {"batches": nb, "rows": rows, "batch_ms_p50": round(float(np.percentile(best, 50)), 3),
                  "batch_ms_p99": round(float(np.percentile(best, 99)), 3),
                  "rows_per_s": round(rows / (best.sum() / 1e3)),
                  "models_ms_p50": round(float(np.percentile(best_m, 50)), 3),
                  "models_ms_p99": round(float(np.percentile(best_m, 99)), 3),
                  "models_rows_per_s": round(rows / (best_m.sum() / 1e3)),
                  "heavy_share": round(heavy_rows[k] / rows, 4) if rows else 0.0,
                  "_scores": np.concatenate(scores[k]) if scores[k] else np.empty(0, np.float32),
                  "_verdicts": verdicts[k]}
    return out


def _public(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def _auc(y: np.ndarray[Any, np.dtype[np.bool_]], s: np.ndarray[Any, np.dtype[np.float32]]) -> float:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, s)), 5)


def run(topology_path: str, spec_path: str, cheap: str, band: tuple[float, float], batch: int, events: int,
        repeat: int, use_redis: bool) -> dict[str, Any]:
    from workers.model.train import load_train_spec, read_inputs, training_matrix

    settings = get_settings()
    base = load_topology(topology_path)
    name, _, version = cheap.partition("/")
    topo = base.model_copy(update={"serving": ServingSpec(
        cascade=CascadeSpec(model=ModelRef(name=name, version=version or "latest"),
                            band=BandSpec.model_validate({"from": band[0], "to": band[1]})),
        cache=CacheSpec(ttl_ms=3_600_000, max_entries=1_000_000))})
    models = settings.models_dir
    heavy = load_model(topo, models, topo.model.name, topo.model.version, None, with_cache=False)
    layout = layout_of(heavy.manifest)
    lite = load_model(topo, models, name, version or "latest", layout, with_cache=False)
    assert topo.serving.cascade is not None
    cascade = Cascade(topo.serving.cascade, lite, topo.id)
    out: dict[str, Any] = {
        "topology": topology_path, "heavy": heavy.label, "cheap": lite.label, "band": list(band),
        "batch": batch, "machine": {"cpu": platform.processor() or platform.machine(),
                                    "load_average": list(_loadavg())},
    }
    # ---- held-out, labelled ----
    spec = load_train_spec(spec_path)
    frame, _, y, n_train, _ = training_matrix(spec, read_inputs(spec), settings)
    ho = frame.iloc[n_train:].reset_index(drop=True)
    y_ho = y[n_train:]
    fields = [f for f in topo.input.schema_.fields if f in ho]
    recs = ho[fields].to_dict("records")
    key_field = topo.dev.key_field
    keys = [str(r[key_field]).encode() if key_field else None for r in recs]
    hm = heavy.manifest
    from workers.model.dataset import online_features

    feats = online_features(ho, hm.online_numeric, hm.online_strings, hm.defaults)
    eb = _decode(topo, recs, keys)
    batches = [(eb.take(i), take_features(feats, i)) for i in _chunks(len(eb), batch)]
    both = _time(batches, heavy, cascade, topo.id, repeat)
    h, c = both["heavy_only"], both["cascade"]
    cheap_only = np.concatenate([lite.decider.head(score_rows(lite, b, f, "cheap", topo.id).out)[0]
                                 for b, f in batches])
    differ = sum(a != b for a, b in zip(h["_verdicts"], c["_verdicts"]))
    out["heldout"] = {
        "rows": len(y_ho), "positive_rate": round(float(y_ho.mean()), 5),
        "auc_heavy": _auc(y_ho, h["_scores"]), "auc_cheap": _auc(y_ho, cheap_only),
        "auc_cascade": _auc(y_ho, c["_scores"]), "heavy_only": _public(h), "cascade": _public(c),
        "verdicts_differing_from_heavy_only": int(differ),
    }
    # ---- demo stream ----
    if use_redis:
        from workers.dev.producer import event_key, event_source
        from workers.features.factory import make_reader

        gen = event_source(topo, 7, time.time_ns() // 1_000_000)
        evs = [dict(next(gen)) for _ in range(events)]
        eb = _decode(topo, evs, [event_key(topo, e) for e in evs])
        reader = make_reader(topo, settings, hm)
        try:
            batches = []
            for i in _chunks(len(eb), batch):
                b = eb.take(i)
                batches.append((b, reader.fetch({jk: b.column(f) for jk, f in topo.entities.items()})))
        finally:
            reader.close()
        both = _time(batches, heavy, cascade, topo.id, repeat)
        h, c = both["heavy_only"], both["cascade"]
        cached = load_model(topo, models, topo.model.name, topo.model.version, None)
        assert cached.cache is not None
        same = True
        for b, f in batches:
            got = score_rows(cached, b, f, "live", topo.id).out
            same = same and bool(np.array_equal(got, score_rows(heavy, b, f, "live", topo.id).out,
                                                equal_nan=True))
        first = (cached.cache.hits, cached.cache.misses)
        for b, f in batches:  # the same stream again: what a redelivery after a restart would see
            score_rows(cached, b, f, "live", topo.id)
        out["demo"] = {
            "events": events, "heavy_only": _public(h), "cascade": _public(c),
            "verdicts_differing_from_heavy_only": int(sum(a != b for a, b in zip(h["_verdicts"], c["_verdicts"]))),
            "cache": {"hit_rate": round(first[0] / max(1, sum(first)), 5), "hits": first[0],
                      "lookups": sum(first), "exact": same,
                      "hit_rate_replayed": round((cached.cache.hits - first[0]) /
                                                 max(1, cached.cache.hits + cached.cache.misses - sum(first)), 5),
                      "entries": len(cached.cache)},
        }
    return out


def _loadavg() -> tuple[float, float, float]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="streamscore bench cascade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="topologies/fraud.yaml", help="default topologies/fraud.yaml (heavy: its model)")
    ap.add_argument("--spec", default="examples/fraud/train_v2.yaml", help="training spec of the labelled data")
    ap.add_argument("--cheap", default="fraud_lite/1", help="cheap model NAME/VERSION (default fraud_lite/1)")
    ap.add_argument("--band", default="0.01:0.9", help="cheap scores FROM:TO go to the heavy model")
    ap.add_argument("--batch", type=int, default=256, help="rows per micro-batch (default 256)")
    ap.add_argument("--events", type=int, default=20_000, help="demo-stream events (default 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes; per batch the fastest counts")
    ap.add_argument("--no-redis", action="store_true", help="skip the demo stream (needs `streamscore setup`)")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    lo, _, hi = a.band.partition(":")
    r = run(a.topology, a.spec, a.cheap, (float(lo), float(hi)), a.batch, a.events, a.repeat, not a.no_redis)
    print(f"cascade {r['cheap']} -> {r['heavy']} inside band {r['band']}, batches of {r['batch']}")
    for where in ("heldout", "demo"):
        d = r.get(where)
        if d is None:
            continue
        print(f"\n{where}: " + (f"{d['rows']} labelled rows, AUC heavy {d['auc_heavy']} cheap {d['auc_cheap']} "
                                 f"cascade {d['auc_cascade']}" if where == "heldout" else f"{d['events']} events"))
        for k in ("heavy_only", "cascade"):
            x = d[k]
            print(f"  {k:<10} heavy share {x['heavy_share']:.3f}  batch p50/p99 {x['batch_ms_p50']}/"
                  f"{x['batch_ms_p99']} ms  {x['rows_per_s']:,} rows/s;  models only p50/p99 "
                  f"{x['models_ms_p50']}/{x['models_ms_p99']} ms  {x['models_rows_per_s']:,} rows/s")
        print(f"  verdicts differing from heavy-only: {d['verdicts_differing_from_heavy_only']}")
        if "cache" in d:
            cc = d["cache"]
            print(f"  prediction cache: hit rate {cc['hit_rate']:.4f} ({cc['hits']}/{cc['lookups']}), "
                  f"replayed {cc['hit_rate_replayed']:.4f}, exact {cc['exact']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    return 0
