"""JSON lines, secrets masked, and a full queue drops and counts instead of blocking."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from workers.observe import logs
from workers.settings import Settings


class Capture(logging.Handler):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.gate = gate

    def emit(self, record: logging.LogRecord) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    logs.stop_logging()
    logging.getLogger().handlers[:] = []


def test_one_json_object_per_line_with_fields() -> None:
    out = Capture()
    logs.setup_logging("INFO", handler=out)
    logging.getLogger("workers.x").info("started %s", "w", extra={"fields": {"event": "start", "partitions": [0, 1]}})
    logging.getLogger("feast.noise").info("libraries log at WARNING")
    logs.stop_logging()
    assert len(out.lines) == 1
    rec = orjson.loads(out.lines[0])
    assert rec["msg"] == "started w" and rec["event"] == "start" and rec["partitions"] == [0, 1]
    assert rec["level"] == "info" and rec["logger"] == "workers.x" and rec["ts"].endswith("Z")


def test_secrets_never_reach_the_output() -> None:
    s = Settings(kafka_sasl_password="s3cr3t-sasl", redis_url="redis://:r3dis-pw@cache:6379/0",
                 redis_password="other-pw")
    out = Capture()
    logs.setup_logging("INFO", handler=out, secrets=s.secret_values())
    log = logging.getLogger("workers.x")
    log.info("client config %s", s.kafka_client_config())
    log.info("connecting to %s", s.redis_url)
    log.info("url with a user redis://admin:hunter22@host:1/0 and password=abc123", extra={"fields": {"pw": "other-pw"}})
    logs.stop_logging()
    text = "\n".join(out.lines)
    for secret in ("s3cr3t-sasl", "r3dis-pw", "other-pw", "hunter22", "abc123"):
        assert secret not in text
    assert "cache:6379" in text  # the rest of the line stays readable


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    gate = threading.Event()
    out = Capture(gate)
    logs.setup_logging("INFO", max_queued_records=5, handler=out)
    before = logs.DroppingQueueHandler.dropped
    t = time.perf_counter()
    for i in range(200):
        logging.getLogger("workers.x").info("line %d", i)
    took = time.perf_counter() - t
    gate.set()
    logs.stop_logging()
    dropped = logs.DroppingQueueHandler.dropped - before
    assert dropped >= 200 - 5 - 1  # the queue, plus the one record the writer holds
    assert len(out.lines) + dropped == 200
    assert took < 5  # never waited for the writer (which is held for 10 s)
