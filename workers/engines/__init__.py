"""Inference engines behind one interface (see ``base.Engine``); ``make_engine`` picks by topology."""

from __future__ import annotations

from pathlib import Path

from workers.engines.base import Engine, EngineError, model_file
from workers.topology import ModelSpec

__all__ = ["Engine", "EngineError", "make_engine", "model_file"]


def make_engine(spec: ModelSpec, models_dir: Path) -> Engine:
    path = model_file(models_dir, spec.name, spec.version, spec.variant)
    if spec.engine == "onnxruntime-cpu":
        from workers.engines.onnx_cpu import OnnxCpuEngine

        return OnnxCpuEngine(path, spec.intra_op_threads, spec.inter_op_threads)
    raise EngineError(
        f"engine {spec.engine!r} is not available in this build; use onnxruntime-cpu"
    )
