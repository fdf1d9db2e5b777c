"""Pure logic of the local stack: config rendering, port checks, validation. Starts no services."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.dev import stack as devstack
from workers.dev.stack import StackError, StatePaths, TopicSpec
from workers.settings import Settings


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(state_dir=tmp_path, **kw)  # type: ignore[arg-type]


def _props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 held by something that is not the stack."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_server_properties_follow_settings(tmp_path: Path) -> None:
    s = _settings(tmp_path, kafka_bootstrap="127.0.0.1:19092", kafka_controller_port=19093)
    props = _props(devstack.kafka_server_properties(s, StatePaths(tmp_path)))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert Path(props["log.dirs"]).is_relative_to(tmp_path)
    assert props["auto.create.topics.enable"] == "false"
    # Transactions and consumer groups need their internal topics to fit on one broker.
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_localhost_bootstrap_still_binds_loopback(tmp_path: Path) -> None:
    s = _settings(tmp_path, kafka_bootstrap="localhost:9092")
    props = _props(devstack.kafka_server_properties(s, StatePaths(tmp_path)))
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:9092,")


def test_redis_config(tmp_path: Path) -> None:
    s = _settings(tmp_path, redis_url="redis://127.0.0.1:16379/0")
    conf = devstack.redis_config(s, StatePaths(tmp_path)).splitlines()
    assert "port 16379" in conf
    assert "bind 127.0.0.1" in conf
    assert 'save ""' in conf and "appendonly no" in conf
    assert f'dir "{tmp_path / "redis" / "data"}"' in conf
    assert not any(line.startswith("requirepass") for line in conf)
    pw_settings = _settings(tmp_path, redis_password='s3 "x')
    with_pw = devstack.redis_config(pw_settings, StatePaths(tmp_path))
    assert 'requirepass "s3 \\"x"' in with_pw.splitlines()


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("localhost", True), ("[::1]", True), ("kafka.internal", False)],
)
def test_is_local(host: str, local: bool) -> None:
    assert devstack.is_local(host) is local


def test_port_in_use(listener: int) -> None:
    assert devstack.port_in_use("127.0.0.1", listener)


def test_free_port_is_not_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connect is refused
    assert not devstack.port_in_use("127.0.0.1", port)


def test_port_taken_message_names_port_and_env_var() -> None:
    msg = devstack.port_taken_message(
        "Kafka", 9092, "STREAMSCORE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"
    )
    assert "9092" in msg
    assert "STREAMSCORE_KAFKA_BOOTSTRAP=127.0.0.1:19092" in msg


def test_up_refuses_kafka_port_held_by_a_stranger(tmp_path: Path, listener: int) -> None:
    s = _settings(tmp_path, kafka_bootstrap=f"127.0.0.1:{listener}")
    with pytest.raises(StackError, match=rf"port {listener}.*STREAMSCORE_KAFKA_BOOTSTRAP"):
        devstack.up(s)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


def test_up_refuses_redis_port_held_by_a_stranger(tmp_path: Path, listener: int) -> None:
    # An external Kafka is not started locally, so the Redis check is reached without a broker.
    s = _settings(tmp_path, kafka_bootstrap="kafka.invalid:9092",
                  redis_url=f"redis://127.0.0.1:{listener}/0")
    with pytest.raises(StackError, match=rf"port {listener}.*STREAMSCORE_REDIS_URL"):
        devstack.up(s)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


def test_external_services_are_waited_for_not_started(tmp_path: Path) -> None:
    s = _settings(tmp_path, kafka_bootstrap="kafka.invalid:9092",
                  redis_url="redis://redis.invalid:6379/0", startup_timeout_s=1.0)
    with pytest.raises(StackError, match="kafka.invalid:9092 did not answer.*STREAMSCORE_KAFKA"):
        devstack.up(s)
    assert not (tmp_path / "kafka-libs").exists()  # no jars downloaded, nothing started
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert not (tmp_path / "redis" / "redis.pid").exists()


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    assert devstack._our_pid(pid_file, tmp_path / "marker") is None
    assert not pid_file.exists()


def test_live_process_without_our_marker_is_not_ours(tmp_path: Path) -> None:
    # A recycled pid must never be signalled by `down`.
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("1\n")
    assert devstack._our_pid(pid_file, tmp_path / "server.properties") is None


def test_down_with_nothing_running_is_fine(tmp_path: Path) -> None:
    devstack.down(_settings(tmp_path / "never-started"))
    devstack.down(_settings(tmp_path), wipe=True)


def test_new_cluster_id_looks_like_a_kafka_uuid() -> None:
    cid = devstack.new_cluster_id()
    assert len(cid) == 22 and not cid.startswith("-")
    assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("out", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_java_major(out: str, major: int | None) -> None:
    assert devstack.java_major(out) == major


def test_ensure_topics_rejects_bad_specs_before_connecting(tmp_path: Path) -> None:
    s = _settings(tmp_path, kafka_bootstrap="kafka.invalid:9092")
    with pytest.raises(StackError, match="partitions"):
        devstack.ensure_topics(s, [TopicSpec("t", 0)])
    with pytest.raises(StackError, match="declared twice"):
        devstack.ensure_topics(s, [TopicSpec("t", 3), TopicSpec("t", 6)])


def test_format_status_mentions_pid_and_external() -> None:
    st = devstack.StackStatus(
        kafka_running=True, redis_running=False, kafka_address="127.0.0.1:9092",
        redis_address="redis.example:6379", kafka_local=True, redis_local=False, kafka_pid=42,
        redis_pid=None, kafka_log=Path("/s/logs/kafka.log"), redis_log=Path("/s/logs/redis.log"),
    )
    text = devstack.format_status(st)
    assert "pid 42" in text and "external" in text and "down" in text
    assert not st.running


_RE_EXEC = """
import os, sys, time
stage, marker = sys.argv[1], sys.argv[2]
if stage == "start":  # at once: a command line without the marker (it is passed reversed)
    os.execv(sys.executable, [sys.executable, __file__, "interim", marker[::-1]])
if stage == "interim":  # a second later: the service's own command line, marker and all
    time.sleep(1.0)
    os.execv(sys.executable, [sys.executable, __file__, "serve", marker[::-1]])
time.sleep(30)
"""


def test_a_just_spawned_service_is_ours_before_its_cmdline_is_set(tmp_path: Path) -> None:
    # The `dev up` race: /proc/<pid>/cmdline of a child is empty until the kernel has set up the
    # new program's arguments, which is after Popen returns (and a launcher that re-executes
    # itself opens the window again). Read then, the liveness check said "Kafka ... exited while
    # starting" (6 of 11 restarts). This child holds such a window open for a second: its command
    # line lacks the marker until it execs into the marked one. The check must still know it.
    marker = tmp_path / "server.properties"
    pid_file = tmp_path / "svc.pid"
    script = tmp_path / "launcher.py"
    script.write_text(_RE_EXEC)
    pid = devstack._spawn([sys.executable, str(script), "start", str(marker)], tmp_path,
                          tmp_path / "out.log", pid_file)
    try:
        calls: list[float] = []

        def answers(_: float) -> bool:  # the service answers only after the window, like a broker
            calls.append(time.monotonic())
            return len(calls) >= 3

        devstack._wait_for("svc", answers, time.monotonic() + 20, pid_file, marker, "hint")
        assert devstack._our_pid(pid_file, marker, clean=False) == pid
    finally:
        devstack._stop(pid, "svc", 5.0)
    assert devstack._our_pid(pid_file, marker, clean=False) is None  # and dead once stopped


def test_spawned_services_are_ours_right_after_popen(tmp_path: Path) -> None:
    # The race as it happened: check at once after spawning, many times (before the fix about 1
    # in 4 of these read an empty /proc cmdline and was called dead).
    marker = tmp_path / "marker.conf"
    for i in range(40):
        pid_file = tmp_path / f"{i}.pid"
        pid = devstack._spawn(["sh", "-c", "sleep 5", str(marker)], tmp_path, tmp_path / "out.log", pid_file)
        try:
            assert devstack._our_pid(pid_file, marker, clean=False) == pid
        finally:
            devstack._stop(pid, "sleep", 5.0)


def test_a_service_that_dies_while_starting_is_reported(tmp_path: Path) -> None:
    marker = tmp_path / "marker.conf"
    pid_file = tmp_path / "svc.pid"
    devstack._spawn([sys.executable, "-c", "import sys; sys.exit(3)", str(marker)], tmp_path,
                    tmp_path / "out.log", pid_file)
    with pytest.raises(StackError, match="svc exited while starting"):
        devstack._wait_for("svc", lambda _: False, time.monotonic() + 20, pid_file, marker, "hint")
