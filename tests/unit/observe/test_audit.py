"""The decision audit log: batches written in order by a background thread; a full queue drops and counts."""

from __future__ import annotations

import threading
from pathlib import Path

from workers.observe import audit
from workers.observe.metrics import AUDIT_DROPPED


def test_batches_are_appended_as_json_lines(tmp_path: Path) -> None:
    log = audit.AuditLog("unit-audit", path=tmp_path / "a" / "decisions.jsonl")
    log.submit([b'{"n":1}', b'{"n":2}'])
    log.submit([b'{"n":3}'])
    log.close()
    assert (tmp_path / "a" / "decisions.jsonl").read_bytes().splitlines() == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert log.written == 3


def test_a_full_queue_drops_the_batch_and_counts_its_records(tmp_path: Path, monkeypatch: object) -> None:
    gate = threading.Event()
    log = audit.AuditLog("unit-audit-full", path=tmp_path / "d.jsonl", max_queued_batches=1)
    real = log._write

    def held(batch: list[bytes]) -> None:
        gate.wait(10)
        real(batch)

    log._write = held  # type: ignore[method-assign]
    before = AUDIT_DROPPED.labels("unit-audit-full")._value.get()
    for i in range(5):  # one being written, one queued, three dropped (never waited for)
        log.submit([b"x"] * 10)
    gate.set()
    log.close()
    dropped = AUDIT_DROPPED.labels("unit-audit-full")._value.get() - before
    assert log.written + dropped == 50 and dropped >= 30
