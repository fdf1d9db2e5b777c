"""The documented record schemas, as pydantic models, for consumers of streamscore's topics.

Not used on the hot path (decode validates with plain checks; decide writes with orjson); tests and
downstream consumers parse with these to check that what is on the wire matches the docs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TransactionEvent(_Strict):
    """Input topic value (JSON). Key: the card id (any key is carried over to the decision)."""

    event_id: str = Field(min_length=1, max_length=64)
    card_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(ge=0)
    currency: str = Field(min_length=1, max_length=3)
    country: str = Field(min_length=1, max_length=2)
    device_id: str = Field(min_length=1, max_length=64)
    event_time_ms: int = Field(ge=0)
    trace_id: str | None = None


class ModelRef(_Strict):
    name: str
    version: str
    variant: str
    engine: str


class SourceRefRecord(_Strict):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = Field(description="Kafka record timestamp of the input event")


class DecisionRecord(_Strict):
    """Output topic value (JSON), keyed like the input event."""

    schema_: Literal["decision.v1"] = Field(alias="schema")
    event_id: str
    card_id: str
    merchant_id: str
    score: float | None = Field(description="fraud probability in [0, 1]; null for fallbacks")
    verdict: Literal["approve", "review", "decline"]
    model: ModelRef
    reasons: list[str]
    flags: list[str] = Field(
        description="missing:<view>, stale:<view>, degraded, fallback:<why>"
    )
    timings_ms: dict[str, float]
    event_time_ms: int
    decided_at_ms: int
    trace_id: str | None
    stage: str
    source: SourceRefRecord
