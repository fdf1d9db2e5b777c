"""Load producer: a topology's generated events (and, on request, malformed ones) to its input topic.

Events come from the topology's ``dev.events`` generator (``module:function(seed, start_ms)``; the
examples seed it like their Feast data, so their entities exist in the online store, ~1% on
purpose not). Event time is the generator's simulated clock (at training density, so streaming
aggregates stay realistic); the Kafka record timestamp is the wall clock at send time, and
end-to-end latency and deadlines use that. The simulated clock runs far ahead of the wall clock
(days of event time per minute), so each run resumes it where the previous run stopped
(``<state_dir>/producer-clock-<topology id>``, from ``dev.time_field``); otherwise a second run
would replay event times a streaming job has already passed, and its windows would see "late"
events. Malformed events are made from the schema (``malformed``) and cover the decoder's reasons.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from workers.hooks import load_hook
from workers.schema import EventSchema, FieldSpec
from workers.settings import Settings
from workers.topology import Topology, TopologyError

def get_path(obj: Mapping[str, Any], path: str) -> Any:
    """``obj[a][b]`` for the field path ``a.b``; None where a level is missing."""
    v: Any = obj
    for seg in path.split("."):
        if not isinstance(v, Mapping):
            return None
        v = v.get(seg)
    return v


def _with(ev: Mapping[str, Any], path: str, value: Any, *, drop: bool = False) -> dict[str, Any]:
    """A deep copy of ``ev`` with ``path`` set to ``value`` (or removed)."""
    out: dict[str, Any] = copy.deepcopy(dict(ev))
    node = out
    parts = path.split(".")
    for seg in parts[:-1]:
        node = node.setdefault(seg, {})
    if drop:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


def _first(schema: EventSchema, pred: Callable[[FieldSpec], bool]) -> str | None:
    return next((n for n, f in schema.fields.items() if pred(f)), None)


def malformed(ev: Mapping[str, Any], kind: str, schema: EventSchema, max_payload: int) -> tuple[bytes, str] | None:
    """A good event turned into bad bytes of ``kind``, with the dead-letter reason decode gives it
    (None: the schema has no field this kind can break)."""
    if kind == "invalid_json":
        return orjson.dumps(ev)[:-7], "invalid_json"
    if kind == "not_an_object":
        return b"[1, 2, 3]", "not_an_object"
    if kind == "payload_too_large":
        return orjson.dumps({**ev, "padding": "x" * (max_payload + 1)}), "payload_too_large"
    if kind == "missing_field":
        f = _first(schema, lambda s: s.required)
        return (orjson.dumps(_with(ev, f, None, drop=True)), f"missing_field:{f}") if f else None
    if kind == "wrong_type":
        f = _first(schema, lambda s: s.type in ("number", "integer"))
        if f:
            return orjson.dumps(_with(ev, f, "12.50")), f"wrong_type:{f}"
        f = _first(schema, lambda s: s.type == "string")
        return (orjson.dumps(_with(ev, f, 12)), f"wrong_type:{f}") if f else None
    if kind == "out_of_range":
        f = _first(schema, lambda s: s.type in ("number", "integer") and s.min is not None)
        if f is None:
            return None
        low = schema.fields[f].min
        assert low is not None
        return orjson.dumps(_with(ev, f, (int(low) - 5) if schema.fields[f].type == "integer" else low - 5.0)), \
            f"out_of_range:{f}"
    if kind == "non_finite":
        f = _first(schema, lambda s: s.type == "number")
        if f is None:
            return None
        marker = "__streamscore_nonfinite__"
        raw = orjson.dumps(_with(ev, f, marker)).replace(f'"{marker}"'.encode(), b"1e999")
        return raw, "invalid_json"  # orjson refuses numbers that overflow a double
    if kind == "wrong_encoding":
        f = _first(schema, lambda s: s.type == "string" and s.values is None)
        if f is None:
            return None
        value = f"caf\u00e9{get_path(ev, f) or ''}"
        return orjson.dumps(_with(ev, f, value)).replace(b"\xc3\xa9", b"\xe9", 1), "invalid_encoding"
    raise ValueError(kind)


MALFORMED_KINDS = (
    "invalid_json", "not_an_object", "missing_field", "wrong_type", "out_of_range",
    "non_finite", "payload_too_large", "wrong_encoding",
)


def event_source(topology: Topology, seed: int, start_ms: int) -> Iterator[Mapping[str, Any]]:
    """The topology's load generator (``dev.events``): good events as dicts, endless."""
    if not topology.dev.events:
        raise TopologyError(f"{topology.source_path}: `dev.events` names no event generator "
                            "(module:function(seed, start_ms) -> iterator of event dicts)")
    gen: Iterator[Mapping[str, Any]] = load_hook(topology.dev.events, f"{topology.source_path}: dev.events")(
        seed, start_ms)
    return gen


def event_key(topology: Topology, ev: Mapping[str, Any]) -> bytes | None:
    """The Kafka key the load producer gives an event: ``dev.key_field`` (or the first entity's field)."""
    path = topology.dev.key_field or next(iter(topology.entities.values()), None)
    if path is None:
        return None
    v = get_path(ev, path)
    return None if v is None else str(v).encode()


@dataclass
class ProduceReport:
    sent: int = 0
    good: int = 0
    malformed: int = 0
    failed: int = 0
    seconds: float = 0.0


def produce(
    topology: Topology,
    settings: Settings,
    *,
    rate: float,
    count: int,
    malformed_fraction: float = 0.0,
    seed: int = 7,
    topic: str | None = None,
    resume_clock: bool = True,
) -> ProduceReport:
    if not 0.0 <= malformed_fraction <= 1.0:
        raise ValueError("--malformed-fraction must be between 0 and 1")
    rnd = random.Random(seed + 1)
    p = Producer({**settings.kafka_client_config(), "linger.ms": 5, "compression.type": "lz4",
                  "enable.idempotence": True, "acks": "all"}, logger=logging.getLogger(__name__))
    topic = topic or topology.input.topic
    report = ProduceReport()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            report.failed += 1

    clock = settings.state_dir / f"producer-clock-{topology.id}"
    start_ms = time.time_ns() // 1_000_000
    if resume_clock:
        try:
            start_ms = max(start_ms, int(clock.read_text().strip()) + 1)
        except (FileNotFoundError, ValueError):
            pass
    events = event_source(topology, seed, start_ms)
    last_event_ms = start_ms
    max_payload = topology.input.max_payload_bytes
    schema = topology.input.schema_
    kinds = [k for k in MALFORMED_KINDS if malformed({}, k, schema, max_payload) is not None]
    time_field = topology.dev.time_field
    start = time.monotonic()
    for i in range(count):
        if rate > 0:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0.001:
                p.poll(0)
                time.sleep(delay)
        ev = next(events)
        if time_field is not None:
            t = get_path(ev, time_field)
            last_event_ms = int(t) if isinstance(t, int) else last_event_ms
        key = event_key(topology, ev)
        bad = (malformed(ev, kinds[report.malformed % len(kinds)], schema, max_payload)
               if malformed_fraction and rnd.random() < malformed_fraction else None)
        if bad is not None:
            value = bad[0]
            report.malformed += 1
        else:
            value = orjson.dumps(ev)
            report.good += 1
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        report.sent += 1
    if resume_clock:
        clock.parent.mkdir(parents=True, exist_ok=True)
        clock.write_text(str(last_event_ms))
    left = p.flush(60)
    report.failed += left
    report.seconds = time.monotonic() - start
    return report
