"""``streamscore``: one console script, subcommands dispatch to the module that does the job.

    streamscore dev up|down|status [--topology FILE] [--wipe]
    streamscore setup [--topology FILE]            dev up + topics + Feast apply/materialize
    streamscore run TOPOLOGY [--max-events N] [--idle-exit-s S] [--metrics-port P]
    streamscore produce [--topology FILE] --rate R --count N [--malformed-fraction F]
    streamscore demo [--topology FILE] [--count N] [--rate R] [--no-streaming]
    streamscore aggregate run TOPOLOGY [--stop-after-s S]   streaming aggregation job (Faust)
    streamscore model train SPEC | quantize ... | register ... | promote NAME VERSION
    streamscore schema decision|event TOPOLOGY            JSON Schema of a topology's records
    streamscore tail [--topology FILE] [-n N] [--dead-letters]   newest decisions, as JSON lines
    streamscore chaos [--quick] [--scenario NAME] [--json F]   fault scenarios, counted
    streamscore bench features|engine|pipeline|e2e ...

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
        *([TopicSpec(sh.topic, sh.partitions)] if (sh := t.serving.shadow) is not None else []),
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
    from workers.features.feast_repo import setup_features
    from workers.settings import get_settings
    from workers.topology import load_topology

    settings = get_settings()
    topology = load_topology(args.topology)
    print("[setup] starting Kafka and Redis ...", flush=True)
    devstack.up(settings, topics=_topics(args.topology))
    print(f"[setup] Feast apply + materialize for {topology.id} ...", flush=True)
    setup_features(settings, topology, seed=args.seed)
    print("[setup] done", flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # A stop signal during the imports below (seconds: numpy, ONNX Runtime, Feast) is a clean exit
    # too: remember it until the worker's own handlers take over.
    import signal

    stopped: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda n, _f: stopped.append(n))
    from workers.settings import get_settings
    from workers.topology import load_topology
    from workers.pipeline.worker import Worker

    t = load_topology(args.topology)
    w = Worker(t, max_events=args.max_events, idle_exit_s=args.idle_exit_s, early_stop=stopped)
    port = get_settings().metrics_port if args.metrics_port is None else args.metrics_port
    if port:
        w.obs.serve(port)  # /readyz answers "not ready" until the worker is
    code = w.run()
    s = w.stats
    print(
        f"consumed={s.consumed} decisions={w.sink.acked_decisions if w.sink else 0} "
        f"dead_letters={w.sink.acked_dead if w.sink else 0} verdicts={dict(s.verdicts)} "
        f"dead_reasons={dict(s.dead_reasons)} unavailable={dict(s.unavailable)}",
        flush=True,
    )
    return code


def _preflight(kafka: bool, redis: bool) -> None:
    """One clear message, not librdkafka's retries, when the broker or Redis is not there."""
    from workers.preflight import check_kafka, check_redis
    from workers.settings import get_settings

    if kafka:
        check_kafka(get_settings())
    if redis:
        check_redis(get_settings())


def cmd_produce(args: argparse.Namespace) -> int:
    from workers.dev.producer import produce
    from workers.settings import get_settings
    from workers.topology import load_topology

    topology = load_topology(args.topology)
    _preflight(kafka=True, redis=False)
    r = produce(
        topology, get_settings(), rate=args.rate, count=args.count,
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
    from workers.topology import load_topology

    _preflight(kafka=True, redis=load_topology(args.topology).features is not None)

    return run_demo(args.topology, count=args.count, rate=args.rate,
                    malformed_fraction=args.malformed_fraction, json_path=args.json,
                    streaming=not args.no_streaming)


def cmd_aggregate(args: argparse.Namespace) -> int:
    from workers.streaming.app import run_aggregation

    return run_aggregation(args.topology, stop_after_s=args.stop_after_s)


def cmd_model(args: argparse.Namespace) -> int:
    if args.action == "train":
        from workers.model.train import main as train_main

        return train_main(args.rest)
    if args.action == "register":
        from workers.model.register import main as register_main

        return register_main(args.rest)
    if args.action == "promote":
        from workers.model.registry import main as promote_main

        return promote_main(args.rest)
    from workers.model.quantize import main as quantize_main

    code: int = quantize_main(args.rest)
    return code


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from workers.model.manifest import load_manifest
    from workers.pipeline.records import decision_json_schema, event_json_schema
    from workers.settings import get_settings
    from workers.topology import load_topology

    t = load_topology(args.topology)
    if args.what == "event":
        doc = event_json_schema(t.input.schema_)
    else:
        from workers.model.registry import resolve

        models = get_settings().models_dir
        m = load_manifest(models, t.model.name, resolve(models, t.model.name, t.model.version),
                          verify_sha256=False)
        doc = decision_json_schema(t, list(m.output.labels) if m.output.kind == "classes" else None)
    print(json.dumps(doc, indent=2))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from workers.dev.tail import main as tail_main
    from workers.settings import get_settings
    from workers.topology import load_topology

    return tail_main(load_topology(args.topology), get_settings(), args.count, args.dead_letters)


def cmd_chaos(args: argparse.Namespace) -> int:
    from workers.chaos.run import main as chaos_main

    return chaos_main(args.rest)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what != "engine" and not any(a in ("-h", "--help") for a in args.rest):
        _preflight(kafka=args.what in ("pipeline", "e2e"), redis=True)
    if args.what == "features":
        from workers.bench.features import main as bf

        code: int = bf(args.rest)
        return code
    if args.what == "pipeline":
        from workers.bench.pipeline import main as bp

        return bp(args.rest)
    if args.what == "cascade":
        from workers.bench.cascade import main as bc

        return bc(args.rest)
    if args.what == "e2e":
        from workers.bench.e2e import main as b2e

        return b2e(args.rest)
    from workers.bench.engine import main as be

    code2: int = be(args.rest)
    return code2


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="streamscore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="INFO",
                   help="streamscore's log level: DEBUG, INFO, WARNING or ERROR (default INFO; "
                        "other libraries log at WARNING unless DEBUG)")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("dev", help="local Kafka + Redis stack", formatter_class=fmt)
    d.add_argument("action", choices=["up", "down", "status"], help="start, stop or show the stack")
    d.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="create this topology's topics")
    d.add_argument("--wipe", action="store_true", help="with down: delete the stack's data")
    d.set_defaults(fn=cmd_dev)

    s = sub.add_parser("setup", help="dev up + topics + the topology's Feast data, apply and materialize",
                       formatter_class=fmt)
    s.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="the topology to set up")
    s.add_argument("--seed", type=int, default=7, help="seed of the example's generated data")
    s.set_defaults(fn=cmd_setup)

    r = sub.add_parser("run", help="run the scoring worker", formatter_class=fmt)
    r.add_argument("topology", help="topology file, e.g. topologies/fraud.yaml")
    r.add_argument("--max-events", type=int, default=None, help="stop after this many inputs")
    r.add_argument("--idle-exit-s", type=float, default=None, help="stop after idle seconds")
    r.add_argument("--metrics-port", type=int, default=None,
                   help="serve /metrics, /healthz and /readyz on this port (0 = off; default: the "
                        "STREAMSCORE_METRICS_PORT setting, itself 0)")
    r.set_defaults(fn=cmd_run)

    pr = sub.add_parser("produce", help="load producer for a topology's input topic", formatter_class=fmt)
    pr.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="its dev.events generator and input topic")
    pr.add_argument("--rate", type=float, default=1000.0, help="events per second; 0 = as fast as possible")
    pr.add_argument("--count", type=int, default=10_000, help="events to send")
    pr.add_argument("--malformed-fraction", type=float, default=0.0, help="share of malformed events")
    pr.add_argument("--seed", type=int, default=7, help="generator seed (the one `setup` used)")
    pr.set_defaults(fn=cmd_produce)

    dm = sub.add_parser("demo", help="bounded producer + worker run with a summary", formatter_class=fmt)
    dm.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="e.g. topologies/ato.yaml for the second example")
    dm.add_argument("--count", type=int, default=20_000, help="events to produce")
    dm.add_argument("--rate", type=float, default=2_000.0, help="offered events per second")
    dm.add_argument("--malformed-fraction", type=float, default=0.01, help="share of malformed events")
    dm.add_argument("--json", default=None, help="also write the summary as JSON here")
    dm.add_argument("--no-streaming", action="store_true",
                    help="do not start the topology's streaming aggregation jobs (dev.streaming)")
    dm.set_defaults(fn=cmd_demo)

    v = sub.add_parser("aggregate", help="streaming aggregation job (Faust) writing a Feast view",
                       formatter_class=fmt)
    v.add_argument("action", choices=["run"], help="run the job until SIGINT/SIGTERM")
    v.add_argument("topology", nargs="?", default="topologies/velocity.yaml", help="aggregation topology")
    v.add_argument("--stop-after-s", type=float, default=None, help="stop by itself after S seconds")
    v.set_defaults(fn=cmd_aggregate)

    m = sub.add_parser("model", help="train, quantize, register or promote models (each has --help)")
    m.add_argument("action", choices=["train", "quantize", "register", "promote"],
                   help="train from a spec, make INT8/FP16 variants, register a model trained elsewhere, "
                        "or promote a version")
    m.add_argument("rest", nargs=argparse.REMAINDER, help="the action's own options (see its --help)")
    m.set_defaults(fn=cmd_model)

    sc = sub.add_parser("schema", help="JSON Schema of a topology's decision records or input events",
                        formatter_class=fmt)
    sc.add_argument("what", choices=["decision", "event"], help="which records")
    sc.add_argument("topology", help="topology file")
    sc.set_defaults(fn=cmd_schema)

    tl = sub.add_parser("tail", help="print a topology's newest decisions (or dead letters)", formatter_class=fmt)
    tl.add_argument("--topology", default=DEFAULT_TOPOLOGY, help="whose output topic to read")
    tl.add_argument("-n", "--count", type=int, default=5, help="how many records")
    tl.add_argument("--dead-letters", action="store_true", help="read the dead-letter topic instead")
    tl.set_defaults(fn=cmd_tail)

    ch = sub.add_parser("chaos", help="fault scenarios against the local broker and Redis (has --help)",
                        add_help=False)
    ch.add_argument("rest", nargs=argparse.REMAINDER, help="chaos options (see its --help)")
    ch.set_defaults(fn=cmd_chaos)

    b = sub.add_parser("bench", help="benchmarks (print figures, write JSON; each has --help)")
    b.add_argument("what", choices=["features", "engine", "pipeline", "e2e", "cascade"],
                   help="features: store reads; engine: inference alone; pipeline: worker vs pass-through; "
                        "e2e: latency at offered rates, with peers; cascade: cheap-then-heavy models")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (see its --help)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    # `chaos` passes its options through; argparse's REMAINDER does not take a leading option.
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = build_parser().parse_known_args(argv)
    if getattr(args, "fn", None) is cmd_chaos:
        args.rest = argv[argv.index("chaos") + 1:]
    elif unknown:
        build_parser().parse_args(argv)  # exits with argparse's message
    from workers.observe.logs import setup_logging
    from workers.settings import get_settings

    s = get_settings()
    setup_logging(args.log_level, s.log_queue_max_records, s.log_format, s.secret_values())
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
