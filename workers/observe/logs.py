"""Logs off the hot path: one JSON object per line, written by a background thread.

A record is formatted and written by ``QueueListener``'s thread; the logging call only puts it on a
bounded queue. When the queue is full the record is dropped and counted
(``streamscore_log_records_dropped_total``), never waited for. Fields given as
``extra={"fields": {...}}`` become keys of the line. Secrets never reach the output: URL
passwords (``redis://:pw@host``), ``password=...``-style pairs and the settings' secret values are
replaced with ``***`` when the line is formatted (on the background thread).

Streamscore's loggers (``workers.*``) log at ``level`` (default INFO: start, status, rebalances,
stop); other libraries' at WARNING unless ``level`` is DEBUG.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import Iterable
from typing import Any, Literal

import orjson

from workers.observe import metrics

LogFormat = Literal["json", "text"]

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>(password|passwd|secret|sasl\.password)['\"]?\s*[=:]\s*['\"]?)[^'\"\s,}]+",
                          re.IGNORECASE)
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "fields"}


class Redactor:
    """Masks secrets in text: known secret values, URL passwords and ``password=`` pairs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "***")
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
        return _KV_PASSWORD.sub(r"\g<head>***", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self._redact(line)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return self._redact(line)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Puts records on a bounded queue; a full queue drops the record and counts it."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatting happens on the listener's thread, not here

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            DroppingQueueHandler.dropped += 1
            metrics.LOG_DROPPED.inc()


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel, timeout=30)  # type: ignore[attr-defined]  # a full queue: wait for room


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str = "INFO", max_queued_records: int = 10_000, fmt: LogFormat = "json",
                  secrets: Iterable[str] = (), handler: logging.Handler | None = None) -> None:
    """Route every log record through a bounded queue to ``handler`` (default: stderr)."""
    global _listener
    stop_logging()
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=max(1, max_queued_records))
    out = handler or logging.StreamHandler(sys.stderr)
    redact = Redactor(secrets)
    out.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ValueError(f"--log-level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    root.handlers[:] = [DroppingQueueHandler(q)]
    root.setLevel(lvl if lvl <= logging.DEBUG else max(lvl, logging.WARNING))
    logging.getLogger("workers").setLevel(lvl)
    _listener = _Listener(q, out, respect_handler_level=True)
    _listener.start()
    logging.captureWarnings(True)
    atexit.register(stop_logging)


def stop_logging() -> None:
    """Write what is queued and stop the background thread (at exit, or before a new set-up)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
