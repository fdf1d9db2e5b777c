"""Topology files: one worker's whole flow, declared as data and loaded into frozen typed objects.

``load_topology(path)`` parses YAML, validates it against the models below (unknown keys and wrong
types are errors) and raises ``TopologyError`` naming the file, line and key, e.g.::

    topologies/fraud.yaml:14: batching.max_wait_ms: Input should be a valid integer

Every bound is a named field with a unit in its name and a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The wire fields of a transaction event, as decode turns them into EventBatch columns.
TRANSACTION_FIELDS: dict[str, Literal["string", "number", "integer"]] = {
    "event_id": "string",
    "card_id": "string",
    "merchant_id": "string",
    "amount": "number",
    "currency": "string",
    "country": "string",
    "device_id": "string",
    "event_time_ms": "integer",
    "trace_id": "string",
}
OPTIONAL_FIELDS = frozenset({"trace_id"})


class TopologyError(ValueError):
    """A topology file could not be loaded; the message names file, line and key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldSpec(_Model):
    type: Literal["string", "number", "integer"]
    required: bool = True
    max_length: int | None = Field(None, gt=0, description="strings: longest accepted value")
    min: float | None = Field(None, description="numbers: smallest accepted value")
    max: float | None = Field(None, description="numbers: largest accepted value")


class EventSchema(_Model):
    name: str
    version: int = Field(ge=1)
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _known_fields(self) -> EventSchema:
        unknown = sorted(set(self.fields) - set(TRANSACTION_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown event field(s) {unknown}; this worker reads {sorted(TRANSACTION_FIELDS)}"
            )
        missing = sorted(set(TRANSACTION_FIELDS) - set(self.fields) - OPTIONAL_FIELDS)
        if missing:
            raise ValueError(f"event schema must declare {missing}")
        for name, spec in self.fields.items():
            if spec.type != TRANSACTION_FIELDS[name]:
                raise ValueError(f"field {name!r} must have type {TRANSACTION_FIELDS[name]!r}")
        return self


class InputSpec(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(6, ge=1, description="partitions created by `dev up`")
    consumer_group: str = Field(min_length=1)
    max_payload_bytes: int = Field(16_384, gt=0, description="larger messages are dead-lettered")
    schema_: EventSchema = Field(alias="schema")


class TopicSpec(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(1, ge=1)


class FeaturesSpec(_Model):
    feature_service: str
    reader: Literal["feast_sdk", "redis_fast"] = "feast_sdk"
    timeout_ms: int = Field(50, gt=0, description="a slower store read scores with defaults")
    cache_ttl_ms: int = Field(0, ge=0, description="in-process cache for slow views; 0 = off")
    cache_max_entries: int = Field(100_000, gt=0)
    cached_views: tuple[str, ...] = ()
    parser: Literal["auto", "native", "hiredis"] = Field(
        "auto", description="redis_fast: 'native' = the C parser (workers/features/_resp.c), 'hiredis' = without it; "
                            "'auto' = native where it was built")
    command: Literal["auto", "hmget", "hgetall"] = Field(
        "auto", description="redis_fast: per entity, HGETALL (its whole hash) or HMGET (the model's fields); "
                            "'auto' = HGETALL where the model reads most of the hash")

    @field_validator("cached_views", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v  # YAML has lists; the model stays frozen

    @model_validator(mode="after")
    def _fast_reader_settings(self) -> FeaturesSpec:
        if self.reader != "redis_fast" and (self.parser, self.command) != ("auto", "auto"):
            raise ValueError("features.parser and features.command apply to reader: redis_fast only; "
                             "remove them or set reader: redis_fast")
        if self.parser == "hiredis" and self.command == "hgetall":
            raise ValueError("features.command: hgetall is read by the native parser only; "
                             "use parser: native or auto, or command: hmget")
        return self


class ModelSpec(_Model):
    name: str
    version: str
    engine: Literal["onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"] = "onnxruntime-cpu"
    variant: Literal["fp32", "int8", "fp16"] = "fp32"
    intra_op_threads: int = Field(1, ge=0, description="0 = let ONNX Runtime decide")
    inter_op_threads: int = Field(1, ge=1)
    device_id: int = Field(0, ge=0)
    cuda_graphs: bool = Field(False, description="onnxruntime-cuda: capture a CUDA graph per bucket")


class BatchingSpec(_Model):
    max_batch: int = Field(256, ge=1, le=65_536)
    max_wait_ms: int = Field(5, ge=0, le=10_000)
    max_inflight_batches: int = Field(4, ge=1, description="queued batches before partitions pause")
    inline_max_batch: int = Field(
        64, ge=0, le=65_536,
        description="batches up to this size are scored on the consumer thread when the scorer is "
                    "idle (a thread hand-off costs more than scoring them); 0 = always hand off",
    )
    deadline_ms: int = Field(
        0, ge=0, description="score within event_time + this, else a fallback decision; 0 = off"
    )


class PolicySpec(_Model):
    review_at: float | None = Field(
        None, ge=0.0, le=1.0, description="score >= this -> review; unset: the model manifest's"
    )
    decline_at: float | None = Field(
        None, ge=0.0, le=1.0, description="score >= this -> decline; unset: the model manifest's"
    )
    fallback_verdict: Literal["approve", "review", "decline"] = "review"

    @model_validator(mode="after")
    def _ordered(self) -> PolicySpec:
        if (
            self.review_at is not None
            and self.decline_at is not None
            and self.review_at > self.decline_at
        ):
            raise ValueError("review_at must be <= decline_at")
        return self

    def resolved(self, review: float, decline: float) -> PolicySpec:
        """This policy with unset thresholds taken from the model (its calibrated cut-offs)."""
        r = self.review_at if self.review_at is not None else review
        d = self.decline_at if self.decline_at is not None else decline
        if r > d:
            raise ValueError(f"policy review_at {r} > decline_at {d} after taking model defaults")
        return PolicySpec(review_at=r, decline_at=d, fallback_verdict=self.fallback_verdict)


class KafkaSpec(_Model):
    consumer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    producer: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("consumer", "producer")
    @classmethod
    def _no_connection_keys(
        cls, v: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        owned = {"bootstrap.servers", "group.id", "enable.auto.commit", "sasl.password"}
        bad = sorted(owned & set(v))
        if bad:
            raise ValueError(
                f"{bad} are set by streamscore (settings / input.consumer_group), not the topology"
            )
        return v


class Topology(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="stable stage id")
    input: InputSpec
    entities: dict[str, str] = Field(description="entity name -> event field holding its key")
    features: FeaturesSpec
    model: ModelSpec
    batching: BatchingSpec = BatchingSpec()
    policy: PolicySpec
    output: TopicSpec
    dead_letter: TopicSpec
    kafka: KafkaSpec = KafkaSpec()
    source_path: str = ""

    @model_validator(mode="after")
    def _entities_are_fields(self) -> Topology:
        for entity, field in self.entities.items():
            if field not in self.input.schema_.fields or field not in TRANSACTION_FIELDS:
                raise ValueError(f"entity {entity!r} key field {field!r} is not an event field")
        return self


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    index: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = (*path, str(k.value))
                index[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = (*path, str(i))
                index[p] = v.start_mark.line + 1
                walk(v, p)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return index


def _format_errors(path: Path, text: str, err: ValidationError) -> str:
    lines = _line_index(text)
    out = []
    for e in err.errors():
        loc = tuple("schema" if p == "schema_" else str(p) for p in e["loc"])
        line = None
        for n in range(len(loc), 0, -1):
            line = lines.get(loc[:n])
            if line is not None:
                break
        key = ".".join(loc) or "(top level)"
        msg = "unknown key (check its spelling and indentation)" if e["type"] == "extra_forbidden" else e["msg"]
        out.append(f"{path}:{line or 1}: {key}: {msg}")
    return "\n".join(out)


M = TypeVar("M", bound=BaseModel)


def parse_yaml_model(text: str, path: Path, model: type[M], shape: str) -> M:
    """YAML text -> validated frozen ``model``; errors name file, line and key.

    ``shape`` completes "a topology is a mapping with ..." for a document that is not a mapping.
    The model must have a ``source_path`` field: it records where the document came from.
    """
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}:1: a topology is a mapping with {shape}")
    raw["source_path"] = str(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise TopologyError(_format_errors(path, text, exc)) from None


def read_yaml_model(path: str | Path, model: type[M], shape: str, example: str) -> M:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such topology file (see {example})") from None
    return parse_yaml_model(text, p, model, shape)


def parse_topology(text: str, path: Path) -> Topology:
    return parse_yaml_model(text, path, Topology, "keys id, input, model, ...")


def load_topology(path: str | Path) -> Topology:
    return read_yaml_model(path, Topology, "keys id, input, model, ...", "topologies/fraud.yaml")
