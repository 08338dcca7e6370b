"""One place that makes rich consoles, so tables print whole in logs.

When output is not a terminal (a log file, a pipe, CI), rich assumes 80 columns and cuts table columns
(`retrieval_…`). Here a non-terminal console gets a wide fixed width instead; a terminal keeps its own
width, and `COLUMNS` (rich's own override) still wins.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

LOG_WIDTH = 200  # columns when writing to a file or pipe


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def console(stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console on stdout (or stderr) that is `LOG_WIDTH` wide when not writing to a terminal."""
    stream = kwargs.get("file") or (sys.stderr if stderr else sys.stdout)
    if "width" not in kwargs and not os.environ.get("COLUMNS") and not _is_tty(stream):
        kwargs["width"] = LOG_WIDTH
    return Console(stderr=stderr, **kwargs)
