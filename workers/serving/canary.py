"""The canary: a candidate model decides a fixed fraction of entities (stable by the CRC-32 of the
configured key), and is watched over an evaluation window of its last ``window_batches`` batches.
When the p99 of its per-batch inference time exceeds ``max_p99_ms``, or the share of rows it could
not score exceeds ``max_error_rate`` (once ``min_batches`` are in the window), every entity returns
to the live model at once, with a log line and ``streamscore_canary_rollbacks_total{reason}``
saying why. A rolled-back canary stays off until the worker restarts.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from workers.events import BoolArray, EventBatch
from workers.serving import metrics
from workers.serving.live import LoadedModel
from workers.serving.scoring import Scored, in_fraction, key_hashes
from workers.serving.spec import CanarySpec

log = logging.getLogger(__name__)


class Canary:
    def __init__(self, spec: CanarySpec, model: LoadedModel, stage: str) -> None:
        self.spec = spec
        self.model = model
        self._stage = stage
        self._window: deque[tuple[float, int, int]] = deque(maxlen=spec.window_batches)  # ms, rows, errors
        self.active = True
        self.rolled_back_reason: str | None = None  # stable code: p99_latency | error_rate
        self.rolled_back_detail = ""
        self.rows = 0
        m = model.manifest
        self._labels = (stage, m.name, str(m.version))
        metrics.CANARY_ACTIVE.labels(*self._labels).set(1)

    def pick(self, batch: EventBatch) -> BoolArray:
        """Rows the candidate decides."""
        return in_fraction(key_hashes(batch, self.spec.key), self.spec.fraction)

    def observe(self, scored: Scored) -> None:
        """Record one candidate batch; roll back when the window breaches a limit."""
        n = len(scored.why)
        self.rows += n
        self._window.append((scored.timings.get("inference", 0.0), n, scored.errors))
        if len(self._window) < self.spec.min_batches:
            return
        ms = np.array([w[0] for w in self._window])
        p99 = float(np.percentile(ms, 99))
        rows = sum(w[1] for w in self._window)
        errors = sum(w[2] for w in self._window)
        rate = errors / rows if rows else 0.0
        if p99 > self.spec.max_p99_ms:
            self._roll_back("p99_latency", f"p99 inference {p99:.2f} ms over its last {len(ms)} batches "
                            f"> max_p99_ms {self.spec.max_p99_ms}")
        elif rate > self.spec.max_error_rate:
            self._roll_back("error_rate", f"{errors} of {rows} rows not scored ({rate:.2%}) over its last "
                            f"{len(ms)} batches > max_error_rate {self.spec.max_error_rate:.2%}")

    def _roll_back(self, reason: str, detail: str) -> None:
        self.active = False
        self.rolled_back_reason = reason
        self.rolled_back_detail = detail
        metrics.CANARY_ROLLBACKS.labels(*self._labels, reason).inc()
        metrics.CANARY_ACTIVE.labels(*self._labels).set(0)
        log.error("canary %s rolled back to the live model (%s): %s; it decided %d rows",
                  self.model.label, reason, detail, self.rows)
