"""ONNX Runtime with the CUDA execution provider: IO binding, pinned staging, bucketed shapes.

Why each piece (figures from an H100, see ../shared/gpu/README.md): a plain ``sess.run`` from numpy
spends most of its time copying the input from pageable host memory, and every call pays a
~100-150 µs floor. So, per batch:

1. the rows are written into a reusable **pinned** host staging buffer (cast to float16 there when
   the model's input is float16), padded to the batch's **bucket** (a power of two), so shapes
   repeat and buffers are allocated once;
2. the staging rows are copied into a fixed device input buffer (``OrtValue.update_inplace``: one
   ``cudaMemcpy``, a DMA at full speed because the source is pinned);
3. the session runs on IO-bound device buffers (``run_with_iobinding``): no allocation, no copy by
   ONNX Runtime; the output stays on the device until it is copied back
   (``IOBinding.copy_outputs_to_cpu``, [bucket, k] floats);
4. optionally (``cuda_graphs=True``) each bucket has its own session with ``enable_cuda_graph``
   (a captured graph has fixed shapes and addresses), so after the warm-up runs a call replays one
   graph instead of launching each kernel.

What is overlapped, honestly:

- Across micro-batches, batch k+1 is assembled (decode, features, batching) by the worker's consumer
  thread while the scoring thread runs batch k on the GPU.
- Within one ``infer`` of more rows than the largest bucket, chunks alternate between ``lanes``
  (each lane has its own sessions, hence its own CUDA stream, and its own buffers) on a small
  thread pool: the staging and host-to-device copy of chunk k+1 run while chunk k computes
  (``run_with_iobinding`` releases the GIL). ``submit`` gives callers the same overlap across
  their own batches (up to ``lanes`` in flight).
- Not overlapped: within one chunk, copy-in → compute → copy-out are sequential. ONNX Runtime's
  Python API does not let us put our copy on the session's compute stream or order it with an
  event, so the copy is a synchronous ``cudaMemcpy``. The TensorRT engine, which owns its streams,
  does overlap copies with compute on separate streams.

Pinned memory comes from ONNX Runtime itself where it can (the CUDA EP device's host-accessible
allocator, ``OrtEpDevice.memory_info(HOST_ACCESSIBLE)``), else from PyTorch if installed, else the
engine stages in pageable memory and says so in ``describe()["staging"]``.

Not yet run on a GPU in this workplace (no GPU was lent to the session that wrote it). Without a
GPU, the unit tests run this same code with CPU OrtValues through a stand-in subclass (bucketing,
padding, lanes, per-bucket sessions, IO binding, float16 staging) and check the missing-provider
error; ``@pytest.mark.gpu`` tests run it for real where the CUDA provider exists.
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from workers.engines.base import EngineError
from workers.engines.bucketing import BucketPlan, Chunk, unpad

CUDA_EP = "CUDAExecutionProvider"
NO_CUDA = (
    "ONNX Runtime has no CUDAExecutionProvider here (available: {avail}): install "
    "streamscore[gpu] (onnxruntime-gpu) on a CUDA machine, or set model.engine: onnxruntime-cpu"
)
# ORT captures a CUDA graph after a few ordinary runs; warm-up runs each bucket this many times.
GRAPH_WARMUP_RUNS = 3

_preload_lock = threading.Lock()
_preloaded = False

F32 = npt.NDArray[np.float32]


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels before any CUDA session (ORT >= 1.21)."""
    global _preloaded
    with _preload_lock:
        if _preloaded:
            return
        _preloaded = True
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception:  # a system-wide CUDA install needs no preloading
                pass


def cuda_available() -> bool:
    return CUDA_EP in ort.get_available_providers()


def _numpy_dtype(ort_type: str) -> type[np.floating[Any]]:
    if ort_type == "tensor(float)":
        return np.float32
    if ort_type == "tensor(float16)":
        return np.float16
    raise EngineError(f"model tensor type {ort_type} is not supported; export float32 or float16")


def _attr(obj: Any, name: str) -> Any:
    v = getattr(obj, name)
    return v() if callable(v) else v


def _pinned_host(rows: int, cols: int, dtype: type[np.floating[Any]], device_id: int) -> tuple[Any, Any, str]:
    """A [rows, cols] host array in page-locked memory: (numpy view, owner to keep alive, kind)."""
    nbytes = rows * cols * np.dtype(dtype).itemsize
    try:  # ORT >= 1.23: the CUDA EP device's host-accessible (pinned) allocator
        devices = [d for d in ort.get_ep_devices() if d.ep_name == CUDA_EP]
        default_mem = ort.OrtDeviceMemoryType.DEFAULT
        # Pinned memory serves copies to any GPU; prefer the ordinal's own entry all the same.
        devices.sort(key=lambda d: int(_attr(d.memory_info(default_mem), "device_id")) != device_id)
        if devices:
            mem = devices[0].memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
            if mem is None:  # without it ORT would hand back ordinary (pageable) CPU memory
                raise LookupError("no host-accessible memory info")
            owner = ort.OrtValue.ortvalue_from_shape_and_type([rows, cols], dtype, memory_info=mem)
            raw = (ctypes.c_char * nbytes).from_address(owner.data_ptr())
            view = np.frombuffer(memoryview(raw), dtype=dtype).reshape(rows, cols)
            return view, owner, "pinned (onnxruntime host-accessible allocator)"
    except Exception:
        pass
    try:
        import torch

        tdt = torch.float16 if dtype == np.float16 else torch.float32
        t = torch.empty((rows, cols), dtype=tdt, pin_memory=True)
        return t.numpy(), t, "pinned (torch)"
    except Exception:
        pass
    return np.zeros((rows, cols), dtype=dtype), None, "pageable (no pinned allocator found)"


@dataclass
class _Slot:
    """One bucket on one lane: device buffers bound once to an IOBinding of that lane's session."""

    bucket: int
    session: Any
    binding: Any
    dev_in: Any
    dev_out: Any


@dataclass
class _Lane:
    """Buffers and sessions that one call at a time uses; lanes let calls overlap."""

    index: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: Any = None  # pinned [max_bucket, F] staging; bucket b uses its first b rows
    host_owner: Any = None
    dirty_rows: int = 0  # rows of ``host`` that may hold an earlier batch (re-zeroed as padding)
    session: Any = None  # shared by all buckets unless CUDA graphs are on
    slots: dict[int, _Slot] = field(default_factory=dict)


class OnnxCudaEngine:
    name = "onnxruntime-cuda"
    # Where device buffers live and which provider must run the model. Tests without a GPU
    # subclass with ("cpu", "CPUExecutionProvider") to exercise bucketing, lanes and IO binding.
    device_type = "cuda"
    provider = CUDA_EP

    def __init__(
        self,
        path: Path,
        device_id: int = 0,
        *,
        max_batch: int = 65_536,
        cuda_graphs: bool = False,
        lanes: int = 2,
        intra_op_threads: int = 1,
        output: str | None = None,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self._path = path
        self._output = output
        self._width = 1
        self._device_id = device_id
        self._plan = BucketPlan.for_max_batch(max_batch)
        self._graphs = cuda_graphs
        self._intra = intra_op_threads
        self._lanes = [_Lane(i) for i in range(lanes)]
        self._pool: ThreadPoolExecutor | None = None
        self._next_lane = 0
        self._next_lock = threading.Lock()
        self._in = self._out = ""
        self._in_dtype: type[np.floating[Any]] = np.float32
        self._out_dtype: type[np.floating[Any]] = np.float32
        self._n_features = 0
        self._staging = "not allocated"
        self._loaded = False

    # ---- construction ------------------------------------------------------------------
    def _session(self) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._intra
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # With CUDA graphs on, ORT itself refuses (with a message) a graph that has CPU nodes;
        # "session.disable_cpu_ep_fallback" would conflict with listing the CPU provider.
        try:
            sess = ort.InferenceSession(str(self._path), sess_options=so, providers=self._providers())
        except Exception as exc:
            raise EngineError(f"could not create a CUDA session for {self._path}: {exc}") from exc
        # ORT silently falls back to CPU when the CUDA libraries fail to load: refuse that.
        if not sess.get_providers() or sess.get_providers()[0] != self.provider:
            raise EngineError(
                f"ONNX Runtime fell back to {sess.get_providers()} for {self._path}: the CUDA "
                "libraries did not load (are the nvidia-* wheels or a CUDA toolkit installed?)"
            )
        return sess

    def _providers(self) -> list[Any]:
        cuda_opts = {
            "device_id": str(self._device_id),
            "enable_cuda_graph": "1" if self._graphs else "0",
        }
        return [(CUDA_EP, cuda_opts), "CPUExecutionProvider"]

    def load(self) -> None:
        if not self._path.exists():
            raise EngineError(
                f"model file {self._path} not found: train it with `streamscore model train` "
                "or quantize with `streamscore model quantize`"
            )
        if self.provider not in ort.get_available_providers():
            raise EngineError(NO_CUDA.format(avail=ort.get_available_providers()))
        if self.provider == CUDA_EP:
            _preload_cuda_libraries()
        probe = self._session()
        inp = probe.get_inputs()[0]
        outs = {o.name: o for o in probe.get_outputs()}
        if self._output is not None and self._output not in outs:
            raise EngineError(f"{self._path} has no output {self._output!r} (its outputs: {list(outs)})")
        out = outs[self._output] if self._output is not None else probe.get_outputs()[0]
        self._in, self._out = inp.name, out.name
        width = out.shape[1] if len(out.shape) == 2 else 1
        self._width = width if isinstance(width, int) and width > 0 else 1
        self._in_dtype, self._out_dtype = _numpy_dtype(inp.type), _numpy_dtype(out.type)
        if not isinstance(inp.shape[1], int):
            raise EngineError(f"{self._path}: input {inp.name} needs a fixed feature dimension")
        self._n_features = int(inp.shape[1])
        for lane in self._lanes:
            lane.session = None if self._graphs else (probe if lane.index == 0 else self._session())
        self._pool = ThreadPoolExecutor(len(self._lanes), thread_name_prefix="cuda-lane")
        self._loaded = True

    def _reset_buffers(self) -> None:
        # Staging is sized to the largest bucket, allocated on a lane's first call (warm-up).
        for lane in self._lanes:
            with lane.lock:
                lane.host = lane.host_owner = None
                lane.dirty_rows = 0
                lane.slots.clear()

    def _slot(self, lane: _Lane, bucket: int) -> _Slot:
        slot = lane.slots.get(bucket)
        if slot is not None:
            return slot
        sess = self._session() if self._graphs else lane.session
        dev_in = ort.OrtValue.ortvalue_from_shape_and_type(
            [bucket, self._n_features], self._in_dtype, self.device_type, self._device_id
        )
        dev_out = ort.OrtValue.ortvalue_from_shape_and_type(
            [bucket, self._width], self._out_dtype, self.device_type, self._device_id
        )
        binding = sess.io_binding()
        binding.bind_ortvalue_input(self._in, dev_in)
        binding.bind_ortvalue_output(self._out, dev_out)
        slot = _Slot(bucket, sess, binding, dev_in, dev_out)
        lane.slots[bucket] = slot
        return slot

    # ---- the Engine interface ----------------------------------------------------------
    def warm_up(self, batch_sizes: list[int]) -> None:
        """Make ``batch_sizes`` the buckets, then run each once per lane (graphs: several times)."""
        if not self._loaded:
            raise EngineError("engine used before load()")
        plan = BucketPlan.of(batch_sizes) if batch_sizes else self._plan
        if plan != self._plan:
            self._plan = plan
            self._reset_buffers()
        runs = GRAPH_WARMUP_RUNS if self._graphs else 1
        zeros = np.zeros((self._plan.max, self._n_features), dtype=np.float32)
        for lane in self._lanes:
            for b in self._plan.sizes:
                for _ in range(runs):
                    self._run_chunk(lane, zeros, Chunk(0, b, b))

    def infer(self, x: F32) -> F32:
        if not self._loaded or self._pool is None:
            raise EngineError("engine used before load()")
        n = int(x.shape[0])
        if n == 0:
            return np.empty((0, self._width), dtype=np.float32)
        chunks = list(self._plan.chunks(n))
        if len(chunks) == 1:  # the common case: no thread hop on the hot path
            return self._run_chunk(self._lanes[0], x, chunks[0])
        out = np.empty((n, self._width), dtype=np.float32)
        futs = [
            (c, self._pool.submit(self._run_chunk, self._lanes[i % len(self._lanes)], x, c))
            for i, c in enumerate(chunks)
        ]
        for c, f in futs:
            out[c.start:c.stop] = f.result()
        return out

    def submit(self, x: F32) -> Future[F32]:
        """Score ``x`` on the next lane; up to ``lanes`` submitted batches overlap on the GPU."""
        if self._pool is None:
            raise EngineError("engine used before load()")
        with self._next_lock:
            i = self._next_lane
            self._next_lane = (i + 1) % len(self._lanes)
        lane = self._lanes[i]
        return self._pool.submit(self._run_on_lane, lane, x)

    def _run_on_lane(self, lane: _Lane, x: F32) -> F32:
        # Chunks run one after another here: waiting on other pool tasks could deadlock the pool.
        out = np.empty((x.shape[0], self._width), dtype=np.float32)
        for c in self._plan.chunks(int(x.shape[0])):
            out[c.start:c.stop] = self._run_chunk(lane, x, c)
        return out

    def _run_chunk(self, lane: _Lane, x: F32, c: Chunk) -> F32:
        with lane.lock:
            if lane.host is None:
                lane.host, lane.host_owner, self._staging = _pinned_host(
                    self._plan.max, self._n_features, self._in_dtype, self._device_id
                )
            slot = self._slot(lane, c.bucket)
            host = lane.host[: c.bucket]
            host[: c.rows] = x[c.start:c.stop]  # casts to float16 here when the model wants it
            if lane.dirty_rows > c.rows:
                host[c.rows:min(lane.dirty_rows, c.bucket)] = 0
            lane.dirty_rows = c.rows if lane.dirty_rows <= c.bucket else lane.dirty_rows
            slot.dev_in.update_inplace(host)
            slot.session.run_with_iobinding(slot.binding)
            return unpad(slot.binding.copy_outputs_to_cpu()[0], c.rows)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": str(self._path),
            "device_id": self._device_id,
            "providers": [self.provider, "CPUExecutionProvider"],
            "buckets": list(self._plan.sizes),
            "cuda_graphs": self._graphs,
            "lanes": len(self._lanes),
            "input_dtype": np.dtype(self._in_dtype).name,
            "staging": self._staging,
            "onnxruntime": ort.__version__,
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for lane in self._lanes:
            lane.slots.clear()
            lane.session = None
            lane.host = lane.host_owner = None
        self._loaded = False
