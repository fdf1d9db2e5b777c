"""Model manifests: what a model expects, read from ``<models_dir>/<name>/<version>/manifest.json``.

The manifest is the contract between training and serving, and a model carries it with itself:
its input spec (``inputs``, ``workers/model/inputs.py``: event fields, online features and derived
columns, in the order of the model's input matrix, ``feature_order``), which online features the
reader must fetch and in which order (``online_numeric``, ``online_strings``, as
``"view:feature"`` refs, from ``feature_service``), the value to use when a feature is missing
(``defaults``: population medians of the training data, ``""`` for strings), which output to read
and what it means (``output``: one probability, or class probabilities with their labels), named
score thresholds calibrated in training, metrics, how it was trained, and a sha256 of the ONNX
file so that a swapped file is caught at load. Format 2 (``"format": 2``).

Loading is strict: unknown or missing keys, wrong types and a checksum mismatch are errors that
name the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from workers.model.inputs import InputSpec, InputSpecError

MANIFEST_FILE = "manifest.json"


class ManifestError(ValueError):
    """A manifest could not be loaded; the message names the file and what to fix."""


FORMAT = 2


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 = dynamic (batch) dimension
    dtype: str  # numpy dtype name, e.g. "float32"
    meaning: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """Which model output the worker reads and what it means.

    ``probability``: one score per row, column ``column`` of the output (``[n, 1]`` sigmoid: 0;
    ``[n, 2]`` class probabilities of a binary classifier: 1). ``classes``: one probability per
    class, ``labels`` in column order; the verdict comes from the topology's class -> verdict map.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: Literal["probability", "classes"] = "probability"
    column: int = 0
    labels: tuple[str, ...] = ()
    meaning: str = ""

    @property
    def width(self) -> int:
        w = self.shape[1] if len(self.shape) == 2 else 1
        return w if w > 0 else (len(self.labels) if self.kind == "classes" else self.column + 1)


@dataclass(frozen=True)
class ModelManifest:
    """One model version's contract. Not hashable (``defaults`` is a mapping)."""

    name: str
    version: int
    file: str
    sha256: str
    input: TensorSpec
    output: OutputSpec
    inputs: InputSpec
    online_numeric: tuple[str, ...]
    online_strings: tuple[str, ...]
    feature_service: str | None
    defaults: Mapping[str, float | str]
    thresholds: Mapping[str, float]  # named score cut-offs (e.g. review, decline) the topology may use
    metrics: Mapping[str, float | int]
    training: Mapping[str, Any]
    directory: Path = Path(".")  # where manifest.json was read from; not serialized
    variant: Mapping[str, Any] | None = None  # quantized/fp16 variants: how made, base sha, AUCs

    @property
    def model_path(self) -> Path:
        return self.directory / self.file

    @property
    def feature_order(self) -> tuple[str, ...]:
        return self.inputs.columns

    @property
    def n_features(self) -> int:
        return len(self.feature_order)

    def numeric_defaults(self) -> list[float]:
        """Defaults of ``online_numeric``, in that order (what a reader fills for a missing row)."""
        return [float(self.defaults[r]) for r in self.online_numeric]

    def metric(self, key: str) -> float:
        v = self.metrics.get(key)
        if v is None:
            raise ManifestError(f"{self.directory / MANIFEST_FILE}: `metrics.{key}` is not recorded")
        return float(v)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "sha256": self.sha256,
            "input": {**asdict(self.input), "shape": list(self.input.shape)},
            "output": _output_dict(self.output),
            "inputs": self.inputs.to_list(),
            "feature_order": list(self.feature_order),
            "online_numeric": list(self.online_numeric),
            "online_strings": list(self.online_strings),
            "feature_service": self.feature_service,
            "defaults": dict(self.defaults),
            "thresholds": dict(self.thresholds),
            "metrics": dict(self.metrics),
            "training": dict(self.training),
        }
        if self.variant is not None:
            out["variant"] = dict(self.variant)
        return out


def _output_dict(o: OutputSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"name": o.name, "shape": list(o.shape), "dtype": o.dtype, "kind": o.kind}
    if o.kind == "probability":
        d["column"] = o.column
    else:
        d["labels"] = list(o.labels)
    if o.meaning:
        d["meaning"] = o.meaning
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


def _output(src: Path, obj: Any) -> OutputSpec:
    d = _keys(src, "output", obj, {"name", "shape", "dtype"}, frozenset({"kind", "column", "labels", "meaning"}))
    kind = _typed(src, "output.kind", d.get("kind", "probability"), str)
    if kind not in ("probability", "classes"):
        raise ManifestError(f"{src}: `output.kind` must be probability or classes, got {kind!r}")
    shape = _int_list(src, "output.shape", d["shape"])
    if len(shape) not in (1, 2):
        raise ManifestError(f"{src}: `output.shape` must be [n] or [n, k], got {list(shape)}")
    labels = _str_list(src, "output.labels", d["labels"]) if "labels" in d else ()
    column = int(_typed(src, "output.column", d.get("column", 0), int))
    width = shape[1] if len(shape) == 2 else 1
    if kind == "classes":
        if len(labels) < 2 or "column" in d:
            raise ManifestError(f"{src}: a `classes` output lists its `labels` (2 or more, in column order) "
                                "and has no `column`")
        if width > 0 and width != len(labels):
            raise ManifestError(f"{src}: output has {width} columns but {len(labels)} labels")
    else:
        if labels:
            raise ManifestError(f"{src}: `output.labels` belong to kind classes; a probability output names its `column`")
        if column < 0 or (width > 0 and column >= width):
            raise ManifestError(f"{src}: `output.column` {column} is outside the output's {width} columns")
    return OutputSpec(
        name=_typed(src, "output.name", d["name"], str), shape=shape,
        dtype=_typed(src, "output.dtype", d["dtype"], str), kind=kind,
        column=column, labels=labels, meaning=_typed(src, "output.meaning", d.get("meaning", ""), str),
    )


_TOP = {
    "format", "name", "version", "file", "sha256", "input", "output", "inputs", "online_numeric",
    "online_strings", "defaults",
}
_OPTIONAL = frozenset({"feature_order", "feature_service", "thresholds", "metrics", "training", "variant"})


def parse_manifest(raw: Any, src: Path) -> ModelManifest:
    """Validate decoded JSON into a manifest (``src`` is only used in messages and for paths)."""
    if isinstance(raw, dict) and "format" not in raw and "feature_order" in raw:
        raise ManifestError(
            f"{src}: a manifest of the first format (no `format`, no `inputs`): write it again with "
            "`streamscore model register` (or retrain), which records the model's input spec"
        )
    d = _keys(src, "manifest", raw, _TOP, _OPTIONAL)
    if d["format"] != FORMAT:
        raise ManifestError(f"{src}: manifest format {d['format']!r} is not supported (this worker reads {FORMAT})")
    num = (float, int)
    try:
        inputs = InputSpec.parse(d["inputs"], where=f"{src}: inputs")
    except InputSpecError as e:
        raise ManifestError(str(e)) from None
    if "feature_order" in d and tuple(_str_list(src, "feature_order", d["feature_order"])) != inputs.columns:
        raise ManifestError(f"{src}: `feature_order` does not match the columns the `inputs` make")
    online_numeric = _str_list(src, "online_numeric", d["online_numeric"])
    online_strings = _str_list(src, "online_strings", d["online_strings"])
    for where, refs in (("online_numeric", online_numeric), ("online_strings", online_strings)):
        for r in refs:
            if r.count(":") != 1:
                raise ManifestError(f"{src}: `{where}` entry {r!r} is not a 'view:feature' ref")
    for where, have, need in (("online_numeric", online_numeric, inputs.online_numeric),
                              ("online_strings", online_strings, inputs.online_strings)):
        if set(have) != set(need):
            raise ManifestError(
                f"{src}: `{where}` must list exactly the online features the inputs read: "
                f"missing {sorted(set(need) - set(have))}, not read {sorted(set(have) - set(need))}"
            )
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
    if (online_numeric or online_strings) and not d.get("feature_service"):
        raise ManifestError(f"{src}: the inputs read online features: name the `feature_service` that serves them")

    inp = _tensor(src, "input", d["input"])
    if len(inp.shape) != 2 or inp.shape[1] != len(inputs.columns):
        raise ManifestError(
            f"{src}: `input.shape` {list(inp.shape)} does not match the {len(inputs.columns)} columns the inputs make"
        )
    th = _typed(src, "thresholds", d.get("thresholds", {}), dict)
    thresholds = {str(k): float(_typed(src, f"thresholds.{k}", v, num)) for k, v in th.items()}
    for k, v in thresholds.items():
        if not 0.0 <= v <= 1.0:
            raise ManifestError(f"{src}: `thresholds.{k}` = {v} is not a probability in [0, 1]")
    me = _typed(src, "metrics", d.get("metrics", {}), dict)
    metrics = {str(k): _typed(src, f"metrics.{k}", v, num) for k, v in me.items()}
    fs = d.get("feature_service")
    return ModelManifest(
        name=_typed(src, "name", d["name"], str),
        version=int(_typed(src, "version", d["version"], int)),
        file=_typed(src, "file", d["file"], str),
        sha256=_typed(src, "sha256", d["sha256"], str),
        input=inp,
        output=_output(src, d["output"]),
        inputs=inputs,
        online_numeric=online_numeric,
        online_strings=online_strings,
        feature_service=_typed(src, "feature_service", fs, str) if fs is not None else None,
        defaults=defaults,
        thresholds=thresholds,
        metrics=metrics,
        training=_typed(src, "training", d.get("training", {}), dict),
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
        hint = ("check the model name and version; `streamscore model train SPEC` or "
                "`streamscore model register` write one")
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
