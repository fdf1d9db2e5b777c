"""decode's colon count: the C helper (workers/pipeline/_scan.c) agrees with bytes.count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.pipeline import decode


@given(st.binary(max_size=2000))
def test_colons_counts_like_bytes_count(raw: bytes) -> None:
    assert decode._colons(raw) == raw.count(b":")


def test_the_c_helper_was_built() -> None:
    scan = pytest.importorskip("workers.pipeline._scan", reason="no C compiler at install: bytes.count is used")
    assert decode._colons is scan.colons
    with pytest.raises(TypeError):
        scan.colons("not bytes")
