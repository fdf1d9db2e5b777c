"""streamscore's worker as a bench system: ``Worker(topology).run()`` on the bench's topics.

Exactly what ``streamscore run TOPOLOGY`` runs (the same class, settings and topology), with the
topics and group replaced; on SIGTERM it stops the way the worker always does (score what is in
flight, flush, commit) and writes its own counters and per-stage time to ``--stats``.

    python -m workers.bench.peers.streamscore --topology F --input T --output O --dead-letter D \
        --group G --stats PATH
"""

from __future__ import annotations

import sys

from workers.bench.peers.common import bench_topology, peer_parser, write_stats
from workers.observe.logs import setup_logging
from workers.pipeline.worker import Worker
from workers.settings import get_settings


def main(argv: list[str]) -> int:
    args = peer_parser("streamscore", __doc__).parse_args(argv)
    setup_logging("WARNING")
    w = Worker(bench_topology(args), get_settings())
    code = w.run()
    s = w.stats
    stage = w._stage  # noqa: SLF001 - read-only, after the run, for the bench's breakdown
    write_stats(args.stats, {
        "consumed": s.consumed, "batches": s.batches, "degraded": s.degraded, "fallbacks": s.fallbacks,
        "paused_times": s.paused_times, "inline_batches": stage.inline_batches if stage else 0,
        "stage_ms": {k: round(v, 1) for k, v in s.stage_ms.items()},
        "decisions": w.sink.acked_decisions if w.sink else 0,
        "dead_letters": w.sink.acked_dead if w.sink else 0, "error": w.error,
    })
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
