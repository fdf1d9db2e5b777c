"""The delivery chaos scenarios, shorter (`--quick`), on the real local broker: kill -9 (at least
once and exactly once), the broker stopped with a SIGTERM during the outage, 1 -> 3 -> 1 workers.
`streamscore chaos` runs the full counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.chaos.delivery import SCENARIOS
from workers.chaos.run import ChaosContext
from workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_quick(stack: Settings, tmp_path: Path, name: str) -> None:
    r = SCENARIOS[name](ChaosContext(stack, quick=True, workdir=tmp_path))
    c = r.counts
    assert c.sent > 0 and c.lost == 0 and c.contradictory == 0, r
    if name.endswith("_eos"):
        assert c.duplicated == 0, r
    assert r.passed, r
