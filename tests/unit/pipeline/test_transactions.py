"""How a transactional API call's errors are handled (librdkafka's classes: retriable,
txn_requires_abort, fatal)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from workers.pipeline.transactions import Abort, Fenced, call, transactional_id
from workers.settings import Settings
from workers.topology import Topology


def _failing(errors: list[KafkaError]) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise KafkaException(errors[len(calls) - 1])
        return "ok"

    return calls, fn


def test_retriable_errors_are_retried() -> None:
    calls, fn = _failing([KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)] * 2)
    assert call(fn, "commit_transaction") == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3


def test_an_abortable_error_asks_for_an_abort() -> None:
    _, fn = _failing([KafkaError(KafkaError._INCONSISTENT, "x", txn_requires_abort=True)])
    with pytest.raises(Abort):
        call(fn, "commit_transaction")  # type: ignore[arg-type]


def test_fencing_is_fatal_and_known_as_fencing() -> None:
    _, fn = _failing([KafkaError(KafkaError._FENCED, "fenced", fatal=True)])
    with pytest.raises(Fenced) as e:
        call(fn, "commit_transaction")  # type: ignore[arg-type]
    assert e.value.fenced


def test_other_fatal_errors_are_not_called_fencing() -> None:
    _, fn = _failing([KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "no", fatal=True)])
    with pytest.raises(Fenced) as e:
        call(fn, "init_transactions")  # type: ignore[arg-type]
    assert not e.value.fenced


def test_a_plain_error_propagates() -> None:
    _, fn = _failing([KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "no")])
    with pytest.raises(KafkaException):
        call(fn, "send_offsets_to_transaction")  # type: ignore[arg-type]


def test_transactional_id_is_stable_per_instance(topology: Topology) -> None:
    s = Settings(instance_id="scorer-3")
    assert transactional_id(topology, s) == transactional_id(topology, s) == "fraud-scorer-scorer-3"
