"""Hot swap under load on the real broker: `model promote` moves a `latest` worker from v2 to v3
while events keep coming; no event is lost or decided twice, each partition switches once and
never back; a model whose file does not match its checksum is refused and v3 keeps serving."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests.integration.conftest import committed_offsets, end_offsets, read_all
from tests.integration.serving.conftest import Running, copy_version, produce, with_serving
from workers.dev.producer import event_key, event_source
from workers.model.registry import promote
from workers.pipeline.records import DecisionRecord
from workers.pipeline.worker import Worker
from workers.settings import Settings
from workers.topology import Topology, load_topology

pytestmark = pytest.mark.integration


def test_promote_under_load_loses_nothing(settings: Settings, models: Path, it_topology: Topology,
                                          running: list[Running]) -> None:
    t = with_serving(it_topology, reload={"poll_interval_ms": 100})
    t = t.model_copy(update={"model": t.model.model_copy(update={"version": "latest"})})
    promote(models, "fraud_gbm", "2")
    stop = threading.Event()
    sent: list[str] = []

    def keep_producing() -> None:  # a steady stream for as long as the test needs one
        p = Producer({**settings.kafka_client_config(), "linger.ms": 5})
        gen = event_source(t, 7, time.time_ns() // 1_000_000)  # the world `setup` materialized
        while not stop.is_set():
            for _ in range(100):
                ev = dict(next(gen))
                p.produce(t.input.topic, orjson.dumps(ev), event_key(t, ev))
                sent.append(str(ev["event_id"]))
            p.poll(0)
            time.sleep(0.02)  # paces the load (~5k events/s at most); no test waits on it
        assert p.flush(30) == 0

    prod = threading.Thread(target=keep_producing, daemon=True)
    prod.start()
    r = Running(Worker(t, settings, install_signals=False))
    running.append(r)
    w = r.worker
    assert w.live is not None and w.watcher is not None
    r.wait_for(lambda: w.done_count() >= 1000, "decisions by v2")
    promote(models, "fraud_gbm", "3")
    r.wait_for(lambda: w.live is not None and w.live.current.label == "fraud_gbm v3", "the swap to v3")
    at_swap = w.done_count()
    r.wait_for(lambda: w.done_count() >= at_swap + 1000, "decisions by v3")
    copy_version(models, "fraud_gbm", "2", "4", corrupt=True)
    (models / "fraud_gbm" / "LATEST").write_text("4\n")  # by hand: `promote` itself refuses it
    r.wait_for(lambda: bool(w.watcher and w.watcher.refusals), "the refusal of v4")
    at_refusal = w.done_count()
    r.wait_for(lambda: w.done_count() >= at_refusal + 500, "decisions after the refusal")
    stop.set()
    prod.join(60)
    assert r.finish(len(sent)) == 0

    assert w.watcher.refusals[0][0] == "checksum" and w.live.current.label == "fraud_gbm v3"
    recs = [DecisionRecord.model_validate_json(m.value()) for m in read_all(settings, t.output.topic)]
    ids = [(x.model_extra or {})["event_id"] for x in recs]
    assert len(ids) == len(sent) and set(ids) == set(sent)  # none lost, none twice
    by_part: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for x in recs:
        by_part[x.source.partition].append((x.source.offset, x.model.version))
    versions = set()
    for part, rows in by_part.items():
        seq = [v for _, v in sorted(rows)]
        versions |= set(seq)
        first3 = seq.index("3") if "3" in seq else len(seq)
        assert set(seq[:first3]) <= {"2"} and set(seq[first3:]) <= {"3"}, f"partition {part} went back"
    assert versions == {"2", "3"}
    assert committed_offsets(settings, t.input.consumer_group, t.input.topic) == end_offsets(settings, t.input.topic)


def test_editing_the_topology_file_swaps(settings: Settings, it_topology: Topology, tmp_path: Path,
                                         running: list[Running]) -> None:
    """The other way to move a worker: its topology file's `model.version` edited while it runs."""
    root = Path(__file__).resolve().parents[3]
    text = (root / "topologies" / "fraud.yaml").read_text()
    for old, new in (("topic: transactions.dlq\n", f"topic: {it_topology.dead_letter.topic}\n"),
                     ("topic: transactions\n", f"topic: {it_topology.input.topic}\n"),
                     ("topic: decisions\n", f"topic: {it_topology.output.topic}\n"),
                     ("consumer_group: streamscore-fraud\n", f"consumer_group: {it_topology.input.consumer_group}\n"),
                     ("\ndev:", "\nserving:\n  reload: {poll_interval_ms: 100}\n\ndev:")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    t = load_topology(path)
    first = produce(settings, t, 1500)
    r = Running(Worker(t, settings, install_signals=False))
    running.append(r)
    w = r.worker
    r.wait_for(lambda: w.done_count() >= 500, "decisions by v2")
    path.write_text(text.replace('version: "2" ', 'version: "3" '))
    r.wait_for(lambda: w.live is not None and w.live.current.label == "fraud_gbm v3", "the swap to v3")
    second = produce(settings, t, 1500)
    assert r.finish(len(first) + len(second)) == 0
    recs = [DecisionRecord.model_validate_json(m.value()) for m in read_all(settings, t.output.topic)]
    assert len(recs) == len(first) + len(second)
    assert {x.model.version for x in recs} == {"2", "3"}
    by_id = {(x.model_extra or {})["event_id"]: x.model.version for x in recs}
    assert len(by_id) == len(recs) and set(by_id) == {e["event_id"] for e in first + second}
    assert all(by_id[e["event_id"]] == "3" for e in second)  # produced after the swap: decided by v3
