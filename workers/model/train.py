"""``streamscore model train SPEC``: a model from a training spec, exported as ONNX + manifest.

A training spec (YAML, e.g. ``examples/fraud/train_v2.yaml``) names the model, the topology it
serves (its event schema and feature service), the model's inputs (``workers/model/inputs.py``),
where the training set comes from (``workers/model/dataset.py``), the label, the estimator
(``workers/model/estimators.py``) and the named thresholds to calibrate. Steps:

training frame (time-ordered) -> online features as a reader would return them (missing values
get the training medians, the manifest's ``defaults``) -> the same ``Assembler`` the worker uses ->
time-ordered split (the last ``heldout_share`` of time is held out) -> fit -> ONNX -> check that
ONNX Runtime reproduces the estimator on the held-out rows -> thresholds at held-out precision
levels -> ``<models>/<name>/<version>/{model.onnx, manifest.json}``.

Deterministic: the same spec and seed give the same files on the same machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.hooks import HOOK_PATTERN
from workers.model import dataset as datasets
from workers.model.estimators import Fitted, fit_lightgbm, fit_mlp
from workers.model.fit import check_fit
from workers.model.inputs import Assembler, FrameColumns, InputSpec, InputSpecError
from workers.model.manifest import ModelManifest, OutputSpec, TensorSpec, sha256_file, write_manifest
from workers.settings import PROJECT_ROOT, Settings, get_settings
from workers.topology import TopologyError, load_topology, read_yaml_model

log = logging.getLogger("streamscore.train")

INPUT_NAME = "features"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelRefSpec(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    version: int = Field(ge=1)


class FeastDatasetSpec(_Model):
    entities: str = Field(pattern=HOOK_PATTERN, description="(seed, **params) -> entity DataFrame")
    offline_data: str | None = Field(None, pattern=HOOK_PATTERN, description="(data_dir, now, seed)")


class DatasetSpec(_Model):
    hook: str | None = Field(None, pattern=HOOK_PATTERN, description="(seed, **params) -> training frame")
    feast: FeastDatasetSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    time_column: str = Field("event_time_ms", description="the frame is sorted and split on it")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.hook is None) == (self.feast is None):
            raise ValueError("give exactly one of dataset.hook or dataset.feast")
        return self


class EstimatorSpec(_Model):
    kind: Literal["mlp", "lightgbm"]
    params: dict[str, Any] = Field(default_factory=dict)
    monotone: dict[str, int] = Field(default_factory=dict, description="lightgbm: input -> -1 / 0 / +1")


class ThresholdSpec(_Model):
    precision: float = Field(gt=0, le=1, description="lowest score with at least this held-out precision")


class TrainSpec(_Model):
    model: ModelRefSpec
    topology: str = Field(description="the topology the model serves (relative to the repository)")
    inputs: str | list[dict[str, Any]] = Field(description="input spec: a YAML file beside this one, or inline")
    dataset: DatasetSpec
    label: str
    seed: int = 7
    heldout_share: float = Field(0.2, gt=0, lt=1)
    estimator: EstimatorSpec
    thresholds: dict[str, ThresholdSpec] = Field(default_factory=dict)
    min_heldout_auc: float = Field(0.5, ge=0, le=1)
    meaning: str = Field("", description="what the score means, for the manifest")
    source_path: str = ""


def load_train_spec(path: str | Path) -> TrainSpec:
    return read_yaml_model(path, TrainSpec, "keys model, topology, inputs, dataset, ...",
                           "examples/fraud/train_v2.yaml")


def read_inputs(spec: TrainSpec) -> InputSpec:
    if isinstance(spec.inputs, list):
        return InputSpec.parse(spec.inputs, where=f"{spec.source_path}: inputs")
    p = Path(spec.source_path).parent / spec.inputs
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputSpecError(f"{spec.source_path}: inputs file {p} does not exist") from None
    return InputSpec.parse(raw, where=str(p))


def _threshold_at_precision(y: npt.NDArray[np.bool_], s: npt.NDArray[np.floating[Any]], precision: float) -> float:
    from sklearn.metrics import precision_recall_curve

    p, _, th = precision_recall_curve(y, s)
    ok = np.nonzero(p[:-1] >= precision)[0]
    # Unreachable precision: fall back to the top 0.1 % of scores.
    t = float(th[ok[0]]) if ok.size else float(np.quantile(s, 0.999))
    return round(t, 4)


def _ort_positive(model_bytes: bytes, output: str, column: int, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    out = np.asarray(sess.run([output], {INPUT_NAME: x})[0], dtype=np.float32)
    return out.reshape(out.shape[0], -1)[:, column]


def training_matrix(spec: TrainSpec, inputs: InputSpec, settings: Settings
                    ) -> tuple[pd.DataFrame, npt.NDArray[np.float32], npt.NDArray[np.bool_], int, dict[str, float | str]]:
    """The frame, the model input matrix, the labels, the training row count and the defaults."""
    topo = load_topology(PROJECT_ROOT / spec.topology)
    ds = spec.dataset
    if ds.feast is not None:
        if topo.features is None:
            raise TopologyError(f"{spec.source_path}: dataset.feast needs the topology's features.feature_service")
        frame = datasets.from_feast(ds.feast.entities, ds.feast.offline_data, topo.features.feature_service,
                                    spec.seed, ds.params, settings, ds.time_column)
    else:
        assert ds.hook is not None
        frame = datasets.from_hook(ds.hook, spec.seed, ds.params)
    if spec.label not in frame:
        raise datasets.DatasetError(f"the training frame has no label column {spec.label!r}")
    if not frame[ds.time_column].is_monotonic_increasing:
        frame = frame.sort_values(ds.time_column, kind="stable").reset_index(drop=True)
    n_train = int(len(frame) * (1.0 - spec.heldout_share))
    numeric, strings = inputs.online_numeric, inputs.online_strings
    absent = [r for r in (*numeric, *strings) if r not in frame]
    if absent:
        raise datasets.DatasetError(f"the training frame lacks online features {absent} that the inputs read")
    defaults: dict[str, float | str] = {**datasets.numeric_defaults(frame, numeric, n_train),
                                        **{r: "" for r in strings}}
    online = datasets.online_features(frame, numeric, strings, defaults)
    x = Assembler(inputs, numeric).assemble(FrameColumns.of(frame), online)
    y = frame[spec.label].to_numpy(dtype=bool)
    return frame, x, y, n_train, defaults


def train(spec: TrainSpec, out: Path | None = None, settings: Settings | None = None) -> ModelManifest:
    """Train, verify and export; returns the written manifest. Raises RuntimeError on a failed check."""
    from sklearn.metrics import roc_auc_score

    settings = settings or get_settings()
    out = out or settings.models_dir
    t0 = time.perf_counter()
    inputs = read_inputs(spec)
    topo = load_topology(PROJECT_ROOT / spec.topology)
    frame, x, y, n_train, defaults = training_matrix(spec, inputs, settings)
    log.info("training set: %d rows (%d train / %d held out), positive rate %.4f, %d inputs (%.1fs)",
             len(y), n_train, len(y) - n_train, y.mean(), x.shape[1], time.perf_counter() - t0)
    x_tr, y_tr, x_ho, y_ho = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    t1 = time.perf_counter()
    est = spec.estimator
    fitted: Fitted
    if est.kind == "mlp":
        fitted = fit_mlp(x_tr, y_tr, x_ho, est.params, spec.seed, spec.model.name)
    else:
        fitted = fit_lightgbm(x_tr, y_tr, x_ho, est.params, spec.seed, inputs.columns, est.monotone,
                              spec.model.name)
    auc = float(roc_auc_score(y_ho, fitted.heldout_proba))
    log.info("fitted %s in %.1fs: held-out AUC %.4f", est.kind, time.perf_counter() - t1, auc)
    if auc < spec.min_heldout_auc:
        raise RuntimeError(f"held-out AUC {auc:.4f} is below the spec's min_heldout_auc {spec.min_heldout_auc}")
    ort_ho = _ort_positive(fitted.onnx, fitted.output_name, fitted.column, x_ho)
    max_diff = float(np.abs(ort_ho.astype(np.float64) - fitted.heldout_proba).max())
    tolerance = 1e-5 if est.kind == "mlp" else 1e-4
    if max_diff > tolerance:
        raise RuntimeError(f"ONNX Runtime differs from {est.kind} by {max_diff:.2e} (> {tolerance})")
    log.info("ONNX Runtime vs %s on %d held-out rows: max |diff| %.2e", est.kind, len(x_ho), max_diff)

    directory = out / spec.model.name / str(spec.model.version)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.onnx"
    model_path.write_bytes(fitted.onnx)
    manifest = ModelManifest(
        name=spec.model.name,
        version=spec.model.version,
        file=model_path.name,
        sha256=sha256_file(model_path),
        input=TensorSpec(INPUT_NAME, (-1, len(inputs.columns)), "float32", "columns of feature_order"),
        output=OutputSpec(fitted.output_name, fitted.output_shape, "float32", "probability", fitted.column,
                          meaning=spec.meaning),
        inputs=inputs,
        online_numeric=inputs.online_numeric,
        online_strings=inputs.online_strings,
        feature_service=topo.features.feature_service if topo.features is not None else None,
        defaults=defaults,
        thresholds={k: _threshold_at_precision(y_ho, fitted.heldout_proba, t.precision)
                    for k, t in spec.thresholds.items()},
        metrics={"heldout_auc": round(auc, 6), "heldout_rows": int(len(y_ho)), "train_rows": n_train,
                 "positive_rate": round(float(y.mean()), 6)},
        training={"spec": _relative(spec.source_path), "estimator": est.kind, "seed": spec.seed, **fitted.info},
        directory=directory,
    )
    check_fit(manifest, topo)
    write_manifest(manifest, directory)
    log.info("wrote %s and %s (total %.1fs)", model_path, directory / "manifest.json", time.perf_counter() - t0)
    return manifest


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamscore model train", description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="training spec, e.g. examples/fraud/train_v2.yaml")
    ap.add_argument("--out", type=Path, default=None, help="models directory (default: settings' models_dir)")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("streamscore").setLevel(logging.INFO)
    logging.getLogger("feast").setLevel(logging.WARNING)  # "Registry cache expired" on every lookup
    spec = load_train_spec(args.spec)
    try:
        m = train(spec, out=args.out)
    except (RuntimeError, ValueError) as e:
        print(f"training failed: {e}", file=sys.stderr)
        return 1
    print({"model": str(m.model_path), "heldout_auc": m.metrics["heldout_auc"],
           "positive_rate": m.metrics["positive_rate"], "thresholds": dict(m.thresholds)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
