"""The record schemas on streamscore's topics, for the clients that read them.

Not used on the hot path (decode validates with plain checks; decide writes with orjson).
``DecisionRecord`` parses any decision (the fields every topology writes; a topology's echoed
event fields are kept as extra keys). ``decision_json_schema`` and ``event_json_schema`` give the
JSON Schema (draft 2020-12) of one topology's decisions and input events, for tools outside
Python: ``streamscore schema decision|event TOPOLOGY``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.schema import KAFKA_COLUMNS, EventSchema, FieldType
from workers.topology import Topology

_JSON_TYPES: dict[FieldType, str] = {"string": "string", "number": "number", "integer": "integer",
                                     "boolean": "boolean"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


class DecisionRecord(BaseModel):
    """Output topic value (JSON). Echoed event fields are extra keys (``record.model_extra``), and so
    is ``trace_id`` (the input's W3C trace id) in topologies with ``decision.trace_id: true``."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    schema_: str = Field(alias="schema", pattern=r"^[a-z][a-z0-9_.-]*\.v[0-9]+$")
    score: float | None = Field(description="the model's score (class models: the decided class's "
                                            "probability); null for fallbacks")
    verdict: str
    model: ModelRef
    reasons: list[str]
    flags: list[str] = Field(description="missing:<view>, stale:<view>, degraded, unavailable:<cause>, fallback:<why>")
    rules: list[str] = Field(description="hard rules that fired for this event")
    timings_ms: dict[str, float]
    decided_at_ms: int
    stage: str
    source: SourceRefRecord


def _field_schema(spec_type: FieldType, required: bool) -> dict[str, Any]:
    t = _JSON_TYPES[spec_type]
    return {"type": t} if required else {"type": [t, "null"]}


def decision_json_schema(topology: Topology, class_labels: list[str] | None = None) -> dict[str, Any]:
    """JSON Schema of ``topology``'s decision records (``class_labels``: a class model's labels)."""
    d = topology.decision
    schema = topology.input.schema_
    props: dict[str, Any] = {
        "schema": {"const": d.schema_.tag},
        "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "verdict": {"enum": list(d.verdicts)},
        "model": {"type": "object", "required": ["name", "version", "variant", "engine"],
                  "properties": {k: {"type": "string"} for k in ("name", "version", "variant", "engine")}},
        "reasons": {"type": "array", "items": {"type": "string"}, "maxItems": d.reasons.max},
        "flags": {"type": "array", "items": {"type": "string"}},
        "rules": {"type": "array", "items": {"enum": [r.name for r in d.rules]}},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "decided_at_ms": {"type": "integer"},
        "stage": {"const": topology.id},
        "source": {"type": "object", "required": ["topic", "partition", "offset", "timestamp_ms"],
                   "properties": {"topic": {"type": "string"}, "partition": {"type": "integer"},
                                  "offset": {"type": "integer"}, "timestamp_ms": {"type": "integer"}}},
    }
    if d.trace_id:
        props["trace_id"] = {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$"}
    if class_labels is not None:
        props["class"] = {"enum": [*class_labels, None]}
    for path in d.echo:
        spec = schema.fields.get(path)
        props[path] = _field_schema(spec.type, spec.required) if spec is not None \
            else _field_schema(KAFKA_COLUMNS[path], path != "_kafka.key")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{d.schema_.tag} decisions of {topology.id}",
        "type": "object",
        "required": sorted(props),
        "properties": props,
        "additionalProperties": False,
    }


def event_json_schema(schema: EventSchema) -> dict[str, Any]:
    """JSON Schema of the input events (nested objects for dotted paths; extra keys allowed)."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for path, spec in schema.fields.items():
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            child = node["properties"].setdefault(part, {"type": ["object", "null"], "properties": {}, "required": []})
            if spec.required and part not in node["required"]:
                node["required"].append(part)
                child["type"] = "object"
            node = child
        s = _field_schema(spec.type, spec.required)
        if spec.type == "string":
            s["minLength"] = 0 if spec.allow_empty else 1
            if spec.max_length is not None:
                s["maxLength"] = spec.max_length
            if spec.values is not None:
                s["enum"] = [*spec.values, *([None] if not spec.required else [])]
        for bound, v in (("minimum", spec.min), ("maximum", spec.max)):
            if v is not None:  # an integer field's bounds as integers (the settings hold floats)
                s[bound] = int(v) if spec.type == "integer" and float(v).is_integer() else v
        node["properties"][parts[-1]] = s
        if spec.required:
            node["required"].append(parts[-1])
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{schema.name} v{schema.version} events", **root}
