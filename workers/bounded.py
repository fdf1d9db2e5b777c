"""Blocking client calls bounded by a deadline (a stop's grace period).

librdkafka's close, an OTLP exporter's flush or a probe waiting on an unreachable broker return
only when the peer answers or their own timeouts run out. A stop that must finish within
``shutdown_grace_s`` runs such a call on a daemon thread and stops waiting at the deadline: the
call goes on in the background and the process may exit without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def call_within(fn: Callable[[], object], timeout_s: float, name: str) -> bool:
    """Run ``fn`` on a daemon thread named ``name``; True if it returned within ``timeout_s``."""
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    t.join(max(0.0, timeout_s))
    return not t.is_alive()


def left(deadline_s: float | None) -> float:
    """Seconds to ``deadline_s`` (time.monotonic()); none left: 0; no deadline: an hour."""
    return 3600.0 if deadline_s is None else max(0.0, deadline_s - time.monotonic())
