from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.engines.conftest import N_FEATURES, reference, rows
from workers.engines import EngineError, make_engine
from workers.engines.base import default_buckets
from workers.engines.onnx_cpu import OnnxCpuEngine
from workers.topology import ModelSpec


def test_scores_match_the_reference_for_any_batch_size(tiny_path: Path) -> None:
    engine = OnnxCpuEngine(tiny_path, intra_op_threads=1)
    engine.load()
    engine.warm_up(default_buckets(64))
    for n in (1, 3, 64, 1000):
        x = rows(n, seed=n)
        s = engine.infer(x)
        assert s.dtype == np.float32 and s.shape == (n, 1)
        np.testing.assert_allclose(s, reference(x), rtol=1e-5, atol=1e-6)


def test_one_bad_row_does_not_change_the_others(tiny_path: Path) -> None:
    engine = OnnxCpuEngine(tiny_path)
    engine.load()
    x = rows(8)
    clean = engine.infer(x)
    x[3] = np.nan
    s = engine.infer(x)
    assert s.shape == (8, 1) and np.isnan(s[3, 0])
    np.testing.assert_array_equal(np.delete(s, 3), np.delete(clean, 3))


def test_describe_names_engine_and_threads(tiny_path: Path) -> None:
    engine = OnnxCpuEngine(tiny_path, intra_op_threads=2)
    engine.load()
    d = engine.describe()
    assert d["engine"] == "onnxruntime-cpu" and d["intra_op_threads"] == 2
    assert d["providers"] == ["CPUExecutionProvider"]


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="streamscore model"):
        OnnxCpuEngine(tmp_path / "nope.onnx").load()


def test_use_before_load_is_an_error(tiny_path: Path) -> None:
    with pytest.raises(EngineError, match="before load"):
        OnnxCpuEngine(tiny_path).infer(rows(1))


def test_make_engine_builds_the_cpu_engine_for_each_variant(models_dir: Path) -> None:
    e = make_engine(ModelSpec(name="tiny", version="1"), models_dir)
    assert e.name == "onnxruntime-cpu"
    e.load()
    assert e.infer(rows(2)).shape == (2, 1)
    int8 = make_engine(ModelSpec(name="tiny", version="1", variant="int8"), models_dir)
    with pytest.raises(EngineError, match="model.int8.onnx"):  # not quantized in this fixture
        int8.load()


def test_input_width_is_what_the_model_declares(tiny_path: Path) -> None:
    engine = OnnxCpuEngine(tiny_path)
    engine.load()
    engine.warm_up([1, 2])
    assert engine.session.get_inputs()[0].shape[1] == N_FEATURES
