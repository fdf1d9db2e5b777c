"""``streamscore chaos [--quick] [--scenario NAME ...] [--json PATH]``: run fault scenarios, print
a table, write JSON, exit 1 if any scenario failed its counts.

Scenarios live in the modules of ``SCENARIO_MODULES``, each exposing ``SCENARIOS: dict[str,
Scenario]``. A scenario gets a ``ChaosContext`` (settings, ``quick`` for the shorter version
``make test`` runs, a scratch directory) and returns a ``ScenarioResult`` whose ``passed`` says
whether its stated counts held. Scenarios use fresh topics and consumer groups; the ones that stop
the broker or Redis restart it before they return.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.chaos.report import ScenarioResult, table, write_json
from workers.settings import Settings, get_settings


@dataclass(frozen=True)
class ChaosContext:
    settings: Settings
    quick: bool  # the shorter version of each scenario (`make test`)
    workdir: Path  # scratch space: topology copies, logs of spawned workers


Scenario = Callable[[ChaosContext], ScenarioResult]

# Modules with a SCENARIOS mapping, in the order the suite runs them.
SCENARIO_MODULES: tuple[str, ...] = (
    "workers.chaos.delivery", "workers.chaos.store", "workers.chaos.badinput",
)


def all_scenarios() -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for name in SCENARIO_MODULES:
        mod = importlib.import_module(name)
        for k, fn in getattr(mod, "SCENARIOS").items():
            if k in out:
                raise RuntimeError(f"chaos scenario {k!r} is defined twice ({name})")
            out[k] = fn
    return out


def run(names: list[str] | None, quick: bool, settings: Settings | None = None,
        progress: Callable[[str], None] = print) -> list[ScenarioResult]:
    scenarios = all_scenarios()
    unknown = sorted(set(names or []) - set(scenarios))
    if unknown:
        raise SystemExit(f"streamscore chaos: unknown scenario(s) {unknown}; known: {sorted(scenarios)}")
    settings = settings or get_settings()
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="streamscore-chaos-") as tmp:
        ctx = ChaosContext(settings, quick, Path(tmp))
        for name, fn in scenarios.items():
            if names and name not in names:
                continue
            progress(f"[chaos] {name} ...")
            t0 = time.monotonic()
            r = fn(ctx)
            progress(f"[chaos] {name}: {'PASS' if r.passed else 'FAIL'} in {time.monotonic() - t0:.0f} s "
                     f"({r.expected}) {'; '.join(r.notes)}")
            results.append(r)
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="streamscore chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the shorter version of each scenario (make test)")
    ap.add_argument("--scenario", action="append", default=None, help="run only this one (repeatable)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    results = run(args.scenario, args.quick)
    print(table(results))
    if args.json:
        write_json(results, Path(args.json), {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "platform": platform.platform(), "load_avg": os.getloadavg()})
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
