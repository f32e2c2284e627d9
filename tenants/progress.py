"""A plain-text progress bar for management commands (no dependency)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, *, label: str = "", stream=None, width: int = 30):
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        # Django wraps command output and appends a newline per write; draw on the raw stream.
        self.stream = getattr(stream, "_out", stream) or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def finish(self) -> None:
        self.done = self.total
        self._draw(final=True)

    def end(self) -> None:
        """End the line where the work stopped (a failure): never draws a full bar."""
        self._draw(final=True)

    def _draw(self, final: bool = False) -> None:
        filled = int(self.width * self.done / self.total)
        elapsed = time.monotonic() - self.started
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.label} {elapsed:5.1f}s"
        self.stream.write(line + ("\n" if final else ""))
        if hasattr(self.stream, "flush"):
            self.stream.flush()
