"""Batch-size buckets: pad a batch up to the next bucket so that an engine sees few distinct shapes.

GPU engines want repeating shapes: a CUDA graph is captured for one shape, TensorRT tunes kernels
per optimization profile, and pinned staging buffers are allocated once per shape. So a batch of
``n`` rows is run as the smallest bucket ``>= n`` (the rows after ``n`` are padding whose scores are
dropped), and a batch larger than the largest bucket is split into chunks of at most that size.

Buckets are powers of two up to ``max_batch`` plus ``max_batch`` itself (``base.default_buckets``),
so padding wastes less than half of a call, and at most ``log2(max_batch) + 2`` shapes exist.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.engines.base import default_buckets


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of a batch, run as a call of ``bucket`` rows."""

    start: int
    stop: int
    bucket: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class BucketPlan:
    """The sorted, distinct batch shapes an engine is prepared for."""

    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("a bucket plan needs at least one size")
        if any(s < 1 for s in self.sizes):
            raise ValueError(f"bucket sizes must be >= 1, got {list(self.sizes)}")
        if list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"bucket sizes must be sorted and distinct, got {list(self.sizes)}")

    @staticmethod
    def for_max_batch(max_batch: int, min_bucket: int = 1) -> BucketPlan:
        """Powers of two from ``min_bucket`` up to ``max_batch``, plus ``max_batch`` itself.

        ``min_bucket`` > 1 trades padding for fewer shapes where a call costs the same at any small
        size (a GPU's per-call floor makes batch 1 and batch 64 take about the same time).
        """
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        sizes = [b for b in default_buckets(max_batch) if b >= min(min_bucket, max_batch)]
        return BucketPlan(tuple(sizes))

    @staticmethod
    def of(sizes: Sequence[int]) -> BucketPlan:
        return BucketPlan(tuple(sorted(set(int(s) for s in sizes))))

    @property
    def max(self) -> int:
        return self.sizes[-1]

    def bucket_for(self, n: int) -> int:
        """The smallest bucket holding ``n`` rows; ``n`` must not exceed the largest bucket."""
        if n < 1:
            raise ValueError(f"a batch has at least 1 row, got {n}")
        i = bisect_left(self.sizes, n)
        if i == len(self.sizes):
            raise ValueError(f"{n} rows exceed the largest bucket {self.max}: split with chunks()")
        return self.sizes[i]

    def chunks(self, n: int) -> Iterator[Chunk]:
        """Cover ``n`` rows with calls of at most ``max`` rows, each padded to its bucket."""
        start = 0
        while start < n:
            stop = min(n, start + self.max)
            yield Chunk(start, stop, self.bucket_for(stop - start))
            start = stop

    def padded_rows(self, n: int) -> int:
        """Rows actually computed for a batch of ``n`` (``n`` plus padding)."""
        return sum(c.bucket for c in self.chunks(n))


def pad_rows(
    x: npt.NDArray[np.float32], bucket: int, out: npt.NDArray[np.generic] | None = None
) -> npt.NDArray[np.generic]:
    """``x`` [n, F] copied into a [bucket, F] array whose rows past ``n`` are zero.

    ``out`` (e.g. a pinned staging buffer, possibly float16) is filled in place and returned; the
    copy casts to ``out``'s dtype. Zero padding keeps the padded rows finite for any model.
    """
    n = x.shape[0]
    if n > bucket:
        raise ValueError(f"{n} rows do not fit a bucket of {bucket}")
    if out is None:
        out = np.zeros((bucket, *x.shape[1:]), dtype=x.dtype)
        out[:n] = x
        return out
    if out.shape[0] != bucket or out.shape[1:] != x.shape[1:]:
        raise ValueError(f"staging buffer {out.shape} does not match bucket {bucket} x {x.shape[1:]}")
    out[:n] = x
    out[n:] = 0
    return out


def unpad(out: npt.NDArray[np.generic], n: int) -> npt.NDArray[np.float32]:
    """The first ``n`` rows of a padded call's output as float32 [n, k] (a copy: buffers get reused)."""
    rows = out.reshape(out.shape[0], -1)[:n]
    return np.array(rows, dtype=np.float32, copy=True)
