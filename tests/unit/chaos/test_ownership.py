"""Partition ownership from the workers' logs (the 1 -> 3 -> 1 scenario's 'owned twice' check)
and time to recover, as pure functions."""

from __future__ import annotations

from datetime import datetime

from workers.chaos.delivery import _recover_s, ownership


def _line(ts: str, what: str, parts: list[int]) -> str:
    tps = ", ".join(f"('tx', {p})" for p in parts)
    return f"2026-12-02 {ts},000 INFO workers.pipeline.source: partitions {what}: [{tps}]\n"


def test_a_clean_hand_over_is_not_an_overlap() -> None:
    logs = {
        "0": _line("10:00:00", "assigned", [0, 1, 2]) + _line("10:00:05", "revoked", [2]),
        "1": _line("10:00:06", "assigned", [2]),
    }
    overlaps, spans = ownership(logs)
    assert overlaps == []
    assert sorted(p for p, _, _ in spans["0"]) == [0, 1, 2] and [p for p, _, _ in spans["1"]] == [2]


def test_a_partition_owned_by_two_workers_at_once_is_reported() -> None:
    logs = {
        "0": _line("10:00:00", "assigned", [0, 1]) + _line("10:00:09", "revoked", [1]),
        "1": _line("10:00:05", "assigned", [1]),
    }
    overlaps, _ = ownership(logs)
    assert overlaps == ["partition 1: 0 and 1"]


def test_lost_partitions_end_ownership_too() -> None:
    logs = {
        "0": _line("10:00:00", "assigned", [3]) + _line("10:00:02", "lost (session expired)", [3]),
        "1": _line("10:00:03", "assigned", [3]),
    }
    assert ownership(logs)[0] == []


def test_recover_is_the_longest_gap_from_a_fault_end_to_the_next_output() -> None:
    t0 = datetime(2026, 12, 2, 10, 0, 0).timestamp()
    stamps = [(t0 + d) * 1e3 for d in (0.5, 1.0, 12.0, 30.5)]
    assert _recover_s(stamps, [t0 + 0.2, t0 + 10.0]) == 2.0
    assert _recover_s(stamps, [t0 + 31.0]) is None
