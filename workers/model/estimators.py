"""The estimators ``streamscore model train`` fits, each with its way to ONNX.

* ``lightgbm``: LightGBM's ``LGBMClassifier`` (gradient-boosted trees, what most fraud and risk
  teams run), optionally with monotone constraints per input, converted by ``onnxmltools``
  (ONNX Runtime's ``TreeEnsembleClassifier``). LightGBM splits on doubles and ONNX stores
  thresholds as float32, so rows whose feature lies between the two values would flip branches
  (up to 1e-3 seen, FACTS.md); every threshold is first lowered to the nearest float32 at or below
  it, which changes no prediction for float32 inputs and makes ONNX Runtime match LightGBM.
* ``mlp``: scikit-learn's ``StandardScaler`` + ``MLPClassifier``, written to ONNX by
  ``workers/model/modelgraph.py`` rather than skl2onnx: it folds the scaler into the graph, writes
  byte-identical files for the same weights (fraud_mlp v1 is reproducible from its spec), and
  builds the float16 graph the GPU engines use (``model quantize``).

Each returns a ``Fitted``: held-out probabilities from the estimator itself (checked against ONNX
Runtime by the trainer) and the ONNX bytes with the output the manifest will name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from workers.events import F32Array

F64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MLP_DEFAULTS: dict[str, Any] = {
    "hidden_layers": [64, 64], "alpha": 1e-4, "batch_size": 256, "learning_rate_init": 1e-3,
    "max_iter": 60, "early_stopping": True, "validation_fraction": 0.1, "n_iter_no_change": 10,
}
LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 50,
    "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0,
}
ONNX_OPSET = 15  # onnxmltools 1.16 + LightGBM 4.7 refuse 17 (FACTS.md)


class EstimatorError(ValueError):
    """An estimator's parameters are wrong; the message names them."""


@dataclass
class Fitted:
    onnx: bytes
    output_name: str
    output_shape: tuple[int, ...]
    column: int  # the positive class's column of the output
    heldout_proba: F64Array  # the estimator's own P(label) on the held-out rows
    info: dict[str, Any] = field(default_factory=dict)


def _params(defaults: Mapping[str, Any], given: Mapping[str, Any], kind: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults)) if kind == "mlp" else []
    if unknown:
        raise EstimatorError(f"estimator.params {unknown} are not parameters of {kind} ({sorted(defaults)})")
    return {**defaults, **given}


def fit_mlp(x_train: F32Array, y_train: BoolArray, x_heldout: F32Array, params: Mapping[str, Any],
            seed: int, name: str) -> Fitted:
    import sklearn
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from workers.model import modelgraph

    p = _params(MLP_DEFAULTS, params, "mlp")
    hidden = tuple(int(h) for h in p["hidden_layers"])
    # BLAS single-threaded: the same seed gives a byte-identical model.onnx on the same machine.
    with threadpool_limits(limits=1):
        scaler = StandardScaler().fit(x_train.astype(np.float64))
        clf = MLPClassifier(
            hidden_layer_sizes=hidden, activation="relu", alpha=p["alpha"], batch_size=p["batch_size"],
            learning_rate_init=p["learning_rate_init"], max_iter=p["max_iter"],
            early_stopping=p["early_stopping"], validation_fraction=p["validation_fraction"],
            n_iter_no_change=p["n_iter_no_change"], random_state=seed,
        )
        clf.fit(scaler.transform(x_train.astype(np.float64)), y_train)
        proba = clf.predict_proba(scaler.transform(x_heldout.astype(np.float64)))[:, 1]
    coefs = cast(list[F64Array], clf.coefs_)
    intercepts = cast(list[F64Array], clf.intercepts_)
    model = modelgraph.build_mlp(coefs, intercepts, scaler.mean_, scaler.scale_, np.float32, name=name)
    return Fitted(model.SerializeToString(), modelgraph.OUTPUT_NAME, (-1, 1), 0, np.asarray(proba),
                  {"hidden_layers": list(hidden), "epochs": int(clf.n_iter_),
                   "sklearn_version": str(sklearn.__version__)})


def _float32_floor(t: float) -> float:
    """The largest float32 that is <= ``t``, as a double (exact in LightGBM's text format)."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)


def float32_thresholds(model_text: str) -> str:
    """A LightGBM model (text format) with every numeric split threshold lowered to a float32.

    For a float32 input x: ``x <= t`` iff ``x <= float32_floor(t)``, so predictions on float32
    inputs do not change, and ONNX (float32 thresholds) then takes the same branches.
    """
    def lower(m: re.Match[str]) -> str:
        vals = [repr(_float32_floor(float(v))) for v in m.group(1).split()]
        return "threshold=" + " ".join(vals)

    # The header's tree_sizes gives each tree's byte length, which the new numbers change; without
    # it LightGBM reads the trees one after another.
    return _TREE_SIZES_LINE.sub("", _THRESHOLD_LINE.sub(lower, model_text))


def fit_lightgbm(x_train: F32Array, y_train: BoolArray, x_heldout: F32Array, params: Mapping[str, Any],
                 seed: int, columns: Sequence[str], monotone: Mapping[str, int], name: str) -> Fitted:
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    unknown = sorted(set(monotone) - set(columns))
    if unknown:
        raise EstimatorError(f"estimator.monotone names {unknown}, which are not model inputs {list(columns)}")
    bad = {k: v for k, v in monotone.items() if v not in (-1, 0, 1)}
    if bad:
        raise EstimatorError(f"estimator.monotone values must be -1, 0 or 1: {bad}")
    p = {**LIGHTGBM_DEFAULTS, **params}
    constraints = [int(monotone.get(c, 0)) for c in columns]
    clf = lgb.LGBMClassifier(
        **p, objective="binary", random_state=seed, n_jobs=1, deterministic=True, force_row_wise=True,
        verbose=-1, monotone_constraints=constraints if any(constraints) else None,
        monotone_constraints_method="advanced" if any(constraints) else "basic",
    )
    clf.fit(x_train, y_train.astype(np.int64))  # int classes: the converter names them
    booster = lgb.Booster(model_str=float32_thresholds(clf.booster_.model_to_string()))
    proba = np.asarray(booster.predict(x_heldout), dtype=np.float64)
    clf._Booster = booster  # the converter reads the booster; same predictions on float32 inputs
    onx = onnxmltools.convert_lightgbm(
        clf, initial_types=[("features", FloatTensorType([None, len(columns)]))],
        target_opset=ONNX_OPSET, zipmap=False,
    )
    onx.graph.name = name  # the converter names the graph with a random uuid; same inputs -> same bytes
    outputs = [o.name for o in onx.graph.output]
    prob_name = next((o for o in outputs if "prob" in o), outputs[-1])
    return Fitted(onx.SerializeToString(), prob_name, (-1, 2), 1, proba,
                  {"lightgbm_version": str(lgb.__version__), "onnxmltools_version": str(onnxmltools.__version__),
                   "trees": int(booster.num_trees()), "monotone": {k: int(v) for k, v in monotone.items() if v}})


