"""The redis_fast reader's pure decoders against protobuf itself (no services).

Cells are encoded with Feast's ``ValueProto`` / protobuf's ``Timestamp``; the vectorized decoders
must read them exactly as ``FeastSdkReader`` does (``float(<set oneof>)``; timestamps after
Feast's datetime round trip), and must flag anything of another shape for the protobuf path.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from workers.features.wire import (
    CELL_WIDTH,
    TAGS,
    NumericLayout,
    StringCells,
    cell_matrix,
    decode_numbers,
    decode_timestamps,
    decode_varints,
    slow_number,
    slow_string,
    slow_timestamp,
)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
F32_MAX = float(np.finfo(np.float32).max)


def reference(raw: bytes | None) -> float:
    """What FeastSdkReader computes for one cell."""
    if not raw:
        return math.nan
    v = Value.FromString(raw)
    kind = v.WhichOneof("val")
    return math.nan if kind is None else float(getattr(v, kind))


def decode_column(cells: list[bytes | None], kind: str) -> tuple[np.ndarray, np.ndarray]:
    vals, odd = decode_numbers(cell_matrix([[c] for c in cells]), NumericLayout.of([kind]))
    return vals[:, 0], odd[:, 0]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


VALUES: dict[str, list[object]] = {
    "float_val": [0.0, -0.0, 1.5, -2.25, 3.4e38, -F32_MAX, 1e-45, float("inf"), float("-inf"), float("nan"), 123.456],
    "double_val": [0.0, -0.0, 1e308, -1e-308, 5e-324, 0.1, float("nan"), float("inf"), -123456789.987654321],
    "int64_val": [0, 1, 127, 128, 300, 16383, 16384, 2**35, -1, -2, -300, I64_MIN, I64_MAX, 2**53 + 1],
    "int32_val": [0, 1, -1, 127, 128, I32_MIN, I32_MAX, -123456],
    "bool_val": [False, True],
    "unix_timestamp_val": [0, 1_700_000_000, -5, 2**40],
}


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_numbers_decode_as_protobuf_reads_them(kind: str) -> None:
    cells: list[bytes | None] = [Value(**{kind: v}).SerializeToString() for v in VALUES[kind]]  # type: ignore[arg-type]
    cells += [b"", None, Value().SerializeToString()]
    vals, odd = decode_column(cells, kind)
    assert not odd.any()
    for raw, got in zip(cells, vals.tolist()):
        assert same(got, reference(raw)), (raw, got, reference(raw))


def test_negative_int64_is_a_ten_byte_varint() -> None:
    raw = Value(int64_val=-1).SerializeToString()
    assert len(raw) == 11 and raw[0] == TAGS["int64_val"]
    vals, odd = decode_column([raw], "int64_val")
    assert vals.tolist() == [-1.0] and not odd.any()


def test_mixed_columns_in_one_matrix() -> None:
    kinds = ["int64_val", "float_val", "bool_val", "double_val", "int32_val", "string_val"]
    order = NumericLayout.order(kinds)
    assert [kinds[j] for j in order] == ["float_val", "double_val", "int64_val", "bool_val", "int32_val", "string_val"]
    kinds = [kinds[j] for j in order]
    layout = NumericLayout.of(kinds)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(50):
        row = [
            Value(float_val=float(rng.normal())).SerializeToString(),
            Value(double_val=float(rng.normal())).SerializeToString(),
            Value(int64_val=int(rng.integers(-(2**40), 2**40))).SerializeToString(),
            Value(bool_val=bool(rng.integers(0, 2))).SerializeToString(),
            Value(int32_val=int(rng.integers(-(2**31), 2**31))).SerializeToString(),
            Value(string_val="12.5").SerializeToString(),  # not a numeric kind: protobuf path
        ]
        if rng.random() < 0.2:
            row[int(rng.integers(0, 5))] = None
        rows.append(row)
    vals, odd = decode_numbers(cell_matrix(rows), layout)
    assert vals.shape == (50, 6)
    assert not odd[:, :5].any() and odd[:, 5].all()
    for r, row in enumerate(rows):
        for c in range(5):
            assert same(vals[r, c], reference(row[c]))
        assert slow_number(row[5]) == reference(row[5]) == 12.5


def test_cells_of_another_shape_are_odd_and_the_slow_path_matches_feast() -> None:
    odd_cells = [
        Value(int64_val=7).SerializeToString(),  # an int where a float was declared
        Value(float_val=1.5).SerializeToString() + Value(float_val=2.5).SerializeToString(),  # last wins
        Value(null_val=0).SerializeToString(),  # Feast reads float(NULL) == 0.0
        Value(double_val=3.0).SerializeToString(),
        Value(string_val="abc").SerializeToString(),  # Feast would raise; read as no value
        b"\xff\xff\xff",  # unparsable: no value
    ]
    _, odd = decode_column(odd_cells, "float_val")
    assert odd.all()
    got = [slow_number(c) for c in odd_cells]
    assert got[:4] == [7.0, 2.5, 0.0, 3.0]
    assert math.isnan(got[4]) and math.isnan(got[5])
    # absent cells are not odd
    _, odd = decode_column([b"", None], "int64_val")
    assert not odd.any()


def test_non_canonical_varint_goes_to_protobuf() -> None:
    padded = bytes([TAGS["int64_val"], 0x85, 0x00])  # 5 with a redundant continuation byte
    vals, odd = decode_column([padded], "int64_val")
    assert odd.all() or vals[0] == reference(padded)
    assert slow_number(padded) == reference(padded) == 5.0


def test_varints_against_a_reference_encoder() -> None:
    rng = np.random.default_rng(1)
    values = [0, 1, 127, 128, 2**14, 2**63 - 1, 2**63, 2**64 - 1, *rng.integers(0, 2**63, 200).tolist()]

    def enc(x: int) -> bytes:
        out = bytearray()
        while True:
            if x < 0x80:
                out.append(x)
                return bytes(out)
            out.append((x & 0x7F) | 0x80)
            x >>= 7

    m = cell_matrix([enc(v) for v in values], 12)
    got, n, ok = decode_varints(m)
    assert ok.all()
    assert got.tolist() == [v % 2**64 for v in values]
    assert n.tolist() == [len(enc(v)) for v in values]
    _, _, bad = decode_varints(cell_matrix([b"\x80" * 11], 12))  # never terminates
    assert not bad.any()


def feast_ts(seconds: int, nanos: int) -> float:
    """Feast's Redis read path: float -> datetime -> Timestamp, then FeastSdkReader's float."""
    total = seconds + nanos / 1_000_000_000.0
    t = Timestamp()
    t.FromDatetime(datetime.fromtimestamp(total, tz=timezone.utc))
    return float(t.seconds + t.nanos * 1e-9)


def test_timestamps_round_like_feast() -> None:
    rng = np.random.default_rng(2)
    pairs = [(1_700_000_000, 0), (1_700_000_000, 500), (1_700_000_000, 1500), (1_700_000_000, 2500),
             (1_700_000_000, 999_999_999), (1_700_000_001, 999_999_500), (1, 0), (86_400, 123_456_789)]
    pairs += [(int(s), int(ns)) for s, ns in zip(rng.integers(1, 2**33, 300), rng.integers(0, 10**9, 300))]
    cells: list[bytes | None] = [Timestamp(seconds=s, nanos=ns).SerializeToString() for s, ns in pairs]
    vals, odd = decode_timestamps(cell_matrix(cells, CELL_WIDTH))
    assert not odd.any()
    for (s, ns), got in zip(pairs, vals.tolist()):
        assert got == feast_ts(s, ns), (s, ns)
    vals, odd = decode_timestamps(cell_matrix([b"", None, Timestamp().SerializeToString()], CELL_WIDTH))
    assert vals.tolist() == [0.0, 0.0, 0.0] and not odd.any()


def test_whole_seconds_on_and_off_the_five_byte_fast_path() -> None:
    seconds = [2**28 - 1, 2**28, 1_700_000_000, 2**35 - 1, 2**35, 127, 0]
    cells: list[bytes | None] = [Timestamp(seconds=x).SerializeToString() for x in seconds] + [None, b""]
    vals, odd = decode_timestamps(cell_matrix(cells, CELL_WIDTH))
    assert not odd.any()
    assert vals.tolist() == [feast_ts(x, 0) for x in seconds] + [0.0, 0.0]


def test_odd_timestamps_use_protobuf() -> None:
    only_nanos = Timestamp(seconds=0, nanos=5000).SerializeToString()  # starts with the nanos tag
    junk = b"\x09junk"  # not a Timestamp: protobuf fails, Feast would raise; reads as none
    _, odd = decode_timestamps(cell_matrix([only_nanos, junk], CELL_WIDTH))
    assert odd.all()
    assert slow_timestamp(only_nanos) == feast_ts(0, 5000)
    assert slow_timestamp(junk) == 0.0


def test_strings_through_the_intern_table() -> None:
    texts = ["NL", "", "zürich-ü", "d" * 127, "x" * 300, "DE"]
    cells: list[bytes | None] = [Value(string_val=t).SerializeToString() for t in texts]
    cells += [None, b"", Value(int64_val=3).SerializeToString(), Value().SerializeToString()]
    sc = StringCells(max_entries=6)  # small: exercises the reset
    for _ in range(3):
        values, present = sc.decode(cells)
        assert values[: len(texts)].tolist() == texts
        assert present.tolist() == [True] * len(texts) + [False] * 4
    assert [slow_string(c) for c in cells[:6]] == texts


def test_none_reads_as_absent_not_as_a_value() -> None:
    m = cell_matrix([None, b""], CELL_WIDTH)
    assert m[0, 0] == ord("N") and m[1, 0] == 0
    vals, odd = decode_column([None, b""], "float_val")
    assert np.isnan(vals).all() and not odd.any()


def test_wire_tags_match_the_descriptor() -> None:
    wire = {1: 1, 2: 5, 3: 0, 5: 0, 8: 0, 9: 2}
    for name, tag in TAGS.items():
        f = Value.DESCRIPTOR.fields_by_name[name]
        assert f.number << 3 | wire[f.type] == tag
