"""Topology files: one worker's whole flow, declared as data and loaded into frozen typed objects.

``load_topology(path)`` parses YAML, validates it against the models below (unknown keys and wrong
types are errors) and raises ``TopologyError`` naming the file, line and key, e.g.::

    topologies/fraud.yaml:14: batching.max_wait_ms: Input should be a valid integer

Every bound is a named field with a unit in its name and a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.hooks import HOOK_PATTERN
from workers.schema import EventSchema
from workers.serving.spec import ServingSpec

class TopologyError(ValueError):
    """A topology file could not be loaded; the message names file, line and key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InputSpec(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(6, ge=1, description="partitions created by `dev up`")
    consumer_group: str = Field(min_length=1)
    # Checked before decoding; over a limit: dead-lettered (payload_too_large, key_too_large,
    # headers_too_large). The defaults together stay far below the producer's 1,000,000 bytes, so
    # a dead letter of a message within them is never truncated.
    max_payload_bytes: int = Field(16_384, gt=0, le=100_000_000, description="larger values are dead-lettered")
    max_key_bytes: int = Field(4_096, gt=0, le=100_000_000, description="larger keys are dead-lettered")
    max_headers_bytes: int = Field(16_384, ge=0, le=100_000_000,
                                   description="headers (names + values) beyond this are dead-lettered")
    schema_: EventSchema = Field(alias="schema")


class TopicSpec(_Model):
    topic: str = Field(min_length=1)
    partitions: int = Field(1, ge=1)


class FeaturesSpec(_Model):
    feature_service: str = Field(min_length=1)
    reader: Literal["feast_sdk", "redis_fast"] = "feast_sdk"
    timeout_ms: int = Field(50, gt=0, description="the least a store read waits (connect, and a batch past its budget)")
    latency_budget_ms: int = Field(
        250, gt=0, description="a store read waits up to this minus the time since the batch's oldest "
                               "event arrived (never less than timeout_ms)")
    on_unavailable: Literal["score_with_defaults", "fallback"] = Field(
        "fallback", description="rows of a batch whose store could not be read (down, slow, refused, empty)")
    on_missing: dict[str, Literal["score_with_defaults", "fallback"]] = Field(
        default_factory=dict, description="per view: rows whose entity it lacks; unlisted: score_with_defaults")
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
    version: str = Field(description="a version directory, or `latest` (workers/model/registry.py)")
    engine: Literal["onnxruntime-cpu", "onnxruntime-cuda", "tensorrt"] = "onnxruntime-cpu"
    variant: Literal["fp32", "int8", "fp16"] = "fp32"
    intra_op_threads: int = Field(1, ge=0, description="0 = let ONNX Runtime decide")
    inter_op_threads: int = Field(1, ge=1)
    device_id: int = Field(0, ge=0)
    cuda_graphs: bool = Field(False, description="onnxruntime-cuda: capture a CUDA graph per bucket")


class BatchingSpec(_Model):
    max_batch: int = Field(256, ge=1, le=65_536)
    max_wait_ms: int = Field(5, ge=0, le=10_000)
    flush_when_idle: bool = Field(
        True,
        description="flush a partial batch at once when the scorer has nothing to do: max_wait_ms "
                    "then bounds the wait only while the scorer is busy (natural batching: small "
                    "batches at low load, full ones under load); false = always wait max_wait_ms",
    )
    max_inflight_batches: int = Field(4, ge=1, description="queued batches before partitions pause")
    inline_max_batch: int = Field(
        64, ge=0, le=65_536,
        description="batches up to this size are scored on the consumer thread when the scorer is "
                    "idle (a thread hand-off costs more than scoring them); 0 = always hand off",
    )
    deadline_ms: int = Field(
        0, ge=0, description="score within event_time + this, else a fallback decision; 0 = off"
    )


Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Scalar = float | int | str | bool
_ID = r"^[a-z][a-z0-9_]{0,62}$"


class ConditionSpec(_Model):
    """``<operand> <op> <value>`` per row; the operand is a model input (``input``, by its name in
    the model's input spec) or an event field / Kafka metadata column (``field``)."""

    input: str | None = Field(None, description="a model input, by name")
    field: str | None = Field(None, description="an event field path or _kafka.* column")
    op: Comparison
    value: Scalar

    @model_validator(mode="after")
    def _one_operand(self) -> ConditionSpec:
        if (self.input is None) == (self.field is None):
            raise ValueError("give exactly one of `input` (a model input) or `field` (an event field)")
        if isinstance(self.value, str) and self.op not in ("==", "!="):
            raise ValueError(f"a string value compares with == or != only, not {self.op}")
        return self

    @property
    def operand(self) -> str:
        return self.input if self.input is not None else str(self.field)


class ReasonRuleSpec(ConditionSpec):
    """A reason code given to a decision whose row meets the condition (first ``max`` in order)."""

    code: str = Field(pattern=_ID)


class ReasonsSpec(_Model):
    max: int = Field(3, ge=0, le=32, description="reason codes per decision, in rule order")
    rules: tuple[ReasonRuleSpec, ...] = ()

    @field_validator("rules", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v


class HardRuleSpec(_Model):
    """A rule that overrides the model's verdict: ``at_least`` raises it to ``verdict`` (verdicts
    are ordered by severity), ``exactly`` sets it. Named in the decision's ``rules`` when it fires."""

    name: str = Field(pattern=_ID)
    when: ConditionSpec
    verdict: str
    mode: Literal["at_least", "exactly"] = "at_least"


class BandSpec(_Model):
    """Scores at or above ``from`` get ``verdict`` (until the next band). ``from`` is a number or
    the name of a threshold in the model's manifest (its calibrated cut-offs)."""

    verdict: str
    from_: float | str = Field(alias="from")


class DecisionSchemaSpec(_Model):
    name: str = Field("decision", pattern=r"^[a-z][a-z0-9_.-]{0,62}$")
    version: int = Field(1, ge=1)

    @property
    def tag(self) -> str:
        return f"{self.name}.v{self.version}"


class DecisionSpec(_Model):
    """How scores become decisions. Binary-score models use ``bands``; class-probability models
    use ``classes`` (model class label -> verdict)."""

    schema_: DecisionSchemaSpec = Field(DecisionSchemaSpec(), alias="schema")
    verdicts: tuple[str, ...] = Field(min_length=1, description="every verdict, least severe first")
    bands: tuple[BandSpec, ...] = ()
    classes: dict[str, str] = Field(default_factory=dict)
    fallback_verdict: str = Field(description="rows that cannot be scored (deadline, engine error)")
    reasons: ReasonsSpec = ReasonsSpec()
    rules: tuple[HardRuleSpec, ...] = ()
    echo: tuple[str, ...] = Field((), description="event fields copied into every decision")
    key: str = Field("_kafka.key", description="decision key: the input key or an event field")
    trace_id: bool = Field(False, description="write the input's W3C trace id (traceparent header) as trace_id")

    @field_validator("verdicts", "bands", "rules", "echo", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _verdicts_known(self) -> DecisionSpec:
        if len(set(self.verdicts)) != len(self.verdicts):
            raise ValueError(f"verdicts {list(self.verdicts)} has duplicates")
        for v in self.verdicts:
            if not re.match(_ID, v):
                raise ValueError(f"verdict {v!r} must be lower case letters, digits and '_'")
        if bool(self.bands) == bool(self.classes):
            raise ValueError("give `bands` (a model with one score) or `classes` (a model with class "
                             "probabilities), not both and not neither")
        used = [("fallback_verdict", self.fallback_verdict)]
        used += [(f"bands[{i}]", b.verdict) for i, b in enumerate(self.bands)]
        used += [(f"classes[{c!r}]", v) for c, v in self.classes.items()]
        used += [(f"rules[{r.name}]", r.verdict) for r in self.rules]
        for where, v in used:
            if v not in self.verdicts:
                raise ValueError(f"{where}: verdict {v!r} is not one of verdicts {list(self.verdicts)}")
        ranks = [self.verdicts.index(b.verdict) for b in self.bands]
        if ranks != sorted(ranks) or len(set(ranks)) != len(ranks):
            raise ValueError("bands must go from least to most severe verdict, each verdict once")
        numbers = [b.from_ for b in self.bands if not isinstance(b.from_, str)]
        if numbers != sorted(numbers):
            raise ValueError("band thresholds must not decrease")
        if len({r.name for r in self.rules}) != len(self.rules):
            raise ValueError("hard rule names must be unique")
        if self.trace_id and "trace_id" in self.echo:
            raise ValueError("trace_id: true writes the key trace_id; do not also echo a field of that name")
        return self

    def conditions(self) -> list[tuple[str, ConditionSpec]]:
        """Every condition with where it is written (for start-up checks)."""
        out: list[tuple[str, ConditionSpec]] = [
            (f"decision.reasons.rules[{r.code}]", r) for r in self.reasons.rules]
        out += [(f"decision.rules[{r.name}]", r.when) for r in self.rules]
        return out


class HooksDevSpec(_Model):
    """Local tooling of an example (`streamscore setup`, `produce`, `demo`); the worker ignores it."""

    events: str | None = Field(None, pattern=HOOK_PATTERN,
                               description="module:function(seed, start_ms) -> iterator of event dicts")
    key_field: str | None = Field(None, description="the load producer keys events by this field")
    time_field: str | None = Field(None, description="event-time field: the producer resumes its clock from it")
    offline_data: str | None = Field(
        None, pattern=HOOK_PATTERN,
        description="module:function(data_dir, now, seed): writes the Feast offline data `setup` materializes")
    streaming: tuple[str, ...] = Field((), description="streaming aggregation topologies `demo` runs")

    @field_validator("streaming", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v


class KafkaSpec(_Model):
    consumer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    producer: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("consumer", "producer")
    @classmethod
    def _no_connection_keys(
        cls, v: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        owned = {"bootstrap.servers", "group.id", "enable.auto.commit", "sasl.password",
                 "transactional.id", "group.instance.id"}  # delivery / STREAMSCORE_INSTANCE_ID
        bad = sorted(owned & set(v))
        if bad:
            raise ValueError(
                f"{bad} are set by streamscore (settings / input.consumer_group / delivery), not the topology"
            )
        return v


class Topology(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="stable stage id")
    input: InputSpec
    entities: dict[str, str] = Field(
        default_factory=dict, description="Feast join key -> event field holding it (e.g. user_id: user.id)")
    features: FeaturesSpec | None = None
    model: ModelSpec
    batching: BatchingSpec = BatchingSpec()
    decision: DecisionSpec
    serving: ServingSpec = ServingSpec()
    output: TopicSpec
    dead_letter: TopicSpec
    kafka: KafkaSpec = KafkaSpec()
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once: one Kafka transaction per micro-batch "
                                     "(README \"Delivery guarantees\")")
    dev: HooksDevSpec = HooksDevSpec()
    source_path: str = ""

    @model_validator(mode="after")
    def _fields_exist(self) -> Topology:
        schema = self.input.schema_
        known = schema.columns()
        for join_key, path in self.entities.items():
            spec = schema.fields.get(path)
            if spec is None:
                raise ValueError(f"entities.{join_key}: {path!r} is not a field of the event schema; "
                                 f"fields: {sorted(schema.fields)}")
            if spec.type not in ("string", "integer") or not spec.required:
                raise ValueError(f"entities.{join_key}: field {path!r} must be a required string or "
                                 f"integer (an entity key), is {'optional ' if not spec.required else ''}{spec.type}")
        if self.entities and self.features is None:
            raise ValueError("entities are looked up in a feature store: add a `features` section")
        d = self.decision
        refs = [("decision.key", d.key)] + [(f"decision.echo[{i}]", f) for i, f in enumerate(d.echo)]
        refs += [(where, c.field) for where, c in d.conditions() if c.field is not None]
        refs += self.serving.key_fields()
        refs += [(f"dev.{k}", v) for k, v in (("key_field", self.dev.key_field), ("time_field", self.dev.time_field))
                 if v is not None]
        for where, path in refs:
            if path not in known:
                raise ValueError(f"{where}: {path!r} is not an event field or Kafka metadata column; "
                                 f"fields: {sorted(schema.fields)}")
        for where, c in d.conditions():
            if c.field is not None:
                t = schema.type_of(c.field)
                if t == "string" and not isinstance(c.value, str):
                    raise ValueError(f"{where}: field {c.field!r} is a string; compare it with a string")
                if t != "string" and isinstance(c.value, str):
                    raise ValueError(f"{where}: field {c.field!r} is {t}; compare it with a number or boolean")
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
    t = parse_yaml_model(text, path, Topology, "keys id, input, model, ...")
    _check_kafka_properties(t, text, path)
    return t


def load_topology(path: str | Path) -> Topology:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such topology file (see topologies/fraud.yaml)") from None
    return parse_topology(text, p)


def _check_kafka_properties(t: Topology, text: str, path: Path) -> None:
    """``kafka.consumer`` / ``kafka.producer`` as librdkafka reads them (``workers/kafka_props.py``)."""
    from workers.kafka_props import check_properties

    problems = [(kind, key, why) for kind, props in (("consumer", t.kafka.consumer), ("producer", t.kafka.producer))
                for key, why in check_properties(kind, props)]  # type: ignore[arg-type]
    if problems:
        lines = _line_index(text)
        raise TopologyError("\n".join(
            f"{path}:{lines.get(('kafka', kind, key), lines.get(('kafka', kind), 1))}: kafka.{kind}.{key}: {why}"
            for kind, key, why in problems))
