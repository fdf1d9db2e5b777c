"""Inference engines behind one interface (see ``base.Engine``); ``make_engine`` picks by topology."""

from __future__ import annotations

from pathlib import Path

from workers.engines.base import Engine, EngineError, model_file
from workers.topology import ModelSpec

__all__ = ["Engine", "EngineError", "make_engine", "model_file"]


def make_engine(
    spec: ModelSpec,
    models_dir: Path,
    *,
    max_batch: int = 65_536,
    cuda_graphs: bool | None = None,
    lanes: int = 2,
    cache_dir: Path | None = None,
    output: str | None = None,
) -> Engine:
    """The engine ``spec`` names, not yet loaded.

    ``max_batch`` bounds GPU buffers and the TensorRT profile (the topology's ``max_batch`` never
    exceeds the default). ``cuda_graphs`` None means the spec's ``cuda_graphs`` field if the
    topology schema has one, else off. TensorRT caches built engines under ``cache_dir``
    (default: ``<settings.state_dir>/tensorrt``). ``output``: the model output to return (the
    manifest's ``output.name``; None = the first).
    """
    path = model_file(models_dir, spec.name, spec.version, spec.variant)
    if spec.engine == "onnxruntime-cpu":
        from workers.engines.onnx_cpu import OnnxCpuEngine

        return OnnxCpuEngine(path, spec.intra_op_threads, spec.inter_op_threads, output=output)
    if spec.engine == "onnxruntime-cuda":
        from workers.engines.onnx_cuda import OnnxCudaEngine

        graphs = bool(getattr(spec, "cuda_graphs", False)) if cuda_graphs is None else cuda_graphs
        return OnnxCudaEngine(
            path, spec.device_id, max_batch=max_batch, cuda_graphs=graphs, lanes=lanes,
            intra_op_threads=max(1, spec.intra_op_threads), output=output,
        )
    if spec.engine == "tensorrt":
        from workers.engines.tensorrt_engine import TensorRTEngine

        if cache_dir is None:
            from workers.settings import get_settings

            cache_dir = get_settings().state_dir / "tensorrt"
        # TensorRT lowers precision itself: fp16 builds from the fp32 graph with the FP16 flag;
        # int8 needs the explicitly quantized (QDQ) model.int8.onnx.
        src = path if spec.variant == "int8" else model_file(models_dir, spec.name, spec.version, "fp32")
        return TensorRTEngine(
            src, spec.device_id, fp16=spec.variant == "fp16", int8=spec.variant == "int8",
            max_batch=max_batch, cache_dir=cache_dir,
        )
    raise EngineError(
        f"engine {spec.engine!r} is not known; use onnxruntime-cpu, onnxruntime-cuda or tensorrt"
    )
