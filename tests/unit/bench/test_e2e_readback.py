"""The bench's arithmetic on read-back records: phases, latency matching, equality, max rate."""

from __future__ import annotations

import orjson

from workers.bench.e2e import max_rate
from workers.bench.readback import InputIndex, Phase, Record, analyse, compare, normalized, percentiles


def _inputs() -> list[Record]:
    # partition 0: offsets 0-3 (phase "max" = 0-1, phase "1000" = 2-3), appended at 100, 110, ...
    return [Record(0, o, 100 + 10 * o, b"ev%d" % (o % 2)) for o in range(4)]


def _decision(p: int, o: int, verdict: str = "approve") -> bytes:
    return orjson.dumps({"verdict": verdict, "flags": [], "decided_at_ms": 0, "timings_ms": {"in_worker": 1.0},
                         "source": {"topic": "t", "partition": p, "offset": o, "timestamp_ms": 1}})


def test_decisions_are_matched_to_their_input_and_phase() -> None:
    phases = [Phase("max", {0: 0}, {0: 2}), Phase("1000", {0: 2}, {0: 4})]
    index = InputIndex(_inputs(), phases)
    outs = [Record(0, i, 100 + 10 * o + 5, _decision(0, o)) for i, o in enumerate([0, 1, 2, 3, 3])]
    res = analyse(index, outs, decisions=True)
    assert res[0].latencies_ms == [5.0, 5.0] and res[1].latencies_ms == [5.0, 5.0]
    assert res[1].duplicates == 1
    assert set(res[0].decided) == {(0, 0), (0, 1)} and not res[1].decided


def test_passthrough_records_match_the_latest_input_with_their_bytes() -> None:
    phases = [Phase("max", {0: 0}, {0: 2}), Phase("1000", {0: 2}, {0: 4})]
    index = InputIndex(_inputs(), phases)
    # b"ev0" was appended at 100 (offset 0) and 120 (offset 2): an output at 123 is offset 2's.
    res = analyse(index, [Record(0, 0, 103, b"ev0"), Record(0, 1, 123, b"ev0")], decisions=False)
    assert res[0].latencies_ms == [3.0] and res[1].latencies_ms == [3.0]


def test_equality_ignores_timings_and_topics_only() -> None:
    a = orjson.loads(_decision(0, 0))
    b = {**a, "timings_ms": {"in_worker": 9.0}, "decided_at_ms": 5, "source": {**a["source"], "topic": "u"}}
    assert normalized(a) == normalized(b)
    assert normalized(a) != normalized({**a, "verdict": "decline"})
    phases = [Phase("max", {0: 0}, {0: 2})]
    index = InputIndex(_inputs()[:2], phases)
    ours = analyse(index, [Record(0, 0, 101, _decision(0, 0)), Record(0, 1, 111, _decision(0, 1, "decline"))],
                   decisions=True)[0]
    ref = analyse(index, [Record(0, 0, 102, _decision(0, 0)), Record(0, 1, 112, _decision(0, 1))], decisions=True)[0]
    c = compare(ours, ref)
    assert c["compared"] == 2 and c["different"] == 1 and c["examples"][0]["position"] == [0, 1]


def test_max_rate_counts_what_came_after_the_backlog_was_complete() -> None:
    ts = list(range(0, 2000, 2))  # 1000 records, one per 2 ms
    rate, note = max_rate(ts, 999)
    assert note is None and abs(rate - 500 / 1.0) < 5
    rate, note = max_rate(ts[:50], 10_000)  # all before the backlog was complete: a lower bound
    assert note is not None and rate > 0


def test_percentiles_are_ordered() -> None:
    p = percentiles([float(x) for x in range(1000)])
    assert p is not None and p["p50"] <= p["p95"] <= p["p99"] <= p["p999"]
    assert percentiles([]) is None
