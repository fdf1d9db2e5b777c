"""The command line: every option has help text with its default; services that are down end a
command with one clear line and exit code 2, not librdkafka's retries and a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _parsers(p: argparse.ArgumentParser, name: str = "streamscore") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(name, p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                out += _parsers(sub, f"{name} {sub_name}")
    return out


def test_every_option_has_help_and_shows_its_default() -> None:
    missing = []
    for name, p in _parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.nargs == argparse.REMAINDER:
                continue
            if not a.help:
                missing.append(f"{name} {a.dest}: no help")
            elif (a.option_strings and a.default not in (None, False, argparse.SUPPRESS)
                  and p.formatter_class is not argparse.ArgumentDefaultsHelpFormatter
                  and str(a.default) not in a.help):
                missing.append(f"{name} {a.option_strings[0]}: default {a.default!r} not shown")
    assert missing == []


@pytest.mark.parametrize("argv", [["produce", "--count", "5"], ["demo", "--count", "5"],
                                  ["bench", "pipeline", "--events", "5"]])
def test_broker_down_is_one_line_and_exit_code_2(argv: list[str]) -> None:
    env = {**os.environ, "STREAMSCORE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    r = subprocess.run([sys.executable, "-m", "workers", *argv], cwd=ROOT, env=env, capture_output=True, timeout=120)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2, r.stderr.decode()[-2000:]
    assert len(err) == 1 and "Kafka broker at 127.0.0.1:1" in err[0] and "streamscore dev up" in err[0]


def test_redis_down_is_one_line_and_keeps_the_password_out() -> None:
    env = {**os.environ, "STREAMSCORE_REDIS_URL": "redis://:hunter2-pw@127.0.0.1:2/0"}
    r = subprocess.run([sys.executable, "-m", "workers", "bench", "features"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "Redis at 127.0.0.1:2" in err[0], r.stderr.decode()[-2000:]
    assert "hunter2" not in r.stderr.decode() + r.stdout.decode()
