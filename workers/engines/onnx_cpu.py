"""ONNX Runtime on CPU: the default engine, and the one CI runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from workers.engines.base import EngineError


class OnnxCpuEngine:
    name = "onnxruntime-cpu"

    def __init__(self, path: Path, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 output: str | None = None) -> None:
        self._path = path
        self._output = output
        self._intra = intra_op_threads
        self._inter = inter_op_threads
        self._sess: ort.InferenceSession | None = None
        self._in = ""
        self._out = ""
        self._n_features = 0
        self._run: Any = None

    def load(self) -> None:
        if not self._path.exists():
            raise EngineError(
                f"model file {self._path} not found: train it with `streamscore model train` "
                "or quantize with `streamscore model quantize`"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._intra
        so.inter_op_num_threads = self._inter
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Thread spinning burns the cores the consumer and feature reader need.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sess = ort.InferenceSession(
            str(self._path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        inp = self._sess.get_inputs()[0]
        self._in = inp.name
        outs = [o.name for o in self._sess.get_outputs()]
        if self._output is not None and self._output not in outs:
            raise EngineError(f"{self._path} has no output {self._output!r} (its outputs: {outs}); "
                              "fix `output.name` in the model's manifest")
        self._out = self._output or outs[0]
        self._n_features = int(inp.shape[1])
        # InferenceSession.run re-validates the input names and builds the output list on every
        # call (~1 µs, 15% of a one-row call of the demo model); the native session under it
        # takes the same arguments. Where a future ONNX Runtime hides it, the public run is used.
        run = getattr(getattr(self._sess, "_sess", None), "run", None)
        self._run = run if callable(run) else None

    @property
    def session(self) -> ort.InferenceSession:
        if self._sess is None:
            raise EngineError("engine used before load()")
        return self._sess

    def warm_up(self, batch_sizes: list[int]) -> None:
        for b in batch_sizes:
            self.infer(np.zeros((b, self._n_features), dtype=np.float32))

    def infer(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._run is not None:
            out = self._run([self._out], {self._in: x}, None)[0]
        else:
            out = self.session.run([self._out], {self._in: x})[0]
        if out.dtype != np.float32:
            out = out.astype(np.float32)
        return out.reshape(out.shape[0], -1)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": str(self._path),
            "providers": self.session.get_providers() if self._sess else [],
            "intra_op_threads": self._intra,
            "onnxruntime": ort.__version__,
        }
