"""Chaos scenario ``bad_input``: malformed messages of every kind mixed with good events.

Each kind is a message built from a good fraud event and the topology's limits, with the reason
README "Dead-letter reasons" documents for it (or none: sizes at a limit pass). The worker must
not crash (one process, exit 0); every malformed message must be dead-lettered once with its
reason and its original bytes (or, where the whole would not fit ``message.max.bytes``, a
truncated copy whose ``x-dlq-original-*`` headers give the size and sha256 of the original);
every good event must be decided, with a score.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

import orjson

from workers.chaos import scaffold
from workers.chaos.ledger import count, end_offsets, outcomes, read_topic
from workers.chaos.report import ScenarioResult
from workers.chaos.run import ChaosContext
from workers.pipeline import deadletter
from workers.topology import Topology

Kind = tuple[str, scaffold.Message, str | None]  # name, message, dead-letter reason (None: passes)
BROKER_MAX = 1_048_576  # what the chaos producer may send (the broker takes 1,048,588 by default)


def _pad(ev: dict[str, Any], size: int) -> bytes:
    """``ev`` with a padding field making it exactly ``size`` bytes."""
    base = orjson.dumps({**ev, "pad": ""})
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


def kinds(topology: Topology, ev: dict[str, Any], key: bytes) -> list[Kind]:
    lim = topology.input
    good = orjson.dumps(ev)
    body = good[1:-1]

    def field(**over: Any) -> bytes:
        return orjson.dumps({**ev, **over})

    def without(name: str) -> bytes:
        return orjson.dumps({k: v for k, v in ev.items() if k != name})

    hdr_fit: list[tuple[str, str | bytes | None]] = [("h", b"x" * (lim.max_headers_bytes - 1))]
    return [
        # sizes at and around every limit
        ("payload_at_limit", (_pad(ev, lim.max_payload_bytes), key, None), None),
        ("payload_limit_minus_1", (_pad(ev, lim.max_payload_bytes - 1), key, None), None),
        ("payload_limit_plus_1", (_pad(ev, lim.max_payload_bytes + 1), key, None), "payload_too_large"),
        ("payload_999750", (_pad(ev, 999_750), key, None), "payload_too_large"),
        ("payload_near_broker_max", (_pad(ev, BROKER_MAX - 2048), key, None), "payload_too_large"),
        ("key_at_limit", (good, b"k" * lim.max_key_bytes, None), None),
        ("key_limit_plus_1", (good, b"k" * (lim.max_key_bytes + 1), None), "key_too_large"),
        ("key_1mb", (good, b"k" * 1_000_000, None), "key_too_large"),
        ("headers_at_limit", (good, key, hdr_fit), None),
        ("headers_over_limit", (good, key, [("h", b"x" * lim.max_headers_bytes)]), "headers_too_large"),
        ("headers_many", (good, key, [(f"h{i}", b"v" * 10) for i in range(2000)]), "headers_too_large"),
        ("headers_huge_value_and_payload", (_pad(ev, 600_000), key, [("h", b"x" * 400_000)]), "payload_too_large"),
        # no value
        ("tombstone", (None, key, None), "null_payload"),
        ("headers_only", (None, None, [("trace", b"t-1"), ("none", None)]), "null_payload"),
        ("empty_value", (b"", key, None), "empty_payload"),
        ("blank_value", (b" \n\t", key, None), "empty_payload"),
        # JSON
        ("truncated_json", (good[:-7], key, None), "invalid_json"),
        ("trailing_garbage", (good + b" x", key, None), "invalid_json"),
        ("two_documents", (good + good, key, None), "invalid_json"),
        ("nul_byte", (b"\x00", key, None), "invalid_json"),
        ("nan_literal", (b"{" + body + b',"amount2":NaN}', key, None), "invalid_json"),
        ("infinity_literal", (b"{" + body + b',"x":Infinity}', key, None), "invalid_json"),
        ("number_overflow", (good.replace(b'"amount":', b'"amount":1e999,"a0":', 1), key, None), "invalid_json"),
        ("lone_surrogate_escape", (b"{" + body + b',"x":"\\ud800"}', key, None), "invalid_json"),
        ("deep_nesting", (b"{" + body + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}", key, None), "too_deep"),
        ("array", (b"[" + good + b"]", key, None), "not_an_object"),
        ("string", (b'"hello"', key, None), "not_an_object"),
        ("null_literal", (b"null", key, None), "not_an_object"),
        ("duplicate_key", (b'{"amount":-1,' + body + b"}", key, None), "duplicate_key"),
        ("duplicate_key_nested", (b"{" + body + b',"x":{"a":1,"a":2}}', key, None), "duplicate_key"),
        # encodings
        ("invalid_utf8", (good.replace(b'"EUR"', b'"\xff\xfeR"', 1) if b'"EUR"' in good
                          else b"{" + body + b',"x":"\xff"}', key, None), "invalid_encoding"),
        ("overlong_utf8", (b"{" + body + b',"x":"\xc0\xaf"}', key, None), "invalid_encoding"),
        ("utf8_bom", (b"\xef\xbb\xbf" + good, key, None), "invalid_encoding"),
        ("utf16", (good.decode().encode("utf-16"), key, None), "invalid_encoding"),
        ("latin1_text", (field(device_id="caf\u00e9").replace(b"\xc3\xa9", b"\xe9"), key, None), "invalid_encoding"),
        # wrong types and values
        ("missing_field", (without("card_id"), key, None), "missing_field:card_id"),
        ("null_required", (field(amount=None), key, None), "missing_field:amount"),
        ("amount_string", (field(amount="12.50"), key, None), "wrong_type:amount"),
        ("amount_bool", (field(amount=True), key, None), "wrong_type:amount"),
        ("amount_object", (field(amount={"v": 1}), key, None), "wrong_type:amount"),
        ("time_float", (field(event_time_ms=1.5), key, None), "wrong_type:event_time_ms"),
        ("time_beyond_64_bits", (good.replace(b'"event_time_ms":', b'"event_time_ms":18446744073709551616,"t0":', 1),
                                 key, None), "out_of_range:event_time_ms"),
        ("card_id_number", (field(card_id=12), key, None), "wrong_type:card_id"),
        ("card_id_empty", (field(card_id=""), key, None), "empty:card_id"),
        ("country_too_long", (field(country="DEU"), key, None), "too_long:country"),
        ("amount_negative", (field(amount=-1.0), key, None), "out_of_range:amount"),
        ("amount_above_max", (field(amount=1_000_000.5), key, None), "out_of_range:amount"),
        ("optional_wrong_type", (field(trace_id=5), key, None), "wrong_type:trace_id"),
    ]


def _run(ctx: ChaosContext, repeats: int, good_between: int) -> ScenarioResult:
    s = ctx.settings
    # One partition: send order is offset order, so each position knows its kind.
    t, path = scaffold.fresh_topology(ctx.workdir, "badinput", settings=s, partitions=1)
    src = scaffold.good_events(t)
    msgs: list[scaffold.Message] = []
    expect: list[tuple[str, str | None]] = []  # per message, in send order: kind, reason (None: decided)
    for _ in range(repeats):
        ev, ev_key = next(src)
        for name, msg, reason in kinds(t, orjson.loads(ev), ev_key or b"k"):
            msgs.append(msg)
            expect.append((name, reason))
            for _ in range(good_between):
                gv, gk = next(src)
                msgs.append((gv, gk, None))
                expect.append(("good", None))
    acked = scaffold.produce(s, t.input.topic, msgs, max_message_bytes=BROKER_MAX)
    t0 = time.monotonic()
    w = scaffold.start_worker(path, ctx.workdir / "badinput-worker.log", idle_exit_s=8.0)
    code = w.wait(600)
    if code is None:
        code = w.stop()
    elapsed = time.monotonic() - t0
    ends = end_offsets(s, t.input.topic)
    got = outcomes(s, t.output.topic, t.dead_letter.topic)
    c = count(ends, got)
    notes: list[str] = []
    if acked != len(msgs):
        notes.append(f"the broker took {acked} of {len(msgs)} messages")
    # per position: the dead letter's reason and bytes, or a decision with a score
    dead = {int(deadletter.parse_headers(m.headers())[deadletter.SOURCE_OFFSET]): m
            for m in read_topic(s, t.dead_letter.topic)}
    decided = {int(r["source"]["offset"]): r for r in scaffold.decisions(s, t.output.topic)}
    wrong: Counter[str] = Counter()
    for off, ((name, reason), (v, k, h)) in enumerate(zip(expect, msgs)):
        if reason is None:
            r = decided.get(off)
            if r is None or r["score"] is None or off in dead:
                wrong[f"{name}: not decided with a score"] += 1
            continue
        dm = dead.get(off)
        if dm is None or off in decided:
            wrong[f"{name}: no dead letter (or a decision too)"] += 1
            continue
        hh = deadletter.parse_headers(dm.headers())
        if hh[deadletter.REASON] != reason:
            wrong[f"{name}: reason {hh[deadletter.REASON]} != {reason}"] += 1
        cut = hh.get(deadletter.TRUNCATED, "")
        if "value" in cut:
            ok = (hh[deadletter.ORIGINAL_VALUE_BYTES] == str(len(v or b""))
                  and hh[deadletter.ORIGINAL_VALUE_SHA256] == hashlib.sha256(v or b"").hexdigest()
                  and (v or b"").startswith(dm.value() or b""))
        else:
            ok = dm.value() == v  # null stays null
        if "key" in cut:
            ok = ok and hh[deadletter.ORIGINAL_KEY_SHA256] == hashlib.sha256(k or b"").hexdigest()
        else:
            ok = ok and dm.key() == k
        if not cut and h:
            ok = ok and [(a, b) for a, b in (dm.headers() or [])[: len(h)]] == list(h)
        if not ok:
            wrong[f"{name}: original bytes not kept (truncated: {cut or 'no'})"] += 1
    n_kinds = len({n for n, r in expect if n != "good"})
    if code != 0:
        notes.append(f"worker exit code {code}")
    for what, n in sorted(wrong.items()):
        notes.append(f"{what} x{n}")
    passed = (code == 0 and not wrong and c.lost == 0 and c.duplicated == 0 and acked == len(msgs)
              and n_kinds >= 30)
    return ScenarioResult(
        "bad_input", c, None, passed,
        f"{n_kinds} malformed kinds x{repeats} among good events: 0 crashes, each dead-lettered with its "
        "reason and original bytes (or truncated + size + sha256), good events decided",
        notes, {"kinds": n_kinds, "repeats": repeats, "seconds": round(elapsed, 1),
                "dead_reasons": scaffold.summary_counts(w.text(), "dead_reasons")})


def bad_input(ctx: ChaosContext) -> ScenarioResult:
    return _run(ctx, repeats=1 if ctx.quick else 5, good_between=2 if ctx.quick else 20)


SCENARIOS = {"bad_input": bad_input}
