"""Event schemas: the fields a topology's input carries, as validated data.

A schema names each field by its path in the JSON object (``amount``, or ``device.id`` for
``{"device": {"id": ...}}``) and gives its type (``string``, ``number``, ``integer``, ``boolean``),
whether it is required (an optional field may be absent or ``null``) and its bounds. Decode turns
a micro-batch of valid events into one column per field (``workers/events.py``); the core never
names a field itself.

Besides the schema's fields every batch has the Kafka metadata columns ``_kafka.key``,
``_kafka.topic``, ``_kafka.partition``, ``_kafka.offset`` and ``_kafka.timestamp_ms`` (the record
timestamp), which model inputs, rules and decision keys may read like fields.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FieldType = Literal["string", "number", "integer", "boolean"]

KAFKA_PREFIX = "_kafka."
KAFKA_KEY = "_kafka.key"
KAFKA_TOPIC = "_kafka.topic"
KAFKA_PARTITION = "_kafka.partition"
KAFKA_OFFSET = "_kafka.offset"
KAFKA_TIMESTAMP_MS = "_kafka.timestamp_ms"
# Metadata column -> the type it has, as if it were a schema field.
KAFKA_COLUMNS: dict[str, FieldType] = {
    KAFKA_KEY: "string",
    KAFKA_TOPIC: "string",
    KAFKA_PARTITION: "integer",
    KAFKA_OFFSET: "integer",
    KAFKA_TIMESTAMP_MS: "integer",
}

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_\-]{0,63}"
PATH_PATTERN = rf"^{_SEGMENT}(\.{_SEGMENT}){{0,7}}$"  # field paths: names joined by '.', 8 levels at most
_PATH = re.compile(PATH_PATTERN)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldSpec(_Model):
    type: FieldType
    required: bool = Field(True, description="an optional field may be absent or null")
    max_length: int | None = Field(None, gt=0, description="strings: longest accepted value")
    allow_empty: bool = Field(False, description="strings: accept \"\" (else empty:<field>)")
    values: tuple[str, ...] | None = Field(None, description="strings: the only accepted values")
    min: float | None = Field(None, description="numbers and integers: smallest accepted value")
    max: float | None = Field(None, description="numbers and integers: largest accepted value")

    @field_validator("values", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _options_fit_type(self) -> FieldSpec:
        if self.type != "string":
            bad = [k for k in ("max_length", "values") if getattr(self, k) is not None]
            if self.allow_empty:
                bad.append("allow_empty")
            if bad:
                raise ValueError(f"{bad} apply to string fields only; this field is {self.type}")
        if self.type not in ("number", "integer") and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to number and integer fields only; this field is {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        if self.values is not None and not self.values:
            raise ValueError("values must list at least one accepted value")
        return self


class EventSchema(_Model):
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    fields: dict[str, FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _paths(self) -> EventSchema:
        for path in self.fields:
            if path.startswith(KAFKA_PREFIX) or path == KAFKA_PREFIX.rstrip("."):
                raise ValueError(f"field {path!r}: names under {KAFKA_PREFIX!r} are the Kafka metadata columns")
            if not _PATH.match(path):
                raise ValueError(
                    f"field {path!r} is not a field path: names of letters, digits, '_' or '-' "
                    "joined by '.' for nested objects (e.g. device.id)"
                )
        for path in self.fields:
            for other in self.fields:
                if other.startswith(path + "."):
                    raise ValueError(f"field {path!r} cannot be a value and hold {other!r} as well")
        return self

    def type_of(self, name: str) -> FieldType | None:
        """The type of a field or Kafka metadata column; None if the batch has no such column."""
        spec = self.fields.get(name)
        if spec is not None:
            return spec.type
        return KAFKA_COLUMNS.get(name)

    def has_column(self, name: str) -> bool:
        return self.type_of(name) is not None

    def columns(self) -> list[str]:
        return [*self.fields, *KAFKA_COLUMNS]


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))
