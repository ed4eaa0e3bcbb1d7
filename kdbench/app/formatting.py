"""Display formatting shared by the pages."""

from __future__ import annotations

from typing import Any

import pandas as pd

MISSING = "—"  # what a value a run does not have shows as


def fmt(value: object, spec: str = "", suffix: str = "") -> str:
    """``value`` formatted with ``spec``, or an em dash when missing."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING
    try:
        return f"{value:{spec}}{suffix}"
    except (TypeError, ValueError):
        return f"{value}{suffix}"


def group_label(row: Any) -> str:
    """``method · student`` for a board row."""
    return f"{row['method']} · {row['student']}"


def last_line(error: object) -> str:
    """The last non-empty line of a traceback (the exception), or a note when none."""
    lines = [x for x in str(error).splitlines() if x.strip()] if isinstance(error, str) else []
    return lines[-1].strip() if lines else "(no error recorded)"


RUN_HINT = "kdbench run leaderboards/tiny.toml"  # how to get results, shown when there are none
