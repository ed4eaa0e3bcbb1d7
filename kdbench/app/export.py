"""What the download buttons write: the current view as CSV or Parquet, raw values."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd

from kdbench import leaderboard as lb
from kdbench.app.columns import (
    BUDGET_DISPLAY,
    DISPLAY_COLUMNS,
    PAIRED_DISPLAY,
    SUBMISSION_DISPLAY,
    cost_display,
    fidelity_display,
)


def export_frame(
    view: pd.DataFrame, tasks: Sequence[str], per_task: bool, fidelity: bool = False
) -> pd.DataFrame:
    """The view's rows and columns (per-task and fidelity ones when shown, the sampling ones
    when a row sampled), raw values, ``run_id`` last."""
    task_cols = lb.task_columns(tasks) if per_task else []
    fid_cols = [c for c in fidelity_display(tasks, per_task) if c in view] if fidelity else []
    cols = [
        "rank_label",
        *DISPLAY_COLUMNS[1:],
        *(c for c in SUBMISSION_DISPLAY if c in view),
        *PAIRED_DISPLAY,
        *task_cols,
        *fid_cols,
        *cost_display(view),
    ]
    cols += [*BUDGET_DISPLAY, "run_id"]
    return view[cols].rename(columns={"rank_label": "rank"}).reset_index(drop=True)


def export_bytes(view: pd.DataFrame, kind: str) -> bytes:
    """The current view as CSV or Parquet bytes (raw values, the view's columns and order)."""
    if kind == "csv":
        return view.to_csv(index=False).encode()
    buf = io.BytesIO()
    view.to_parquet(buf, index=False)
    return buf.getvalue()
