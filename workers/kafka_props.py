"""librdkafka properties a topology passes through (``kafka.consumer`` / ``kafka.producer``),
checked at load time by librdkafka itself.

A client is constructed offline (no ``bootstrap.servers``: it connects to nothing) with the
properties: librdkafka parses its configuration in the constructor and refuses an unknown name or
a bad value there, so the check always matches the installed librdkafka, names and values alike,
with no list of ours to keep in step. A property of the other client kind (a producer property
under ``kafka.consumer``) is accepted by librdkafka with a ``CONFWARN`` log line and then
ignored: that is reported too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

Kind = Literal["consumer", "producer"]
_ROLE = re.compile(r'Configuration property "?([A-Za-z0-9._-]+)"? is an? (producer|consumer) property')


class _Collect:
    """A ``logging.Logger`` stand-in for librdkafka's log callback: keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args if args else fmt)


def _construct(kind: Kind, props: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(librdkafka's refusal or None, its log lines) for a client of ``kind`` with ``props``."""
    logger = _Collect()
    conf = {**props, "logger": logger}
    try:
        if kind == "consumer":
            c = Consumer({"group.id": "streamscore-config-check", **conf})
            c.close()
        else:
            p = Producer(conf)
            p.poll(0)  # serves the log queue
            del p
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        return (err.str() if isinstance(err, KafkaError) else str(exc)), logger.lines
    except (TypeError, ValueError) as exc:
        return str(exc), logger.lines
    return None, logger.lines


def check_properties(kind: Kind, props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for each property librdkafka refuses, or would ignore in a ``kind``."""
    if not props:
        return []
    refused, lines = _construct(kind, props)
    problems: list[tuple[str, str]] = []
    if refused is not None:
        for key, value in props.items():  # one at a time, to name each bad key
            why, _ = _construct(kind, {key: value})
            if why is not None:
                problems.append((key, f"librdkafka refuses it: {why}"))
        if not problems:
            problems.append((next(iter(props)), f"librdkafka refuses these together: {refused}"))
        return problems
    other = "producer" if kind == "consumer" else "consumer"
    if not any(_ROLE.search(line) for line in lines):
        return problems
    for key, value in props.items():  # librdkafka names an alias by its canonical name: ask per key
        _, own = _construct(kind, {key: value})
        if any((m := _ROLE.search(line)) is not None and m.group(2) == other for line in own):
            problems.append((key, f"a {other} property: librdkafka ignores it in the {kind}; "
                                  f"move it under kafka.{other}"))
    return problems
