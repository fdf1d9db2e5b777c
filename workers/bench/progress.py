"""The live progress line of ``bench e2e``: rewritten in place on a terminal, a line every few
seconds otherwise (CI logs, pipes)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self._out = stream or sys.stdout
        self._tty = self._out.isatty()
        self._every_s = every_s
        self._last = 0.0
        self._width = 0
        self.prefix = ""

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        line = f"{self.prefix} {text}  load {os.getloadavg()[0]:.1f}".strip()
        if self._tty:
            if now - self._last < 0.2 and not force:
                return
            pad = max(0, self._width - len(line))
            self._out.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            if now - self._last < self._every_s and not force:
                return
            self._out.write(line + "\n")
        self._out.flush()
        self._last = now

    def done(self, text: str) -> None:
        """A line that stays (the end of a phase)."""
        if self._tty and self._width:
            self._out.write("\r" + " " * self._width + "\r")
            self._width = 0
        self._out.write(f"{self.prefix} {text}".strip() + "\n")
        self._out.flush()
