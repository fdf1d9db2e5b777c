"""A decision the producer refuses (here: a ~1 MB key, over the producer's message.max.bytes)
is dead-lettered on its own; no event gets two outcomes and the worker's summary adds up.

Before: the refusal raised out of the batch's produce loop, the fallback path re-sent the WHOLE
batch (events with a scored decision got a second, `fallback:internal_error:KafkaException` one)
and the worker stopped, on every restart.
"""

from __future__ import annotations

import threading


import orjson
import pytest
from confluent_kafka import Producer

from examples.fraud import datagen
from workers.chaos.ledger import count, end_offsets, outcomes
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology

HUGE_KEY = 1_000_100  # the input broker takes it (limit 1,048,588); the worker's producer cannot


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_refused_decision_is_dead_lettered_alone(feature_store: Settings, it_topology: Topology,
                                                   delivery: str) -> None:
    # The input limit on keys (input.max_key_bytes, 4096 by default) would dead-letter the huge key
    # before decoding (key_too_large); raised here so its *decision* is what the producer refuses.
    t = it_topology.model_copy(update={
        "delivery": delivery,
        "input": it_topology.input.model_copy(update={"max_key_bytes": 2 * HUGE_KEY})})
    # Idempotent: the records keep their order (a retried first request on a fresh topic put the
    # huge key at offset 0 once, not at huge_at).
    p = Producer({**feature_store.kafka_client_config(), "message.max.bytes": 1_048_000,
                  "enable.idempotence": True})
    events = datagen.iter_events(3)
    n, huge_at = 300, 150
    for i in range(n):
        ev = next(events)
        key = b"k" * HUGE_KEY if i == huge_at else str(ev["card_id"]).encode()
        p.produce(t.input.topic, orjson.dumps(ev), key, partition=0)
    assert p.flush(30) == 0

    w = Worker(t, feature_store, idle_exit_s=3.0, install_signals=False)
    code: list[int] = []
    th = threading.Thread(target=lambda: code.append(w.run()), daemon=True)
    th.start()
    th.join(120)
    assert code == [0], w.error

    got = outcomes(feature_store, t.output.topic, t.dead_letter.topic,
                   read_committed=delivery == "exactly_once")
    c = count(end_offsets(feature_store, t.input.topic), got)
    assert (c.sent, c.lost, c.duplicated, c.contradictory) == (n, 0, 0, 0), c
    huge_pos = (0, huge_at)
    assert huge_pos not in got.decisions and len(got.dead[huge_pos]) == 1
    assert got.dead[huge_pos][0].startswith("decision_refused:"), got.dead[huge_pos]
    assert w.sink is not None
    assert w.stats.consumed == w.sink.acked_decisions + w.sink.acked_dead == n
    # Each acknowledged (exactly_once: committed) decision's end-to-end latency is measured once;
    # the aborted transaction's decisions are not (before: none at all under exactly_once).
    assert len(w.sink.e2e_ms) == w.sink.acked_decisions == n - 1
    assert all(ms >= 0 for ms in w.sink.e2e_ms)

