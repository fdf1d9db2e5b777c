"""The local stack for real: a Kafka broker and redis-server on 127.0.0.1.

The default stack (ports 9092/9093/6379) is shared with every other test session on this machine,
so these tests only ever bring it *up*; stopping and restarting is exercised on a throwaway stack
on other ports with its own state dir, which also proves the ports are configurable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from workers.dev import stack as devstack
from workers.dev.stack import StackError, TopicSpec
from workers.settings import Settings, get_settings

pytestmark = pytest.mark.integration


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({**settings.kafka_client_config()})


def _partitions(settings: Settings, topic: str) -> int | None:
    md = _admin(settings).list_topics(timeout=10)
    t = md.topics.get(topic)
    return None if t is None or t.error is not None else len(t.partitions)


@pytest.fixture
def topic_name() -> Iterator[str]:
    name = f"test.devstack.{uuid.uuid4().hex[:8]}"
    yield name
    futures = _admin(get_settings()).delete_topics([name], operation_timeout=10)
    for fut in futures.values():
        try:
            fut.result()
        except Exception:  # noqa: BLE001 - the test may have failed before creating it
            pass


def test_up_runs_both_and_is_idempotent() -> None:
    first = devstack.up()
    assert first.running, devstack.format_status(first)
    if first.kafka_local:
        assert first.kafka_pid is not None
    again = devstack.up()
    assert again.running
    # Nothing was restarted: the same processes still serve.
    assert (again.kafka_pid, again.redis_pid) == (first.kafka_pid, first.redis_pid)
    st = devstack.status()
    assert st.kafka_running and st.redis_running
    assert st.kafka_pid == first.kafka_pid


def test_topics_are_created_with_partitions_and_config(topic_name: str) -> None:
    s = get_settings()
    spec = TopicSpec(topic_name, 6, {"retention.ms": "3600000"})
    devstack.up(s, topics=[spec])
    assert _partitions(s, topic_name) == 6

    devstack.ensure_topics(s, [spec])  # idempotent
    devstack.ensure_topics(s, [TopicSpec(topic_name, 3)])  # more than asked is fine
    assert _partitions(s, topic_name) == 6

    with pytest.raises(StackError, match=r"6 partitions but 8"):
        devstack.ensure_topics(s, [TopicSpec(topic_name, 8)])


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Settings]:
    s = Settings(
        kafka_bootstrap="127.0.0.1:19092",
        kafka_controller_port=19093,
        redis_url="redis://127.0.0.1:16379/0",
        state_dir=tmp_path / "state",
    )
    yield s
    devstack.down(s, wipe=True)


def test_down_and_up_keep_topics_and_wipe_deletes_them(throwaway: Settings) -> None:
    s = throwaway
    paths = devstack.StatePaths(s.state_dir)
    st = devstack.up(s, topics=[TopicSpec("kept", 2)])
    assert st.running and st.kafka_address == "127.0.0.1:19092"
    assert st.kafka_pid is not None and st.redis_pid is not None
    assert redis.Redis(port=16379).set("k", "v")

    devstack.down(s)
    st = devstack.status(s)
    assert not st.kafka_running and not st.redis_running
    assert st.kafka_pid is None and st.redis_pid is None
    assert not paths.kafka_pid.exists() and not paths.redis_pid.exists()
    devstack.down(s)  # idempotent

    st = devstack.up(s)
    assert st.running
    assert _partitions(s, "kept") == 2  # Kafka data survives down/up
    assert paths.cluster_id.exists()

    devstack.down(s, wipe=True)
    assert not paths.kafka_data.exists() and not paths.cluster_id.exists()
    assert (paths.libs / ".complete").exists()  # jars are not data; no second download

    st = devstack.up(s)
    assert st.running
    assert _partitions(s, "kept") is None


def test_stale_pid_file_is_replaced(throwaway: Settings) -> None:
    s = throwaway
    paths = devstack.StatePaths(s.state_dir)
    paths.redis_dir.mkdir(parents=True)
    paths.redis_pid.write_text("1\n")  # pid 1 is alive but is not our redis-server
    st = devstack.up(s)
    assert st.redis_running and st.redis_pid not in (None, 1)
