"""``streamscore bench engine``: engine throughput through the micro-batcher vs raw ONNX Runtime.

For every engine this machine has (ONNX Runtime CPU always; CUDA when the provider exists;
TensorRT when it imports) and two models — the demo MLP (``models/fraud_mlp/1/model.onnx``) and a
heavy MLP generated here (256 inputs, 4 hidden layers of 1024, ``modelgraph.random_mlp``) — and for
each batch size, it measures in the same run:

- **raw**: ``InferenceSession.run`` on a ready numpy batch, with the same provider and threads;
- **batcher+engine**: what the worker's scoring stage does, without Kafka: a source thread adds
  synthetic events (``EventBatch`` columns) to a ``MicroBatcher`` (``max_batch`` = the batch size)
  and submits full batches to the worker's ``ScoringStage`` (bounded queue + scoring thread;
  batches up to ``--inline-max-batch`` rows scored on the source thread while the scorer is
  idle), which takes the batch's prepared feature rows (featurize-free: a view when the events
  are consecutive), calls ``engine.infer`` and checks one score per event;
- **e2e** (``--source synthetic``): the same plus ``Decider.decide``, the decision records included.

It reports rows/s (rows over wall time), per-call p50/p99 (scoring thread: lookup + infer
[+ decide]; raw: ``run``), and ratio = rows/s / raw rows/s. The goal on CPU is ratio >= 0.8.

Bounds, so that a CPU run finishes in a few minutes on 2 cores: each figure runs about
``--seconds`` (at least ``MIN_CALLS`` calls), and the heavy model on the CPU engine stops at
``--heavy-cpu-max-batch`` (default 4096: one call of 4096 rows already takes ~1 s there).
Figures are printed and written as JSON; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from workers.model import modelgraph
from workers.pipeline.batcher import MicroBatcher
from workers.pipeline.decide import Decider, ModelInfo
from workers.pipeline.dispatch import ScoringStage
from workers.engines.base import Engine, EngineError
from workers.events import EventBatch, F32Array
from workers.model.manifest import OutputSpec
from workers.schema import EventSchema, FieldSpec
from workers.topology import BandSpec, BatchingSpec, DecisionSpec

DEFAULT_BATCHES = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
QUICK_BATCHES = (1, 16, 256)
MIN_CALLS = 3
MAX_INFLIGHT_BATCHES = BatchingSpec().max_inflight_batches  # the topology defaults
INLINE_MAX_BATCH = BatchingSpec().inline_max_batch
HEAVY_SHAPE = (256, (1024, 1024, 1024, 1024))
QUICK_HEAVY_SHAPE = (64, (128, 128))  # --quick: same family, small enough for a unit test


@dataclass(frozen=True)
class ModelCase:
    """A model to time; also what ``Decider`` needs of a model (a ``DecisionModel``)."""

    name: str  # "demo_mlp", "heavy_mlp", ...
    path: Path
    feature_order: tuple[str, ...]
    review_at: float
    decline_at: float
    output_name: str = "score"
    version: int = 0

    @property
    def output(self) -> OutputSpec:
        return OutputSpec(self.output_name, (-1, 1), "float32")

    @property
    def thresholds(self) -> dict[str, float]:
        return {"review": self.review_at, "decline": self.decline_at}


# The decide stage of the e2e mode: three verdicts by the case's thresholds, the event id echoed.
BENCH_SCHEMA = EventSchema(name="bench", version=1, fields={
    "event_id": FieldSpec(type="string"), "amount": FieldSpec(type="number")})
BENCH_DECISION = DecisionSpec(
    verdicts=("approve", "review", "decline"),
    bands=(BandSpec(verdict="review", **{"from": "review"}), BandSpec(verdict="decline", **{"from": "decline"})),
    fallback_verdict="review", echo=("event_id",))


@dataclass
class Timing:
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int


def _timing(rows: int, calls_s: list[float], wall_s: float) -> Timing:
    ms = np.asarray(calls_s) * 1e3
    return Timing(rows / wall_s if wall_s > 0 else 0.0, float(np.percentile(ms, 50)),
                  float(np.percentile(ms, 99)), len(calls_s))


# ---- models and data ---------------------------------------------------------------------------
def demo_case(path: Path) -> ModelCase:
    """The demo model; feature names and thresholds from its manifest when one is beside it."""
    mf = path.parent / "manifest.json"
    if mf.is_file():
        raw = json.loads(mf.read_text(encoding="utf-8"))
        return ModelCase("demo_mlp", path, tuple(raw["feature_order"]),
                         float(raw["thresholds"]["review"]), float(raw["thresholds"]["decline"]),
                         str(raw["output"]["name"]))
    return _generic_case("demo_mlp", path)


def _generic_case(name: str, path: Path) -> ModelCase:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    out = onnx.load(str(path)).graph.output[0].name
    return ModelCase(name, path, tuple(f"f{i}" for i in range(dims[1].dim_value)), 0.5, 0.9, out)


def heavy_case(directory: Path, quick: bool, fp16: bool = False) -> ModelCase:
    """The heavy MLP; ``fp16``: float16 weights and math behind a float32 interface."""
    n_in, hidden = QUICK_HEAVY_SHAPE if quick else HEAVY_SHAPE
    suffix = ".fp16" if fp16 else ""
    path = directory / f"heavy_mlp_{n_in}_{'x'.join(map(str, hidden))}{suffix}.onnx"
    if not path.is_file():  # deterministic bytes: a TensorRT cache keyed on them stays valid
        dtype = np.float16 if fp16 else np.float32
        onnx.save(modelgraph.random_mlp(n_in, hidden, seed=0, dtype=dtype), str(path))
    return _generic_case("heavy_mlp", path)


def synthetic_events(n: int, seed: int = 0) -> EventBatch:
    """``n`` events as decode would produce them; ``offset`` doubles as the feature-row index."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"e{i}" for i in range(n)], dtype=object)
    now_ms = time.time_ns() // 1_000_000
    return EventBatch(
        {"event_id": ids, "amount": rng.lognormal(3.5, 1.0, n)}, {},
        key=np.full(n, b"k", dtype=object), topic=np.full(n, "transactions", dtype=object),
        partition=np.zeros(n, dtype=np.int64), offset=np.arange(n, dtype=np.int64),
        received_ns=np.full(n, time.time_ns(), dtype=np.int64),
        kafka_ts_ms=np.full(n, now_ms, dtype=np.int64),
    )


def feature_rows(n: int, n_features: int, seed: int = 1) -> F32Array:
    return np.random.default_rng(seed).standard_normal((n, n_features)).astype(np.float32)


# ---- engines -------------------------------------------------------------------------------------
def available_engines() -> list[str]:
    from workers.engines.onnx_cuda import cuda_available
    from workers.engines.tensorrt_engine import tensorrt_available

    out = ["onnxruntime-cpu"]
    if cuda_available():
        out.append("onnxruntime-cuda")
    if tensorrt_available():
        out.append("tensorrt")
    return out


def make_bench_engine(
    kind: str, path: Path, threads: int, max_batch: int, cache_dir: Path, *,
    cuda_graphs: bool = False, fp16: bool = False,
) -> Engine:
    if kind == "onnxruntime-cpu":
        from workers.engines.onnx_cpu import OnnxCpuEngine

        return OnnxCpuEngine(path, threads, 1)
    if kind == "onnxruntime-cuda":
        from workers.engines.onnx_cuda import OnnxCudaEngine

        return OnnxCudaEngine(path, 0, max_batch=max_batch, cuda_graphs=cuda_graphs)
    from workers.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(path, 0, max_batch=max_batch, cache_dir=cache_dir, fp16=fp16)


def raw_session(kind: str, path: Path, threads: int) -> tuple[Any, str]:
    """The plain ONNX Runtime session an engine is compared with, and what it is."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if kind == "onnxruntime-cpu" or "CUDAExecutionProvider" not in ort.get_available_providers():
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), "onnxruntime-cpu run()"
    # TensorRT has no raw ORT twin here; ORT CUDA from numpy is the baseline a user would have.
    sess = ort.InferenceSession(str(path), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    return sess, "onnxruntime-cuda run() from numpy"


# ---- measurements --------------------------------------------------------------------------------
def time_raw(sess: Any, x: F32Array, seconds: float) -> Timing:
    name = sess.get_inputs()[0].name
    feed = {name: x.astype(np.float16) if sess.get_inputs()[0].type == "tensor(float16)" else x}
    sess.run(None, feed)  # warm
    calls: list[float] = []
    start = time.perf_counter()
    while len(calls) < MIN_CALLS or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        sess.run(None, feed)
        calls.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return _timing(len(calls) * x.shape[0], calls, wall)


def _rows_of(rows: F32Array, offsets: npt.NDArray[np.int64]) -> F32Array:
    """The prepared feature rows of a batch's events (featurize-free).

    Consecutive offsets (the normal case: one source, in order) give a view, as when batch
    assembly has written the rows in place; otherwise a gather. Feature assembly's own cost is
    what ``streamscore bench features`` measures, not this stage.
    """
    n = offsets.shape[0]
    first = offsets.item(0) if n else 0
    if n and offsets.item(n - 1) - first == n - 1:
        return rows[first:first + n]
    return rows[offsets]


def time_through_batcher(
    engine: Engine, rows: F32Array, events: EventBatch, max_calls: int, seconds: float,
    decider: Decider | None, inline_max_batch: int = INLINE_MAX_BATCH,
) -> Timing:
    """Batches of ``len(events)`` events through batcher → ``ScoringStage`` (the worker's own
    hand-off: bounded queue + scoring thread, small batches inline while the scorer is idle).

    The source stops after ``max_calls`` batches, or after ``seconds`` once ``MIN_CALLS`` went in
    (decide is far slower than inference at large batches).
    """
    batch = len(events)
    batcher = MicroBatcher(batch, max_wait_ms=5)
    per_call: list[float] = []
    failure: list[BaseException] = []

    def score(b: EventBatch) -> None:
        t = time.perf_counter()
        x = _rows_of(rows, b.offset)
        s = engine.infer(x)
        if s.shape[0] != len(b):
            raise RuntimeError(f"engine returned {s.shape[0]} rows for {len(b)}")
        if decider is not None:
            d = decider.decide(b, s, x, None, [None] * len(b), {})
            if len(d.values) != len(b):
                raise RuntimeError(f"decide gave {len(d.values)} records for {len(b)} events")
        per_call.append(time.perf_counter() - t)

    def failed(b: EventBatch, exc: Exception) -> None:
        failure.append(exc)

    stage = ScoringStage(score, failed, max_inflight=MAX_INFLIGHT_BATCHES, inline_max_batch=inline_max_batch,
                         name="bench-scorer")
    stage.start()

    def submit(b: EventBatch) -> None:
        # The worker pauses its partitions when the queue is full and resumes at half: same here,
        # so the source wakes once per few batches rather than after every one.
        while not stage.submit(b, timeout=0):
            stage.drained.clear()
            if not stage.submit(b, timeout=0):  # re-check: a set() may have raced the clear()
                stage.drained.wait()
            else:
                return

    start = time.perf_counter()
    calls = 0
    deadline = start + seconds
    while not failure and calls < max_calls and (calls < MIN_CALLS or calls % 8 or time.perf_counter() < deadline):
        calls += 1
        now = time.time_ns()
        ready = batcher.offer(events, now)
        while ready is not None:
            submit(ready)
            ready = batcher.ready(now)
    for rest in batcher.drain(time.time_ns()):
        submit(rest)
    stage.stop()
    wall = time.perf_counter() - start
    if failure:
        raise failure[0]
    return _timing(calls * batch, per_call, wall)


def _device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} CPU cores"
    if shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            if gpu:
                desc += f"; GPU {gpu.splitlines()[0]}"
        except (OSError, subprocess.SubprocessError):
            pass
    return desc


def _fmt_table(results: list[dict[str, Any]]) -> str:
    head = f"{'engine':17} {'model':10} {'mode':15} {'batch':>6} {'rows/s':>12} {'raw rows/s':>12} " \
           f"{'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'raw p50':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['engine']:17} {r['model']:10} {r['mode']:15} {r['batch']:>6} {r['rows_per_s']:>12,.0f} "
            f"{r['raw_rows_per_s']:>12,.0f} {r['ratio']:>6.2f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['raw_p50_ms']:>8.3f}"
        )
    return "\n".join(lines)


def run_bench(
    engines: list[str], cases: list[ModelCase], batches: list[int], *, seconds: float, threads: int,
    e2e: bool, heavy_cpu_max_batch: int, cache_dir: Path, cuda_graphs: bool = False,
    precision: str = "fp32", inline_max_batch: int = INLINE_MAX_BATCH, progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    for kind in engines:
        for case in cases:
            sizes = [b for b in batches
                     if not (kind == "onnxruntime-cpu" and case.name == "heavy_mlp" and b > heavy_cpu_max_batch)]
            skipped += [f"{kind}/{case.name}/batch {b} (over --heavy-cpu-max-batch)" for b in batches if b not in sizes]
            if not sizes:
                continue
            engine = make_bench_engine(kind, case.path, threads, max(sizes), cache_dir,
                                       cuda_graphs=cuda_graphs, fp16=precision == "fp16")
            engine.load()
            engine.warm_up(sorted(sizes))
            sess, raw_desc = raw_session(kind, case.path, threads)
            decider = Decider("bench", BENCH_DECISION, case, ModelInfo(case.name, "bench", "fp32", kind),
                              BENCH_SCHEMA) if e2e else None
            for b in sizes:
                rows = feature_rows(b, len(case.feature_order))
                events = synthetic_events(b)
                raw = time_raw(sess, rows, seconds)
                modes: list[tuple[str, Decider | None]] = [("batcher+engine", None)]
                if decider is not None:
                    modes.append(("e2e", decider))
                for mode, dec in modes:
                    t = time_through_batcher(engine, rows, events, max(MIN_CALLS, raw.calls), seconds, dec,
                                             inline_max_batch)
                    results.append({
                        "engine": kind, "model": case.name, "precision": precision, "batch": b, "mode": mode,
                        "rows_per_s": round(t.rows_per_s, 1), "raw_rows_per_s": round(raw.rows_per_s, 1),
                        "ratio": round(t.rows_per_s / raw.rows_per_s, 4) if raw.rows_per_s else 0.0,
                        "p50_ms": round(t.p50_ms, 4), "p99_ms": round(t.p99_ms, 4),
                        "raw_p50_ms": round(raw.p50_ms, 4), "raw_p99_ms": round(raw.p99_ms, 4),
                        "calls": t.calls, "raw_calls": raw.calls, "raw": raw_desc,
                    })
                    r = results[-1]
                    progress(f"{kind:17} {case.name:10} {mode:15} batch {b:>6}: {r['rows_per_s']:>12,.0f} rows/s "
                             f"(raw {r['raw_rows_per_s']:,.0f}, ratio {r['ratio']:.2f})")
            close = getattr(engine, "close", None)
            if callable(close):
                close()
    return {
        "device": _device(),
        "onnxruntime": ort.__version__,
        "settings": {"seconds_per_figure": seconds, "intra_op_threads": threads, "batches": batches,
                     "precision": precision, "cuda_graphs": cuda_graphs,
                     "heavy_cpu_max_batch": heavy_cpu_max_batch, "inline_max_batch": inline_max_batch,
                     "models": {c.name: str(c.path) for c in cases}},
        "skipped": skipped,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    from workers.settings import get_settings

    ap = argparse.ArgumentParser(prog="streamscore bench engine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true",
                    help=f"seconds 0.05, batches {','.join(map(str, QUICK_BATCHES))}, a small heavy model")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (1 to 65536)")
    ap.add_argument("--engines", default="auto", help="auto, or a comma list of onnxruntime-cpu, "
                    "onnxruntime-cuda, tensorrt")
    ap.add_argument("--models", default="demo,heavy", help="comma list of demo, heavy")
    ap.add_argument("--demo-model", type=Path, default=None,
                    help="default: <models_dir>/fraud_mlp/1/model.onnx")
    ap.add_argument("--seconds", type=float, default=None, help="time per figure (default 1.0)")
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads, engine and raw alike")
    ap.add_argument("--heavy-cpu-max-batch", type=int, default=4096,
                    help="largest batch the heavy model runs on CPU engines (default 4096)")
    ap.add_argument("--source", choices=["none", "synthetic"], default="none",
                    help="synthetic: also run events through batcher + engine + decide (e2e rows)")
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                    help="fp16: model.fp16.onnx beside the demo model, a float16 heavy model, "
                    "TensorRT's FP16 flag")
    ap.add_argument("--cuda-graphs", action="store_true", help="onnxruntime-cuda: CUDA graph per bucket")
    ap.add_argument("--inline-max-batch", type=int, default=INLINE_MAX_BATCH,
                    help="batches up to this size are scored on the submitting thread while the "
                    "scorer is idle, as in the worker (batching.inline_max_batch); 0 = always hand off")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the heavy model is written (default: a temporary directory)")
    args = ap.parse_args(argv)

    batches = ([int(b) for b in str(args.batches).split(",") if b.strip()] if args.batches
               else list(QUICK_BATCHES if args.quick else DEFAULT_BATCHES))
    if not batches or any(b < 1 or b > 65_536 for b in batches):
        print("--batches: sizes must be between 1 and 65536", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (0.05 if args.quick else 1.0)
    have = available_engines()
    engines = have if args.engines == "auto" else [e.strip() for e in str(args.engines).split(",") if e.strip()]
    missing = [e for e in engines if e not in have]
    if missing:
        print(f"engine(s) {missing} not available on this machine (available: {have})", file=sys.stderr)
        return 2
    settings = get_settings()
    wanted = {m.strip() for m in str(args.models).split(",") if m.strip()}
    with tempfile.TemporaryDirectory(prefix="streamscore-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases: list[ModelCase] = []
        if "demo" in wanted:
            variant = "model.fp16.onnx" if args.precision == "fp16" else "model.onnx"
            demo = args.demo_model or settings.models_dir / "fraud_mlp" / "1" / variant
            if not demo.is_file():
                print(f"demo model {demo} not found: run `streamscore model train`", file=sys.stderr)
                return 2
            cases.append(demo_case(demo))
        if "heavy" in wanted:
            cases.append(heavy_case(work, args.quick, fp16=args.precision == "fp16"))
        try:
            report = run_bench(
                engines, cases, batches, seconds=seconds, threads=args.threads,
                e2e=args.source == "synthetic", heavy_cpu_max_batch=args.heavy_cpu_max_batch,
                cache_dir=settings.state_dir / "tensorrt", cuda_graphs=args.cuda_graphs,
                precision=args.precision, inline_max_batch=args.inline_max_batch,
            )
        except EngineError as exc:
            print(f"bench engine: {exc}", file=sys.stderr)
            return 1
    print()
    print(f"device: {report['device']}")
    print(_fmt_table(report["results"]))
    for s in report["skipped"]:
        print(f"skipped: {s}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
