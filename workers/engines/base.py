"""The engine interface: ``load``, ``warm_up``, ``infer(batch) -> outputs``, ``describe``.

An engine takes a float32 matrix [n, features] in the manifest's feature order and returns the
model output the manifest names (``output.name``; the first output when None) as float32
[n, k]: k = 1 for a sigmoid score, 2 for a binary classifier's class probabilities, one column per
class otherwise. What the columns mean is the decide stage's business (``manifest.output``). It is
called once per micro-batch, from the scoring thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class EngineError(RuntimeError):
    """The engine cannot be built or run; the message says what to do."""


class Engine(Protocol):
    name: str

    def load(self) -> None: ...

    def warm_up(self, batch_sizes: list[int]) -> None: ...

    def infer(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """[n, features] -> [n, k] float32."""
        ...

    def describe(self) -> dict[str, Any]: ...


def model_file(models_dir: Path, name: str, version: str, variant: str) -> Path:
    """Where a model variant lives: fp32 is ``model.onnx``; others ``model.<variant>.onnx``."""
    base = models_dir / name / version
    return base / ("model.onnx" if variant == "fp32" else f"model.{variant}.onnx")


def default_buckets(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch`` (inclusive of max_batch itself)."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return out
