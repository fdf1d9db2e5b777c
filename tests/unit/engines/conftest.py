"""Tiny ONNX models built with ``onnx.helper``, and their numpy reference, for engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

N_FEATURES = 4
W = np.array([[0.5], [-1.0], [0.25], [2.0]], dtype=np.float32)
B = np.array([0.1], dtype=np.float32)


def tiny_model(dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """score = sigmoid(features @ W + B), input "features" [N, 4], output "score" [N, 1]."""
    np_dt = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["features", "W", "B"], ["logit"], name="gemm0"),
            helper.make_node("Sigmoid", ["logit"], ["score"], name="sigmoid"),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", dtype, ["N", N_FEATURES])],
        [helper.make_tensor_value_info("score", dtype, ["N", 1])],
        initializer=[numpy_helper.from_array(W.astype(np_dt), "W"), numpy_helper.from_array(B.astype(np_dt), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def reference(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    logit = x.astype(np.float64) @ W.astype(np.float64) + B
    return (1.0 / (1.0 + np.exp(-logit))).reshape(-1, 1).astype(np.float32)  # [n, 1], as engines return


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    """``<tmp>/models/tiny/1/model.onnx`` (fp32) and ``model.fp16.onnx`` (float16 input/output)."""
    d = tmp_path / "models" / "tiny" / "1"
    d.mkdir(parents=True)
    onnx.save(tiny_model(), str(d / "model.onnx"))
    onnx.save(tiny_model(TensorProto.FLOAT16), str(d / "model.fp16.onnx"))
    return tmp_path / "models"


@pytest.fixture()
def tiny_path(models_dir: Path) -> Path:
    return models_dir / "tiny" / "1" / "model.onnx"


def rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal((n, N_FEATURES)).astype(np.float32)
