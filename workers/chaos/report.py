"""Chaos results: one row per scenario, printed as a table and written as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workers.chaos.ledger import Counts


@dataclass
class ScenarioResult:
    name: str
    counts: Counts
    recover_s: float | None = None  # time from the fault's end to the first new outcome
    passed: bool = False
    expected: str = ""  # what had to hold, in words (e.g. "0 lost, 0 duplicated")
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("counts"))
        return d


_COLS = ("sent", "decided", "dead_lettered", "lost", "duplicated", "contradictory")


def table(results: list[ScenarioResult]) -> str:
    head = f"{'scenario':34} " + " ".join(f"{c:>13}" for c in _COLS) + f" {'recover_s':>10} {'result':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        c = asdict(r.counts)
        rec = f"{r.recover_s:10.1f}" if r.recover_s is not None else f"{'-':>10}"
        lines.append(f"{r.name:34} " + " ".join(f"{c[k]:>13}" for k in _COLS) + f" {rec} "
                     f"{'PASS' if r.passed else 'FAIL':>7}")
    return "\n".join(lines)


def write_json(results: list[ScenarioResult], path: Path, machine: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"machine": machine, "scenarios": [r.to_dict() for r in results]},
                                  option=orjson.OPT_INDENT_2))
