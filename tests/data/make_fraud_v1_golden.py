"""Writes tests/data/fraud_v1_golden.jsonl with the PRE-generic worker (commit 183ce49).

Run once, before the move to the topology-driven core; the generic core's test
(tests/unit/model/test_fraud_v1_golden.py) replays the same events and online features and must
produce the same scores, verdicts, reasons and flags. Kept in history only: it uses the old API.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson

from workers import datagen, featurize
from workers.decide import Decider, ModelInfo
from workers.decode import Decoder
from workers.engines.onnx_cpu import OnnxCpuEngine
from workers.events import OnlineFeatures
from workers.manifest import load_manifest
from workers.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]


class Msg:
    def __init__(self, v: bytes, k: bytes, off: int) -> None:
        self._v, self._k, self._o = v, k, off
    def value(self): return self._v
    def key(self): return self._k
    def topic(self): return "transactions"
    def partition(self): return self._o % 6
    def offset(self): return self._o
    def error(self): return None
    def timestamp(self): return (1, 1_800_000_000_000 + self._o)


def main() -> None:
    topo = load_topology(ROOT / "topologies/fraud.yaml")
    man = load_manifest(ROOT / "models", "fraud_mlp", "1")
    world = datagen.generate(7, n_txns=1000)
    cards = world.cards.set_index("card_id")
    merch = world.merchants.set_index("merchant_id")
    rng = np.random.default_rng(123)
    events = list(datagen.iter_events(11, datagen.WorldParams(), 1_800_000_000_000, limit=1500, unknown_frac=0.05))
    # extreme amounts and edge times on known cards
    extra = []
    for i, amt in enumerate([0, 0.01, 1, 114, 500, 1000, 2000, 5000, 10000, 50000, 100000, 999999.99, 1000000]):
        for j, t in enumerate([1_800_000_000_000, 1_800_000_000_000 + 3 * 3_600_000]):
            extra.append({"event_id": f"x{i}-{j}", "card_id": f"c{(i * 37) % 5000:06d}", "merchant_id": f"m{(i * 11) % 500:05d}",
                          "amount": amt, "currency": "USD", "country": "US", "device_id": "dnew", "event_time_ms": t,
                          "trace_id": f"t{i}{j}"})
    events += extra
    msgs = [Msg(orjson.dumps(e), str(e["card_id"]).encode(), i) for i, e in enumerate(events)]
    dec = Decoder(topo.input.schema_, topo.input.max_payload_bytes)
    engine = OnnxCpuEngine(man.model_path)
    engine.load()
    decider = Decider(topo.id, topo.policy.resolved(man.thresholds.review, man.thresholds.decline),
                      ModelInfo(man.name, str(man.version), "fp32", engine.name), man.feature_order)
    defaults = dict(man.defaults)
    out = open(ROOT / "tests/data/fraud_v1_golden.jsonl", "wb")
    out.write(orjson.dumps({"_comment": "made by tests/data/make_fraud_v1_golden.py at commit 183ce49 (pre-generic worker); one line per event: event, online features as the reader returned them, decision fields"}) + b"\n")
    for b0 in range(0, len(msgs), 256):
        chunk = msgs[b0:b0 + 256]
        batch, dead = dec.decode(chunk)
        assert not dead
        n = len(batch)
        degraded = (b0 // 256) == 3
        num = np.empty((n, len(man.online_numeric)), np.float32)
        strs = {r: np.empty(n, object) for r in man.online_strings}
        missing = {v: np.zeros(n, bool) for v in ("card_profile", "merchant_risk", "card_velocity")}
        stale = {v: np.zeros(n, bool) for v in ("card_profile", "merchant_risk", "card_velocity")}
        for i in range(n):
            cid, mid = batch.card_id[i], batch.merchant_id[i]
            c = cards.loc[cid] if cid in cards.index and not degraded else None
            m = merch.loc[mid] if mid in merch.index and not degraded else None
            vel_stale = rng.random() < 0.03
            vel = None if (c is None or vel_stale) else {
                "txn_count_10m": int(rng.poisson(0.3)), "txn_count_1h": int(rng.poisson(1.2)),
                "amount_sum_1h": float(np.float32(rng.exponential(80))), "distinct_merchants_1d": int(rng.poisson(2))}
            for j, ref in enumerate(man.online_numeric):
                view, f = ref.split(":")
                src = {"card_profile": c, "merchant_risk": m, "card_velocity": vel}[view]
                num[i, j] = defaults[ref] if src is None else float(src[f])
            for ref in man.online_strings:
                strs[ref][i] = defaults[ref] if c is None else str(c[ref.split(":")[1]])
            missing["card_profile"][i] = c is None
            missing["merchant_risk"][i] = m is None
            missing["card_velocity"][i] = c is None
            stale["card_velocity"][i] = c is not None and vel_stale
        feats = OnlineFeatures(num, strs, missing, stale, degraded=degraded)
        x = featurize.assemble(batch, feats, man)
        scores = engine.infer(x)
        d = decider.decide(batch, scores, x, feats, [None] * n, {"features": 0.1})
        for i in range(n):
            rec = orjson.loads(d.values[i])
            row = {
                "event": events[b0 + i],
                "key": d.keys[i].decode(),
                "degraded": degraded,
                "online": {r: float(num[i, j]) for j, r in enumerate(man.online_numeric)} | {r: strs[r][i] for r in man.online_strings},
                "missing": [v for v in missing if missing[v][i]],
                "stale": [v for v in stale if stale[v][i]],
                "decision": {k: rec[k] for k in ("schema", "event_id", "card_id", "merchant_id", "score", "verdict", "model", "reasons", "flags", "event_time_ms", "trace_id", "stage")},
                "x": [float(v) for v in x[i]],
            }
            out.write(orjson.dumps(row) + b"\n")
    out.close()
    print("wrote", len(events))


if __name__ == "__main__":
    main()
