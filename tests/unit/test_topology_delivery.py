"""The topology's `delivery` setting: validated, at_least_once by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.topology import TopologyError, parse_topology

ROOT = Path(__file__).resolve().parents[2]


def _with(line: str) -> str:
    return (ROOT / "topologies" / "fraud.yaml").read_text() + line


def test_default_is_at_least_once() -> None:
    t = parse_topology(_with(""), Path("t.yaml"))
    assert t.delivery == "at_least_once"


def test_exactly_once_is_accepted() -> None:
    assert parse_topology(_with("\ndelivery: exactly_once\n"), Path("t.yaml")).delivery == "exactly_once"


def test_an_unknown_guarantee_is_rejected_with_its_line() -> None:
    text = _with("\ndelivery: exactly-once\n")
    line = text.count("\n")
    with pytest.raises(TopologyError, match=rf"t.yaml:{line}: delivery: Input should be 'at_least_once' or 'exactly_once'"):
        parse_topology(text, Path("t.yaml"))
