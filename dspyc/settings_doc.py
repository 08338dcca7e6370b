"""docs/configuration.md's table, generated from `dspyc/settings.py`: each field's variable, default and the comment
written beside it (or just above it). `python -m dspyc.settings_doc > docs/configuration.md`; a test keeps them in
step."""

from __future__ import annotations

import inspect
import re

from dspyc import settings
from dspyc.settings import Settings

HEADER = """# Configuration

Every setting is a `DSPYC_*` environment variable or a line of a `.env` file in the project. A value outside a
setting's choices is refused at start-up with one line naming the variable. Generated from `dspyc/settings.py`
(`python -m dspyc.settings_doc > docs/configuration.md`). Back to the [README](../README.md).

| variable | default | meaning |
| --- | --- | --- |
"""


def comments() -> dict[str, str]:
    """Each field's comment in the source: the one on its line, else the block of comment lines just above it."""
    out, block = {}, []
    for line in inspect.getsource(settings.Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# "))
            continue
        m = re.match(r"(\w+): [^=]+=.*?(?:#\s*(.*))?$", stripped)
        if m and m.group(1) in Settings.model_fields:
            out[m.group(1)] = " ".join(filter(None, [*block, m.group(2) or ""]))
        block = []
    return out


def variable(name: str) -> str:
    alias = Settings.model_fields[name].alias
    return alias or f"DSPYC_{name.upper()}"


def table() -> str:
    notes = comments()
    rows = []
    for name, field in Settings.model_fields.items():
        default = "computed" if field.default_factory else "unset" if field.default is None else f"`{field.default}`"
        rows.append(f"| `{variable(name)}` | {default} | {notes.get(name, '').replace('|', '/')} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
