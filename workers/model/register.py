"""``streamscore model register``: a model trained elsewhere, given a manifest and checked.

    streamscore model register --model path/to/model.onnx --spec path/to/register.yaml [--force]

The spec (YAML) says what the ONNX file cannot: the model's name and version, the topology it
serves, its input spec (``workers/model/inputs.py``; a file beside the spec or inline), which output
to read and what it means (``{name, kind: probability, column}`` or ``{name, kind: classes,
labels}``), the value of every online feature for an entity the store does not know
(``defaults``), named score thresholds, and metrics worth keeping::

    model: {name: ato_gbm, version: 1}
    topology: topologies/ato.yaml
    inputs: inputs.yaml
    output: {name: probabilities, kind: probability, column: 1}
    defaults: {"user_profile:account_age_days": 400, "user_profile:home_country": ""}
    thresholds: {step_up: 0.3, block: 0.8}

The file is copied to ``<models>/<name>/<version>/model.onnx`` with its sha256; then everything
the worker would check at start is checked now: the ONNX input is one float matrix as wide as the
inputs, the output exists and fits its kind, the inputs fit the topology's schema and feature
service (the Feast registry, when applied), ONNX Runtime loads the model and scores a batch, and
the topology's decision section fits the output (bands and their thresholds, or classes). Nothing
is written unless all of that holds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from workers.model.fit import check_fit
from workers.model.inputs import InputSpec
from workers.model.manifest import (
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
    OutputSpec,
    TensorSpec,
    load_manifest,
    sha256_file,
    write_manifest,
)
from workers.settings import PROJECT_ROOT, Settings, get_settings
from workers.topology import load_topology, read_yaml_model


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelRef(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    version: int = Field(ge=1)


class OutputRef(_Model):
    name: str | None = Field(None, description="the ONNX output to read (default: the first float one)")
    kind: Literal["probability", "classes"] = "probability"
    column: int | None = Field(None, ge=0, description="probability: its column (default: the last)")
    labels: list[str] | None = Field(None, description="classes: one label per column, in order")


class RegisterSpec(_Model):
    model: ModelRef
    topology: str
    inputs: str | list[dict[str, Any]]
    output: OutputRef = OutputRef()
    defaults: dict[str, float | int | str] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float | int] = Field(default_factory=dict)
    meaning: str = ""
    source_path: str = ""


class RegisterError(ValueError):
    """The model cannot be registered as specified; the message says what to fix."""


def read_input_spec(inputs: str | list[dict[str, Any]], source_path: str) -> InputSpec:
    if isinstance(inputs, list):
        return InputSpec.parse(inputs, where=f"{source_path}: inputs")
    p = Path(source_path).parent / inputs
    if not p.is_file():
        raise RegisterError(f"{source_path}: inputs file {p} does not exist")
    return InputSpec.parse(yaml.safe_load(p.read_text(encoding="utf-8")), where=str(p))


def _onnx_io(model: Path, inputs: InputSpec, out: OutputRef) -> tuple[TensorSpec, OutputSpec]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT says what it could not parse or run
        raise RegisterError(f"ONNX Runtime cannot load {model}: {e}") from e
    ins = sess.get_inputs()
    if len(ins) != 1 or ins[0].type not in ("tensor(float)", "tensor(float16)") or len(ins[0].shape) != 2:
        raise RegisterError(f"{model}: streamscore feeds one float matrix [n, features]; the model takes "
                            f"{[(i.name, i.type, i.shape) for i in ins]}")
    width = ins[0].shape[1]
    if isinstance(width, int) and width != len(inputs.columns):
        raise RegisterError(f"{model}: its input is {width} wide, the input spec makes {len(inputs.columns)} columns")
    floats = [o for o in sess.get_outputs() if o.type == "tensor(float)"]
    if out.name is not None:
        match = [o for o in sess.get_outputs() if o.name == out.name]
        if not match or match[0].type != "tensor(float)":
            raise RegisterError(f"{model}: no float output {out.name!r}; its outputs: "
                                f"{[(o.name, o.type) for o in sess.get_outputs()]} (convert with zipmap=False "
                                "for class probabilities as a matrix)")
        o = match[0]
    elif floats:
        o = floats[-1] if len(floats) > 1 else floats[0]
    else:
        raise RegisterError(f"{model}: no float tensor output; its outputs: "
                            f"{[(o.name, o.type) for o in sess.get_outputs()]}")
    shape = tuple(d if isinstance(d, int) else -1 for d in o.shape)
    if len(shape) == 1:
        shape = (*shape, 1)
    k = shape[1]
    if out.kind == "classes":
        if not out.labels or len(out.labels) < 2:
            raise RegisterError("output.kind classes needs `labels`, one per output column (2 or more)")
        if k > 0 and k != len(out.labels):
            raise RegisterError(f"output {o.name!r} has {k} columns, `labels` lists {len(out.labels)}")
        spec = OutputSpec(o.name, shape, "float32", "classes", labels=tuple(out.labels))
    else:
        column = out.column if out.column is not None else max(k - 1, 0)
        if k > 0 and column >= k:
            raise RegisterError(f"output.column {column} is outside output {o.name!r}'s {k} columns")
        spec = OutputSpec(o.name, shape, "float32", "probability", column)
    return TensorSpec(ins[0].name, (-1, len(inputs.columns)), "float32", "columns of feature_order"), spec


def register(model: Path, spec: RegisterSpec, *, settings: Settings | None = None,
             force: bool = False) -> ModelManifest:
    from workers.engines.onnx_cpu import OnnxCpuEngine
    from workers.pipeline.decide import Decider, ModelInfo

    settings = settings or get_settings()
    if not model.is_file():
        raise RegisterError(f"{model}: no such model file")
    topo = load_topology(PROJECT_ROOT / spec.topology)
    inputs = read_input_spec(spec.inputs, spec.source_path)
    tensor_in, out = _onnx_io(model, inputs, spec.output)
    numeric, strings = inputs.online_numeric, inputs.online_strings
    absent = [r for r in (*numeric, *strings) if r not in spec.defaults]
    extra = sorted(set(spec.defaults) - set(numeric) - set(strings))
    if absent or extra:
        raise RegisterError(f"{spec.source_path}: `defaults` must give a value for every online feature the inputs "
                            f"read (used for entities the store does not know): missing {absent}, not read {extra}")
    defaults: dict[str, float | str] = {}
    for r in numeric:
        v = spec.defaults[r]
        if isinstance(v, str):
            raise RegisterError(f"{spec.source_path}: defaults[{r!r}] must be a number")
        defaults[r] = float(v)
    for r in strings:
        defaults[r] = str(spec.defaults[r])
    target = settings.models_dir / spec.model.name / str(spec.model.version)
    if (target / MANIFEST_FILE).exists() and not force:
        raise RegisterError(f"{target} already holds a model; pick a new version or pass --force")
    served = None
    if topo.features is not None:
        from workers.features.base import FeatureStoreError
        from workers.features.feast_repo import served_features

        try:
            served = served_features(settings.feature_repo, settings, topo.features.feature_service)
        except FeatureStoreError:
            served = None  # not applied here yet: the worker's readers check it at start
    with tempfile.TemporaryDirectory(prefix="streamscore-register-") as tmp:
        staged = Path(tmp)
        shutil.copyfile(model, staged / "model.onnx")
        manifest = ModelManifest(
            name=spec.model.name, version=spec.model.version, file="model.onnx",
            sha256=sha256_file(staged / "model.onnx"), input=tensor_in,
            output=OutputSpec(out.name, out.shape, out.dtype, out.kind, out.column, out.labels, spec.meaning),
            inputs=inputs, online_numeric=numeric, online_strings=strings,
            feature_service=topo.features.feature_service if topo.features is not None else None,
            defaults=defaults, thresholds=dict(spec.thresholds), metrics=dict(spec.metrics),
            training={"registered_from": str(model), "spec": spec.source_path}, directory=staged,
        )
        write_manifest(manifest, staged)
        manifest = _reload(staged)  # what the worker will read: the written JSON, parsed strictly
        check_fit(manifest, topo, served)
        engine = OnnxCpuEngine(staged / "model.onnx", output=out.name)
        engine.load()
        y = engine.infer(np.zeros((4, len(inputs.columns)), dtype=np.float32))
        if y.shape[0] != 4 or y.shape[1] != manifest.output.width:
            raise RegisterError(f"the model returned shape {y.shape} for 4 rows; the manifest expects "
                                f"(4, {manifest.output.width})")
        Decider(topo.id, topo.decision, manifest, ModelInfo(manifest.name, str(manifest.version), "fp32",
                engine.name), topo.input.schema_)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staged / "model.onnx", target / "model.onnx")
        shutil.copyfile(staged / MANIFEST_FILE, target / MANIFEST_FILE)
    return load_manifest(settings.models_dir, spec.model.name, spec.model.version)


def _reload(directory: Path) -> ModelManifest:
    import json

    from workers.model.manifest import parse_manifest

    path = directory / MANIFEST_FILE
    return parse_manifest(json.loads(path.read_text(encoding="utf-8")), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streamscore model register", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the ONNX file")
    ap.add_argument("--spec", type=Path, required=True, help="the register spec (YAML)")
    ap.add_argument("--force", action="store_true", help="replace a model already at that name/version")
    args = ap.parse_args(argv)
    spec = read_yaml_model(args.spec, RegisterSpec, "keys model, topology, inputs, output, defaults, ...",
                           "README.md 'Score your own events'")
    try:
        m = register(args.model, spec, force=args.force)
    except (RegisterError, ManifestError, ValueError) as e:
        print(f"streamscore model register: {e}", file=sys.stderr)
        return 2
    print(f"registered {m.name} v{m.version} -> {m.model_path} (sha256 {m.sha256[:12]}…, "
          f"{len(m.feature_order)} inputs, output {m.output.name} [{m.output.kind}])")
    return 0
