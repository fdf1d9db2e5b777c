"""streamscore's stages called as a library: decode -> features -> assemble -> engine -> decide.

This is what the Faust and Quix Streams peers call from their own code, the way a user of either
framework integrates a library: the same ``Decoder`` (validation and dead-letter reasons), the same
feature reader (``features.reader`` of the topology: one Redis round trip per call), the same
``Assembler``, ONNX Runtime session and ``Decider``, so their decision records are byte-for-byte
the worker's except for timings. What differs between the systems is only what each framework
adds around it: its Kafka client, its batching (or none), its per-event Python.

The sequence is ``Worker._score`` without the worker's threads and queues; the worker itself is
not used (nor changed) here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.engines import make_engine
from workers.engines.base import default_buckets
from workers.features.factory import make_reader
from workers.model.fit import check_fit
from workers.model.inputs import Assembler
from workers.model.manifest import load_manifest
from workers.model.registry import resolve
from workers.pipeline.decide import Decider, ModelInfo
from workers.pipeline.decode import DeadLetter, Decoder, KafkaMessage
from workers.settings import Settings
from workers.topology import Topology


@dataclass
class JobStats:
    calls: int = 0
    events: int = 0
    dead: int = 0
    degraded: int = 0  # rows scored with default features: the store was not read in time
    stage_ms: dict[str, float] = field(default_factory=lambda: {
        "decode": 0.0, "features": 0.0, "assemble": 0.0, "inference": 0.0, "decide": 0.0})

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "events": self.events, "dead": self.dead,
                "degraded": self.degraded, "stage_ms": {k: round(v, 1) for k, v in self.stage_ms.items()}}


class ScoringJob:
    def __init__(self, topology: Topology, settings: Settings) -> None:
        t = topology
        version = resolve(settings.models_dir, t.model.name, t.model.version)  # `latest` -> a number
        manifest = load_manifest(settings.models_dir, t.model.name, version, variant=t.model.variant)
        check_fit(manifest, t)
        self.manifest = manifest
        self.decoder = Decoder.of(t.input)
        self.reader = make_reader(t, settings, manifest)
        self._entities = dict(t.entities)
        self.assembler = Assembler(manifest.inputs, manifest.online_numeric)
        self.engine = make_engine(t.model.model_copy(update={"version": version}), settings.models_dir,
                                  max_batch=t.batching.max_batch,
                                  output=manifest.output.name)
        self.engine.load()
        self.engine.warm_up(default_buckets(t.batching.max_batch))
        self.decider = Decider(
            t.id, t.decision, manifest,
            ModelInfo(manifest.name, str(manifest.version), t.model.variant, self.engine.name),
            t.input.schema_,
        )
        self.stats = JobStats()

    def score(self, messages: Sequence[KafkaMessage]) -> tuple[list[tuple[bytes | None, bytes]], list[DeadLetter]]:
        """Decisions ``(key, value)`` for the valid messages, in order, and the dead letters."""
        st = self.stats
        t0 = time.perf_counter()
        batch, dead = self.decoder.decode(messages)
        st.calls += 1
        st.dead += len(dead)
        n = len(batch)
        if n == 0:
            return [], dead
        t1 = time.perf_counter()
        feats = self.reader.fetch({jk: batch.column(f) for jk, f in self._entities.items()})
        if feats.degraded:
            st.degraded += n
        t2 = time.perf_counter()
        x = self.assembler.assemble(batch, feats)
        bad = ~np.isfinite(x).all(axis=1)
        why: list[str | None] = [None] * n
        if bad.any():
            x[bad] = 0.0
            for i in np.flatnonzero(bad).tolist():
                why[i] = "invalid_features"
        t3 = time.perf_counter()
        out = self.engine.infer(x).astype(np.float32, copy=True)
        out[bad] = np.nan
        t4 = time.perf_counter()
        timings = {"features": round((t2 - t1) * 1e3, 3), "assemble": round((t3 - t2) * 1e3, 3),
                   "inference": round((t4 - t3) * 1e3, 3)}
        d = self.decider.decide(batch, out, x, feats, why, timings)
        t5 = time.perf_counter()
        st.events += n
        for k, v in (("decode", t1 - t0), ("features", t2 - t1), ("assemble", t3 - t2),
                     ("inference", t4 - t3), ("decide", t5 - t4)):
            st.stage_ms[k] += v * 1e3
        return list(zip(d.keys, d.values)), dead

    def close(self) -> None:
        self.reader.close()
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


class Msg:
    """A message from another Kafka client, in the shape ``Decoder`` reads (``KafkaMessage``)."""

    __slots__ = ("_value", "_key", "_topic", "_partition", "_offset", "_ts")

    def __init__(self, value: bytes | None, key: bytes | None, topic: str, partition: int, offset: int,
                 timestamp_ms: int) -> None:
        self._value, self._key, self._topic = value, key, topic
        self._partition, self._offset, self._ts = partition, offset, timestamp_ms

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def headers(self) -> None:
        return None

    def error(self) -> Any:
        return None

    def timestamp(self) -> tuple[int, int]:
        # The bench's input topics use LogAppendTime (confluent-kafka's TIMESTAMP_LOG_APPEND_TIME = 2).
        return (2, self._ts)
