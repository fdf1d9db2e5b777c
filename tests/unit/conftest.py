from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from workers.model.manifest import OutputSpec
from workers.topology import DecisionSpec, Topology, load_topology

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeMessage:
    """Stands in for confluent_kafka.Message in pure-logic tests."""

    _value: bytes | None
    _key: bytes | None = b"k"
    _topic: str = "transactions"
    _partition: int = 0
    _offset: int = 0
    _error: object = None
    _headers: list[tuple[str, bytes | None]] | None = None

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> object:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)  # TIMESTAMP_CREATE_TIME

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology(ROOT / "topologies" / "fraud.yaml")


def good_event(i: int = 0, **over: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "event_id": f"e{i}", "card_id": "c1", "merchant_id": "m1", "amount": 12.5,
        "currency": "EUR", "country": "DE", "device_id": "d1", "event_time_ms": 1_700_000_000_000,
    }
    ev.update(over)
    return ev


@dataclass(frozen=True)
class FakeModel:
    """What ``Decider`` needs of a model (``workers.pipeline.decide.DecisionModel``)."""

    feature_order: tuple[str, ...] = ("f0", "f1", "f2", "f3")
    thresholds: dict[str, float] | None = None
    output: OutputSpec = OutputSpec("score", (-1, 1), "float32")
    name: str = "tiny"
    version: int = 1

    def __post_init__(self) -> None:
        if self.thresholds is None:
            object.__setattr__(self, "thresholds", {"review": 0.5, "decline": 0.9})


def three_verdicts(**over: object) -> DecisionSpec:
    """approve / review at 0.5 / decline at 0.9 (or the model's named thresholds), fallback review."""
    raw: dict[str, object] = {
        "verdicts": ["approve", "review", "decline"],
        "bands": [{"verdict": "review", "from": "review"}, {"verdict": "decline", "from": "decline"}],
        "fallback_verdict": "review", "echo": ["event_id"],
    }
    raw.update(over)
    return DecisionSpec.model_validate(raw)
