"""A servable model: manifest, engine, assembler, decider and cache, loaded and checked as one; and
the live reference the scoring thread reads once per micro-batch.

``load_model`` does everything that can fail before a model may score an event: the manifest
(format, checksum of the ONNX file), the fit with the topology (inputs vs event schema and feature
service, ``workers/model/fit.py``, the start-up check of the worker and of ``model register``),
the online features it reads against what the running reader fetches, the decision section
against its output and thresholds, the engine's load and a warm-up over the batch sizes the
worker uses. A model that fails any of it raises ``ModelRefused`` with a stable ``reason`` code
and a message saying what is wrong; nothing half-loaded is ever published.

``LiveModel.current`` is swapped by assignment (atomic in CPython) between micro-batches: the
scoring thread reads it once at the start of a batch and uses that model for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.engines import Engine, make_engine
from workers.engines.base import default_buckets, model_file
from workers.model.fit import ModelFitError, check_fit
from workers.model.inputs import Assembler, InputSpecError
from workers.model.manifest import MANIFEST_FILE, ManifestError, ModelManifest, load_manifest
from workers.model.registry import resolve
from workers.pipeline.decide import Decider, DecisionError, ModelInfo
from workers.serving.cache import PredictionCache
from workers.topology import ModelSpec, Topology

# (the topology's model spec for this model, its manifest, max batch rows) -> an engine, not loaded.
# `Worker(engine_factory=...)` takes one: how tests wrap an engine (a slow canary) without test code here.
EngineFactory = Callable[[ModelSpec, ModelManifest, int], Engine]


def default_engine(spec: ModelSpec, manifest: ModelManifest, max_batch: int, models_dir: Path) -> Engine:
    return make_engine(spec, models_dir, max_batch=max_batch, output=manifest.output.name)


class ModelRefused(ValueError):
    """A model may not serve; ``reason`` is a stable code (metric label), the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class LoadedModel:
    manifest: ModelManifest
    engine: Engine
    assembler: Assembler
    decider: Decider
    info: ModelInfo
    cache: PredictionCache | None = None
    mtimes: tuple[float, ...] = field(default=())  # of manifest and model file when loaded

    @property
    def label(self) -> str:
        return f"{self.manifest.name} v{self.manifest.version}"


@dataclass(frozen=True)
class FeatureLayout:
    """What the running feature reader fetches, in order: every model must read within it."""

    online_numeric: tuple[str, ...]
    online_strings: tuple[str, ...]


def file_mtimes(models_dir: Path, name: str, version: str, variant: str) -> tuple[float, ...]:
    """Modification times of a version's manifest and model file (-1: absent): a change reloads."""
    base = Path(models_dir) / name / version
    out = []
    for p in (base / (MANIFEST_FILE if variant == "fp32" else f"manifest.{variant}.json"),
              model_file(Path(models_dir), name, version, variant)):
        try:
            out.append(p.stat().st_mtime)
        except FileNotFoundError:
            out.append(-1.0)
    return tuple(out)


def load_model(
    topology: Topology,
    models_dir: Path,
    name: str,
    version: str,
    layout: FeatureLayout | None,
    *,
    engine: Engine | None = None,
    engine_factory: EngineFactory | None = None,
    with_cache: bool = True,
) -> LoadedModel:
    """Load, check and warm ``name``/``version`` (``latest`` resolved) to serve ``topology``.

    ``layout``: the running reader's features (None: this model defines them, i.e. at start).
    """
    label = f"{name} v{version}"
    try:
        version = resolve(models_dir, name, version)
        label = f"{name} v{version}"
        manifest = load_manifest(models_dir, name, version, variant=topology.model.variant)
    except ManifestError as e:
        reason = "checksum" if "sha256" in str(e) else "manifest"
        raise ModelRefused(reason, str(e)) from None
    mtimes = file_mtimes(models_dir, name, version, topology.model.variant)
    try:
        check_fit(manifest, topology)
    except ModelFitError as e:
        raise ModelRefused("fit", str(e)) from None
    if layout is not None:
        _check_layout(manifest, layout, label)
    spec = topology.model.model_copy(update={"name": name, "version": version})
    try:
        assembler = Assembler(manifest.inputs,
                              layout.online_numeric if layout is not None else manifest.online_numeric,
                              topology.input.schema_)
    except InputSpecError as e:
        raise ModelRefused("features", f"{label}: {e}") from None
    max_batch = topology.batching.max_batch
    if engine is None:
        engine = (engine_factory(spec, manifest, max_batch) if engine_factory is not None
                  else default_engine(spec, manifest, max_batch, models_dir))
    info = ModelInfo(manifest.name, str(manifest.version), topology.model.variant, engine.name)
    try:
        decider = Decider(topology.id, topology.decision, manifest, info, topology.input.schema_)
    except DecisionError as e:
        raise ModelRefused("decision", f"{label}: the topology's decision section does not fit: {e}") from None
    try:
        engine.load()
        engine.warm_up(default_buckets(max_batch))
    except Exception as e:  # any engine failure refuses the model; the message keeps its type
        raise ModelRefused("engine", f"{label}: the engine could not load or warm up: "
                           f"{type(e).__name__}: {e}") from None
    c = topology.serving.cache
    cache = PredictionCache(c.ttl_ms, c.max_entries) if c is not None and with_cache else None
    return LoadedModel(manifest, engine, assembler, decider, info, cache, mtimes)


def _check_layout(manifest: ModelManifest, layout: FeatureLayout, label: str) -> None:
    problems = []
    for kind, have, need in (("numeric", layout.online_numeric, manifest.online_numeric),
                             ("string", layout.online_strings, manifest.online_strings)):
        extra = sorted(set(need) - set(have))
        if extra:
            problems.append(f"{kind} online features {extra}")
    if problems:
        raise ModelRefused("features", f"{label} reads {' and '.join(problems)} that the running feature "
                           "reader does not fetch (it fetches what the model at start read): restart the "
                           "worker to serve it")


class LiveModel:
    """The model deciding now; ``swap`` publishes a fully loaded one between micro-batches."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = model
        self.swaps = 0
        self.history: list[str] = [model.label]

    def swap(self, model: LoadedModel) -> LoadedModel:
        old, self.current = self.current, model
        self.swaps += 1
        self.history.append(model.label)
        return old


def layout_of(manifest: ModelManifest) -> FeatureLayout:
    return FeatureLayout(manifest.online_numeric, manifest.online_strings)
