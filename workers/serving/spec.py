"""The topology's ``serving`` section: how the live model is followed, tried and helped.

Every part is off unless written (``reload`` is on: a worker follows its topology's model)::

    serving:
      reload: {watch: true, poll_interval_ms: 1000}
      cache: {ttl_ms: 60000, max_entries: 100000}
      cascade: {model: {name: fraud_lite, version: "1"}, band: {from: 0.02, to: 0.6}}
      canary:
        model: {name: fraud_gbm, version: "3"}
        fraction: 0.1              # of entities, stable by the hash of `key`
        key: _kafka.key
        window_batches: 50         # evaluation window: the candidate's last N batches
        min_batches: 10
        max_p99_ms: 20             # p99 of the candidate's per-batch inference time
        max_error_rate: 0.01       # rows it could not score / rows it was given
      shadow:
        model: {name: fraud_mlp, version: "1"}
        sample: 0.1                # of entities, stable by the hash of `key` (1.0 = all)
        topic: decisions.shadow
        max_queued_batches: 16     # a full queue drops (and counts) a batch, never waits

Imported by ``workers/topology.py``; this module imports nothing of the worker.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelRef(_Model):
    """``models/<name>/<version>/``; ``version: latest`` follows the registry (``workers/model/registry.py``)."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class ReloadSpec(_Model):
    watch: bool = Field(True, description="poll the topology file and the model registry; swap on change")
    poll_interval_ms: int = Field(1000, ge=50, le=600_000)


class CacheSpec(_Model):
    ttl_ms: int = Field(60_000, gt=0, description="an answer is reused for at most this long")
    max_entries: int = Field(100_000, gt=0, description="oldest entries are evicted past this many")


class BandSpec(_Model):
    """Cheap scores in ``[from, to]`` are uncertain: those rows go to the heavy (live) model."""

    from_: float = Field(alias="from", ge=0.0, le=1.0)
    to: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> BandSpec:
        if self.from_ > self.to:
            raise ValueError(f"band.from ({self.from_}) must not exceed band.to ({self.to})")
        return self


class CascadeSpec(_Model):
    model: ModelRef = Field(description="the cheap model, scored first on every row")
    band: BandSpec


class CanarySpec(_Model):
    model: ModelRef = Field(description="the candidate that decides a fraction of entities")
    fraction: float = Field(gt=0.0, le=1.0)
    key: str = Field("_kafka.key", description="event field (or _kafka.key) whose hash picks entities")
    window_batches: int = Field(50, ge=1, le=100_000)
    min_batches: int = Field(10, ge=1, description="no verdict on the canary before this many batches")
    max_p99_ms: float = Field(gt=0.0, description="p99 of per-batch inference time over the window")
    max_error_rate: float = Field(0.01, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _window(self) -> CanarySpec:
        if self.min_batches > self.window_batches:
            raise ValueError("canary.min_batches must not exceed canary.window_batches")
        return self


class ShadowSpec(_Model):
    model: ModelRef = Field(description="the candidate scored beside the live model, off the critical path")
    sample: float = Field(1.0, gt=0.0, le=1.0)
    key: str = Field("_kafka.key", description="event field (or _kafka.key) whose hash picks the sample")
    topic: str = Field(min_length=1)
    partitions: int = Field(1, ge=1, description="partitions `dev up` creates")
    max_queued_batches: int = Field(16, ge=1)


class ServingSpec(_Model):
    reload: ReloadSpec = ReloadSpec()
    cache: CacheSpec | None = None
    cascade: CascadeSpec | None = None
    canary: CanarySpec | None = None
    shadow: ShadowSpec | None = None

    def key_fields(self) -> list[tuple[str, str]]:
        """(where, field) of every key field named, for the topology's field check."""
        out = []
        if self.canary is not None:
            out.append(("serving.canary.key", self.canary.key))
        if self.shadow is not None:
            out.append(("serving.shadow.key", self.shadow.key))
        return out
