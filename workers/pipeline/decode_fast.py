"""Decode's fast path: one schema-compiled msgspec decode per message, for events that are plainly valid.

``Decoder`` (decode.py) is exact: it names what is wrong with a bad event. Most events are not bad,
and for them its per-field Python checks cost ~7 µs an event, the worker's largest single cost. At
start-up this module compiles the topology's schema into a msgspec ``Struct`` whose types carry the
same rules (length, allowed values, bounds, 64-bit integers, strict booleans); msgspec's C decoder
parses and validates a message in ~1 µs. msgspec is a well-kept library of the field (JSON decoding
and validation in one C pass), preferred to growing our own.

The fast path only ever *accepts*. Whatever it does not accept goes to the exact path, which then
accepts or dead-letters it with its reason, so the two can never disagree on a refusal:

- any msgspec error (bad JSON, a missing field, a wrong type, a value out of bounds, ``1.0`` for an
  integer, which the exact path accepts) -> exact path;
- msgspec keeps the last of duplicate keys and skips unknown ones, so an event is taken only when
  the payload's colons outside strings (``_scan.key_colons``, the keys of all its objects) are
  exactly the schema's keys it holds: then there is no duplicate and no unknown key at any level;
- dotted (nested) field paths become nested Structs, and a function compiled per schema flattens
  a decoded event into the schema's order while counting the keys of each object (``_nested``).

``tests/unit/pipeline/test_decode_fast.py`` holds the two paths to the same answers (hypothesis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from workers.schema import EventSchema, FieldSpec, split_path

try:  # C (workers/pipeline/_scan.c); without it every colon counts: valid events with ':' in strings go exact
    from workers.pipeline._scan import colons, key_colons
except ImportError:  # pragma: no cover - an install without a C compiler
    def colons(raw: bytes) -> int:
        return raw.count(b":")

    key_colons = colons

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
__all__ = ["FastDecoder", "UNSET", "colons", "key_colons"]


def _type(f: FieldSpec) -> Any | None:
    """The msgspec type holding ``f``'s rules, or None where no value can pass (the exact path says why)."""
    if f.type == "boolean":
        return bool
    if f.type == "string":
        lo, hi = (0 if f.allow_empty else 1), f.max_length
        if f.values is not None:
            ok = tuple(v for v in f.values if lo <= len(v) and (hi is None or len(v) <= hi))
            return Literal[ok] if ok else None
        return Annotated[str, Meta(min_length=lo, max_length=hi)]
    if f.type == "integer":
        ge = max(math.ceil(f.min), _I64_MIN) if f.min is not None else _I64_MIN
        le = min(math.floor(f.max), _I64_MAX) if f.max is not None else _I64_MAX
        return Annotated[int, Meta(ge=ge, le=le)] if ge <= le else None
    return Annotated[float, Meta(ge=f.min, le=f.max)]  # ints are taken too (the column is float64)


class _Node:
    """One JSON object of the schema: its leaves (field index, spec, type) and child objects, in order."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, FieldSpec, Any] | _Node] = {}

    def required(self) -> bool:
        return any(c.required() if isinstance(c, _Node) else c[1].required for c in self.items.values())


def _nested(schema: EventSchema, types: list[Any]) -> tuple[Any, Callable[[Any], tuple[tuple[object, ...], int]]]:
    """Structs for a schema with dotted paths, and a function compiled for it (as decide's row
    writer is) that flattens a decoded event into the schema's order and counts its keys.

    The exact path reads an absent or null object as null for every field in it, so an object
    holding a required field is a required, non-null Struct here (absent or null: msgspec refuses,
    the exact path names the missing field), and any other is ``Struct | None | UNSET``.
    """
    root = _Node()
    for i, (name, f) in enumerate(schema.fields.items()):
        *objs, leaf = split_path(name)
        node = root
        for o in objs:
            child = node.items.setdefault(o, _Node())
            assert isinstance(child, _Node)  # the schema refuses a field that is a value and an object
            node = child
        node.items[leaf] = (i, f, types[i])
    namespace: dict[str, Any] = {"UNSET": UNSET}
    body: list[str] = []
    init: list[str] = []
    leaves: dict[int, str] = {}
    serial = iter(range(1 << 30))

    def build(node: _Node, var: str, always: bool, indent: str) -> Any:
        """The Struct of ``node``; appends the lines counting its keys, run where ``var`` holds it
        (``always``: whenever the event decoded; else ``var`` is None where the object was absent
        or null), and visits its children."""
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        fixed, maybe = 0, []
        kids: list[tuple[_Node, str, str, str, bool]] = []
        for key, item in node.items.items():
            attr = f"f{next(serial)}"
            rename[attr] = key
            if isinstance(item, _Node):
                req = item.required()
                kids.append((item, f"v{next(serial)}", attr, f"S{next(serial)}", req))
                if req:
                    fixed += 1
                else:
                    maybe.append(f"({var}.{attr} is not UNSET)")
                continue
            i, f, t = item
            leaves[i] = f"{var}.{attr}" if always else f"({var}.{attr} if {var} is not None else None)"
            if f.required:
                fields.append((attr, t))
                fixed += 1
            else:
                fields.append((attr, t | None | UnsetType, UNSET))
                maybe.append(f"({var}.{attr} is not UNSET)")
        body.append(f"{indent}n += {' + '.join([str(fixed), *maybe])}")
        for item, sub, attr, sname, req in kids:
            body.append(f"{indent}{sub} = {var}.{attr}")
            if req:  # an object whenever its parent is one (msgspec enforced it)
                st = build(item, sub, always, indent)
            else:
                init.append(f"    {sub} = None")  # stays None where an ancestor is absent or null
                body.append(f"{indent}if type({sub}) is {sname}:")
                st = build(item, sub, False, indent + "    ")
                body.append(f"{indent}else:")
                body.append(f"{indent}    {sub} = None")
            namespace[sname] = st
            fields.append((attr, st) if req else (attr, st | None | UnsetType, UNSET))
        return msgspec.defstruct(f"Event{next(serial)}", fields, kw_only=True, rename=rename, gc=False)

    top = build(root, "v0", True, "    ")
    row = ", ".join(leaves[i] for i in range(len(types)))
    src = "def flat(v0):\n    n = 0\n" + "".join(line + "\n" for line in init + body) + f"    return ({row},), n\n"
    exec(compile(src, "<streamscore decode flattener>", "exec"), namespace)  # noqa: S102
    return top, namespace["flat"]


class FastDecoder:
    """``decode(raw)`` -> the event's values in schema order, or None: take the exact path."""

    def __init__(self, decode: Callable[[bytes], Any], required: int, optional: Sequence[int],
                 flat: Callable[[Any], tuple[tuple[object, ...], int]] | None = None) -> None:
        self._decode = decode
        self._required = required
        self._optional = len(optional)
        # The optional fields' values of a row, as a tuple (itemgetter of one index returns the value).
        self._opt: Callable[[tuple[object, ...]], tuple[object, ...]] | None = (
            None if not optional else (lambda row, i=optional[0]: (row[i],)) if len(optional) == 1
            else itemgetter(*optional))
        self._flat = flat  # nested schemas: flattens and counts keys (_nested)

    @classmethod
    def of(cls, schema: EventSchema) -> FastDecoder | None:
        """The schema's fast decoder; None where a field is one no value can pass."""
        types: list[Any] = [_type(f) for f in schema.fields.values()]
        if any(t is None for t in types):
            return None
        if any(len(split_path(name)) > 1 for name in schema.fields):
            struct, flat = _nested(schema, types)
            return cls(msgspec.json.Decoder(struct).decode, 0, (), flat)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        required, optional = 0, []
        for i, ((name, f), t) in enumerate(zip(schema.fields.items(), types)):
            attr = f"f{i}"  # any JSON key is a field name this way (renamed on the wire)
            rename[attr] = name
            if f.required:
                fields.append((attr, t))
                required += 1
            else:
                fields.append((attr, t | None | UnsetType, UNSET))
                optional.append(i)
        struct = msgspec.defstruct("Event", fields, kw_only=True, rename=rename, gc=False)
        return cls(msgspec.json.Decoder(struct).decode, required, optional)

    def decode(self, raw: bytes) -> tuple[object, ...] | None:
        """An absent optional field is ``UNSET`` in the row (a null one None): the batch's columns
        turn both into null (``Decoder``'s ``_column``), once per column rather than per row."""
        try:
            if self._flat is not None:
                row, keys = self._flat(self._decode(raw))
            else:
                row = msgspec.structs.astuple(self._decode(raw))
                opt = self._opt
                keys = self._required if opt is None else self._required + self._optional - opt(row).count(UNSET)
        except Exception:  # bad JSON, a rule broken, too deep (RecursionError): the exact path names it
            return None
        # All colons first (one memchr pass): equal means none in strings, the common case.
        return row if colons(raw) == keys or key_colons(raw) == keys else None
