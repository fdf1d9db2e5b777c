"""The Faust peer: a faust-streaming agent doing the worker's job on micro-batches.

Written the way Faust's documentation shows a user: an ``App``, a topic, an ``@app.agent`` that
iterates ``stream.take(...)`` batches and ``await topic.send(...)``s each result. The one change
from the docs' ``take`` is ``take_events`` (the same buffering, in faust-streaming's ``Stream``),
because a decision names its source partition, offset and key, which ``take`` drops. Each batch
goes through ``ScoringJob.score``: streamscore's decoder, feature reader, assembler, ONNX session
and decider, called as a library (synchronously, on the event loop, as a user would call a fast
library; the feature read is ~1 ms per batch). Values are raw bytes (``value_serializer="raw"``),
which is cheaper than the docs' ``faust.Record`` models and keeps the validation identical.

Same batch bounds as the topology (``max_batch``, ``max_wait_ms``) and the same producer choices
where Faust exposes them (lz4, linger 2 ms, acks=all). Offsets of processed events are committed
every ``broker_commit_interval`` (Faust's default, 2.8 s; the worker commits every 0.2 s).

    python -m workers.bench.peers.faust_peer --topology F --input T --output O --dead-letter D \
        --group G --stats PATH
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import faust

from workers.bench.peers.common import bench_topology, peer_parser, write_stats
from workers.bench.peers.job import Msg, ScoringJob
from workers.settings import get_settings
from workers.streaming.app import faust_broker, faust_credentials


def main(argv: list[str]) -> int:
    args = peer_parser("faust_peer", __doc__).parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = bench_topology(args)
    settings = get_settings()
    job = ScoringJob(t, settings)
    datadir = settings.state_dir / "bench-faust" / t.input.consumer_group
    datadir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App(
        t.input.consumer_group,
        broker=faust_broker(settings),
        broker_credentials=faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=t.input.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.002,
        producer_compression_type="lz4",
    )
    source = app.topic(t.input.topic, key_type=bytes, value_type=bytes)
    decisions = app.topic(t.output.topic, key_type=bytes, value_type=bytes)
    dead_letters = app.topic(t.dead_letter.topic, key_type=bytes, value_type=bytes)
    max_batch, within = t.batching.max_batch, t.batching.max_wait_ms / 1000.0

    async def score(stream: Any) -> None:
        async for events in stream.take_events(max_batch, within=within):
            msgs = [Msg(m.value, m.key, m.topic, m.partition, m.offset, int(m.timestamp * 1000))
                    for m in (e.message for e in events)]
            out, dead = job.score(msgs)
            for key, value in out:
                await decisions.send(key=key, value=value)
            for d in dead:
                await dead_letters.send(key=d.key, value=d.value or b"",
                                        headers={"reason": d.reason.encode()})

    app.agent(source, name="score")(score)
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False,
                          loglevel="WARNING")
    worker.spinner = None
    code = 0
    try:
        worker.execute_from_commandline()  # runs until SIGTERM; exits with SystemExit
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if not loop.is_closed():
            loop.close()
        write_stats(args.stats, job.stats.as_dict())
        job.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
