"""Duplicate object keys in a JSON payload, which orjson (like most parsers) resolves last-wins.

``{"amount": -1, ..., "amount": 5}`` would pass validation with amount 5, while another reader of
the same bytes may take -1. Decode calls this only for payloads where a cheap count leaves room
for a duplicate (see ``workers.pipeline.decode``). Two steps, cheapest first:

1. every ``:`` outside a string separates a key from its value, so a payload with no more colons
   than keys in the parsed object tree (walked without recursion) has no duplicate;
2. otherwise (colons inside strings, or a real duplicate) the payload is parsed again by the
   standard library with an ``object_pairs_hook`` that sees every key as written.
"""

from __future__ import annotations

import json
from typing import Any


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _count_keys(root: Any) -> int:
    n = 0
    stack = [root]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            n += len(v)
            stack.extend(x for x in v.values() if type(x) is dict or type(x) is list)
        elif type(v) is list:
            stack.extend(x for x in v if type(x) is dict or type(x) is list)
    return n


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return out


def duplicate_keys(raw: bytes, parsed: Any) -> str | None:
    """The first key that appears twice in one object of ``raw`` (which orjson parsed as
    ``parsed``), or None."""
    if raw.count(b":") <= _count_keys(parsed):
        return None
    try:
        json.loads(raw, object_pairs_hook=_refuse_duplicates)
    except _Duplicate as d:
        return d.key
    except (ValueError, RecursionError):  # orjson accepted it: nothing to add
        return None
    return None
