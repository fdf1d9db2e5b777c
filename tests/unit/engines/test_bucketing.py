from __future__ import annotations

import numpy as np
import pytest

from workers.engines.bucketing import BucketPlan, Chunk, pad_rows, unpad


def test_powers_of_two_up_to_max_batch() -> None:
    assert BucketPlan.for_max_batch(256).sizes == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    # A max_batch that is not a power of two is a bucket of its own: no call exceeds it.
    assert BucketPlan.for_max_batch(300).sizes[-2:] == (256, 300)
    assert BucketPlan.for_max_batch(1).sizes == (1,)


def test_min_bucket_drops_small_shapes() -> None:
    assert BucketPlan.for_max_batch(256, min_bucket=32).sizes == (32, 64, 128, 256)
    assert BucketPlan.for_max_batch(16, min_bucket=64).sizes == (16,)


@pytest.mark.parametrize(("n", "bucket"), [(1, 1), (2, 2), (3, 4), (5, 8), (129, 256), (256, 256), (257, 300)])
def test_bucket_for_is_the_smallest_that_fits(n: int, bucket: int) -> None:
    assert BucketPlan.for_max_batch(300).bucket_for(n) == bucket


def test_bucket_for_rejects_empty_and_oversized() -> None:
    plan = BucketPlan.for_max_batch(64)
    with pytest.raises(ValueError):
        plan.bucket_for(0)
    with pytest.raises(ValueError, match="chunks"):
        plan.bucket_for(65)


def test_chunks_cover_every_row_once() -> None:
    plan = BucketPlan.for_max_batch(256)
    chunks = list(plan.chunks(700))
    assert chunks == [Chunk(0, 256, 256), Chunk(256, 512, 256), Chunk(512, 700, 256)]
    assert sum(c.rows for c in chunks) == 700
    assert plan.padded_rows(700) == 768
    assert list(plan.chunks(0)) == []
    assert list(plan.chunks(3)) == [Chunk(0, 3, 4)]


def test_plan_of_sorts_and_dedups_and_validates() -> None:
    assert BucketPlan.of([64, 1, 16, 16]).sizes == (1, 16, 64)
    with pytest.raises(ValueError):
        BucketPlan(())
    with pytest.raises(ValueError):
        BucketPlan((4, 2))
    with pytest.raises(ValueError):
        BucketPlan((0, 2))


def test_pad_rows_zero_fills_and_casts_into_a_staging_buffer() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    staging = np.full((4, 2), 7.0, dtype=np.float16)  # stale values from an earlier batch
    out = pad_rows(x, 4, staging)
    assert out is staging
    assert staging.dtype == np.float16
    np.testing.assert_array_equal(staging[:3], x.astype(np.float16))
    np.testing.assert_array_equal(staging[3], [0, 0])
    fresh = pad_rows(x, 8)
    assert fresh.shape == (8, 2) and not fresh[3:].any()


def test_pad_rows_rejects_mismatches() -> None:
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError):
        pad_rows(x, 4)
    with pytest.raises(ValueError):
        pad_rows(x, 8, np.zeros((8, 3), dtype=np.float32))


def test_unpad_copies_the_first_rows_as_float32() -> None:
    buf = np.arange(8, dtype=np.float16).reshape(8, 1)
    s = unpad(buf, 3)
    assert s.dtype == np.float32 and s.tolist() == [[0.0], [1.0], [2.0]]
    buf[0, 0] = 99  # the engine reuses its buffers: results must not alias them
    assert s[0, 0] == 0.0
    assert unpad(np.arange(4, dtype=np.float32), 2).tolist() == [[0.0], [1.0]]
    two = unpad(np.arange(8, dtype=np.float32).reshape(4, 2), 3)  # class probabilities keep their columns
    assert two.shape == (3, 2) and two[2].tolist() == [4.0, 5.0]
