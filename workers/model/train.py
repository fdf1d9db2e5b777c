"""Train the fraud MLP on the generated world and export it as ONNX + manifest.

``streamscore model train`` calls ``main(argv)``; ``models/train.py`` is a thin wrapper.

Steps: generate the world (seeded) → build each transaction's online features as they were at
transaction time (card and merchant tables, the transaction's own velocity values) → the same
``featurize.assemble`` the worker uses → time-ordered split (the last 20 % of time is held out)
→ StandardScaler + MLPClassifier → ONNX via ``modelgraph`` (scaler folded in) → check that ONNX
Runtime reproduces sklearn within 1e-5 → write ``<out>/<name>/<version>/{model.onnx,manifest.json}``.

Deterministic: BLAS runs single-threaded during training, so the same seed gives a
byte-identical model.onnx on the same machine (BLAS kernels differ across CPUs, so bytes may
differ between machines).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from examples.fraud import datagen
from workers.model import featurize
from workers.model import modelgraph
from workers.events import F32Array, OnlineFeatures
from workers.model.manifest import (
    Metrics,
    ModelManifest,
    TensorSpec,
    Thresholds,
    TrainingInfo,
    sha256_file,
    write_manifest,
)

log = logging.getLogger("streamscore.train")

MODEL_NAME = "fraud_mlp"
MODEL_VERSION = 1
FEATURE_SERVICE = "fraud_model_v1"
MIN_HELDOUT_AUC = 0.90
ORT_TOLERANCE = 1e-5
HELDOUT_SHARE = 0.2
# Decision thresholds are the lowest scores at which held-out precision reaches these levels.
REVIEW_PRECISION = 0.5
DECLINE_PRECISION = 0.9


def online_features_at_txn_time(world: datagen.World, tx: pd.DataFrame, online_numeric: tuple[str, ...],
                                online_strings: tuple[str, ...]) -> OnlineFeatures:
    """What the feature reader would have returned for each transaction, as ``OnlineFeatures``.

    Card and merchant profiles are static in the generated world; velocity is the transaction's
    own "as of just before it" values. Values are cast to float32 as the reader does.
    """
    cards = world.cards.iloc[pd.Index(world.cards["card_id"]).get_indexer(tx["card_id"])].reset_index(drop=True)
    merch = world.merchants.iloc[
        pd.Index(world.merchants["merchant_id"]).get_indexer(tx["merchant_id"])
    ].reset_index(drop=True)
    sources = {"card_profile": cards, "merchant_risk": merch, "card_velocity": tx.reset_index(drop=True)}
    n = len(tx)
    numeric = np.empty((n, len(online_numeric)), dtype=np.float32)
    for j, ref in enumerate(online_numeric):
        view, feat = ref.split(":")
        numeric[:, j] = sources[view][feat].to_numpy().astype(np.float32)
    strings = {}
    for ref in online_strings:
        view, feat = ref.split(":")
        strings[ref] = sources[view][feat].to_numpy(dtype=object)
    views = ("card_profile", "merchant_risk", "card_velocity")
    none = np.zeros(n, dtype=bool)
    return OnlineFeatures(numeric, strings, {v: none for v in views}, {v: none for v in views})


def _auc(y: npt.NDArray[np.bool_], s: npt.NDArray[np.floating]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _threshold_at_precision(y: npt.NDArray[np.bool_], s: npt.NDArray[np.floating], precision: float) -> float:
    from sklearn.metrics import precision_recall_curve

    p, _, th = precision_recall_curve(y, s)
    ok = np.nonzero(p[:-1] >= precision)[0]
    # Unreachable precision: fall back to the top 0.1 % of scores.
    t = float(th[ok[0]]) if ok.size else float(np.quantile(s, 0.999))
    return round(t, 4)


def _ort_scores(model_bytes: bytes, x: F32Array) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    out = sess.run([modelgraph.OUTPUT_NAME], {modelgraph.INPUT_NAME: x})[0]
    return cast(npt.NDArray[np.float32], np.asarray(out, dtype=np.float32))


def train(
    seed: int = 7,
    out: Path = Path("models"),
    hidden: tuple[int, ...] = (64, 64),
    name: str = MODEL_NAME,
    version: int = MODEL_VERSION,
    n_txns: int = datagen.DEFAULT_N_TXNS,
) -> ModelManifest:
    """Train, verify and export; returns the written manifest. Raises RuntimeError on a failed check."""
    import sklearn
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    world = datagen.generate(seed, n_txns=n_txns)
    tx = world.transactions  # sorted by event time
    layout = featurize.Layout()
    online = online_features_at_txn_time(world, tx, layout.online_numeric, featurize.ONLINE_STRINGS_V1)
    x = featurize.assemble(featurize.Columns.from_mapping(tx), online, layout)
    y = tx["is_fraud"].to_numpy(dtype=bool)
    n_train = int(len(tx) * (1.0 - HELDOUT_SHARE))
    log.info("world: %d txns, fraud rate %.4f (%.1fs)", len(tx), y.mean(), time.perf_counter() - t0)

    t1 = time.perf_counter()
    with threadpool_limits(limits=1):
        scaler = StandardScaler().fit(x[:n_train].astype(np.float64))
        clf = MLPClassifier(
            hidden_layer_sizes=hidden,
            activation="relu",
            alpha=1e-4,
            batch_size=256,
            learning_rate_init=1e-3,
            max_iter=60,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=10,
            random_state=seed,
        )
        clf.fit(scaler.transform(x[:n_train].astype(np.float64)), y[:n_train])
        x_ho = x[n_train:]
        p_ho = clf.predict_proba(scaler.transform(x_ho.astype(np.float64)))[:, 1]
    train_s = time.perf_counter() - t1
    auc = _auc(y[n_train:], p_ho)
    log.info("trained in %.1fs (%d epochs): held-out AUC %.4f", train_s, clf.n_iter_, auc)
    if auc < MIN_HELDOUT_AUC:
        raise RuntimeError(f"held-out AUC {auc:.4f} is below the required {MIN_HELDOUT_AUC}")

    coefs = cast(list[npt.NDArray[np.float64]], clf.coefs_)
    intercepts = cast(list[npt.NDArray[np.float64]], clf.intercepts_)
    model = modelgraph.build_mlp(coefs, intercepts, scaler.mean_, scaler.scale_, np.float32, name=name)
    model_bytes = model.SerializeToString()
    ort_ho = _ort_scores(model_bytes, x_ho)[:, 0]
    max_diff = float(np.abs(ort_ho.astype(np.float64) - p_ho).max())
    if max_diff > ORT_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from sklearn by {max_diff:.2e} (> {ORT_TOLERANCE})")
    log.info("ONNX Runtime vs sklearn on %d held-out rows: max |diff| %.2e", len(x_ho), max_diff)

    directory = out / name / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.onnx"
    model_path.write_bytes(model_bytes)

    # Defaults for a missing entity: medians over the training rows of what the model saw.
    medians = np.median(x[:n_train][:, [layout.feature_order.index(r) for r in layout.online_numeric]], axis=0)
    defaults: dict[str, float | str] = {r: float(np.float32(v)) for r, v in zip(layout.online_numeric, medians)}
    defaults.update({r: "" for r in featurize.ONLINE_STRINGS_V1})
    manifest = ModelManifest(
        name=name,
        version=version,
        file=model_path.name,
        sha256=sha256_file(model_path),
        input=TensorSpec(modelgraph.INPUT_NAME, (-1, len(layout.feature_order)), "float32", "columns of feature_order"),
        output=TensorSpec(modelgraph.OUTPUT_NAME, (-1, 1), "float32", "probability that the transaction is fraud"),
        feature_order=layout.feature_order,
        online_numeric=layout.online_numeric,
        online_strings=featurize.ONLINE_STRINGS_V1,
        feature_service=FEATURE_SERVICE,
        defaults=defaults,
        thresholds=Thresholds(
            review=_threshold_at_precision(y[n_train:], p_ho, REVIEW_PRECISION),
            decline=_threshold_at_precision(y[n_train:], p_ho, DECLINE_PRECISION),
        ),
        metrics=Metrics(
            heldout_auc=round(auc, 6),
            heldout_rows=int(len(x_ho)),
            train_rows=n_train,
            fraud_rate=round(float(y.mean()), 6),
        ),
        training=TrainingInfo(
            seed=seed, script="models/train.py", hidden_layers=tuple(hidden), sklearn_version=str(sklearn.__version__)
        ),
        directory=directory,
    )
    write_manifest(manifest, directory)
    log.info("wrote %s and %s (total %.1fs)", model_path, directory / "manifest.json", time.perf_counter() - t0)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamscore model train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7, help="world and model seed (default 7)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "models",
                    help="models directory (default: the repository's models/)")
    ap.add_argument("--hidden", default="64,64", help="hidden layer widths, comma-separated (default 64,64)")
    ap.add_argument("--name", default=MODEL_NAME)
    ap.add_argument("--version", type=int, default=MODEL_VERSION)
    ap.add_argument("--n-txns", type=int, default=datagen.DEFAULT_N_TXNS, help="historical transactions")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        hidden = tuple(int(h) for h in str(args.hidden).split(",") if h.strip())
        m = train(seed=args.seed, out=args.out, hidden=hidden, name=args.name, version=args.version,
                  n_txns=args.n_txns)
    except (RuntimeError, ValueError) as e:
        print(f"training failed: {e}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "model": str(m.model_path), "heldout_auc": m.metrics.heldout_auc, "fraud_rate": m.metrics.fraud_rate,
        "thresholds": {"review": m.thresholds.review, "decline": m.thresholds.decline},
    }
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
