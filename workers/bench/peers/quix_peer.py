"""The Quix Streams peer: an ``Application`` with a ``StreamingDataFrame`` doing the worker's job.

Written the way Quix Streams' documentation shows a user: ``app.dataframe(topic)``, a function
``apply``-ed to each record (``metadata=True`` for the key and timestamp, ``message_context()``
for partition and offset), ``to_topic`` for the result, ``app.run()``. Quix Streams processes one
record at a time and has no micro-batch operator for a stateless transform (its count windows
are per key and need state); its docs enrich a record with a lookup per record (``apply``,
``join_lookup``). So each record goes through ``ScoringJob.score`` alone: one Redis round trip,
one ONNX call and one decide per event. Values are raw bytes (``bytes`` serializers), which is
cheaper than JSON deserialization into dicts and keeps the validation identical to the worker's.

Consumer and producer settings of the topology are passed as Quix's ``*_extra_config``; commits
use Quix's default ``commit_interval`` (5 s; the worker commits every 0.2 s). Quix Streams pins
an older confluent-kafka than streamscore, so this peer runs in its own virtualenv
(``.venv-quix``, ``make bench-quix``) layered over streamscore's.

    .venv-quix/bin/python -m workers.bench.peers.quix_peer --topology F --input T --output O \
        --dead-letter D --group G --stats PATH
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from quixstreams import Application, message_context

from workers.bench.peers.common import bench_topology, peer_parser, write_stats
from workers.bench.peers.job import Msg, ScoringJob
from workers.settings import get_settings

# Consumer settings Quix Streams sets itself (it refuses or overrides these in *_extra_config).
_QUIX_OWNS = {"auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store", "group.id"}


class _Dead(bytes):
    """A dead letter's original bytes: ``to_topic``'s selector sends it to the dead-letter topic."""


def main(argv: list[str]) -> int:
    args = peer_parser("quix_peer", __doc__).parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = bench_topology(args)
    settings = get_settings()
    job = ScoringJob(t, settings)
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=t.input.consumer_group,
        auto_offset_reset="earliest",
        consumer_extra_config={k: v for k, v in t.kafka.consumer.items() if k not in _QUIX_OWNS},
        producer_extra_config=dict(t.kafka.producer),
        state_dir=str(settings.state_dir / "bench-quix" / t.input.consumer_group),
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes",
           "key_serializer": "bytes", "value_serializer": "bytes"}
    source = app.topic(t.input.topic, **raw)
    decisions = app.topic(t.output.topic, **raw)
    dead_letters = app.topic(t.dead_letter.topic, **raw)

    def score(value: bytes, key: bytes | None, timestamp: int, headers: Any) -> bytes:
        ctx = message_context()
        out, dead = job.score([Msg(value, key, ctx.topic, ctx.partition, ctx.offset, timestamp)])
        return out[0][1] if out else _Dead(dead[0].value or b"")

    sdf = app.dataframe(source)
    sdf = sdf.apply(score, metadata=True)
    sdf.to_topic(lambda value, key, ts, headers: dead_letters if type(value) is _Dead else decisions)
    try:
        app.run()  # until SIGTERM: Quix stops consuming, flushes and commits
    finally:
        write_stats(args.stats, job.stats.as_dict())
        job.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
