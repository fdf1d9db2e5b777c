"""Hot reload: a background thread that follows the topology's model and swaps it in when it changes.

Every ``serving.reload.poll_interval_ms`` it looks (``stat`` only, nothing is read unless a time
changed) at the topology file (its ``model.name`` / ``model.version``), the registry pointer of a
``latest`` model (``streamscore model promote``, ``workers/model/registry.py``) and the live
version's manifest and model file. When the model they name is not the one serving, or its files
changed, it loads the model on this thread (``workers/serving/live.py``: checksum, fit with the
topology, features the running reader fetches, decision section, engine load and warm-up) and only
then publishes it with one reference assignment: the scoring thread picks it up at its next
micro-batch, no batch is scored by a half-loaded model, and none waits for the load. A refused
model is logged with what is wrong, counted (``streamscore_model_refused_total{reason}``) and not
retried until one of its files changes; the old model keeps serving.

Only the model's name and version are taken from an edited topology; other changes need a restart
(said once in the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from workers.model.registry import POINTER_FILE, RegistryError, resolve
from workers.serving import metrics
from workers.serving.live import LiveModel, LoadedModel, ModelRefused, file_mtimes
from workers.topology import Topology, TopologyError, load_topology

log = logging.getLogger(__name__)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return -1.0


class ModelWatcher:
    def __init__(self, topology: Topology, models_dir: Path, live: LiveModel,
                 load: Callable[[str, str], LoadedModel], interval_s: float) -> None:
        self._topology = topology
        self._models = Path(models_dir)
        self._live = live
        self._load = load
        self._interval_s = interval_s
        self._stage = topology.id
        self._variant = topology.model.variant
        self._name, self._version = topology.model.name, topology.model.version
        self._path = Path(topology.source_path) if topology.source_path else None
        self._topo_mtime = _mtime(self._path) if self._path else -1.0
        self._baseline: Topology | None = None
        if self._path is not None:
            try:
                self._baseline = load_topology(self._path)
            except TopologyError:
                self._baseline = None
        self._said_restart = False
        self._refused: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-watch", daemon=True)
        self.refusals: list[tuple[str, str]] = []  # (reason, message), newest last
        self.load_s: list[float] = []  # per swap: load, checks and warm-up on this thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30.0)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check_once()
            except Exception:  # the watcher must not die: the next poll tries again
                log.exception("model watch failed; the live model keeps serving")

    def _read_topology(self) -> None:
        if self._path is None:
            return
        m = _mtime(self._path)
        if m == self._topo_mtime:
            return
        self._topo_mtime = m
        try:
            t = load_topology(self._path)
        except TopologyError as e:
            log.error("topology %s changed but does not load; the live model keeps serving: %s", self._path, e)
            return
        self._name, self._version = t.model.name, t.model.version
        base = self._baseline
        if base is not None and not self._said_restart:
            same_model = t.model.model_copy(update={"name": base.model.name, "version": base.model.version})
            if t.model_copy(update={"model": same_model}) != base:
                self._said_restart = True
                log.warning("topology %s changed beyond model.name/version; only those are applied "
                            "live, restart the worker for the rest", self._path)

    def check_once(self) -> bool:
        """One poll; True when a new model was swapped in."""
        self._read_topology()
        try:
            version = resolve(self._models, self._name, self._version)
        except RegistryError as e:
            return self._refuse(("registry", self._name, self._version), "registry", str(e), self._version)
        signature = (self._name, version, file_mtimes(self._models, self._name, version, self._variant),
                     _mtime(self._models / self._name / POINTER_FILE))
        cur = self._live.current
        if (cur.manifest.name, str(cur.manifest.version)) == (self._name, version) and \
                cur.mtimes == signature[2]:
            return False
        if signature == self._refused:
            return False
        t0 = time.perf_counter()
        try:
            new = self._load(self._name, version)
        except ModelRefused as e:
            return self._refuse(signature, e.reason, str(e), version)
        old = self._live.swap(new)
        self._refused = None
        m = new.manifest
        metrics.MODEL_SWAPS.labels(self._stage, m.name, str(m.version)).inc()
        metrics.LIVE_VERSION.labels(self._stage, old.manifest.name, str(old.manifest.version)).set(0)
        metrics.LIVE_VERSION.labels(self._stage, m.name, str(m.version)).set(1)
        self.load_s.append(time.perf_counter() - t0)
        log.warning("live model swapped: %s -> %s (loaded, checked and warmed in the background in %.2f s)",
                    old.label, new.label, self.load_s[-1])
        return True

    def _refuse(self, signature: tuple[object, ...], reason: str, message: str, version: str) -> bool:
        if signature != self._refused:
            self._refused = signature
            self.refusals.append((reason, message))
            metrics.MODEL_REFUSED.labels(self._stage, self._name, version, reason).inc()
            log.error("model %s v%s refused (%s); still serving %s: %s", self._name, version, reason,
                      self._live.current.label, message)
        return False
