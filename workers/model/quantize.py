"""``streamscore model quantize``: INT8 and FP16 variants of a trained model, each checked on held-out data.

From ``<models>/<name>/<version>/model.onnx`` (its manifest must verify) this writes

- ``model.int8.onnx``: ONNX Runtime *static* quantization in QDQ format, calibrated on a seeded
  sample of the training rows; int8 weights per output channel and int8 activations, both
  symmetric. Activation ranges are the 99.99th percentile of |value|, not the min/max: a few
  extreme feature values (velocity sums, amount ratios) would otherwise stretch the range so far
  that ordinary rows lose their resolution (measured: MinMax drops AUC by up to 0.007 depending on
  the sample, percentile by under 0.001). Static, because dynamic quantization re-measures activation ranges on every call,
  which costs more than it saves on a small MLP; symmetric int8 with QDQ, because that is also the
  form TensorRT's explicit quantization accepts, so one file serves the CPU and TensorRT engines.
- ``model.fp16.onnx``: float16 weights and math for GPUs (``convert_float_to_float16``). The input
  standardization (the nodes before the first Gemm/MatMul) stays float32, where raw feature values
  keep their range. The interface stays float32 unless ``--fp16-io`` (then the input is float16,
  halving host-to-device copies, at the cost of a float32→float16 cast on the CPU per batch).

and next to each a ``manifest.<variant>.json``: the fp32 manifest with ``file``, ``sha256`` and
``metrics.heldout_auc`` of the variant, plus a ``variant`` object recording the fp32 AUC on the same
rows, the drop and the limit. The held-out set is regenerated from the training spec the manifest
records (``training.spec``: same dataset, same seed, the same input ``Assembler``, the last rows in
time after ``train_rows``); its fp32 AUC must reproduce the manifest's, or nothing is written.
Tree ensembles are refused: they have nothing to quantize.

A variant whose AUC is more than ``--max-auc-drop`` (default 0.005) below fp32 is refused: its file
is not written (an earlier one is left as it was), and the command exits 2. Same inputs give
byte-identical outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from workers.events import F32Array
from workers.model.manifest import ManifestError, ModelManifest, load_manifest, sha256_file

log = logging.getLogger("streamscore.quantize")

DEFAULT_MAX_AUC_DROP = 0.005
DEFAULT_CALIBRATION_ROWS = 20_000
CALIBRATION_PERCENTILE = 99.99
CALIBRATION_BATCH = 500
# The regenerated fp32 AUC must equal the manifest's to this precision (it is stored rounded to 6
# places; ONNX Runtime and sklearn agree within 1e-5 on scores).
REPRODUCE_TOLERANCE = 1e-4
EXIT_REFUSED = 2
BoolArray = npt.NDArray[np.bool_]


class QuantizeError(RuntimeError):
    """Quantization cannot proceed; the message says why and what to do."""


def heldout(manifest: ModelManifest) -> tuple[F32Array, BoolArray, F32Array]:
    """``(x_heldout, y_heldout, x_train)`` regenerated from the training spec the manifest names."""
    from workers.model.train import load_train_spec, training_matrix
    from workers.settings import PROJECT_ROOT, get_settings

    spec_path = manifest.training.get("spec")
    if not spec_path:
        raise QuantizeError(f"model {manifest.name} v{manifest.version} records no training spec "
                            "(`training.spec`): its held-out rows cannot be regenerated")
    spec = load_train_spec(PROJECT_ROOT / str(spec_path))
    _, x, y, n_train, _ = training_matrix(spec, manifest.inputs, get_settings())
    if n_train != int(manifest.metric("train_rows")) or len(y) - n_train != int(manifest.metric("heldout_rows")):
        raise QuantizeError(f"the regenerated training set has {n_train} + {len(y) - n_train} rows, the manifest "
                            f"says {manifest.metric('train_rows'):.0f} + {manifest.metric('heldout_rows'):.0f}")
    return x[n_train:], y[n_train:], x[:n_train]


def check_quantizable(manifest: ModelManifest) -> None:
    ops = {n.op_type for n in onnx.load(str(manifest.model_path)).graph.node}
    trees = sorted(o for o in ops if o.startswith("TreeEnsemble"))
    if trees:
        raise QuantizeError(f"model {manifest.name} v{manifest.version} is a tree ensemble ({trees[0]}): "
                            "its thresholds and leaf values have nothing to gain from int8 or fp16")


def scores(model: Path, x: F32Array, output: str, column: int) -> npt.NDArray[np.float32]:
    """Scores [n] (column ``column`` of ``output``) from ONNX Runtime's CPU provider; a float16
    input gets x cast to float16."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    feed = x.astype(np.float16) if inp.type == "tensor(float16)" else x
    out = np.asarray(sess.run([output], {inp.name: feed})[0], dtype=np.float32)
    return out.reshape(out.shape[0], -1)[:, column]


def auc(y: BoolArray, s: npt.NDArray[np.floating[Any]]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


class _QuietPreprocessHint(logging.Filter):
    # ORT's quantizer logs "consider pre-processing" on the root logger; an MLP with static shapes
    # gains nothing from it, and the hint would read like a problem.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


def quantize_int8(src: Path, dst: Path, calibration: F32Array, input_name: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, F32Array] | None:
            i = next(self._it, None)
            return None if i is None else {input_name: calibration[i:i + CALIBRATION_BATCH]}

    quiet = _QuietPreprocessHint()
    logging.getLogger().addFilter(quiet)
    try:
        # The percentile calibrator prints progress on stdout; ours is the summary lines.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(src), str(dst), Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Gemm", "MatMul"],
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={
                    "ActivationSymmetric": True, "WeightSymmetric": True,
                    "CalibPercentile": CALIBRATION_PERCENTILE,
                },
            )
    finally:
        logging.getLogger().removeFilter(quiet)


def convert_fp16(src: Path, dst: Path, fp16_io: bool) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    block: list[str] = []
    for node in model.graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if node.op_type in ("Gemm", "MatMul"):
            break
        block.append(node.name)
    keep_io: bool | list[str] = [o.name for o in model.graph.output] if fp16_io else True
    m16 = convert_float_to_float16(model, keep_io_types=keep_io, node_block_list=block)
    onnx.save(m16, str(dst))


def variant_manifest(
    base: ModelManifest, variant: str, path: Path, variant_auc: float, fp32_auc: float,
    max_drop: float, method: str, input_dtype: str,
) -> dict[str, Any]:
    d = base.to_dict()
    d["file"] = path.name
    d["sha256"] = sha256_file(path)
    d["input"]["dtype"] = input_dtype
    d["metrics"]["heldout_auc"] = round(variant_auc, 6)
    d["variant"] = {
        "name": variant,
        "method": method,
        "base_file": base.file,
        "base_sha256": base.sha256,
        "fp32_heldout_auc": round(fp32_auc, 6),
        "auc_drop": round(fp32_auc - variant_auc, 6),
        "max_auc_drop": max_drop,
    }
    return d


def _input_dtype(path: Path) -> str:
    elem = onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type
    return "float16" if elem == onnx.TensorProto.FLOAT16 else "float32"


def main(argv: list[str] | None = None) -> int:
    from workers.settings import get_settings

    ap = argparse.ArgumentParser(prog="streamscore model quantize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="fraud_mlp", help="model name (default fraud_mlp)")
    ap.add_argument("--version", default="1", help="model version (default 1)")
    ap.add_argument("--models-dir", type=Path, default=None, help="default: settings.models_dir")
    ap.add_argument("--variants", default="int8,fp16", help="comma-separated: int8, fp16")
    ap.add_argument("--max-auc-drop", type=float, default=DEFAULT_MAX_AUC_DROP,
                    help=f"refuse a variant whose held-out AUC drops more (default {DEFAULT_MAX_AUC_DROP})")
    ap.add_argument("--calibration-rows", type=int, default=DEFAULT_CALIBRATION_ROWS,
                    help="training rows sampled to calibrate int8 activation ranges")
    ap.add_argument("--fp16-io", action="store_true", help="fp16: make the model input float16 too")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in str(args.variants).split(",") if v.strip()]
    unknown = sorted(set(variants) - {"int8", "fp16"})
    if unknown:
        print(f"unknown variant(s) {unknown}: choose from int8, fp16", file=sys.stderr)
        return 1
    models_dir: Path = args.models_dir or get_settings().models_dir
    try:
        manifest = load_manifest(models_dir, args.name, args.version)
        check_quantizable(manifest)
        x_ho, y_ho, x_train = heldout(manifest)
        out_name, out_col = manifest.output.name, manifest.output.column
        fp32_auc = auc(y_ho, scores(manifest.model_path, x_ho, out_name, out_col))
        if abs(fp32_auc - manifest.metric("heldout_auc")) > REPRODUCE_TOLERANCE:
            raise QuantizeError(
                f"the regenerated held-out set gives fp32 AUC {fp32_auc:.6f}, the manifest says "
                f"{manifest.metric('heldout_auc'):.6f}: the data generator or the input spec changed "
                "since training — re-train with `streamscore model train SPEC`, then quantize"
            )
    except (ManifestError, QuantizeError, ValueError) as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 1
    print(f"fp32  held-out AUC {fp32_auc:.6f} on {len(y_ho)} rows ({manifest.model_path})")

    refused = 0
    rng = np.random.default_rng(int(manifest.training.get("seed", 7)))
    n_cal = min(args.calibration_rows, len(x_train))
    calibration = x_train[np.sort(rng.choice(len(x_train), n_cal, replace=False))]
    directory = manifest.model_path.parent
    for variant in variants:
        final = directory / f"model.{variant}.onnx"
        with tempfile.TemporaryDirectory(prefix="streamscore-quantize-") as tmp:
            candidate = Path(tmp) / final.name
            if variant == "int8":
                quantize_int8(manifest.model_path, candidate, calibration, manifest.input.name)
                method = (f"onnxruntime quantize_static QDQ s8s8 per-channel, percentile "
                          f"{CALIBRATION_PERCENTILE} calibration on {n_cal} training rows")
            else:
                convert_fp16(manifest.model_path, candidate, args.fp16_io)
                method = "onnxruntime convert_float_to_float16, standardization kept float32" + (
                    ", float16 input" if args.fp16_io else ", float32 interface")
            v_auc = auc(y_ho, scores(candidate, x_ho, out_name, out_col))
            drop = fp32_auc - v_auc
            if drop > args.max_auc_drop:
                print(
                    f"{variant:5} held-out AUC {v_auc:.6f}: {drop:.6f} below fp32 exceeds "
                    f"--max-auc-drop {args.max_auc_drop}; refusing, {final} not written",
                    file=sys.stderr,
                )
                refused += 1
                continue
            part = directory / f".{final.name}.part"
            part.write_bytes(candidate.read_bytes())
            part.replace(final)  # atomic: a worker starting now sees the old file or the new one
        doc = variant_manifest(manifest, variant, final, v_auc, fp32_auc, args.max_auc_drop, method,
                               _input_dtype(final))
        mpath = directory / f"manifest.{variant}.json"
        mpath.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"{variant:5} held-out AUC {v_auc:.6f} (drop {drop:+.6f}, limit {args.max_auc_drop}) "
              f"-> {final} + {mpath.name}")
    return EXIT_REFUSED if refused else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
