"""decode's colon count: the C helper (workers/pipeline/_scan.c) agrees with bytes.count."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.pipeline import decode


@given(st.binary(max_size=2000))
def test_colons_counts_like_bytes_count(raw: bytes) -> None:
    assert decode._colons(raw) == raw.count(b":")


def test_the_c_helper_was_built() -> None:
    try:
        from workers.pipeline import _scan as scan
    except ImportError:
        if os.environ.get("CI"):  # as tests/unit/features/test_resp.py: CI has a compiler
            pytest.fail("workers.pipeline._scan was not built: `pip install -e .` needs a C compiler", pytrace=False)
        pytest.skip("workers.pipeline._scan not built (no C compiler at install): bytes.count is used")
    assert decode._colons is scan.colons
    with pytest.raises(TypeError):
        scan.colons("not bytes")
