"""Shadow records on the real broker: fraud_mlp v1 scores a stable half of the cards beside the
live fraud_gbm v2; one record per sampled event on the shadow topic, with the live score equal to
the decision's and the shadow score equal to a direct run of the candidate on the same inputs."""

from __future__ import annotations

import zlib

import numpy as np
import orjson
import pytest

from tests.integration.conftest import read_all
from tests.integration.serving.conftest import Running, produce, with_serving
from workers.dev import stack as devstack
from workers.pipeline.records import DecisionRecord
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology

pytestmark = pytest.mark.integration


def test_shadow_records_beside_the_live_scores(settings: Settings, it_topology: Topology,
                                               running: list[Running]) -> None:
    shadow_topic = f"{it_topology.output.topic}.shadow"
    devstack.ensure_topics(settings, [devstack.TopicSpec(shadow_topic, 1)])
    t = with_serving(it_topology, shadow={"model": {"name": "fraud_mlp", "version": "1"}, "sample": 0.5,
                                          "key": "card_id", "topic": shadow_topic, "max_queued_batches": 64})
    events = produce(settings, t, 1500)
    r = Running(Worker(t, settings, install_signals=False))
    running.append(r)
    assert r.finish(len(events)) == 0
    sh = r.worker.serving.shadow if r.worker.serving else None
    assert sh is not None

    decisions = {(x.source.partition, x.source.offset): x for x in
                 (DecisionRecord.model_validate_json(m.value()) for m in read_all(settings, t.output.topic))}
    assert len(decisions) == len(events)
    shadows = [orjson.loads(m.value()) for m in read_all(settings, shadow_topic)]
    st = sh.stats
    assert len(shadows) == st.scored_rows == st.delivered == st.offered_rows - st.dropped_rows
    picked = {e["event_id"] for e in events if zlib.crc32(e["card_id"].encode()) % 10_000 < 5_000}
    assert st.offered_rows == len(picked) and 0 < len(picked) < len(events)
    scores_l, scores_s = [], []
    for s in shadows:
        d = decisions[(s["source"]["partition"], s["source"]["offset"])]
        assert (d.model_extra or {})["event_id"] in picked
        assert s["live"] == {"model": "fraud_gbm", "version": "2", "score": d.score}
        assert s["shadow"]["model"] == "fraud_mlp" and s["shadow"]["verdict"] in t.decision.verdicts
        assert s["abs_diff"] == pytest.approx(abs(s["shadow"]["score"] - d.score), abs=2e-6)
        scores_l.append(d.score)
        scores_s.append(s["shadow"]["score"])
    # two different models: their scores correlate but are not the same numbers
    assert np.corrcoef(scores_l, scores_s)[0, 1] > 0.5 and scores_l != scores_s
