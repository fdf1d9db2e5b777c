"""TensorRT engine: build (or load from cache) a serialized engine from the ONNX model, run it.

**Not verified in this workplace**: TensorRT's libraries come from NVIDIA's own package index,
which no machine here reaches, so this module has never run. It is written against TensorRT 10's
Python API (``Builder``, ``create_network(0)``, ``OnnxParser``, an optimization profile,
``build_serialized_network``, ``Runtime.deserialize_cuda_engine``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) and cuda-python's runtime bindings, and is tested by
``tests/unit/engines/test_tensorrt.py`` wherever ``import tensorrt`` works.

Build: one optimization profile covers every batch bucket (min 1, opt ``opt_batch``, max
``max_batch``). ``fp16`` sets ``BuilderFlag.FP16``; ``int8`` sets ``BuilderFlag.INT8`` and expects an
explicitly quantized (QDQ, symmetric int8) ONNX model, as ``streamscore model quantize`` writes:
TensorRT 10 deprecates implicit INT8 calibration. The serialized engine is cached under
``cache_dir`` keyed by sha256(model) + GPU name + TensorRT version + build settings, because a
build takes seconds to minutes and a plan only runs on the GPU and TensorRT version it was built
for.

Run: each call's rows are staged in a pinned host buffer (``cudaMallocHost``) and padded to their
bucket. Two lanes (buffers + events) and two streams give double buffering when a call spans several
chunks: the host-to-device copy of chunk k+1 runs on the copy stream while chunk k computes on the
compute stream (ordered by CUDA events). Within a single chunk, copy → compute → copy back are
sequential, since ``infer`` returns the scores.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.engines.base import EngineError
from workers.engines.bucketing import BucketPlan, Chunk

NO_TENSORRT = (
    "TensorRT is not importable here ({why}): install streamscore[tensorrt] (tensorrt>=10 and "
    "cuda-python, from NVIDIA's package index) on a CUDA machine, or set model.engine: "
    "onnxruntime-cuda or onnxruntime-cpu"
)
DEFAULT_WORKSPACE_BYTES = 1 << 30
F32 = npt.NDArray[np.float32]


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, cudart)``, imported lazily; EngineError naming what to install otherwise."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a stub package that raises on import
        raise EngineError(NO_TENSORRT.format(why=f"{type(exc).__name__}: {exc}")) from None
    try:  # cuda-python >= 12.6 moved the bindings; older releases export ``cuda.cudart``
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise EngineError(NO_TENSORRT.format(why="cuda-python is missing")) from None
    return trt, cudart


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except EngineError:
        return False
    return True


class _Cuda:
    """The few cuda-python runtime calls we need, with errors turned into EngineError."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, msg = self.rt.cudaGetErrorString(err)
            raise EngineError(f"CUDA error {err}: {msg.decode() if isinstance(msg, bytes) else msg}")
        return rest[0] if len(rest) == 1 else (None if not rest else tuple(rest))

    def host_array(self, rows: int, cols: int, dtype: Any) -> tuple[Any, int]:
        """A pinned [rows, cols] numpy view and its pointer (free with cudaFreeHost)."""
        nbytes = rows * cols * np.dtype(dtype).itemsize
        ptr = int(self(self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_char * nbytes).from_address(ptr)
        return np.frombuffer(memoryview(raw), dtype=dtype).reshape(rows, cols), ptr


def _handle(obj: Any) -> int:
    """A CUDA handle as the integer TensorRT's ``execute_async_v3`` takes."""
    try:
        return int(obj)
    except TypeError:
        return int(obj.getPtr())


@dataclass
class _Lane:
    h_in: Any
    h_in_ptr: int
    d_in: int
    h_out: Any
    h_out_ptr: int
    d_out: int
    copied: Any  # event: input is on the device
    done: Any  # event: output is back on the host
    pending: Chunk | None = None
    dirty_rows: int = 0


class TensorRTEngine:
    name = "tensorrt"

    def __init__(
        self,
        path: Path,
        device_id: int = 0,
        *,
        fp16: bool = False,
        int8: bool = False,
        max_batch: int = 65_536,
        opt_batch: int = 4_096,
        cache_dir: Path | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    ) -> None:
        self._path = path
        self._device_id = device_id
        self._fp16, self._int8 = fp16, int8
        self._max = max_batch
        # Tactics are tuned for ``opt``; GPUs saturate around a few thousand rows of an MLP.
        self._opt = min(opt_batch, max_batch)
        self._plan = BucketPlan.for_max_batch(max_batch)
        self._cache_dir = cache_dir or Path.home() / ".cache" / "streamscore" / "tensorrt"
        self._workspace = workspace_bytes
        self._lock = threading.Lock()
        self._trt: Any = None
        self._cuda: _Cuda | None = None
        self._runtime: Any = None  # must outlive the engine it deserialized
        self._engine: Any = None
        self._context: Any = None
        self._lanes: list[_Lane] = []
        self._streams: tuple[Any, Any] | None = None  # (copy, compute)
        self._in = self._out = ""
        self._in_dtype: Any = np.float32
        self._out_dtype: Any = np.float32
        self._n_features = 0
        self._width = 1
        self._gpu = ""
        self.cache_file: Path | None = None
        self.cache_hit = False

    # ---- build / cache -----------------------------------------------------------------
    def _cache_key(self, model: bytes) -> str:
        h = hashlib.sha256()
        for part in (
            hashlib.sha256(model).hexdigest(), self._gpu, str(self._trt.__version__),
            f"fp16={self._fp16}", f"int8={self._int8}", f"profile=1/{self._opt}/{self._max}",
            f"workspace={self._workspace}",
        ):
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    def _build(self, model: bytes, logger: Any) -> bytes:
        trt = self._trt
        builder = trt.Builder(logger)
        major = int(str(trt.__version__).split(".")[0])
        # TensorRT 10 networks are always explicit-batch (flag 0); 8.x needs the flag set.
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT could not parse {self._path}: {errors}")
        inp = network.get_input(0)
        n_features = int(inp.shape[1])
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace)
        if self._fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if self._int8:
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)  # layers without Q/DQ may still use fp16
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, n_features), (self._opt, n_features), (self._max, n_features))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT failed to build an engine from {self._path} (see its log above)")
        return bytes(plan)

    def _engine_bytes(self, logger: Any) -> bytes:
        model = self._path.read_bytes()
        key = self._cache_key(model)
        self.cache_file = self._cache_dir / f"{self._path.stem}-{key[:24]}.engine"
        if self.cache_file.is_file():
            self.cache_hit = True
            return self.cache_file.read_bytes()
        data = self._build(model, logger)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(self.cache_file)  # atomic: a concurrent worker never reads half a plan
        return data

    # ---- the Engine interface ----------------------------------------------------------
    def load(self) -> None:
        if not self._path.exists():
            raise EngineError(
                f"model file {self._path} not found: train it with `streamscore model train` "
                "or quantize with `streamscore model quantize`"
            )
        self._trt, cudart = import_tensorrt()
        trt, cuda = self._trt, _Cuda(cudart)
        self._cuda = cuda
        cuda(cudart.cudaSetDevice(self._device_id))
        props = cuda(cudart.cudaGetDeviceProperties(self._device_id))
        name = props.name
        self._gpu = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\0 ")
        logger = trt.Logger(trt.Logger.WARNING)
        data = self._engine_bytes(logger)
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None and self.cache_hit and self.cache_file is not None:
            self.cache_file.unlink(missing_ok=True)  # stale or corrupt plan: rebuild once
            self.cache_hit = False
            self._engine = runtime.deserialize_cuda_engine(self._engine_bytes(logger))
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize the engine for {self._path}")
        self._runtime = runtime
        self._context = self._engine.create_execution_context()
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            dtype = trt.nptype(self._engine.get_tensor_dtype(tname))
            if self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT:
                self._in, self._in_dtype = tname, dtype
                self._n_features = int(self._engine.get_tensor_shape(tname)[1])
            else:
                if self._out:
                    raise EngineError(f"{self._path}: the TensorRT engine serves models with one output; "
                                      "this one has several — use onnxruntime-cuda")
                self._out, self._out_dtype = tname, dtype
                shape = tuple(self._engine.get_tensor_shape(tname))
                self._width = int(shape[1]) if len(shape) == 2 and shape[1] > 0 else 1
        self._streams = (cuda(cudart.cudaStreamCreate()), cuda(cudart.cudaStreamCreate()))
        self._lanes = [self._lane() for _ in range(2)]

    def _lane(self) -> _Lane:
        assert self._cuda is not None
        cuda, rt, f = self._cuda, self._cuda.rt, self._n_features
        h_in, h_in_ptr = cuda.host_array(self._max, f, self._in_dtype)
        h_out, h_out_ptr = cuda.host_array(self._max, self._width, self._out_dtype)
        d_in = int(cuda(rt.cudaMalloc(h_in.nbytes)))
        d_out = int(cuda(rt.cudaMalloc(h_out.nbytes)))
        return _Lane(h_in, h_in_ptr, d_in, h_out, h_out_ptr, d_out,
                     cuda(rt.cudaEventCreate()), cuda(rt.cudaEventCreate()))

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Make ``batch_sizes`` the buckets (all within the built profile) and run each once."""
        if self._context is None:
            raise EngineError("engine used before load()")
        if batch_sizes:
            if max(batch_sizes) > self._max:
                raise EngineError(
                    f"batch size {max(batch_sizes)} exceeds the TensorRT profile's max {self._max}"
                )
            self._plan = BucketPlan.of(batch_sizes)
        for b in self._plan.sizes:
            self.infer(np.zeros((b, self._n_features), dtype=np.float32))

    def infer(self, x: F32) -> F32:
        if self._context is None or self._cuda is None or self._streams is None:
            raise EngineError("engine used before load()")
        n = int(x.shape[0])
        out = np.empty((n, self._width), dtype=np.float32)
        with self._lock:
            for i, c in enumerate(self._plan.chunks(n)):
                lane = self._lanes[i % len(self._lanes)]
                if lane.pending is not None:  # its buffers are about to be reused
                    self._collect(lane, out)
                self._enqueue(lane, x, c)
            for lane in self._lanes:
                if lane.pending is not None:
                    self._collect(lane, out)
        return out

    def _enqueue(self, lane: _Lane, x: F32, c: Chunk) -> None:
        assert self._cuda is not None and self._streams is not None
        cuda, rt = self._cuda, self._cuda.rt
        copy_s, compute_s = self._streams
        h = lane.h_in[: c.bucket]
        h[: c.rows] = x[c.start:c.stop]  # casts to float16 when the engine's input is half
        if lane.dirty_rows > c.rows:
            h[c.rows:min(lane.dirty_rows, c.bucket)] = 0
        lane.dirty_rows = c.rows if lane.dirty_rows <= c.bucket else lane.dirty_rows
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda(rt.cudaMemcpyAsync(lane.d_in, lane.h_in_ptr, h.nbytes, h2d, copy_s))
        cuda(rt.cudaEventRecord(lane.copied, copy_s))
        cuda(rt.cudaStreamWaitEvent(compute_s, lane.copied, 0))
        ctx = self._context
        if not ctx.set_input_shape(self._in, (c.bucket, self._n_features)):
            raise EngineError(f"TensorRT rejected input shape ({c.bucket}, {self._n_features})")
        ctx.set_tensor_address(self._in, lane.d_in)
        ctx.set_tensor_address(self._out, lane.d_out)
        if not ctx.execute_async_v3(_handle(compute_s)):
            raise EngineError("TensorRT execute_async_v3 failed (see its log above)")
        out_bytes = c.bucket * self._width * lane.h_out.itemsize
        cuda(rt.cudaMemcpyAsync(lane.h_out_ptr, lane.d_out, out_bytes, d2h, compute_s))
        cuda(rt.cudaEventRecord(lane.done, compute_s))
        lane.pending = c

    def _collect(self, lane: _Lane, out: F32) -> None:
        assert self._cuda is not None and lane.pending is not None
        self._cuda(self._cuda.rt.cudaEventSynchronize(lane.done))
        c = lane.pending
        out[c.start:c.stop] = lane.h_out[: c.rows]
        lane.pending = None

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": str(self._path),
            "device_id": self._device_id,
            "gpu": self._gpu,
            "tensorrt": str(getattr(self._trt, "__version__", "not loaded")),
            "fp16": self._fp16,
            "int8": self._int8,
            "profile": {"min": 1, "opt": self._opt, "max": self._max},
            "buckets": list(self._plan.sizes),
            "engine_cache": str(self.cache_file) if self.cache_file else None,
            "cache_hit": self.cache_hit,
            "input_dtype": np.dtype(self._in_dtype).name,
            "verified_here": False,
        }

    def close(self) -> None:
        if self._cuda is None:
            return
        rt = self._cuda.rt
        for lane in self._lanes:
            rt.cudaFreeHost(lane.h_in_ptr)
            rt.cudaFreeHost(lane.h_out_ptr)
            rt.cudaFree(lane.d_in)
            rt.cudaFree(lane.d_out)
            rt.cudaEventDestroy(lane.copied)
            rt.cudaEventDestroy(lane.done)
        if self._streams is not None:
            for s in self._streams:
                rt.cudaStreamDestroy(s)
        self._lanes, self._streams, self._context, self._engine = [], None, None, None
