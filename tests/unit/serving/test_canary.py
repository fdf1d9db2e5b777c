"""The canary: a stable fraction of entities, and the rollback rules over its window."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.unit.conftest import FakeMessage, good_event
from workers.pipeline.decode import Decoder
from workers.serving.canary import Canary
from workers.serving.scoring import Scored
from workers.serving.spec import CanarySpec, ModelRef
from workers.topology import Topology


class _Model:
    label = "cand v3"

    class manifest:  # noqa: N801 - stands in for a ModelManifest
        name = "cand"
        version = 3


def _spec(**over: object) -> CanarySpec:
    raw: dict[str, object] = {"model": ModelRef(name="cand", version="3"), "fraction": 0.25, "key": "card_id",
                              "window_batches": 10, "min_batches": 3, "max_p99_ms": 10.0, "max_error_rate": 0.1}
    raw.update(over)
    return CanarySpec.model_validate(raw)


def _scored(ms: float, rows: int = 10, errors: int = 0) -> Scored:
    return Scored(_Model(), "canary", np.zeros((rows, 1), np.float32), np.zeros((rows, 1), np.float32),  # type: ignore[arg-type]
                  [None] * rows, {"inference": ms}, errors=errors)


def test_the_same_entities_are_picked_every_time(topology: Topology) -> None:
    c = Canary(_spec(), _Model(), "t")  # type: ignore[arg-type]
    d = Decoder(topology.input.schema_, topology.input.max_payload_bytes)
    msgs = [FakeMessage(orjson.dumps(good_event(i, card_id=f"c{i % 400}")), _offset=i) for i in range(2000)]
    b, _ = d.decode(msgs)
    pick = c.pick(b)
    again = c.pick(b.take(np.arange(len(b))[::-1]))[::-1]
    assert (pick == again).all()
    cards = b.column("card_id")
    assert all(len(set(pick[cards == k].tolist())) == 1 for k in set(cards.tolist()))  # whole entities
    assert 0.15 < pick.mean() < 0.35


def test_p99_over_the_limit_rolls_back(caplog: pytest.LogCaptureFixture) -> None:
    c = Canary(_spec(), _Model(), "t")  # type: ignore[arg-type]
    c.observe(_scored(50.0))
    c.observe(_scored(50.0))
    assert c.active  # fewer than min_batches: no verdict yet
    c.observe(_scored(50.0))
    assert not c.active and c.rolled_back_reason == "p99_latency"
    assert "rolled back" in caplog.text and "max_p99_ms 10.0" in caplog.text


def test_errors_over_the_limit_roll_back() -> None:
    c = Canary(_spec(), _Model(), "t")  # type: ignore[arg-type]
    for _ in range(3):
        c.observe(_scored(1.0, errors=2))
    assert not c.active and c.rolled_back_reason == "error_rate"


def test_a_healthy_canary_stays() -> None:
    c = Canary(_spec(), _Model(), "t")  # type: ignore[arg-type]
    for i in range(40):
        c.observe(_scored(1.0 + (i % 3), errors=1 if i % 20 == 0 else 0))
    assert c.active and c.rows == 400
