"""Model manifests: what a model expects, read from ``<models_dir>/<name>/<version>/manifest.json``.

The manifest is the contract between training and serving: the input columns in order
(``feature_order``), which online features the reader must fetch and in which order
(``online_numeric``, ``online_strings``, as ``"view:feature"`` refs), the value to use when a
feature is missing (``defaults``: population medians of the training data, ``""`` for strings),
the decision thresholds, and a sha256 of the ONNX file so that a swapped file is caught at load.

Loading is strict: unknown or missing keys, wrong types and a checksum mismatch are errors that
name the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"


class ManifestError(ValueError):
    """A manifest could not be loaded; the message names the file and what to fix."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 = dynamic (batch) dimension
    dtype: str  # numpy dtype name, e.g. "float32"
    meaning: str = ""


@dataclass(frozen=True)
class Thresholds:
    """Score cut-offs: ``score >= decline`` → decline, ``>= review`` → review, else approve."""

    review: float
    decline: float


@dataclass(frozen=True)
class Metrics:
    heldout_auc: float
    heldout_rows: int
    train_rows: int
    fraud_rate: float


@dataclass(frozen=True)
class TrainingInfo:
    seed: int
    script: str
    hidden_layers: tuple[int, ...]
    sklearn_version: str


@dataclass(frozen=True)
class ModelManifest:
    """One model version's contract. Not hashable (``defaults`` is a mapping)."""

    name: str
    version: int
    file: str
    sha256: str
    input: TensorSpec
    output: TensorSpec
    feature_order: tuple[str, ...]
    online_numeric: tuple[str, ...]
    online_strings: tuple[str, ...]
    feature_service: str
    defaults: Mapping[str, float | str]
    thresholds: Thresholds
    metrics: Metrics
    training: TrainingInfo
    directory: Path = Path(".")  # where manifest.json was read from; not serialized
    variant: Mapping[str, Any] | None = None  # quantized/fp16 variants: how made, base sha, AUCs

    @property
    def model_path(self) -> Path:
        return self.directory / self.file

    @property
    def n_features(self) -> int:
        return len(self.feature_order)

    def numeric_defaults(self) -> list[float]:
        """Defaults of ``online_numeric``, in that order (what a reader fills for a missing row)."""
        return [float(self.defaults[r]) for r in self.online_numeric]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("directory")
        if d.get("variant") is None:
            d.pop("variant", None)
        else:
            d["variant"] = dict(d["variant"])
        d["defaults"] = dict(self.defaults)
        for k in ("input", "output"):
            d[k]["shape"] = list(d[k]["shape"])
        d["training"]["hidden_layers"] = list(d["training"]["hidden_layers"])
        for k in ("feature_order", "online_numeric", "online_strings"):
            d[k] = list(d[k])
        return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(manifest: ModelManifest, directory: Path) -> Path:
    """Write ``manifest.json`` (stable key order, so re-training yields identical bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


# ---- loading -------------------------------------------------------------------------------


def _keys(
    src: Path, where: str, obj: Any, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ManifestError(f"{src}: `{where}` must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise ManifestError(
            f"{src}: unknown key(s) {unknown} in `{where}` (allowed: {sorted(required | optional)})"
        )
    missing = sorted(required - set(obj))
    if missing:
        raise ManifestError(f"{src}: missing key(s) {missing} in `{where}`")
    return obj


def _typed(src: Path, where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int subclass; a JSON true must not pass for a number.
    if isinstance(value, bool) and kind is not bool:
        raise ManifestError(f"{src}: `{where}` must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ManifestError(f"{src}: `{where}` must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _str_list(src: Path, where: str, value: Any) -> tuple[str, ...]:
    _typed(src, where, value, list)
    for i, v in enumerate(value):
        _typed(src, f"{where}[{i}]", v, str)
    if len(set(value)) != len(value):
        raise ManifestError(f"{src}: `{where}` has duplicate entries")
    return tuple(value)


def _int_list(src: Path, where: str, value: Any) -> tuple[int, ...]:
    _typed(src, where, value, list)
    return tuple(int(_typed(src, f"{where}[{i}]", v, int)) for i, v in enumerate(value))


def _tensor(src: Path, where: str, obj: Any) -> TensorSpec:
    d = _keys(src, where, obj, {"name", "shape", "dtype"}, frozenset({"meaning"}))
    return TensorSpec(
        name=_typed(src, f"{where}.name", d["name"], str),
        shape=_int_list(src, f"{where}.shape", d["shape"]),
        dtype=_typed(src, f"{where}.dtype", d["dtype"], str),
        meaning=_typed(src, f"{where}.meaning", d.get("meaning", ""), str),
    )


_TOP = {
    "name", "version", "file", "sha256", "input", "output", "feature_order", "online_numeric",
    "online_strings", "feature_service", "defaults", "thresholds", "metrics", "training",
}


def parse_manifest(raw: Any, src: Path) -> ModelManifest:
    """Validate decoded JSON into a manifest (``src`` is only used in messages and for paths)."""
    d = _keys(src, "manifest", raw, _TOP, frozenset({"variant"}))
    num = (float, int)
    feature_order = _str_list(src, "feature_order", d["feature_order"])
    online_numeric = _str_list(src, "online_numeric", d["online_numeric"])
    online_strings = _str_list(src, "online_strings", d["online_strings"])
    for where, refs in (("online_numeric", online_numeric), ("online_strings", online_strings)):
        for r in refs:
            if r.count(":") != 1:
                raise ManifestError(f"{src}: `{where}` entry {r!r} is not a 'view:feature' ref")
    defaults_raw = _typed(src, "defaults", d["defaults"], dict)
    defaults: dict[str, float | str] = {}
    for ref in online_numeric:
        if ref not in defaults_raw:
            raise ManifestError(f"{src}: `defaults` has no value for online feature {ref!r}")
        defaults[ref] = float(_typed(src, f"defaults[{ref!r}]", defaults_raw[ref], num))
    for ref in online_strings:
        if ref not in defaults_raw:
            raise ManifestError(f"{src}: `defaults` has no value for online feature {ref!r}")
        defaults[ref] = _typed(src, f"defaults[{ref!r}]", defaults_raw[ref], str)
    extra = sorted(set(defaults_raw) - set(defaults))
    if extra:
        raise ManifestError(f"{src}: `defaults` names features not in online_numeric/online_strings: {extra}")

    inp = _tensor(src, "input", d["input"])
    if len(inp.shape) != 2 or inp.shape[1] != len(feature_order):
        raise ManifestError(
            f"{src}: `input.shape` {list(inp.shape)} does not match {len(feature_order)} entries of feature_order"
        )
    th = _keys(src, "thresholds", d["thresholds"], {"review", "decline"})
    thresholds = Thresholds(
        review=float(_typed(src, "thresholds.review", th["review"], num)),
        decline=float(_typed(src, "thresholds.decline", th["decline"], num)),
    )
    if not 0.0 <= thresholds.review <= thresholds.decline <= 1.0:
        raise ManifestError(f"{src}: thresholds must satisfy 0 <= review <= decline <= 1, got {th}")
    me = _keys(src, "metrics", d["metrics"], {"heldout_auc", "heldout_rows", "train_rows", "fraud_rate"})
    tr = _keys(src, "training", d["training"], {"seed", "script", "hidden_layers", "sklearn_version"})
    return ModelManifest(
        name=_typed(src, "name", d["name"], str),
        version=int(_typed(src, "version", d["version"], int)),
        file=_typed(src, "file", d["file"], str),
        sha256=_typed(src, "sha256", d["sha256"], str),
        input=inp,
        output=_tensor(src, "output", d["output"]),
        feature_order=feature_order,
        online_numeric=online_numeric,
        online_strings=online_strings,
        feature_service=_typed(src, "feature_service", d["feature_service"], str),
        defaults=defaults,
        thresholds=thresholds,
        metrics=Metrics(
            heldout_auc=float(_typed(src, "metrics.heldout_auc", me["heldout_auc"], num)),
            heldout_rows=int(_typed(src, "metrics.heldout_rows", me["heldout_rows"], int)),
            train_rows=int(_typed(src, "metrics.train_rows", me["train_rows"], int)),
            fraud_rate=float(_typed(src, "metrics.fraud_rate", me["fraud_rate"], num)),
        ),
        training=TrainingInfo(
            seed=int(_typed(src, "training.seed", tr["seed"], int)),
            script=_typed(src, "training.script", tr["script"], str),
            hidden_layers=_int_list(src, "training.hidden_layers", tr["hidden_layers"]),
            sklearn_version=_typed(src, "training.sklearn_version", tr["sklearn_version"], str),
        ),
        directory=src.parent,
        variant=_typed(src, "variant", d["variant"], dict) if "variant" in d else None,
    )


def load_manifest(
    models_dir: Path, name: str, version: int | str, *, verify_sha256: bool = True,
    variant: str = "fp32",
) -> ModelManifest:
    """Load and validate ``<models_dir>/<name>/<version>/manifest.json``.

    ``variant`` other than fp32 reads ``manifest.<variant>.json`` (written by
    ``streamscore model quantize``). With ``verify_sha256`` the model file must exist and match
    the manifest's checksum.
    """
    fname = MANIFEST_FILE if variant == "fp32" else f"manifest.{variant}.json"
    path = Path(models_dir) / name / str(version) / fname
    if variant != "fp32" and not path.is_file():
        raise ManifestError(
            f"{path}: no such manifest — run `streamscore model quantize` to make the "
            f"{variant} variant, or set model.variant: fp32"
        )
    if not path.is_file():
        hint = "run `streamscore model train`" if name == "fraud_mlp" else "check the model name and version"
        raise ManifestError(f"{path}: no such manifest — {hint}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    m = parse_manifest(raw, path)
    if m.name != name or str(m.version) != str(version):
        raise ManifestError(
            f"{path}: manifest says {m.name!r} version {m.version}, but lives under {name}/{version}"
        )
    if verify_sha256:
        model = m.model_path
        if not model.is_file():
            raise ManifestError(f"{path}: model file {model} does not exist")
        actual = sha256_file(model)
        if actual != m.sha256:
            raise ManifestError(
                f"{path}: sha256 of {model} is {actual}, manifest says {m.sha256} — "
                "the model file was replaced without re-writing its manifest"
            )
        base_sha = (m.variant or {}).get("base_sha256")
        base = m.directory / str((m.variant or {}).get("base_file", "model.onnx"))
        if base_sha and base.is_file() and sha256_file(base) != base_sha:
            raise ManifestError(
                f"{path}: this {variant} variant was made from an earlier {base.name} (retrained "
                "since) — run `streamscore model quantize` again, or set model.variant: fp32"
            )
    return m
