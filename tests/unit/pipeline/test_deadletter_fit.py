"""A dead letter always fits the producer's ``message.max.bytes``: one that would not is written
truncated, with the original sizes and sha256, never raising (which crash-looped the worker).

Real librdkafka producer, no broker: ``produce()`` checks the size locally and queues the record.
"""

from __future__ import annotations

import hashlib

from tests.unit.conftest import FakeMessage

from workers.pipeline import deadletter
from workers.pipeline.decode import DeadLetter, Decoder
from workers.pipeline.offsets import OffsetTracker
from workers.pipeline.sink import KafkaSink
from workers.settings import Settings
from workers.topology import Topology

NO_BROKER = Settings(kafka_bootstrap="127.0.0.1:1")


def _sink(topology: Topology) -> tuple[KafkaSink, OffsetTracker]:
    tracker = OffsetTracker()
    tracker.register(("transactions", 0), [0])
    return KafkaSink(topology, NO_BROKER, tracker), tracker


def test_the_value_that_crash_looped_the_worker_is_dead_lettered(topology: Topology) -> None:
    # ~999,750 bytes: under the broker's 1,048,588 limit, but value + dead-letter headers exceed the
    # producer's message.max.bytes (1,000,000): sink._produce raised KafkaException(MSG_SIZE_TOO_LARGE).
    value = b'{"pad": "' + b"x" * 999_739 + b'"}'
    assert len(value) == 999_750
    _, dead = Decoder(topology.input.schema_, topology.input.max_payload_bytes).decode(
        [FakeMessage(value, b"card-1")])
    sink, _ = _sink(topology)
    sink.send_dead_letters(dead)  # raised KafkaException(MSG_SIZE_TOO_LARGE) before; must not
    assert sink.flush(0) == 1  # queued (no broker to deliver it to)


def test_truncated_record_carries_size_and_hash(topology: Topology) -> None:
    value = b"v" * 1_048_000
    key = b"k" * 600_000
    dl = DeadLetter(value, key, "transactions", 0, 7, "payload_too_large", "too large",
                    headers=[("trace", b"t" * 300_000)])
    rec = deadletter.record(dl, topology.id, max_message_bytes=1_000_000)
    assert rec.size <= 1_000_000
    h = deadletter.parse_headers(rec.headers)
    assert h[deadletter.TRUNCATED] == "value,key,headers"
    assert h[deadletter.ORIGINAL_VALUE_BYTES] == str(len(value))
    assert h[deadletter.ORIGINAL_VALUE_SHA256] == hashlib.sha256(value).hexdigest()
    assert h[deadletter.ORIGINAL_KEY_BYTES] == str(len(key))
    assert h[deadletter.ORIGINAL_KEY_SHA256] == hashlib.sha256(key).hexdigest()
    assert h[deadletter.REASON] == "payload_too_large" and h[deadletter.SOURCE_OFFSET] == "7"
    assert rec.value is not None and value.startswith(rec.value)


def test_a_record_that_fits_is_unchanged(topology: Topology) -> None:
    dl = DeadLetter(b"{oops", b"k", "transactions", 0, 1, "invalid_json", "bad",
                    headers=[("trace", b"abc"), ("none", None)])
    rec = deadletter.record(dl, topology.id, max_message_bytes=1_000_000)
    assert rec.value == b"{oops" and rec.key == b"k"
    assert rec.headers[:2] == [("trace", b"abc"), ("none", None)]  # the original headers first
    assert deadletter.TRUNCATED not in deadletter.parse_headers(rec.headers)


def test_null_value_stays_null(topology: Topology) -> None:
    dl = DeadLetter(None, b"k", "transactions", 0, 1, "null_payload", "tombstone", headers=[("h", b"1")])
    rec = deadletter.record(dl, topology.id, max_message_bytes=1_000_000)
    assert rec.value is None and rec.headers[0] == ("h", b"1")
