"""``workers._resp`` (the C framing and decoding of HMGET / HGETALL replies), no services.

The framing is checked against hand-built RESP2 (every shape Redis may send back, cut at every
byte), the decoding against protobuf itself and against ``workers/feastwire.py``'s numpy decoders,
which read the same cells on the hiredis path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from workers.fastfeatures import NATIVE_AVAILABLE
from workers.feastwire import CELL_WIDTH, StringCells, feast_seconds, slow_number, slow_timestamp

if not NATIVE_AVAILABLE:
    if os.environ.get("CI"):
        pytest.fail("workers._resp was not built: `pip install -e .` needs a C compiler", pytrace=False)
    pytest.skip("workers._resp not built (no C compiler at install)", allow_module_level=True)

from workers._resp import decode_cells, parse_hgetall, parse_hmget  # noqa: E402

W = CELL_WIDTH
Cell = bytes | None


def bulk(x: Cell) -> bytes:
    return b"$-1\r\n" if x is None else b"$%d\r\n%s\r\n" % (len(x), x)


def array(items: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


class Out:
    def __init__(self, rows: int, fields: int) -> None:
        self.cells = np.full((rows, fields, W), 0xAA, np.uint8)
        self.lens = np.zeros((rows, fields), np.int32)
        self.offs = np.zeros((rows, fields), np.int64)
        self.status = np.full(rows, -7, np.int8)

    def cell(self, buf: bytes, r: int, f: int) -> Cell:
        n = int(self.lens[r, f])
        return None if n < 0 else buf[self.offs[r, f] : self.offs[r, f] + n]


def parse_in_pieces(buf: bytes, rows: int, fields: int, cut: int, hgetall: Sequence[bytes] | None = None) -> Out:
    """Parse as a socket would deliver it: first ``buf[:cut]``, then the rest."""
    out = Out(rows, fields)
    pos = row = 0
    for end in (cut, len(buf)):
        if hgetall is None:
            pos, row = parse_hmget(buf, pos, end, row, rows, fields, W, out.cells, out.lens, out.offs, out.status)
        else:
            names = b"".join(hgetall)
            ends = np.cumsum([len(n) for n in hgetall]).astype(np.int32)
            pos, row = parse_hgetall(buf, pos, end, row, rows, names, ends, W, out.cells, out.lens, out.offs,
                                     out.status)
        assert pos <= end
    assert (pos, row) == (len(buf), rows)
    return out


def test_hmget_replies_of_every_shape_at_every_cut() -> None:
    fields = 3
    long_value = b"\x12" + b"d" * 200
    replies = [
        [b"\x35\x00\x00\xc0\x3f", None, b""],
        [long_value, b"a\r\nb", b"x" * (W - 1)],  # a value holding "\r\n"; the longest in the matrix
        [b"x" * W, None, None],  # one byte too long for the matrix
    ]
    wire = b"".join(array([bulk(c) for c in r]) for r in replies)
    wire += b"-MOVED 1234 10.0.0.1:6379\r\n"  # an error reply
    wire += array([bulk(b"1"), bulk(b"2")])  # the wrong count
    wire += array([b":5\r\n", array([bulk(b"n")]), b"+OK\r\n"])  # nested / other types
    for cut in range(len(wire) + 1):
        out = parse_in_pieces(wire, 6, fields, cut)
        assert out.status.tolist() == [0, 0, 0, 1, 2, 2]
        for r, row in enumerate(replies):
            for f, c in enumerate(row):
                assert out.cell(wire, r, f) == c
                if c is not None and len(c) < W:
                    assert bytes(out.cells[r, f]) == c + bytes(W - len(c))
        assert out.cells[0, 1].max() == 0 and out.cells[0, 2].max() == 0  # nil and b"": all zero
        assert out.cells[2, 0, 0] == 0xFF and out.cells[1, 0, 0] == 0xFF  # too long: marked odd
        assert out.cell(wire, 3, 0) == b"MOVED 1234 10.0.0.1:6379"
        assert (out.lens[4:] == -1).all() and out.cells[3:].max() == 0


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
        out = parse_in_pieces(wire, 5, 3, cut, hgetall=names)
        assert out.status.tolist() == [0, 0, 0, 0, 2]
        got = [[out.cell(wire, r, f) for f in range(3)] for r in range(4)]
        assert got == [[b"a", b"t1", b"c"], [b"a2", None, b"c2"], [None, None, None], [None, b"", None]]


def test_bytes_that_are_not_resp_raise() -> None:
    out = Out(1, 1)
    for junk in (b"?what\r\n", b"*1\r\n$x\r\n", b"*1\r\n$1\r\nab\r\n"):
        with pytest.raises(ValueError, match="not RESP2"):
            parse_hmget(junk, 0, len(junk), 0, 1, 1, W, out.cells, out.lens, out.offs, out.status)
    with pytest.raises(ValueError, match="cells needs"):
        parse_hmget(b"", 0, 0, 0, 2, 1, W, out.cells, out.lens, out.offs, out.status)


# ---- decode_cells against protobuf and the numpy decoders -------------------------------------

NUMERIC = {
    "f": ("float_val", [0.0, -0.0, 1.5, 3.4e38, 1e-45, float("inf"), float("nan")]),
    "d": ("double_val", [0.0, 1e308, 5e-324, 0.1, float("-inf")]),
    "l": ("int64_val", [0, 1, 127, 128, 2**35, -1, -(2**63), 2**63 - 1]),
    "i": ("int32_val", [0, -1, 127, -(2**31), 2**31 - 1]),
    "b": ("bool_val", [False, True]),
    "u": ("unix_timestamp_val", [0, 1_700_000_000, -5]),
}


def frame(cells: list[list[Cell]]) -> tuple[bytes, Out]:
    wire = b"".join(array([bulk(c) for c in row]) for row in cells)
    return wire, parse_in_pieces(wire, len(cells), len(cells[0]), len(wire))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("code", sorted(NUMERIC))
def test_numbers_read_as_protobuf_reads_them(code: str) -> None:
    kind, values = NUMERIC[code]
    good: list[Cell] = [Value(**{kind: v}).SerializeToString() for v in values]  # type: ignore[arg-type]
    odd: list[Cell] = [Value(string_val="1").SerializeToString(), Value(null_val=0).SerializeToString(),
                       good[-1] + b"\x00", b"\x09junk", Value(double_val=2.0).SerializeToString() * 3]
    cells = [[c] for c in [*good, None, b"", Value().SerializeToString(), *odd]]
    wire, out = frame(cells)
    u = len(cells)
    numbers, sec, nanos, bad = np.empty((u, 1)), np.empty((u, 0), np.int64), np.empty((u, 0), np.int64), np.empty((u, 1), np.uint8)
    n_odd = decode_cells(out.cells, out.lens, code.encode(), numbers, sec, nanos, bad, u, W)
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
    wire, out = frame(rows)
    u = len(rows)
    numbers, sec, nanos = np.empty((u, 4)), np.empty((u, 2), np.int64), np.empty((u, 2), np.int64)
    bad = np.empty((u, 8), np.uint8)
    decode_cells(out.cells, out.lens, kinds, numbers, sec, nanos, bad, u, W)
    ts = feast_seconds(sec, nanos)
    for r, row in enumerate(rows):
        for c in range(4):
            assert not bad[r, c] and same(numbers[r, c], slow_number(row[c]))
        for t in range(2):
            scrambled = t == 1 and r % 13 == 0 and r % 5 != 0
            assert bool(bad[r, 6 + t]) == scrambled  # odd cells: the caller reads them by protobuf
            assert scrambled or ts[r, t] == slow_timestamp(row[6 + t]), (r, t)
    strings = StringCells()
    for _ in range(2):  # second pass: every cell from the intern table
        for col in (4, 5):
            vals, present = strings.decode_padded(out.cells[:, col], out.lens[:, col],
                                                  lambda r, col=col: out.cell(wire, r, col))
            assert present.all()
            assert vals.tolist() == [Value.FromString(row[col]).string_val for row in rows]  # type: ignore[arg-type]
