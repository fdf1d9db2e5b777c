"""Decide stage: scores -> verdicts by the topology's policy -> decision records (orjson bytes).

Verdicts are computed per batch with numpy. Reasons are a handful of vectorized rules over the
model's input columns (named by the manifest), so every decision says *why* in words an analyst
reads, without a per-row explainer. Rows without a usable score (deadline passed, engine failure,
non-finite features) get the policy's ``fallback_verdict`` and a ``fallback:<why>`` flag: every
event gets exactly one decision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from workers.events import EventBatch, OnlineFeatures
from workers.topology import PolicySpec

SCHEMA = "decision.v1"
VERDICTS = ("approve", "review", "decline")

# (reason code, model input column, threshold): the reason fires when column > threshold.
REASON_RULES: tuple[tuple[str, str, float], ...] = (
    ("amount_far_above_card_usual", "event:amount_to_card_avg", 3.0),
    ("country_differs_from_home", "event:country_mismatch", 0.5),
    ("new_device", "event:device_mismatch", 0.5),
    ("risky_merchant", "merchant_risk:fraud_rate", 0.02),
    ("night_time", "event:is_night", 0.5),
    ("high_velocity_10m", "card_velocity:txn_count_10m", 3.0),
    ("high_velocity_1h", "card_velocity:txn_count_1h", 8.0),
    ("many_merchants_1d", "card_velocity:distinct_merchants_1d", 6.0),
)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    variant: str
    engine: str


@dataclass(frozen=True)
class Decided:
    keys: list[bytes | None]
    values: list[bytes]
    verdict_counts: dict[str, int]
    fallbacks: int


class Decider:
    def __init__(
        self,
        stage: str,
        policy: PolicySpec,
        model: ModelInfo,
        feature_order: Sequence[str],
        top_reasons: int = 3,
    ) -> None:
        if policy.review_at is None or policy.decline_at is None:
            raise ValueError("Decider needs a resolved policy (PolicySpec.resolved)")
        self._review_at = policy.review_at
        self._decline_at = policy.decline_at
        self._model_json = orjson.dumps({
            "name": model.name, "version": model.version,
            "variant": model.variant, "engine": model.engine,
        })
        self._stage_json = orjson.dumps(stage)
        cols = {name: i for i, name in enumerate(feature_order)}
        self._rules = [(code, cols[c], t) for code, c, t in REASON_RULES if c in cols]
        self._top = top_reasons
        self._fallback_code = VERDICTS.index(policy.fallback_verdict)

    def verdicts(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
        """0 approve, 1 review, 2 decline; NaN scores take the fallback verdict."""
        v = np.zeros(scores.shape[0], dtype=np.int8)
        v[scores >= self._review_at] = 1
        v[scores >= self._decline_at] = 2
        v[np.isnan(scores)] = self._fallback_code
        return v

    def _reasons(self, x: npt.NDArray[np.float32] | None, n: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in range(n)]
        if x is None or not self._rules or x.shape[0] != n:
            return out
        # Per fired (rule, row) pair, not per row: most rows fire no rule.
        for code, col, t in self._rules:
            for i in np.flatnonzero(x[:, col] > t).tolist():
                r = out[i]
                if len(r) < self._top:
                    r.append(code)
        return out

    def decide(
        self,
        batch: EventBatch,
        scores: npt.NDArray[np.float32],
        x: npt.NDArray[np.float32] | None,
        features: OnlineFeatures | None,
        fallback_why: Sequence[str | None],
        timings_ms: dict[str, float],
    ) -> Decided:
        n = len(batch)
        verdict = self.verdicts(scores)
        reasons = self._reasons(x, n)
        flags_common: list[str] = []
        row_flags: list[list[str]] = [[] for _ in range(n)]
        if features is not None:
            if features.degraded:
                flags_common.append("degraded")
            for view, mask in features.missing.items():
                for j in np.flatnonzero(mask).tolist():
                    row_flags[j].append(f"missing:{view}")
            for view, mask in features.stale.items():
                for j in np.flatnonzero(mask).tolist():
                    row_flags[j].append(f"stale:{view}")
        fallbacks = 0
        for i, why in enumerate(fallback_why):
            if why is not None:
                row_flags[i].append(f"fallback:{why}")
                fallbacks += 1
        if flags_common:
            row_flags = [flags_common + f for f in row_flags]
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        in_worker = np.round((now_ns - batch.received_ns) / 1e6, 3).tolist()
        nan = np.isnan(scores)
        score_list: list[float | None] = np.round(scores.astype(np.float64), 6).tolist()
        for i in np.flatnonzero(nan).tolist():
            score_list[i] = None
        verdicts = [VERDICTS[v] for v in verdict.tolist()]
        # Fields equal for the whole batch are serialized once and spliced in front of each row.
        head = (
            b'{"schema":"decision.v1","model":' + self._model_json
            + b',"stage":' + self._stage_json
            + b',"timings_ms":' + orjson.dumps(timings_ms)[:-1]
            + (b',"in_worker":' if timings_ms else b'"in_worker":')
        )
        dumps = orjson.dumps
        values = [
            head + dumps(q) + b"}," + dumps(
                {
                    "event_id": eid,
                    "card_id": cid,
                    "merchant_id": mid,
                    "score": sc,
                    "verdict": vd,
                    "reasons": rs,
                    "flags": fl,
                    "event_time_ms": et,
                    "decided_at_ms": now_ms,
                    "trace_id": tr,
                    "source": {"topic": tp, "partition": pa, "offset": of, "timestamp_ms": ts},
                }
            )[1:]
            for eid, cid, mid, sc, vd, rs, fl, et, tr, tp, pa, of, ts, q in zip(
                batch.event_id.tolist(), batch.card_id.tolist(), batch.merchant_id.tolist(),
                score_list, verdicts, reasons, row_flags, batch.event_time_ms.tolist(),
                batch.trace_id.tolist(), batch.topic.tolist(), batch.partition.tolist(),
                batch.offset.tolist(), batch.kafka_ts_ms.tolist(), in_worker,
            )
        ]
        counts = np.bincount(verdict, minlength=3)
        return Decided(
            keys=batch.key.tolist(),
            values=values,
            verdict_counts={VERDICTS[k]: int(counts[k]) for k in range(3)},
            fallbacks=fallbacks,
        )
