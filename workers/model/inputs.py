"""A model's inputs, declared as data: the one contract between training and serving.

An input spec is a list of entries, each making one column of the model's float32 input matrix
(``one_hot`` and ``hook`` make several), in order. Operands name an event field by its path
(``amount``, ``device.id``), a Kafka metadata column (``_kafka.timestamp_ms``), or an online
feature by its Feast reference (``view:feature``)::

    - {name: log_amount, op: log1p, of: amount}
    - {name: amount_to_avg, op: ratio, of: [amount, "card_profile:avg_amount"], floor: 1, max: 1000}
    - {name: is_night, op: hour_in_range, of: event_time_ms, from: 0, to: 6}
    - {op: feature, of: "card_profile:txn_count_30d"}          # name defaults to the reference

The vocabulary (every op vectorized over the batch, no Python per row):

| op | columns |
|---|---|
| ``field`` | a number / integer / boolean field as is (``fill`` where null) |
| ``feature`` | an online numeric feature as the reader returned it (defaults filled) |
| ``log1p`` | ``log1p(max(x, 0))`` |
| ``ratio`` | ``a / max(b, floor)``, clipped to ``[min, max]`` |
| ``zscore`` | ``(x - max(mean, mean_floor)) / max(std, std_floor)``, clipped |
| ``equal`` / ``not_equal`` | 1 / 0 comparing two string operands; ``unknown`` where either is null or "" |
| ``hour_sin`` / ``hour_cos`` | hour of day (UTC, fractional) of an epoch-ms operand on the unit circle |
| ``hour_in_range`` | 1 where the UTC hour is in ``[from, to)`` (wraps past midnight when from > to) |
| ``clip`` | ``x`` clipped to ``[min, max]`` |
| ``bucket`` | index of the bucket of ``x`` between sorted ``edges`` (0 .. len(edges)) |
| ``one_hot`` | one column per listed value (``name=value``), plus ``name=other`` with ``other: true`` |
| ``is_missing`` | 1 where a field is null (``of``) or the row's entity has no value in a view (``view``) |
| ``hook`` | ``module:function(events, online) -> float32 [n, len(outputs)]`` for what the rest cannot say |

A ``hook`` gets the operands it declares (``reads`` as float64, ``reads_strings`` as objects):
``events`` maps event fields to columns, ``online`` maps ``view:feature`` to the reader's values
(defaults filled). Training calls it exactly as the worker does.

A numeric operand that is null gives NaN; every non-finite result becomes 0 (inf: the largest
float32), so the matrix is always finite. The spec is written once (for training), recorded in the
model's manifest, and read back by the worker, which refuses at start inputs that its topology's
schema or feature service cannot provide (``check``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from workers.events import BoolArray, F32Array, F64Array, ObjArray, OnlineFeatures
from workers.hooks import HOOK_PATTERN, load_hook
from workers.schema import EventSchema

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_F32_MAX = float(np.finfo(np.float32).max)


class InputSpecError(ValueError):
    """An input spec is malformed or cannot be served; the message names the input."""


def is_online(ref: str) -> bool:
    """``view:feature`` references name online features; everything else is an event column."""
    return ":" in ref


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data: Any) -> Any:
        # YAML and JSON have lists; the entries stay frozen (and hashable) as tuples.
        if isinstance(data, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data

    def columns(self) -> tuple[str, ...]:
        return (self.name,)

    def numeric_operands(self) -> tuple[str, ...]:
        return ()

    def string_operands(self) -> tuple[str, ...]:
        return ()


class FieldIn(_In):
    op: Literal["field"]
    of: str
    fill: float = Field(0.0, description="value where the field is null")

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class FeatureIn(_In):
    op: Literal["feature"]
    of: str = Field(pattern=r"^[^:]+:[^:]+$")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("of"), str):
            return {**data, "name": data["of"]}
        return data

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class Log1pIn(_In):
    op: Literal["log1p"]
    of: str

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class _Clipped(_In):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Clipped:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class RatioIn(_Clipped):
    op: Literal["ratio"]
    of: tuple[str, str]
    floor: float | None = Field(None, description="the denominator is at least this")

    def numeric_operands(self) -> tuple[str, ...]:
        return self.of


class ZScoreIn(_Clipped):
    op: Literal["zscore"]
    of: str
    mean: str
    std: str
    mean_floor: float | None = None
    std_floor: float | None = Field(None, description="the std is at least this")

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of, self.mean, self.std)


class ClipIn(_Clipped):
    op: Literal["clip"]
    of: str

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class CompareIn(_In):
    op: Literal["equal", "not_equal"]
    of: tuple[str, str]
    unknown: float = Field(0.0, description="value where either side is null or empty")

    def string_operands(self) -> tuple[str, ...]:
        return self.of


class HourIn(_In):
    op: Literal["hour_sin", "hour_cos"]
    of: str

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class HourRangeIn(_In):
    op: Literal["hour_in_range"]
    of: str
    from_: float = Field(alias="from", ge=0, le=24)
    to: float = Field(ge=0, le=24)

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class BucketIn(_In):
    op: Literal["bucket"]
    of: str
    edges: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted(self) -> BucketIn:
        if list(self.edges) != sorted(set(self.edges)):
            raise ValueError("edges must be strictly increasing")
        return self

    def numeric_operands(self) -> tuple[str, ...]:
        return (self.of,)


class OneHotIn(_In):
    op: Literal["one_hot"]
    of: str
    values: tuple[str, ...] = Field(min_length=1)
    other: bool = Field(False, description="one more column for any other (or null) value")

    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.name}={v}" for v in self.values) + ((f"{self.name}=other",) if self.other else ())

    def string_operands(self) -> tuple[str, ...]:
        return (self.of,)


class IsMissingIn(_In):
    op: Literal["is_missing"]
    of: str | None = Field(None, description="an optional event field")
    view: str | None = Field(None, description="a feature view: 1 where the row's entity has no value")

    @model_validator(mode="after")
    def _one(self) -> IsMissingIn:
        if (self.of is None) == (self.view is None):
            raise ValueError("give exactly one of `of` (a field) or `view` (a feature view)")
        return self


class HookIn(_In):
    op: Literal["hook"]
    function: str = Field(pattern=HOOK_PATTERN)
    reads: tuple[str, ...] = Field((), description="numeric operands the function reads")
    reads_strings: tuple[str, ...] = Field((), description="string operands the function reads")
    outputs: tuple[str, ...] = Field(min_length=1)

    def columns(self) -> tuple[str, ...]:
        return self.outputs

    def numeric_operands(self) -> tuple[str, ...]:
        return self.reads

    def string_operands(self) -> tuple[str, ...]:
        return self.reads_strings


AnyInput = Annotated[
    FieldIn | FeatureIn | Log1pIn | RatioIn | ZScoreIn | ClipIn | CompareIn | HourIn | HourRangeIn
    | BucketIn | OneHotIn | IsMissingIn | HookIn,
    Field(discriminator="op"),
]
_ADAPTER: TypeAdapter[list[AnyInput]] = TypeAdapter(list[AnyInput])


@dataclass(frozen=True)
class InputSpec:
    """A validated input spec: the entries, the matrix columns they make, what they read."""

    entries: tuple[_In, ...]

    @staticmethod
    def parse(raw: object, where: str = "inputs") -> InputSpec:
        """From decoded YAML/JSON (a list of entry mappings); errors name the entry and key."""
        if not isinstance(raw, list) or not raw:
            raise InputSpecError(f"{where}: must be a non-empty list of model inputs")
        try:
            entries = _ADAPTER.validate_python(raw)
        except ValidationError as e:
            msgs = []
            for err in e.errors():
                loc = list(err["loc"])
                idx = loc[0] if loc and isinstance(loc[0], int) else None
                name = raw[idx].get("name", raw[idx].get("of")) if idx is not None and isinstance(raw[idx], dict) else None
                rest = ".".join(str(x) for x in loc[2:] if not isinstance(x, int) or x != idx) or "(entry)"
                label = f"{where}[{idx}]" + (f" ({name})" if name else "")
                msgs.append(f"{label}: {rest}: {err['msg']}")
            raise InputSpecError("\n".join(msgs)) from None
        spec = InputSpec(tuple(entries))
        cols = spec.columns
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise InputSpecError(f"{where}: duplicate input names {dup}")
        return spec

    def to_list(self) -> list[dict[str, Any]]:
        """As written in a manifest: name and op first, then what differs from the defaults."""
        out = []
        for e in self.entries:
            rest = e.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            rest.pop("name", None)
            rest.pop("op", None)
            out.append({"name": e.name, "op": getattr(e, "op"), **rest})
        return out

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns in order: ``feature_order``."""
        return tuple(c for e in self.entries for c in e.columns())

    @property
    def online_numeric(self) -> tuple[str, ...]:
        """Online numeric features to fetch: those of ``feature`` entries in their order, then the
        others in order of first use."""
        direct = [e.of for e in self.entries if isinstance(e, FeatureIn)]
        return _unique([*direct, *(r for e in self.entries for r in e.numeric_operands() if is_online(r))])

    @property
    def online_strings(self) -> tuple[str, ...]:
        return _unique(r for e in self.entries for r in e.string_operands() if is_online(r))

    @property
    def event_columns(self) -> tuple[str, ...]:
        """Event fields and Kafka metadata columns the inputs read."""
        out = [r for e in self.entries for r in (*e.numeric_operands(), *e.string_operands()) if not is_online(r)]
        out += [e.of for e in self.entries if isinstance(e, IsMissingIn) and e.of is not None]
        return _unique(out)

    @property
    def views(self) -> tuple[str, ...]:
        """Feature views whose missing flags the inputs read (``is_missing`` with ``view``)."""
        return _unique(e.view for e in self.entries if isinstance(e, IsMissingIn) and e.view is not None)

    def check(self, schema: EventSchema, served: Mapping[str, str] | None, where: str) -> None:
        """Refuse, naming them, inputs the schema or feature service cannot provide.

        ``served``: ``view:feature`` -> "numeric" or "string" for the feature service's features
        (None: not known here, checked by the reader at start).
        """
        problems: list[str] = []
        for e in self.entries:
            for ref, kind in [(r, "numeric") for r in e.numeric_operands()] + [(r, "string") for r in e.string_operands()]:
                if is_online(ref):
                    if served is not None and ref not in served:
                        problems.append(f"input {e.name!r} reads {ref!r}, which the feature service does not serve")
                    elif served is not None and served[ref] != kind:
                        problems.append(f"input {e.name!r} needs {ref!r} as {kind}, the feature service serves it as {served[ref]}")
                    continue
                t = schema.type_of(ref)
                if t is None:
                    problems.append(f"input {e.name!r} reads {ref!r}, which is not an event field of schema "
                                    f"{schema.name} v{schema.version} (fields: {sorted(schema.fields)})")
                elif kind == "numeric" and t == "string":
                    problems.append(f"input {e.name!r} needs {ref!r} as a number, the schema has a string")
                elif kind == "string" and t != "string":
                    problems.append(f"input {e.name!r} compares {ref!r} as a string, the schema has {t}")
            if isinstance(e, IsMissingIn) and e.of is not None and schema.type_of(e.of) is None:
                problems.append(f"input {e.name!r}: {e.of!r} is not an event field")
            if isinstance(e, HourIn | HourRangeIn) and not is_online(e.of) and schema.type_of(e.of) == "boolean":
                problems.append(f"input {e.name!r}: {e.of!r} must be an epoch-ms number")
        if problems:
            raise InputSpecError(f"{where}: the model's inputs cannot be served:\n  - " + "\n  - ".join(problems))


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x for x in items if x is not None))


# ---- assembly ------------------------------------------------------------------------------


class EventColumns(Protocol):
    """What assembly reads of the events: ``EventBatch`` satisfies it, and so does ``FrameColumns``."""

    def __len__(self) -> int: ...
    def column(self, name: str) -> npt.NDArray[Any]: ...
    def null_mask(self, name: str) -> BoolArray | None: ...


@dataclass(frozen=True)
class FrameColumns:
    """Event columns from a mapping of arrays (a training DataFrame: dotted names as column names)."""

    data: Mapping[str, Any]
    n: int

    @staticmethod
    def of(data: Mapping[str, Any]) -> FrameColumns:
        """From a DataFrame or a dict of equal-length arrays."""
        if isinstance(getattr(data, "index", None), Sized):  # a DataFrame: its row count
            return FrameColumns(data, len(data.index))  # type: ignore[attr-defined]
        n = len(next(iter(data.values()))) if len(data) else 0
        return FrameColumns(data, n)

    def __len__(self) -> int:
        return self.n

    def column(self, name: str) -> npt.NDArray[Any]:
        v = np.asarray(self.data[name])
        if v.dtype.kind in "OUS":  # pandas strings/NA -> object with None
            return np.asarray([None if (x is None or x != x) else x for x in v.tolist()], dtype=object) \
                if v.dtype == object else v.astype(object)
        return v

    def null_mask(self, name: str) -> BoolArray | None:
        v = self.data[name]
        isna = getattr(v, "isna", None)
        if callable(isna):
            m = np.asarray(isna(), dtype=bool)
            return m if m.any() else None
        a = np.asarray(v)
        if a.dtype == object:
            m = np.fromiter((x is None for x in a.tolist()), bool, len(a))
            return m if m.any() else None
        if a.dtype.kind == "f":
            m = np.isnan(a)
            return m if m.any() else None
        return None


Step = Callable[["_Batch", F32Array], None]


class _Batch:
    """One assembly call: operand columns converted once and shared by the steps."""

    __slots__ = ("events", "online", "n", "_num", "_str", "_ms", "_on_num", "_on_str")

    def __init__(self, events: EventColumns, online: OnlineFeatures, on_num: Mapping[str, int]) -> None:
        self.events, self.online, self.n = events, online, len(events)
        self._num: dict[str, F64Array] = {}
        self._str: dict[str, ObjArray] = {}
        self._ms: dict[str, npt.NDArray[Any]] = {}
        self._on_num = on_num

    def num(self, ref: str) -> F64Array:
        v = self._num.get(ref)
        if v is None:
            if is_online(ref):
                v = self.online.numeric[:, self._on_num[ref]].astype(np.float64)
            else:
                v = np.asarray(self.events.column(ref), dtype=np.float64)
                mask = self.events.null_mask(ref)
                if mask is not None and mask.any():
                    v = np.where(mask, np.nan, v)
            self._num[ref] = v
        return v

    def str_(self, ref: str) -> ObjArray:
        v = self._str.get(ref)
        if v is None:
            if is_online(ref):
                got = self.online.strings.get(ref)
                v = got if got is not None else np.full(self.n, "", dtype=object)
            else:
                v = np.asarray(self.events.column(ref), dtype=object)
            self._str[ref] = v
        return v

    def ms_of_day(self, ref: str) -> npt.NDArray[Any]:
        v = self._ms.get(ref)
        if v is None:
            raw = self.online.numeric[:, self._on_num[ref]].astype(np.float64) if is_online(ref) \
                else self.events.column(ref)  # int64 epoch ms stays exact
            v = np.mod(raw, DAY_MS)
            self._ms[ref] = v
        return v


def _clip(v: F64Array, lo: float | None, hi: float | None) -> F64Array:
    if lo is not None and hi is not None:
        return np.clip(v, lo, hi)
    if hi is not None:
        return np.minimum(v, hi)
    if lo is not None:
        return np.maximum(v, lo)
    return v


class Assembler:
    """An input spec compiled for one feature layout: ``assemble(events, online) -> float32 [n, k]``.

    ``online_numeric`` is the order of the reader's ``OnlineFeatures.numeric`` columns (the
    manifest's). Online ``feature`` columns are copied with one fancy-indexed copy; every other
    input is a few numpy calls per batch.
    """

    def __init__(self, spec: InputSpec, online_numeric: Sequence[str], schema: EventSchema | None = None) -> None:
        """``schema``: the events' schema, when known (the worker): lets assembly skip checks the
        schema already made (an empty string in a field that does not allow one)."""
        self.spec = spec
        self._schema = schema
        self.columns = spec.columns
        self._on_num = {r: i for i, r in enumerate(online_numeric)}
        missing = [r for r in spec.online_numeric if r not in self._on_num]
        if missing:
            raise InputSpecError(f"online_numeric lacks {missing}, which the inputs read")
        self._copy_out: list[int] = []
        self._copy_src: list[int] = []
        self._steps: list[tuple[list[int], Callable[[_Batch], list[npt.NDArray[Any]] | F32Array]]] = []
        col = 0
        for e in spec.entries:
            width = len(e.columns())
            idx = list(range(col, col + width))
            col += width
            if isinstance(e, FeatureIn):
                self._copy_out.append(idx[0])
                self._copy_src.append(self._on_num[e.of])
            else:
                self._steps.append((idx, self._compile(e)))

    def _may_be_empty(self, ref: str) -> bool:
        if is_online(ref) or self._schema is None:
            return True
        f = self._schema.fields.get(ref)
        return f is None or f.allow_empty

    def _compile(self, e: _In) -> Callable[[_Batch], list[npt.NDArray[Any]] | F32Array]:
        if isinstance(e, FieldIn):
            fill = e.fill
            return lambda b: [np.nan_to_num(b.num(e.of), nan=fill)] if fill != 0.0 else [b.num(e.of)]
        if isinstance(e, Log1pIn):
            return lambda b: [np.log1p(np.maximum(b.num(e.of), 0.0))]
        if isinstance(e, RatioIn):
            a_ref, d_ref, floor = e.of[0], e.of[1], e.floor

            def ratio(b: _Batch) -> list[npt.NDArray[Any]]:
                d = b.num(d_ref)
                if floor is not None:
                    d = np.maximum(d, floor)
                with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                    return [_clip(b.num(a_ref) / d, e.min, e.max)]
            return ratio
        if isinstance(e, ZScoreIn):
            def zscore(b: _Batch) -> list[npt.NDArray[Any]]:
                mean, std = b.num(e.mean), b.num(e.std)
                if e.mean_floor is not None:
                    mean = np.maximum(mean, e.mean_floor)
                if e.std_floor is not None:
                    std = np.maximum(std, e.std_floor)
                with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                    return [_clip((b.num(e.of) - mean) / std, e.min, e.max)]
            return zscore
        if isinstance(e, ClipIn):
            return lambda b: [_clip(b.num(e.of), e.min, e.max)]
        if isinstance(e, CompareIn):
            ne, unknown = e.op == "not_equal", e.unknown
            # "" is possible in online strings (the readers' default) and in event fields that
            # allow it; nulls only in optional event fields (their null mask says where). Each
            # elementwise check on an object column costs ~5 µs a batch: do only the possible ones.
            may_be_empty = [self._may_be_empty(r) for r in e.of]
            events_side = [r for r in e.of if not is_online(r)]

            def compare(b: _Batch) -> list[npt.NDArray[Any]]:
                x, y = b.str_(e.of[0]), b.str_(e.of[1])
                v = ((x != y) if ne else (x == y)).astype(np.float64)
                unk: BoolArray | None = None
                for col, check in zip((x, y), may_be_empty):
                    if check:
                        m = np.asarray(col == "", dtype=bool)
                        unk = m if unk is None else unk | m
                for r in events_side:
                    m2 = b.events.null_mask(r)
                    if m2 is not None:
                        unk = m2 if unk is None else unk | m2
                if unk is not None and unk.any():
                    v[unk] = unknown
                return [v]
            return compare
        if isinstance(e, HourIn):
            fn = np.sin if e.op == "hour_sin" else np.cos
            return lambda b: [fn((b.ms_of_day(e.of).astype(np.float64) / HOUR_MS) * (2.0 * np.pi / 24.0))]
        if isinstance(e, HourRangeIn):
            lo, hi = e.from_ * HOUR_MS, e.to * HOUR_MS

            def in_range(b: _Batch) -> list[npt.NDArray[Any]]:
                ms = b.ms_of_day(e.of)
                return [(ms >= lo) & (ms < hi)] if lo <= hi else [(ms >= lo) | (ms < hi)]
            return in_range
        if isinstance(e, BucketIn):
            edges = np.asarray(e.edges, dtype=np.float64)
            return lambda b: [np.searchsorted(edges, b.num(e.of), side="right").astype(np.float64)]
        if isinstance(e, OneHotIn):
            def one_hot(b: _Batch) -> list[npt.NDArray[Any]]:
                x = b.str_(e.of)
                cols = [x == v for v in e.values]
                if e.other:
                    any_ = np.zeros(b.n, dtype=bool)
                    for c in cols:
                        any_ |= c
                    cols.append(~any_)
                return cols
            return one_hot
        if isinstance(e, IsMissingIn):
            if e.view is not None:
                view = e.view

                def view_missing(b: _Batch) -> list[npt.NDArray[Any]]:
                    m = b.online.missing.get(view)
                    return [m if m is not None else np.zeros(b.n, dtype=bool)]
                return view_missing
            field = str(e.of)

            def null(b: _Batch) -> list[npt.NDArray[Any]]:
                m = b.events.null_mask(field)
                return [m if m is not None else np.zeros(b.n, dtype=bool)]
            return null
        if isinstance(e, HookIn):
            fn_hook = load_hook(e.function, f"model input {e.name!r}")
            width = len(e.outputs)

            def hook(b: _Batch) -> F32Array:
                events: dict[str, npt.NDArray[Any]] = {r: b.num(r) for r in e.reads if not is_online(r)}
                events |= {r: b.str_(r) for r in e.reads_strings if not is_online(r)}
                online: dict[str, npt.NDArray[Any]] = {r: b.num(r) for r in e.reads if is_online(r)}
                online |= {r: b.str_(r) for r in e.reads_strings if is_online(r)}
                out = np.asarray(fn_hook(events, online), dtype=np.float32)
                if out.shape != (b.n, width):
                    raise InputSpecError(f"hook {e.function} returned shape {out.shape}, expected ({b.n}, {width})")
                return out
            return hook
        raise InputSpecError(f"input {e.name!r}: op {getattr(e, 'op', '?')} has no implementation")

    def assemble(self, events: EventColumns, online: OnlineFeatures) -> F32Array:
        """Model input [n, len(columns)] float32, rows aligned with ``events``; always finite."""
        n = len(events)
        if online.numeric.shape != (n, len(self._on_num)):
            raise ValueError(f"online.numeric has shape {online.numeric.shape}, expected ({n}, {len(self._on_num)})")
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        if self._copy_out:
            out[:, self._copy_out] = online.numeric[:, self._copy_src]
        b = _Batch(events, online, self._on_num)
        for idx, step in self._steps:
            vals = step(b)
            if isinstance(vals, np.ndarray):
                out[:, idx] = vals
            else:
                for j, v in zip(idx, vals):
                    out[:, j] = v
        # Inputs come from outside (events, Redis); a NaN or inf must not reach the model.
        np.nan_to_num(out, copy=False, nan=0.0, posinf=_F32_MAX, neginf=-_F32_MAX)
        return out

