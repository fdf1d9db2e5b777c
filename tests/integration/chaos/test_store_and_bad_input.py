"""The shorter version (``--quick``) of each store and bad-input chaos scenario, against the real
broker and Redis: 0 lost, every degraded decision flagged and decided by the policy, each cause
logged and counted; bad input dead-lettered with its reason and original bytes, 0 crashes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from workers.chaos import badinput, store
from workers.chaos.run import ChaosContext, Scenario
from workers.settings import Settings


@pytest.mark.parametrize("scenario", [
    badinput.bad_input, store.redis_stopped, store.redis_restarted_empty, store.redis_wrong_password,
], ids=["bad_input", "redis_stopped_10s", "redis_restarted_empty", "redis_wrong_password"])
def test_scenario_holds(feature_store: Settings, scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory(prefix="streamscore-chaos-") as tmp:
        r = scenario(ChaosContext(feature_store, True, Path(tmp)))
    c = r.counts
    assert (c.lost, c.duplicated, c.contradictory) == (0, 0, 0), r.notes
    assert r.passed, r.notes
