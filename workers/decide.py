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
        self._stage = stage
        self._review_at = policy.review_at
        self._decline_at = policy.decline_at
        self._model = {
            "name": model.name, "version": model.version,
            "variant": model.variant, "engine": model.engine,
        }
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
        if x is None or not self._rules or x.shape[0] != n:
            return [[] for _ in range(n)]
        fired = np.stack([x[:, col] > t for _, col, t in self._rules], axis=1)
        codes = [code for code, _, _ in self._rules]
        out: list[list[str]] = []
        for row in fired:
            idx = np.flatnonzero(row)[: self._top]
            out.append([codes[i] for i in idx])
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
        now_ms = time.time_ns() // 1_000_000
        queue_ms = (time.time_ns() - batch.received_ns) / 1e6
        score_list = [None if np.isnan(s) else round(float(s), 6) for s in scores]
        values: list[bytes] = []
        dumps = orjson.dumps
        for i in range(n):
            values.append(
                dumps(
                    {
                        "schema": SCHEMA,
                        "event_id": batch.event_id[i],
                        "card_id": batch.card_id[i],
                        "merchant_id": batch.merchant_id[i],
                        "score": score_list[i],
                        "verdict": VERDICTS[verdict[i]],
                        "model": self._model,
                        "reasons": reasons[i],
                        "flags": flags_common + row_flags[i],
                        "timings_ms": {**timings_ms, "in_worker": round(float(queue_ms[i]), 3)},
                        "event_time_ms": int(batch.event_time_ms[i]),
                        "decided_at_ms": now_ms,
                        "trace_id": batch.trace_id[i],
                        "stage": self._stage,
                        "source": {
                            "topic": batch.topic[i],
                            "partition": int(batch.partition[i]),
                            "offset": int(batch.offset[i]),
                            "timestamp_ms": int(batch.kafka_ts_ms[i]),
                        },
                    }
                )
            )
        counts = np.bincount(verdict, minlength=3)
        return Decided(
            keys=list(batch.key),
            values=values,
            verdict_counts={VERDICTS[k]: int(counts[k]) for k in range(3)},
            fallbacks=fallbacks,
        )
