"""One place that makes rich consoles, so tables print whole in logs.

When output is not a terminal (a log file, a pipe, CI), rich assumes 80 columns and cuts table columns
(`retrieval_…`). Here a non-terminal console gets a wide fixed width instead; a terminal keeps its own
width, and `COLUMNS` (rich's own override) still wins for text. A table printed off a terminal is never cut or
wrapped whatever that width: it prints at its natural width (a compile summary with per-category metrics, its
interval and cost columns is wider than 200 columns).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

LOG_WIDTH = 200  # columns when writing to a file or pipe
_UNBOUNDED = 100_000  # the width a table is measured in: as wide as its widest cells


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class LogConsole(Console):
    """A rich Console that, when not writing to a terminal, prints each table at its natural width."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs.get("width") is None and not self.is_terminal:
            options = self.options.update_width(_UNBOUNDED)
            natural = max(
                (Measurement.get(self, options, o).maximum for o in objects if isinstance(o, Table)), default=0
            )
            if natural > self.width:
                width, self._width = self._width, natural
                try:
                    return super().print(*objects, **kwargs)
                finally:
                    self._width = width
        return super().print(*objects, **kwargs)


def console(stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console on stdout (or stderr) that is `LOG_WIDTH` wide when not writing to a terminal, where tables
    print whole however wide."""
    stream = kwargs.get("file") or (sys.stderr if stderr else sys.stdout)
    if "width" not in kwargs and not os.environ.get("COLUMNS") and not _is_tty(stream):
        kwargs["width"] = LOG_WIDTH
    return LogConsole(stderr=stderr, **kwargs)
