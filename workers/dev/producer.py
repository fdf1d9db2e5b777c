"""Load producer: generated transactions (and, on request, malformed ones) to the input topic.

Events come from ``datagen.iter_events`` with the same seed as the Feast data, so their cards and
merchants exist in the online store (about 1% deliberately do not). ``event_time_ms`` is the
generator's simulated clock (at training density, so velocity features stay realistic); the Kafka
record timestamp is the wall clock at send time, and end-to-end latency and deadlines use that.
The simulated clock runs far ahead of the wall clock (days of event time per minute), so each run
resumes it where the previous run stopped (``<state_dir>/producer-clock``); otherwise a second run
would replay event times the velocity job has already passed, and its windows would see "late"
events.
Malformed events cover every dead-letter reason the decoder knows.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from examples.fraud import datagen
from workers.settings import Settings
from workers.topology import Topology

# Each entry turns a good event dict into bad bytes; names match the expected dead-letter reason.
def _malformed(ev: dict[str, Any], kind: str, max_payload: int) -> bytes:
    if kind == "invalid_json":
        return orjson.dumps(ev)[:-7]
    if kind == "not_an_object":
        return b"[1, 2, 3]"
    if kind == "missing_field":
        return orjson.dumps({k: v for k, v in ev.items() if k != "amount"})
    if kind == "wrong_type":
        return orjson.dumps({**ev, "amount": "12.50"})
    if kind == "negative_amount":
        return orjson.dumps({**ev, "amount": -5.0})
    if kind == "non_finite":
        return orjson.dumps(ev).replace(b'"amount":', b'"amount":1e999,"x":', 1)
    if kind == "oversize":
        return orjson.dumps({**ev, "padding": "x" * (max_payload + 1)})
    if kind == "wrong_encoding":
        return orjson.dumps({**ev, "merchant_id": "caf\u00e9"}).replace(b"\xc3\xa9", b"\xe9")
    raise ValueError(kind)


MALFORMED_KINDS = (
    "invalid_json", "not_an_object", "missing_field", "wrong_type", "negative_amount",
    "non_finite", "oversize", "wrong_encoding",
)


@dataclass
class ProduceReport:
    sent: int = 0
    good: int = 0
    malformed: int = 0
    failed: int = 0
    seconds: float = 0.0


def produce(
    topology: Topology,
    settings: Settings,
    *,
    rate: float,
    count: int,
    malformed_fraction: float = 0.0,
    seed: int = 7,
    topic: str | None = None,
    resume_clock: bool = True,
) -> ProduceReport:
    if not 0.0 <= malformed_fraction <= 1.0:
        raise ValueError("--malformed-fraction must be between 0 and 1")
    rnd = random.Random(seed + 1)
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5, "compression.type": "lz4",
                  "enable.idempotence": True, "acks": "all"})
    topic = topic or topology.input.topic
    report = ProduceReport()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            report.failed += 1

    clock = settings.state_dir / "producer-clock"
    start_ms = time.time_ns() // 1_000_000
    if resume_clock:
        try:
            start_ms = max(start_ms, int(clock.read_text().strip()) + 1)
        except (FileNotFoundError, ValueError):
            pass
    events = datagen.iter_events(seed, None, start_ms)
    last_event_ms = start_ms
    max_payload = topology.input.max_payload_bytes
    start = time.monotonic()
    for i in range(count):
        if rate > 0:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0.001:
                p.poll(0)
                time.sleep(delay)
        ev = next(events)
        last_event_ms = int(ev["event_time_ms"])  # type: ignore[call-overload]
        key = str(ev["card_id"]).encode()
        if malformed_fraction and rnd.random() < malformed_fraction:
            value = _malformed(ev, MALFORMED_KINDS[report.malformed % len(MALFORMED_KINDS)],
                               max_payload)
            report.malformed += 1
        else:
            value = orjson.dumps(ev)
            report.good += 1
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        report.sent += 1
    if resume_clock:
        clock.parent.mkdir(parents=True, exist_ok=True)
        clock.write_text(str(last_event_ms))
    left = p.flush(60)
    report.failed += left
    report.seconds = time.monotonic() - start
    return report
