"""``streamscore``: one console script, subcommands dispatch to the module that does the job.

    streamscore dev up|down|status [--topology FILE] [--wipe]
    streamscore setup [--topology FILE]            dev up + topics + Feast apply/materialize
    streamscore run TOPOLOGY [--max-events N] [--idle-exit-s S] [--metrics-port P]
    streamscore produce [--topology FILE] --rate R --count N [--malformed-fraction F]
    streamscore demo [--count N] [--rate R] [--no-velocity]
    streamscore velocity run [TOPOLOGY] [--stop-after-s S]   Faust job keeping card_velocity fresh
    streamscore model train|quantize ...
    streamscore bench features|engine|pipeline ...

Imports are lazy so ``streamscore dev status`` does not load ONNX Runtime or Feast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.dev.stack import TopicSpec

DEFAULT_TOPOLOGY = "topologies/fraud.yaml"


def _topics(topology_path: str) -> list[TopicSpec]:
    from workers.dev.stack import TopicSpec
    from workers.topology import load_topology

    t = load_topology(topology_path)
    return [
        TopicSpec(t.input.topic, t.input.partitions),
        TopicSpec(t.output.topic, t.output.partitions),
        TopicSpec(t.dead_letter.topic, t.dead_letter.partitions),
    ]


def cmd_dev(args: argparse.Namespace) -> int:
    from workers.dev import stack as devstack

    argv = [args.action]
    if args.wipe:
        argv.append("--wipe")
    if args.action == "up" and args.topology:
        devstack.up(topics=_topics(args.topology))
        return devstack.main(["status"])
    return devstack.main(argv)


def cmd_setup(args: argparse.Namespace) -> int:
    from workers.dev import stack as devstack
    from workers.features.feast_sdk import setup_features
    from workers.settings import get_settings

    settings = get_settings()
    print("[setup] starting Kafka and Redis ...", flush=True)
    devstack.up(settings, topics=_topics(args.topology))
    print("[setup] Feast apply + materialize ...", flush=True)
    setup_features(settings, seed=args.seed)
    print("[setup] done", flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workers.metrics import start_metrics_server
    from workers.topology import load_topology
    from workers.pipeline.worker import Worker

    t = load_topology(args.topology)
    if args.metrics_port:
        start_metrics_server(args.metrics_port)
    w = Worker(t, max_events=args.max_events, idle_exit_s=args.idle_exit_s)
    code = w.run()
    s = w.stats
    print(
        f"consumed={s.consumed} decisions={w.sink.acked_decisions if w.sink else 0} "
        f"dead_letters={w.sink.acked_dead if w.sink else 0} verdicts={dict(s.verdicts)}",
        flush=True,
    )
    return code


def cmd_produce(args: argparse.Namespace) -> int:
    from workers.dev.producer import produce
    from workers.settings import get_settings
    from workers.topology import load_topology

    r = produce(
        load_topology(args.topology), get_settings(), rate=args.rate, count=args.count,
        malformed_fraction=args.malformed_fraction, seed=args.seed,
    )
    print(
        f"sent={r.sent} good={r.good} malformed={r.malformed} failed={r.failed} "
        f"seconds={r.seconds:.2f} rate={r.sent / max(r.seconds, 1e-9):.0f}/s",
        flush=True,
    )
    return 0 if r.failed == 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.dev.demo import run_demo

    return run_demo(args.topology, count=args.count, rate=args.rate,
                    malformed_fraction=args.malformed_fraction, json_path=args.json,
                    velocity_topology=None if args.no_velocity else args.velocity_topology)


def cmd_velocity(args: argparse.Namespace) -> int:
    from workers.streaming.app import run_velocity

    return run_velocity(args.topology, stop_after_s=args.stop_after_s)


def cmd_model(args: argparse.Namespace) -> int:
    if args.action == "train":
        from workers.model.train import main as train_main

        return train_main(args.rest)
    from workers.model.quantize import main as quantize_main

    code: int = quantize_main(args.rest)
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "features":
        from workers.bench.features import main as bf

        code: int = bf(args.rest)
        return code
    if args.what == "pipeline":
        from workers.bench.pipeline import main as bp

        return bp(args.rest)
    from workers.bench.engine import main as be

    code2: int = be(args.rest)
    return code2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="WARNING")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("dev", help="local Kafka + Redis stack")
    d.add_argument("action", choices=["up", "down", "status"])
    d.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="create this topology's topics")
    d.add_argument("--wipe", action="store_true", help="with down: delete the stack's data")
    d.set_defaults(fn=cmd_dev)

    s = sub.add_parser("setup", help="dev up + topics + Feast apply and materialize")
    s.add_argument("--topology", default=DEFAULT_TOPOLOGY)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(fn=cmd_setup)

    r = sub.add_parser("run", help="run the scoring worker")
    r.add_argument("topology")
    r.add_argument("--max-events", type=int, default=None, help="stop after this many inputs")
    r.add_argument("--idle-exit-s", type=float, default=None, help="stop after idle seconds")
    r.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics")
    r.set_defaults(fn=cmd_run)

    pr = sub.add_parser("produce", help="load producer for the input topic")
    pr.add_argument("--topology", default=DEFAULT_TOPOLOGY)
    pr.add_argument("--rate", type=float, default=1000.0, help="events per second; 0 = as fast as possible")
    pr.add_argument("--count", type=int, default=10_000)
    pr.add_argument("--malformed-fraction", type=float, default=0.0)
    pr.add_argument("--seed", type=int, default=7)
    pr.set_defaults(fn=cmd_produce)

    dm = sub.add_parser("demo", help="bounded producer + worker run with a summary")
    dm.add_argument("--topology", default=DEFAULT_TOPOLOGY)
    dm.add_argument("--count", type=int, default=20_000)
    dm.add_argument("--rate", type=float, default=2_000.0)
    dm.add_argument("--malformed-fraction", type=float, default=0.01)
    dm.add_argument("--json", default=None, help="also write the summary as JSON here")
    dm.add_argument("--velocity-topology", default="topologies/velocity.yaml")
    dm.add_argument("--no-velocity", action="store_true", help="do not start the Faust job")
    dm.set_defaults(fn=cmd_demo)

    v = sub.add_parser("velocity", help="streaming velocity features (Faust) -> Feast card_velocity")
    v.add_argument("action", choices=["run"])
    v.add_argument("topology", nargs="?", default="topologies/velocity.yaml")
    v.add_argument("--stop-after-s", type=float, default=None, help="stop by itself after S seconds")
    v.set_defaults(fn=cmd_velocity)

    m = sub.add_parser("model", help="train or quantize models")
    m.add_argument("action", choices=["train", "quantize"])
    m.add_argument("rest", nargs=argparse.REMAINDER)
    m.set_defaults(fn=cmd_model)

    b = sub.add_parser("bench", help="benchmarks (print figures, write JSON)")
    b.add_argument("what", choices=["features", "engine", "pipeline"])
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workers.logs import setup_logging

    setup_logging(args.log_level)
    try:
        code: int = args.fn(args)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Our own errors carry a message that says what to do; show it without a traceback.
        from workers.errors import is_user_error

        if is_user_error(exc):
            print(f"streamscore: {exc}", file=sys.stderr)
            return 2
        logging.getLogger("streamscore").exception("unexpected error")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
