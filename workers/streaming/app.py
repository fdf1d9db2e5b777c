"""Faust glue of the aggregation job: Kafka -> ``AggregationState`` in a Faust table -> Feast's Redis.

    python -m workers.streaming.app topologies/velocity.yaml [--stop-after-s S] [--log-level L]

One process runs one topology (fraud: ``topologies/velocity.yaml``, per-card velocity over
transactions; account takeover: ``topologies/ato_velocity.yaml``, per-user login velocity).
Everything that decides a value lives in ``workers/streaming/aggregates.py``; this module only
wires Faust:

* The app id is ``input.consumer_group``: Faust uses it as the Kafka consumer group and as the
  prefix of the topics it creates itself through its admin request (CreateTopics to the
  controller; our broker has ``auto.create.topics.enable=false``, which does not affect that):
  ``<group>-windows-changelog`` (compacted, ``input.partitions`` partitions) and
  ``<group>-__assignor-__leader``, replication ``faust.replication_factor``.
* The table ``windows`` (join key -> ``KeyState`` as JSON) is co-partitioned with the input topic,
  whose partition count is checked at start. With ``store: memory://`` it is rebuilt by replaying
  the changelog on every start; ``rocksdb://`` (needs the rocksdict extra) keeps a local copy so
  that only the tail is replayed — that is the production setting for large state.
* The agent reads micro-batches with ``stream.take_events(max_batch, within=flush_interval)``,
  applies them, and writes every changed key in one pipelined Redis round trip before Faust
  acknowledges the batch (offsets are committed after the write: at-least-once, and replays are
  idempotent thanks to the per-key offset). A timer retries writes that failed while Redis was down.
* Bad input is skipped and counted by reason, never dead-lettered: the scorer consumes the same
  topic and dead-letters it already.
* SIGINT/SIGTERM stop the worker cleanly (Faust's worker installs the handlers): the consumer
  leaves its group, the producer is flushed, the Redis client is closed.

Table writes go through ``TableStore`` (the store plus ``send_changelog`` with the partition of
the key's own event) rather than ``table[key] = value``: Faust picks the changelog partition from
the "current event", which inside a ``take_events`` batch is the batch's last event — the wrong
partition for every other key of the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from workers.settings import PROJECT_ROOT, Settings, get_settings
from workers.streaming.aggregates import (
    AggregationAppError,
    AggregationState,
    AggregationTopology,
    EventDecoder,
    KeyState,
    load_aggregation_topology,
)
from workers.streaming.feast_writer import FeastRedisLayout, layout_from_registry, timestamp_bytes

log = logging.getLogger("streamscore.aggregation")

TABLE_NAME = "windows"
READY_LINE = "aggregation: ready"  # printed on stdout each time partitions are assigned and recovered
SUMMARY_PREFIX = "aggregation: "  # + topology id + counters: printed on stdout when the job stops


# ---- settings -> Faust ---------------------------------------------------------------------


def faust_broker(settings: Settings) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",") if hp.strip()]


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    proto = settings.kafka_security_protocol.upper()
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(ssl.create_default_context())
    if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=pw,
            ssl_context=ssl.create_default_context() if proto == "SASL_SSL" else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    raise AggregationAppError(
        f"kafka_security_protocol {settings.kafka_security_protocol!r} is not supported by the Faust job"
    )


def check_codecs() -> None:
    """Fail at start, not on the first batch: aiokafka crashes the worker on a codec it lacks."""
    from aiokafka.codec import has_lz4

    if not has_lz4():
        raise AggregationAppError(
            "aiokafka cannot decompress lz4, and streamscore's producers compress with lz4 "
            "(workers/dev/producer.py, topologies/fraud.yaml); install aiokafka's lz4 extra: "
            "pip install 'aiokafka[lz4]' (it brings cramjam)"
        )


def check_input_topic(topo: AggregationTopology, settings: Settings) -> None:
    """Create the input topic if missing; refuse a partition count other than the topology's."""
    from confluent_kafka.admin import AdminClient

    from workers.dev import stack as devstack

    devstack.ensure_topics(settings, [devstack.TopicSpec(topo.input.topic, topo.input.partitions)])
    conf: dict[str, str | int | float | bool] = dict(settings.kafka_client_config())
    md = AdminClient(conf).list_topics(topo.input.topic, timeout=10)
    have = len(md.topics[topo.input.topic].partitions)
    if have != topo.input.partitions:
        raise AggregationAppError(
            f"{topo.source_path}: input.partitions is {topo.input.partitions} but topic "
            f"{topo.input.topic!r} has {have}; the state table must be co-partitioned with it — "
            f"set input.partitions: {have}"
        )


# ---- the table as a StateStore -------------------------------------------------------------


class TableStore:
    """``StateStore`` over a Faust table; changelog records go to the key's own partition."""

    def __init__(self, table: Any) -> None:
        self._table = table  # faust.Table; typed Any: its store is a MutableMapping of Any

    def get(self, key: str) -> KeyState | None:
        st: KeyState | None = self._table.data.get(key)
        return st

    def put(self, key: str, partition: int, state: KeyState) -> None:
        self._table.data[key] = state
        self._table.send_changelog(partition, key, state)

    def delete(self, key: str, partition: int) -> None:
        self._table.data.pop(key, None)
        # A raw None value is a tombstone: compaction drops the key, recovery deletes it.
        self._table.send_changelog(partition, key, None, value_serializer="raw")

    def items(self) -> Iterable[tuple[str, KeyState]]:
        return list(self._table.data.items())


# ---- the job -------------------------------------------------------------------------------


class AggregationJob:
    """One Faust app: topic, table, agent and flush timer around an ``AggregationState``."""

    def __init__(self, topo: AggregationTopology, settings: Settings, layout: FeastRedisLayout) -> None:
        self.topo = topo
        self.settings = settings
        self.layout = layout
        self.written = 0  # key rows written to Redis
        self.flushes = 0  # pipelined round trips that succeeded
        self.write_failures = 0
        self.last_flush_ms = 0.0
        self._flush_s = topo.sink.flush_interval_ms / 1000.0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._redis: aioredis.Redis | None = None
        self._owned: set[int] | None = None  # input partitions after a rebalance, until reindexed
        datadir = settings.state_dir / "faust" / topo.input.consumer_group  # Faust's default is the cwd
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            topo.input.consumer_group,
            broker=faust_broker(settings),
            broker_credentials=faust_credentials(settings),
            store=topo.faust.store,
            datadir=str(datadir),
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=topo.input.partitions,
            topic_replication_factor=topo.faust.replication_factor,
            consumer_auto_offset_reset=topo.faust.auto_offset_reset,
            broker_commit_interval=topo.faust.commit_interval_ms / 1000.0,
            web_enabled=topo.faust.web_port > 0,
            web_port=topo.faust.web_port or 6066,
            web_bind="127.0.0.1",
        )
        # No value_type: values are plain JSON (KeyState dicts). A class there would make
        # recovery call ``<class>.from_data`` on each record, which ``dict`` does not have.
        self.table = self.app.Table(
            TABLE_NAME, default=None, partitions=topo.input.partitions, key_type=str,
            help=f"{topo.input.key_field} -> window entries (workers.streaming.aggregates.KeyState)",
        )
        self.state = AggregationState(topo, TableStore(self.table))
        self.decode = EventDecoder(topo)
        topic = self.app.topic(topo.input.topic, key_type=bytes, value_type=bytes)
        self.app.agent(topic, name=f"{topo.id}-agent")(self._agent)
        self.app.timer(self._flush_s, name=f"{topo.id}-retry")(self._retry_tick)
        # mode's SignalHandlerT rejects every callable under mypy (even a plain def): ignore.
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        self.app.on_rebalance_complete.connect(self._on_ready)  # type: ignore[arg-type]

    # -- Faust callbacks

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # The table is recovered after this signal and before the agent sees events again, so
        # the rebuild of stream times and the expiry schedule waits for the next batch.
        assigned: set[Any] = args[0] if args else kwargs.get("assigned", set())
        self._owned = {tp.partition for tp in assigned if tp.topic == self.topo.input.topic}

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        # take_events is on faust's Stream but missing from its StreamT protocol.
        batches = stream.take_events(self.topo.sink.max_batch, within=self._flush_s)  # type: ignore[attr-defined]
        async for events in batches:
            self.process(events)
            await self.flush()

    async def _on_ready(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Tables are recovered and streams about to resume. Printed, not logged, so that
        # `spawn_aggregation` sees it whatever the log level.
        print(f"{READY_LINE} id={self.topo.id} group={self.topo.input.consumer_group} "
              f"topic={self.topo.input.topic}", flush=True)

    async def _on_shutdown(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # The consumer has stopped: write what is still dirty (a bounded attempt), then close.
        await self.flush()
        await self.close()

    async def _retry_tick(self) -> None:
        # Batches flush themselves; this only retries writes that failed while no events came.
        if self.state.dirty_count and self._owned is None:
            await self.flush()

    # -- work

    def process(self, events: Sequence[Any]) -> None:
        if self._owned is not None:
            # A batch writes up to max_batch changelog records at once, plus tombstones of expired
            # keys; Faust's buffer bound is a hard-coded 100, above which it warns on every batch
            # and stalls the stream while it drains.
            buffer = self.app.producer.buffer
            buffer.max_messages = max(buffer.max_messages, 4 * self.topo.sink.max_batch)
            n = self.state.reindex(self._owned)
            log.info("%s: partitions %s assigned; %d recovered keys re-queued", self.topo.id, sorted(self._owned), n)
            self._owned = None
        decoded = []
        decode = self.decode
        skipped = self.state.stats.skipped
        for ev in events:
            msg = ev.message
            r = decode(msg.value, msg.partition, msg.offset)
            if isinstance(r, str):
                skipped[r] += 1
            else:
                decoded.append(r)
        self.state.apply(decoded)

    async def flush(self) -> None:
        """Write every dirty key, ``max_batch`` keys per pipelined round trip."""
        async with self._lock:  # the agent and the retry timer must not interleave writes
            if time.monotonic() < self._retry_at:
                return
            client = self._client()
            while self.state.dirty_count:
                t0 = time.perf_counter()
                rows = self.state.drain(self.topo.sink.max_batch)
                if not rows:
                    break
                # Wall-clock write time: the view's TTL is wall-clock, and event time (simulated
                # by the load producer) may run far ahead of it.
                commands = self.layout.hset_commands(rows, timestamp_bytes(time.time()))
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        for key, mapping in commands:
                            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # bytes fields are fine
                        await pipe.execute()
                except (RedisError, OSError) as e:
                    self.state.requeue(key for key, _ in rows)
                    self.write_failures += 1
                    self._retry_at = time.monotonic() + self.topo.sink.retry_after_ms / 1000.0
                    host, port = self.settings.redis_host_port
                    log.warning(
                        "%s: writing %d keys to Redis at %s:%d failed (%s: %s); retrying in %d ms",
                        self.topo.id, len(rows), host, port, type(e).__name__, e, self.topo.sink.retry_after_ms,
                    )
                    return
                self.written += len(rows)
                self.flushes += 1
                self.last_flush_ms = (time.perf_counter() - t0) * 1000.0

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            pw = self.settings.redis_password
            timeout = self.topo.sink.redis_timeout_ms / 1000.0
            # No client-side retries: a dead Redis costs one timeout, then the job's own backoff.
            self._redis = aioredis.Redis.from_url(
                self.settings.redis_url,
                password=pw.get_secret_value() if pw is not None else None,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._redis

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def summary(self) -> str:
        s = self.state.stats
        return (
            f"{SUMMARY_PREFIX}{self.topo.id} applied={s.applied} skipped={dict(s.skipped)} late={s.late} "
            f"replayed={s.replayed} capped={s.capped} expired_keys={s.expired_keys} "
            f"written={self.written} flushes={self.flushes} write_failures={self.write_failures}"
        )


# ---- entry points --------------------------------------------------------------------------


def run_aggregation(topology_path: str | Path, *, stop_after_s: float | None = None) -> int:
    """Run the job until SIGINT/SIGTERM (or ``stop_after_s``); returns the exit status."""
    settings = get_settings()
    topo = load_aggregation_topology(topology_path)
    check_codecs()
    layout = layout_from_registry(topo, settings)
    check_input_topic(topo, settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    job = AggregationJob(topo, settings, layout)
    worker = faust.Worker(
        job.app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False,
        loglevel=logging.getLevelName(logging.getLogger().level),
    )
    worker.spinner = None  # logs go through our handler; the spinner only writes escape codes
    if stop_after_s is not None:
        loop.call_later(stop_after_s, lambda: asyncio.ensure_future(worker.stop(), loop=loop))
    log.info(
        "%s: %s -> Feast view %s (group %s, flush %d ms / %d events)", topo.id, topo.input.topic,
        layout.view, topo.input.consumer_group, topo.sink.flush_interval_ms, topo.sink.max_batch,
    )
    code = 0
    try:
        worker.execute_from_commandline()  # runs the loop; exits with SystemExit when stopped
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if not loop.is_closed():  # Faust's worker closes the loop on a normal stop
            loop.close()
        print(job.summary(), flush=True)
    return code


def spawn_aggregation(
    topology_path: str | Path, log_path: Path, *, log_level: str = "WARNING", ready_timeout_s: float = 90.0
) -> subprocess.Popen[bytes]:
    """Start the job in a child process (its own core and event loop); return once it consumes.

    Its stdout and stderr go to ``log_path``. For ``streamscore demo``, which runs it beside the
    scorer; stop it with ``stop_aggregation``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.streaming.app", str(topology_path), "--log-level", log_level],
            cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        with log_path.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        if READY_LINE in text:
            return proc
        if proc.poll() is not None:
            raise AggregationAppError(
                f"the aggregation job ({topology_path}) exited with {proc.returncode}; see {log_path}:\n{text[-2000:]}"
            )
        time.sleep(0.1)
    stop_aggregation(proc)
    raise AggregationAppError(
        f"the aggregation job ({topology_path}) was not consuming within {ready_timeout_s:.0f} s; see {log_path}"
    )


def stop_aggregation(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM (a clean stop: offsets committed, last writes flushed), SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("aggregation job (pid %d) ignored SIGTERM for %.0f s; killing it", proc.pid, timeout_s)
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def last_summary(log_path: Path) -> str | None:
    """The last summary line the job printed when it stopped (``aggregation: <id> applied=... written=...``)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    return next((ln for ln in reversed(lines) if ln.startswith(SUMMARY_PREFIX) and " applied=" in ln), None)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.streaming.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topology", help="e.g. topologies/velocity.yaml")
    p.add_argument("--stop-after-s", type=float, default=None, help="stop by itself after S seconds")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    args = p.parse_args(argv)
    from workers.errors import is_user_error
    from workers.observe.logs import setup_logging

    setup_logging(args.log_level)
    try:
        return run_aggregation(args.topology, stop_after_s=args.stop_after_s)
    except Exception as exc:
        if is_user_error(exc) or isinstance(exc, AggregationAppError):
            print(f"streamscore: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
