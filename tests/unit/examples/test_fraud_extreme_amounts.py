"""fraud_gbm v2 fixes fraud_mlp v1's flaw: an amount the model never saw is never an approval.

v1 scores LOWER as the amount grows past ~1,000 for a card averaging ~114, down to 0.0 from
50,000 up, so a 1,000,000 payment was approved. v2's amount inputs are monotone (its score never
falls as an amount rises, everything else equal) and the topology's hard rules review any amount
past what training saw. Shown here through the worker's own scoring path, on 200 real cards of the
generated world, for amounts from 1 to 1,000,000.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from examples.fraud import datagen
from tests.unit.conftest import FakeMessage
from workers.events import ObjArray, OnlineFeatures
from workers.pipeline.decode import Decoder
from workers.pipeline.worker import Worker
from workers.topology import Topology

AMOUNTS = [1, 10, 50, 114, 300, 1_000, 2_000, 5_000, 9_999, 10_000, 50_000, 100_000, 999_999.99, 1_000_000]


class WorldReader:
    """Card and merchant profiles from the generated world; velocity as for a quiet card."""

    join_keys = ["card_id", "merchant_id"]

    def __init__(self, numeric: tuple[str, ...]) -> None:
        world = datagen.generate(7, n_txns=2_000)
        self.cards = world.cards.set_index("card_id")
        self.merchants = world.merchants.set_index("merchant_id")
        self.numeric = numeric

    def fetch(self, entities: dict[str, ObjArray], timeout_s: float | None = None) -> OnlineFeatures:
        c = self.cards.loc[entities["card_id"].tolist()].reset_index()
        m = self.merchants.loc[entities["merchant_id"].tolist()].reset_index()
        src = {"card_profile": c, "merchant_risk": m}
        n = len(c)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, ref in enumerate(self.numeric):
            view, feat = ref.split(":")
            if view in src:
                num[:, j] = src[view][feat].to_numpy(dtype=np.float32)
        strings = {"card_profile:home_country": c["home_country"].to_numpy(object),
                   "card_profile:primary_device": c["primary_device"].to_numpy(object)}
        none = np.zeros(n, bool)
        return OnlineFeatures(num, strings, {v: none for v in ("card_profile", "merchant_risk", "card_velocity")},
                              {v: none for v in ("card_profile", "merchant_risk", "card_velocity")})

    def close(self) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def send_decisions(self, keys: Any, values: Any, *rest: Any) -> None:
        self.values.extend(values)


def _decide(topology: Topology, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    w = Worker(topology, reader=None, install_signals=False)
    w._reader = WorldReader(w.manifest.online_numeric)
    reader, engine = w._prepare()
    sink = ListSink()
    w.sink = sink  # type: ignore[assignment]
    batch, dead = Decoder(topology.input.schema_, topology.input.max_payload_bytes).decode(
        [FakeMessage(orjson.dumps(e), _offset=i) for i, e in enumerate(events)])
    assert not dead
    for i in range(0, len(batch), 256):
        w._score(batch.take(np.arange(i, min(i + 256, len(batch)))), reader, engine)
    return [orjson.loads(v) for v in sink.values]


def _ladder(cards: list[str]) -> list[dict[str, Any]]:
    world = datagen.generate(7, n_txns=2_000)
    home = world.cards.set_index("card_id")
    out = []
    for k, card in enumerate(cards):
        for a in AMOUNTS:  # at home, on the card's own device, 14:00 UTC: nothing else is odd
            out.append({"event_id": f"{card}-{a}", "card_id": card, "merchant_id": f"m{k % 500:05d}", "amount": a,
                        "currency": "USD", "country": home.loc[card, "home_country"],
                        "device_id": home.loc[card, "primary_device"],
                        "event_time_ms": 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000 + 14 * 3_600_000})
    return out


@pytest.fixture(scope="module")
def cards() -> list[str]:
    world = datagen.generate(7, n_txns=2_000)
    return world.cards["card_id"].iloc[::25].tolist()  # 200 cards across the world


def test_v2_never_approves_an_amount_beyond_training_and_never_scores_lower_for_more(
        topology: Topology, cards: list[str]) -> None:
    assert (topology.model.name, topology.model.version) == ("fraud_gbm", "2")
    recs = _decide(topology, _ladder(cards))
    scores = np.array([r["score"] for r in recs]).reshape(len(cards), len(AMOUNTS))
    assert (np.diff(scores, axis=1) >= -1e-6).all(), "a larger amount got a lower score"
    verdicts = np.array([r["verdict"] for r in recs]).reshape(len(cards), len(AMOUNTS))
    big = np.array(AMOUNTS) >= 10_000
    assert (verdicts[:, big] != "approve").all()
    assert all("amount_beyond_training" in r["rules"] for r, b in zip(recs, np.tile(big, len(cards))) if b)
    assert (verdicts[:, ~big] == "approve").mean() > 0.5  # ordinary amounts stay approvable


def test_v1_had_the_flaw(topology: Topology, cards: list[str]) -> None:
    """What the fix is for: the old model with the old (rule-less) decision approves 1,000,000."""
    v1 = topology.model_copy(update={
        "model": topology.model.model_copy(update={"name": "fraud_mlp", "version": "1"}),
        "decision": topology.decision.model_copy(update={"rules": ()}),
    })
    recs = _decide(v1, _ladder(cards))
    scores = np.array([r["score"] for r in recs]).reshape(len(cards), len(AMOUNTS))
    top = {r["verdict"] for r in recs if r["event_id"].endswith("-1000000")}
    assert "approve" in top
    assert (scores[:, -1] < scores[:, AMOUNTS.index(1_000)]).mean() > 0.5  # it falls past ~1,000
