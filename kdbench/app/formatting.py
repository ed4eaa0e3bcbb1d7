"""Display formatting shared by the pages."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
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


def finite_or(value: object, default: float = 0.0, *, low: float = 0.0) -> float:
    """``value`` as a float when it is a finite number >= ``low``, else ``default`` (a widget's
    default from a stored value that may be missing, infinite or negative)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number >= low else default


def finite_max(values: Iterable[object], floor: float = 1.0) -> float:
    """The largest finite value, at least ``floor`` (a progress bar's top end)."""
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    return max(floor, float(x.max())) if x.size else floor


def group_label(row: Any) -> str:
    """``method · student`` for a board row."""
    return f"{row['method']} · {row['student']}"


def last_line(error: object) -> str:
    """The last non-empty line of a traceback (the exception), or a note when none."""
    lines = [x for x in str(error).splitlines() if x.strip()] if isinstance(error, str) else []
    return lines[-1].strip() if lines else "(no error recorded)"


RUN_HINT = "kdbench run leaderboards/tiny.toml"  # how to get results, shown when there are none
