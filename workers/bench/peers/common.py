"""What every peer process shares: its command line, the topology on the bench's topics, and the
stats file it writes when it stops."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from workers.topology import Topology, load_topology


def peer_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", required=True, help="topology file (its model, features, decision)")
    p.add_argument("--input", required=True, help="input topic (overrides the topology's)")
    p.add_argument("--output", required=True, help="decision topic (overrides the topology's)")
    p.add_argument("--dead-letter", required=True, help="dead-letter topic (overrides the topology's)")
    p.add_argument("--group", required=True, help="consumer group (shared by a system's processes)")
    p.add_argument("--stats", required=True, help="write counters here as JSON on exit")
    return p


def bench_topology(args: argparse.Namespace) -> Topology:
    """The topology ``--topology`` names, on the bench's topics and group."""
    base = load_topology(args.topology)
    return base.model_copy(update={
        "input": base.input.model_copy(update={"topic": args.input, "consumer_group": args.group}),
        "output": base.output.model_copy(update={"topic": args.output}),
        "dead_letter": base.dead_letter.model_copy(update={"topic": args.dead_letter}),
    })


def write_stats(path: str, stats: dict[str, Any]) -> None:
    p = Path(path)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stats, indent=1, default=str))
    tmp.replace(p)
