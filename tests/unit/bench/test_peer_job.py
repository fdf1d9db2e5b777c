"""The peers' scoring job serves the model a topology names, `version: latest` included."""

from __future__ import annotations

import pytest

from workers.bench.peers import job
from workers.features.base import no_features
from workers.settings import Settings
from workers.topology import Topology


class _NoStore:
    join_keys: list[str] = []

    def fetch(self, keys: object, timeout_s: float | None = None) -> object:
        return no_features(0)

    def close(self) -> None:
        pass


def test_the_job_resolves_latest_like_the_worker(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "make_reader", lambda *a, **k: _NoStore())
    t = topology.model_copy(update={"model": topology.model.model_copy(update={"version": "latest"})})
    j = job.ScoringJob(t, Settings())
    assert j.manifest.version == 2  # models/fraud_gbm/LATEST
