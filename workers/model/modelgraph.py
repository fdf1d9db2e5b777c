"""Build MLP scoring graphs directly with ``onnx.helper`` (no converter library).

Graph: input ``"features"`` float32 [N, F] → ``(x - mean) * inv_std`` (a StandardScaler folded
into the graph) → (Gemm → Relu) per hidden layer → Gemm → Sigmoid → output ``"score"`` float32
[N, 1]. Weights are stored as sklearn keeps them: ``W[i]`` has shape [in, out].

``dtype=np.float16``: the interface stays float32 (the worker never changes). Standardization
runs in float32 (it has the widest dynamic range), then a Cast to float16 feeds float16 Gemm /
Relu / Sigmoid with float16 initializers, and a final Cast returns float32. Useful on GPUs; on
ONNX Runtime's CPU provider float16 Gemm may be missing or slow.

Models are deterministic: same weights → byte-identical serialization (no timestamps, fixed
names, fixed producer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "features"
OUTPUT_NAME = "score"
OPSET = 17
# IR 8 is what opset 17 shipped with; every onnxruntime since 1.13 loads it (the project pins >= 1.20).
IR_VERSION = 8
PRODUCER = "streamscore.modelgraph"

FloatArray = npt.NDArray[np.floating]


def _onnx_type(dtype: type[np.floating] | np.dtype[np.floating]) -> int:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return TensorProto.FLOAT
    if dt == np.float16:
        return TensorProto.FLOAT16
    raise ValueError(f"dtype must be float32 or float16, got {dt}")


def build_mlp(
    weights: Sequence[FloatArray],
    biases: Sequence[FloatArray],
    mean: FloatArray,
    scale: FloatArray,
    dtype: type[np.floating] | np.dtype[np.floating] = np.float32,
    *,
    name: str = "mlp",
) -> onnx.ModelProto:
    """ONNX model computing ``sigmoid(MLP((x - mean) / scale))`` with ReLU hidden layers.

    ``weights[i]``: [in_i, out_i]; ``biases[i]``: [out_i]; the last layer must have one output.
    ``scale`` entries of 0 are treated as 1 (a constant column, as StandardScaler does).
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError("need one bias per weight matrix, and at least one layer")
    n_in = int(np.asarray(weights[0]).shape[0])
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if mean.shape != (n_in,) or scale.shape != (n_in,):
        raise ValueError(f"mean and scale must have shape ({n_in},), got {mean.shape} and {scale.shape}")
    prev = n_in
    for i, (w, b) in enumerate(zip(weights, biases)):
        w, b = np.asarray(w), np.asarray(b)
        if w.ndim != 2 or w.shape[0] != prev or b.shape != (w.shape[1],):
            raise ValueError(f"layer {i}: weight {w.shape} / bias {b.shape} do not chain from width {prev}")
        prev = int(w.shape[1])
    if prev != 1:
        raise ValueError(f"the last layer must have 1 output (a score), has {prev}")

    elem = _onnx_type(dtype)
    np_dt = np.dtype(dtype)
    inv_std = 1.0 / np.where(scale == 0.0, 1.0, scale)
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "scaler_mean"),
        numpy_helper.from_array(inv_std.astype(np.float32), "scaler_inv_std"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "scaler_mean"], ["centered"], name="scaler_sub"),
        helper.make_node("Mul", ["centered", "scaler_inv_std"], ["scaled"], name="scaler_mul"),
    ]
    x = "scaled"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["scaled_cast"], to=elem, name="cast_in"))
        x = "scaled_cast"
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits.append(numpy_helper.from_array(np.asarray(w).astype(np_dt), f"W{i}"))
        inits.append(numpy_helper.from_array(np.asarray(b).astype(np_dt), f"B{i}"))
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [f"gemm{i}"], name=f"gemm{i}"))
        if i < last:
            nodes.append(helper.make_node("Relu", [f"gemm{i}"], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    if elem == TensorProto.FLOAT:
        nodes.append(helper.make_node("Sigmoid", [f"gemm{last}"], [OUTPUT_NAME], name="sigmoid"))
    else:
        nodes.append(helper.make_node("Sigmoid", [f"gemm{last}"], ["prob"], name="sigmoid"))
        nodes.append(helper.make_node("Cast", ["prob"], [OUTPUT_NAME], to=TensorProto.FLOAT, name="cast_out"))

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version="1",
    )
    onnx.checker.check_model(model)
    return model


def forward_numpy(
    weights: Sequence[FloatArray], biases: Sequence[FloatArray], mean: FloatArray, scale: FloatArray, x: FloatArray
) -> npt.NDArray[np.float64]:
    """Reference forward pass in float64 (what the graph computes), [N, 1]."""
    scale64 = np.asarray(scale, dtype=np.float64)
    h = (np.asarray(x, dtype=np.float64) - np.asarray(mean, dtype=np.float64)) / np.where(scale64 == 0.0, 1.0, scale64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ np.asarray(w, dtype=np.float64) + np.asarray(b, dtype=np.float64)
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return np.asarray(1.0 / (1.0 + np.exp(-h)), dtype=np.float64)


def random_weights(
    n_in: int, hidden: Sequence[int], seed: int
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """He-initialized weights (and small biases) for an MLP n_in → hidden... → 1."""
    rng = np.random.default_rng(seed)
    sizes = [n_in, *hidden, 1]
    ws = [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])
    ]
    bs = [(rng.standard_normal(b) * 0.01).astype(np.float32) for b in sizes[1:]]
    return ws, bs


def random_mlp(
    n_in: int = 256,
    hidden: Sequence[int] = (1024, 1024, 1024, 1024),
    seed: int = 0,
    dtype: type[np.floating] | np.dtype[np.floating] = np.float32,
) -> onnx.ModelProto:
    """A synthetic MLP of the same shape family, for heavy-model benchmarks (identity scaler).

    The default 256 → 1024×4 → 1 has about 3.4 M parameters (~13 MB float32).
    """
    ws, bs = random_weights(n_in, hidden, seed)
    return build_mlp(ws, bs, np.zeros(n_in), np.ones(n_in), dtype, name=f"random_mlp_{n_in}_{'x'.join(map(str, hidden))}")
