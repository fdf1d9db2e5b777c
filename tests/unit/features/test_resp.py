"""``workers.features._resp`` (the C framing and decoding of HMGET / HGETALL replies, the string intern
table and the gather into a batch's rows), no services.

The framing is checked against hand-built RESP2 (every shape Redis may send back, cut at every
byte), the decoding against protobuf itself and against ``workers/features/wire.py``'s numpy decoders,
which read the same cells on the hiredis path, and ``gather_rows`` against ``gather_numpy``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from workers.features.redis_fast import NATIVE_AVAILABLE, _GatherPlan, _Rows, gather_native, gather_numpy
from workers.features.layout import GroupPlan, ViewPlan
from workers.features.wire import StringCells, feast_seconds, slow_number, slow_string, slow_timestamp

if not NATIVE_AVAILABLE:
    if os.environ.get("CI"):
        pytest.fail("workers.features._resp was not built: `pip install -e .` needs a C compiler", pytrace=False)
    pytest.skip("workers.features._resp not built (no C compiler at install)", allow_module_level=True)

from workers.features._resp import Interner, parse_hgetall, parse_hmget  # noqa: E402

Cell = bytes | None


def bulk(x: Cell) -> bytes:
    return b"$-1\r\n" if x is None else b"$%d\r\n%s\r\n" % (len(x), x)


def array(items: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


class Out:
    """parse_* outputs for ``rows`` rows of one field per kind, filled with junk first."""

    def __init__(self, rows: int, kinds: bytes) -> None:
        f, nn, nt = len(kinds), sum(k not in b"st" for k in kinds), kinds.count(b"t")
        self.kinds = kinds
        self.lens = np.full((rows, f), 77, np.int32)
        self.offs = np.full((rows, f), 77, np.int64)
        self.status = np.full(rows, -7, np.int8)
        self.numbers = np.full((rows, nn), 7.0)
        self.sec = np.full((rows, nt), 7, np.int64)
        self.nanos = np.full((rows, nt), 7, np.int64)
        self.odd = np.full((rows, f), 7, np.uint8)
        self.n_odd = 0

    def cell(self, buf: bytes, r: int, f: int) -> Cell:
        n = int(self.lens[r, f])
        return None if n < 0 or self.status[r] != 0 else buf[self.offs[r, f] : self.offs[r, f] + n]


def parse_in_pieces(buf: bytes, rows: int, kinds: bytes, cut: int, hgetall: Sequence[bytes] | None = None) -> Out:
    """Parse as a socket would deliver it: first ``buf[:cut]``, then the rest."""
    out = Out(rows, kinds)
    pos = row = 0
    for end in (cut, len(buf)):
        if hgetall is None:
            pos, row, n = parse_hmget(buf, pos, end, row, rows, kinds, out.lens, out.offs, out.status, out.numbers,
                                      out.sec, out.nanos, out.odd)
        else:
            names = b"".join(hgetall)
            ends = np.cumsum([len(n) for n in hgetall]).astype(np.int32)
            pos, row, n = parse_hgetall(buf, pos, end, row, rows, names, ends, kinds, out.lens, out.offs,
                                        out.status, out.numbers, out.sec, out.nanos, out.odd)
        out.n_odd += n
        assert pos <= end
    assert (pos, row) == (len(buf), rows)
    return out


def test_hmget_replies_of_every_shape_at_every_cut() -> None:
    long_value = b"\x12" + b"d" * 200
    replies = [
        [b"\x35\x00\x00\xc0\x3f", None, b""],
        [long_value, b"a\r\nb", b"x" * 99],  # a value holding "\r\n"; two- and three-digit lengths
        [b"x" * 10, None, None],
    ]
    wire = b"".join(array([bulk(c) for c in r]) for r in replies)
    wire += b"-MOVED 1234 10.0.0.1:6379\r\n"  # an error reply
    wire += array([bulk(b"1"), bulk(b"2")])  # the wrong count
    wire += array([b":5\r\n", array([bulk(b"n")]), b"+OK\r\n"])  # nested / other types
    for cut in range(len(wire) + 1):
        out = parse_in_pieces(wire, 6, b"sss", cut)
        assert out.status.tolist() == [0, 0, 0, 1, 2, 2]
        for r, row in enumerate(replies):
            for f, c in enumerate(row):
                assert out.cell(wire, r, f) == c
        assert wire[out.offs[3, 0] : out.offs[3, 0] + out.lens[3, 0]] == b"MOVED 1234 10.0.0.1:6379"
        assert (out.lens[4:] == -1).all() and (out.odd == 0).all() and out.n_odd == 0


def test_other_shapes_read_as_nil_numbers() -> None:
    one = Value(double_val=2.5).SerializeToString()
    ts = Timestamp(seconds=1_700_000_000).SerializeToString()
    wire = array([bulk(one), bulk(ts)]) + b"-ERR no\r\n" + array([bulk(one)])
    out = parse_in_pieces(wire, 3, b"dt", len(wire))
    assert out.status.tolist() == [0, 1, 2]
    assert out.numbers[0, 0] == 2.5 and out.sec[0, 0] == 1_700_000_000
    assert np.isnan(out.numbers[1:, 0]).all() and (out.sec[1:] == 0).all() and not out.odd.any()


def test_hgetall_maps_fields_by_name_in_any_order() -> None:
    names = [b"\x01\x02\x03\x04", b"_ts:card_profile", b"\xff\xfe\xfd\xfc"]
    hashes = [
        [(names[0], b"a"), (names[1], b"t1"), (names[2], b"c")],
        [(names[2], b"c2"), (b"not-ours", b"junk"), (names[0], b"a2")],  # reordered, a foreign field
        [],  # no such key
        [(names[1], b"")],
    ]
    wire = b"".join(array([x for k, v in h for x in (bulk(k), bulk(v))]) for h in hashes)
    wire += array([bulk(b"odd count")])
    for cut in range(len(wire) + 1):
        out = parse_in_pieces(wire, 5, b"sss", cut, hgetall=names)
        assert out.status.tolist() == [0, 0, 0, 0, 2]
        got = [[out.cell(wire, r, f) for f in range(3)] for r in range(4)]
        assert got == [[b"a", b"t1", b"c"], [b"a2", None, b"c2"], [None, None, None], [None, b"", None]]


def test_bytes_that_are_not_resp_raise() -> None:
    out = Out(1, b"s")
    args = (out.lens, out.offs, out.status, out.numbers, out.sec, out.nanos, out.odd)
    for junk in (b"?what\r\n", b"*1\r\n$x\r\n", b"*1\r\n$1\r\nab\r\n", b"*1\r\n$10\r\n0123456789xx\r\n"):
        with pytest.raises(ValueError, match="not RESP2"):
            parse_hmget(junk, 0, len(junk), 0, 1, b"s", *args)
    with pytest.raises(ValueError, match="lens needs"):
        parse_hmget(b"", 0, 0, 0, 2, b"s", *args)
    with pytest.raises(ValueError, match="one name per kind"):
        parse_hgetall(b"", 0, 0, 0, 1, b"ab", np.array([1, 2], np.int32), b"s", *args)


# ---- decoding against protobuf and the numpy decoders ------------------------------------------

NUMERIC = {
    "f": ("float_val", [0.0, -0.0, 1.5, 3.4e38, 1e-45, float("inf"), float("nan")]),
    "d": ("double_val", [0.0, 1e308, 5e-324, 0.1, float("-inf")]),
    "l": ("int64_val", [0, 1, 127, 128, 2**35, -1, -(2**63), 2**63 - 1]),
    "i": ("int32_val", [0, -1, 127, -(2**31), 2**31 - 1]),
    "b": ("bool_val", [False, True]),
    "u": ("unix_timestamp_val", [0, 1_700_000_000, -5]),
}


def frame(cells: list[list[Cell]], kinds: bytes) -> tuple[bytes, Out]:
    wire = b"".join(array([bulk(c) for c in row]) for row in cells)
    return wire, parse_in_pieces(wire, len(cells), kinds, len(wire))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("code", sorted(NUMERIC))
def test_numbers_read_as_protobuf_reads_them(code: str) -> None:
    kind, values = NUMERIC[code]
    good: list[Cell] = [Value(**{kind: v}).SerializeToString() for v in values]  # type: ignore[arg-type]
    odd: list[Cell] = [Value(string_val="1").SerializeToString(), Value(null_val=0).SerializeToString(),
                       good[-1] + b"\x00", b"\x09junk", Value(double_val=2.0).SerializeToString() * 3]
    cells = [[c] for c in [*good, None, b"", Value().SerializeToString(), *odd]]
    wire, out = frame(cells, code.encode())
    u, numbers, bad, n_odd = len(cells), out.numbers, out.odd, out.n_odd
    flagged = bad[:, 0].astype(bool)
    assert not flagged[: len(good) + 3].any() and flagged[len(good) + 3 :].all() and n_odd == len(odd)
    for r in range(u):
        want = slow_number(cells[r][0])
        got = want if flagged[r] else numbers[r, 0]  # odd cells: the caller reads them by protobuf
        assert same(got, want), (cells[r], got, want)


def test_timestamps_and_mixed_rows_agree_with_protobuf() -> None:
    rng = np.random.default_rng(4)
    kinds = b"fdlbsstt"
    rows: list[list[Cell]] = []
    for i in range(300):
        s, ns = int(rng.integers(1, 2**34)), int(rng.integers(0, 10**9)) if i % 3 else 0
        rows.append([
            Value(float_val=float(rng.normal())).SerializeToString(),
            Value(double_val=float(rng.normal())).SerializeToString(),
            Value(int64_val=int(rng.integers(-(2**40), 2**40))).SerializeToString(),
            Value(bool_val=bool(i % 2)).SerializeToString(),
            Value(string_val=f"s{i % 7}").SerializeToString(),
            Value(string_val="x" * (30 if i % 11 == 0 else 3)).SerializeToString(),
            Timestamp(seconds=s, nanos=ns).SerializeToString(),
            None if i % 5 == 0 else Timestamp(nanos=5, seconds=s).SerializeToString()[::-1] if i % 13 == 0
            else Timestamp(seconds=s).SerializeToString(),
        ])
    wire, out = frame(rows, kinds)
    numbers, sec, nanos, bad = out.numbers, out.sec, out.nanos, out.odd
    ts = feast_seconds(sec, nanos)
    for r, row in enumerate(rows):
        for c in range(4):
            assert not bad[r, c] and same(numbers[r, c], slow_number(row[c]))
        for t in range(2):
            scrambled = t == 1 and r % 13 == 0 and r % 5 != 0
            assert bool(bad[r, 6 + t]) == scrambled  # odd cells: the caller reads them by protobuf
            assert scrambled or ts[r, t] == slow_timestamp(row[6 + t]), (r, t)
    strings = StringCells(native_table=Interner)
    for _ in range(2):  # second pass: every cell from the intern table
        for col in (4, 5):
            vals, present = strings.decode_at(wire, out.offs, out.lens, col,
                                              lambda r, col=col: out.cell(wire, r, col))
            assert present.all()
            assert vals.tolist() == [Value.FromString(row[col]).string_val for row in rows]  # type: ignore[arg-type]


# ---- Interner ------------------------------------------------------------------------------------


def test_interner_maps_exact_bytes_to_codes() -> None:
    t = Interner()
    cells = [b"\x12\x02MX", b"\x12\x02MZ", b"x" * 300, b"\x00", b"\x12\x02MX" + b"\x00"]
    for code, c in enumerate(cells, 1):
        t.add(c, code)
    t.add(cells[0], 99)  # added again: keeps its first code
    assert len(t) == len(cells)
    wire = b"".join(cells) + b"\x12\x02MY"
    starts = np.cumsum([0] + [len(c) for c in cells])
    offs = np.array([[s] for s in starts], np.int64)
    lens = np.array([[len(c)] for c in cells] + [[4]], np.int32)
    codes = np.empty(len(offs), np.int64)
    assert t.lookup(wire, offs, lens, 1, 0, codes) == 1
    assert codes.tolist() == [1, 2, 3, 4, 5, -1]
    lens[0, 0], lens[1, 0] = -1, 0  # nil and b"": no string, not a miss
    assert t.lookup(wire, offs, lens, 1, 0, codes) == 1 and codes[:2].tolist() == [0, 0]
    for i in range(5000):  # grows, keeps every code
        t.add(b"k%d" % i, 1000 + i)
    assert len(t) == 5005 and t.lookup(wire, offs[2:3], lens[2:3], 1, 0, codes[:1]) == 0 and codes[0] == 3
    with pytest.raises(ValueError, match="outside the buffer"):
        t.lookup(b"ab", np.array([[1]], np.int64), np.array([[5]], np.int32), 1, 0, codes[:1])
    t.clear()
    assert len(t) == 0


def test_string_reset_rereads_codes_of_earlier_cells() -> None:
    """Past max_entries the table starts over; cells looked up before the reset get new codes."""
    texts = [f"s{i}" for i in range(8)]
    cells = [Value(string_val=t).SerializeToString() for t in texts]
    wire = b"".join(cells)
    offs = np.cumsum([0] + [len(c) for c in cells[:-1]]).astype(np.int64).reshape(-1, 1)
    lens = np.array([[len(c)] for c in cells], np.int32)
    strings = StringCells(max_entries=6, native_table=Interner)
    for half in (slice(0, 4), slice(0, 8), slice(4, 8), slice(0, 8)):
        got, present = strings.decode_at(wire, offs[half], lens[half], 0, lambda r, h=half: cells[h][r])
        assert got.tolist() == texts[half] and present.all()
        assert strings.decode(cells[half])[0].tolist() == texts[half]
    assert [slow_string(c) for c in cells] == texts


# ---- gather_rows against gather_numpy --------------------------------------------------------------


@pytest.mark.parametrize("drop_stale", [True, False])
def test_gather_rows_matches_numpy(drop_stale: bool) -> None:
    rng = np.random.default_rng(11)
    # Two views: numeric cells 0,1 + string 0 in view 0 (TTL 100 s); numeric 2 in view 1 (no TTL).
    views = [ViewPlan("a", 100.0, np.array([0, 1]), np.array([0])), ViewPlan("b", 0.0, np.array([2]), np.array([], int))]
    g = GroupPlan("id", views, ["float_val", "double_val", "int64_val"], np.array([3, 0, 1]), ["a:s"],
                  [b"f0", b"f1", b"f2", b"s0", b"_ts:a", b"_ts:b"], lambda x: b"k")
    u, n, now = 50, 300, 10_000.0
    numbers = rng.normal(size=(u, 3)) * 1e3
    numbers[rng.random((u, 3)) < 0.3] = np.nan
    has_string = rng.random((u, 1)) < 0.7
    strs = np.array([[f"v{i}"] for i in range(u)], object)
    ts = rng.choice([0.0, now - 50.0, now - 150.0, now - 100.0], size=(u, 2))
    rows = _Rows(numbers, strs, has_string, ts)
    codes = rng.integers(0, u, n).astype(np.intp)
    defaults = np.array([-1.0, -2.0, -3.0, -4.0, -5.0], np.float32)
    outs = []
    for native in (False, True):
        numeric = np.full((n, 5), 42.0, np.float32)
        strings: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        stale: dict[str, np.ndarray] = {}
        if native:
            gather_native(_GatherPlan.of(g, defaults), rows, codes, now, drop_stale, {"a:s": "?"}, numeric, strings,
                          missing, stale)
        else:
            gather_numpy(g, rows, codes, now, drop_stale, defaults, {"a:s": "?"}, numeric, strings, missing, stale)
        outs.append((numeric, strings, missing, stale))
    (n0, s0, m0, t0), (n1, s1, m1, t1) = outs
    assert np.array_equal(n0, n1) and (n0[:, 2] == 42.0).all() and (n0[:, 4] == 42.0).all()  # others' columns
    assert s0["a:s"].tolist() == s1["a:s"].tolist()
    for v in ("a", "b"):
        assert m0[v].tolist() == m1[v].tolist() and t0[v].tolist() == t1[v].tolist()
    assert m0["a"].any() and t0["a"].any() and not t0["b"].any()  # the data has each case


def test_mutated_replies_never_crash_the_parser() -> None:
    """Random byte flips, cuts and splices of valid replies: parsed, left incomplete or refused
    with ValueError, and every cell found lies inside the buffer (the C code reads nothing else)."""
    rng = np.random.default_rng(5)
    names = [b"\x01\x02\x03\x04", b"_ts:v", b"abcd"]
    good = [Value(double_val=1.5).SerializeToString(), Timestamp(seconds=9).SerializeToString(),
            Value(string_val="MX").SerializeToString()]
    hmget = b"".join(array([bulk(c) for c in good]) for _ in range(4))
    hgetall = b"".join(array([x for k, v in zip(names, good) for x in (bulk(k), bulk(v))]) for _ in range(4))
    ends = np.cumsum([len(n) for n in names]).astype(np.int32)
    for trial in range(3000):
        base = hgetall if trial % 2 else hmget
        wire = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            op, at = int(rng.integers(0, 3)), int(rng.integers(0, len(wire)))
            if op == 0:
                wire[at] = int(rng.integers(0, 256))
            elif op == 1:
                del wire[at : at + int(rng.integers(1, 8))]
            else:
                wire[at:at] = bytes(rng.choice(list(b"$*:-+\r\n0123456789"), int(rng.integers(1, 6))).tolist())
        data = bytes(wire)
        out = Out(4, b"dts")
        args = (out.lens, out.offs, out.status, out.numbers, out.sec, out.nanos, out.odd)
        try:
            if trial % 2:
                pos, row, _ = parse_hgetall(data, 0, len(data), 0, 4, b"".join(names), ends, b"dts", *args)
            else:
                pos, row, _ = parse_hmget(data, 0, len(data), 0, 4, b"dts", *args)
        except ValueError as e:
            assert "not RESP2" in str(e)
            continue
        assert 0 <= pos <= len(data) and 0 <= row <= 4
        for r in range(row):
            for f in range(3):
                if out.lens[r, f] >= 0:
                    assert 0 <= out.offs[r, f] and out.offs[r, f] + out.lens[r, f] <= len(data)
