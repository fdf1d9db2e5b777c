"""TensorRT engine: real tests where ``import tensorrt`` works (marked ``tensorrt``), otherwise the
clear error and the cache key, which need no GPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.unit.engines.conftest import reference, rows
from workers.engines import EngineError, make_engine
from workers.engines.tensorrt_engine import TensorRTEngine, tensorrt_available
from workers.topology import ModelSpec

needs_trt = pytest.mark.skipif(not tensorrt_available(), reason="`import tensorrt` (and cuda-python) fail here")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_asking_for_tensorrt_without_it_names_the_fix(models_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(ModelSpec(name="tiny", version="1", engine="tensorrt"), models_dir,
                         cache_dir=tmp_path / "cache")
    with pytest.raises(EngineError) as err:
        engine.load()
    assert "streamscore[tensorrt]" in str(err.value) and "onnxruntime-cpu" in str(err.value)


def test_make_engine_maps_variants_to_files_and_flags(models_dir: Path, tmp_path: Path) -> None:
    fp16 = make_engine(ModelSpec(name="tiny", version="1", engine="tensorrt", variant="fp16"), models_dir,
                       cache_dir=tmp_path)
    assert isinstance(fp16, TensorRTEngine)
    d = fp16.describe()
    # fp16 is built from the fp32 graph with the FP16 flag; int8 needs the QDQ model.
    assert d["model"].endswith("model.onnx") and d["fp16"] and not d["int8"]
    int8 = make_engine(ModelSpec(name="tiny", version="1", engine="tensorrt", variant="int8"), models_dir,
                       cache_dir=tmp_path)
    assert int8.describe()["model"].endswith("model.int8.onnx") and int8.describe()["int8"]
    assert d["verified_here"] is False


def _keyed(path: Path, gpu: str = "NVIDIA H100", version: str = "10.9.0", **kw: bool) -> str:
    e = TensorRTEngine(path, **kw)  # type: ignore[arg-type]
    e._trt = SimpleNamespace(__version__=version)
    e._gpu = gpu
    return e._cache_key(path.read_bytes())


def test_engine_cache_key_covers_model_gpu_version_and_precision(tiny_path: Path, models_dir: Path) -> None:
    base = _keyed(tiny_path)
    assert base == _keyed(tiny_path)
    assert base != _keyed(tiny_path, gpu="NVIDIA H200")
    assert base != _keyed(tiny_path, version="10.10.0")
    assert base != _keyed(tiny_path, fp16=True)
    assert base != _keyed(models_dir / "tiny" / "1" / "model.fp16.onnx")


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_engine_builds_caches_and_matches_the_reference(tiny_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "trt-cache"
    engine = TensorRTEngine(tiny_path, max_batch=256, opt_batch=64, cache_dir=cache)
    engine.load()
    assert not engine.cache_hit and engine.cache_file is not None and engine.cache_file.is_file()
    engine.warm_up([1, 2, 4, 8, 16, 32, 64, 128, 256])
    for n in (1, 7, 256, 700):  # 700 rows: three chunks, double-buffered across two lanes
        x = rows(n, seed=n)
        np.testing.assert_allclose(engine.infer(x), reference(x), rtol=1e-3, atol=1e-4)
    engine.close()
    again = TensorRTEngine(tiny_path, max_batch=256, opt_batch=64, cache_dir=cache)
    again.load()
    assert again.cache_hit
    again.close()


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_fp16(tiny_path: Path, tmp_path: Path) -> None:
    engine = TensorRTEngine(tiny_path, fp16=True, max_batch=64, cache_dir=tmp_path)
    engine.load()
    x = rows(33)
    np.testing.assert_allclose(engine.infer(x), reference(x), atol=3e-3)
    engine.close()
