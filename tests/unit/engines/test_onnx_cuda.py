"""The CUDA engine: real-GPU tests (marked ``gpu``, skipped without the CUDA provider) and, on any
machine, its bucketing / lanes / IO-binding logic run against CPU OrtValues through a stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.unit.engines.conftest import reference, rows
from workers.engines import EngineError, make_engine
from workers.engines.onnx_cuda import OnnxCudaEngine, cuda_available
from workers.topology import ModelSpec

needs_cuda = pytest.mark.skipif(not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider")


class CpuStandIn(OnnxCudaEngine):
    """Same code path with buffers on the CPU: what we can run where there is no GPU."""

    device_type = "cpu"
    provider = "CPUExecutionProvider"

    def _providers(self) -> list[Any]:
        return ["CPUExecutionProvider"]


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_the_provider_names_the_fix(models_dir: Path) -> None:
    engine = make_engine(ModelSpec(name="tiny", version="1", engine="onnxruntime-cuda"), models_dir)
    with pytest.raises(EngineError) as err:
        engine.load()
    msg = str(err.value)
    assert "CUDAExecutionProvider" in msg and "streamscore[gpu]" in msg and "onnxruntime-cpu" in msg


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_silent_fallback_to_cpu_is_refused(tiny_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the provider is listed (as with onnxruntime-gpu whose CUDA libraries fail to load):
    # ORT then runs on CPU without an error, which must not pass for a CUDA engine.
    real = ort.get_available_providers()
    if "CUDAExecutionProvider" in real:
        pytest.skip("real CUDA here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(EngineError, match="fell back"):
        OnnxCudaEngine(tiny_path).load()


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("lanes", [1, 2])
def test_padded_buckets_chunks_and_lanes_give_exact_scores(tiny_path: Path, graphs: bool, lanes: int) -> None:
    engine = CpuStandIn(tiny_path, max_batch=64, cuda_graphs=graphs, lanes=lanes)
    engine.load()
    engine.warm_up([1, 2, 4, 8, 16, 32, 64])
    for n in (1, 3, 64, 5, 200, 2):  # shrinking after a big batch re-zeroes stale padding
        x = rows(n, seed=n)
        s = engine.infer(x)
        assert s.shape == (n, 1) and s.dtype == np.float32
        np.testing.assert_allclose(s, reference(x), rtol=1e-5, atol=1e-6)
    assert engine.infer(rows(0)).shape == (0, 1)
    d = engine.describe()
    assert d["buckets"] == [1, 2, 4, 8, 16, 32, 64] and d["lanes"] == lanes
    engine.close()


def test_submit_overlaps_batches_and_keeps_each_result(tiny_path: Path) -> None:
    engine = CpuStandIn(tiny_path, max_batch=16, lanes=2)
    engine.load()
    xs = [rows(n, seed=n) for n in (5, 16, 40, 1)]
    futures = [engine.submit(x) for x in xs]
    for x, f in zip(xs, futures):
        np.testing.assert_allclose(f.result(), reference(x), rtol=1e-5, atol=1e-6)
    engine.close()


def test_fp16_model_gets_a_float16_staging_buffer(models_dir: Path) -> None:
    engine = CpuStandIn(models_dir / "tiny" / "1" / "model.fp16.onnx", max_batch=8)
    engine.load()
    assert engine.describe()["input_dtype"] == "float16"
    x = rows(6)
    s = engine.infer(x)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, reference(x), atol=2e-3)


def test_warm_up_before_load_is_an_error(tiny_path: Path) -> None:
    with pytest.raises(EngineError, match="before load"):
        CpuStandIn(tiny_path).warm_up([1])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_engine_matches_the_reference(tiny_path: Path, graphs: bool) -> None:
    engine = OnnxCudaEngine(tiny_path, cuda_graphs=graphs, max_batch=256)
    engine.load()
    engine.warm_up([1, 2, 4, 8, 16, 32, 64, 128, 256])
    for n in (1, 7, 256, 600):
        x = rows(n, seed=n)
        np.testing.assert_allclose(engine.infer(x), reference(x), rtol=1e-3, atol=1e-4)
    assert engine.describe()["staging"].startswith("pinned")
    engine.close()


@pytest.mark.gpu
@needs_cuda
def test_cuda_engine_runs_fp16(models_dir: Path) -> None:
    engine = make_engine(ModelSpec(name="tiny", version="1", engine="onnxruntime-cuda", variant="fp16"),
                         models_dir, max_batch=64)
    engine.load()
    engine.warm_up([1, 64])
    x = rows(50)
    np.testing.assert_allclose(engine.infer(x), reference(x), atol=3e-3)
