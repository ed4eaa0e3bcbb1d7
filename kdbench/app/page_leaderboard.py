"""The Leaderboard page: the ranked table with per-task columns, sorting, export and the
suite's failed runs; the other suites of the teacher below (:mod:`kdbench.app.open_track`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from kdbench.app.columns import RETENTION_HELP, column_config, display_frame
from kdbench.app.context import AppContext
from kdbench.app.export import export_bytes, export_frame
from kdbench.app.formatting import MISSING, RUN_HINT, finite_max, group_label, last_line
from kdbench.app.open_track import show_open_track
from kdbench.app.quantized import show_quantized_rows
from kdbench.app.urls import QP, run_url
from kdbench.leaderboard import excluded_tasks, power_note
from kdbench.stats import ALPHA, BETTER

SORTS = ("rank", "retention", "gain vs sft", "params", "training price", "inference speed")
_SORT_COLUMNS = {
    "retention": ("retention_avg", False),
    "gain vs sft": ("gain_vs_sft", False),
    "params": ("params", True),
    "training price": ("price_usd", True),
    "inference speed": ("infer_tokens_per_s", False),
}


def sort_view(view: pd.DataFrame, how: str) -> pd.DataFrame:
    """The teacher first, then rows by the chosen key (``rank`` keeps the board's order)."""
    if how not in _SORT_COLUMNS:
        return view
    col, ascending = _SORT_COLUMNS[how]
    teacher = view[view["role"] == "teacher"]
    rest = view[view["role"] != "teacher"].sort_values(
        col, ascending=ascending, na_position="last", kind="stable"
    )
    return pd.concat([teacher, rest], ignore_index=True)


def teacher_caption(board: pd.DataFrame, tasks: Sequence[str]) -> str:
    """A one-line description of the teacher and its per-task scores."""
    teacher = board[board["role"] == "teacher"] if not board.empty else board
    if teacher.empty:
        return "No successful teacher run yet: retention cannot be computed."
    row = teacher.iloc[0]
    scores = ", ".join(f"{t} {row[f'score_{t}']:.4f}" for t in tasks if pd.notna(row[f"score_{t}"]))
    return f"Teacher: **{row['student']}** — {scores or 'no scores'}"


def render(ctx: AppContext) -> None:
    """The ranked table with filters, per-task toggle, sorting, export, failed runs and the
    other suites (open track)."""
    view = ctx.view
    tasks = ctx.tasks
    st.caption(teacher_caption(view, tasks))
    for task, reason in excluded_tasks(ctx.task_meta).items():
        st.warning(f"Task **{task}**: {reason}.", icon="⚠️")
    students = view[view["role"] != "teacher"]
    if students.empty:
        st.info(f"No successful student runs match. Run `{RUN_HINT}` or widen the filters.")
    seeds = students["seeds"]
    if not students.empty and (seeds <= 1).all():
        st.caption(
            "One seed per method: no confidence intervals, so only exact ties share a rank. "
            "Add seeds to the suite to get intervals."
        )
    else:
        st.caption(
            "Retention: arithmetic mean over tasks of student/teacher score, mean over seeds "
            "± 95% CI (Student t). Overlapping intervals share a rank."
        )
    show_paired_caption(students)
    show_budget_warning(students)
    c1, c2, c3 = st.columns(3)
    per_task = c1.toggle(
        "per-task columns", key="per_task", bind=QP, help="Retention and score of each task."
    )
    fidelity = c2.toggle(
        "fidelity columns",
        key="fidelity",
        bind=QP,
        help="Agreement with the teacher, KL from it and calibration (ECE) next to the "
        "teacher's: how closely each student matches the teacher, apart from its accuracy.",
    )
    how = c3.selectbox("sort by", SORTS, key="sort", bind=QP)
    view = sort_view(view, how)
    shown = display_frame(view, tasks, per_task, fidelity)
    config = column_config(tasks, ctx.task_meta)
    top = finite_max(view["retention_avg"])
    config["retention_avg"] = st.column_config.ProgressColumn(
        "retention", help=RETENTION_HELP, min_value=0.0, max_value=top, format="percent"
    )
    st.dataframe(shown, column_config=config, hide_index=True, placeholder=MISSING, key="board")
    export = export_frame(view, tasks, per_task, fidelity)
    name = f"kdbench-{ctx.suite_hash[:8]}"
    d1, d2, _ = st.columns([1, 1, 4])
    d1.download_button(
        "Download CSV", export_bytes(export, "csv"), f"{name}.csv", "text/csv", key="csv"
    )
    d2.download_button(
        "Download Parquet",
        export_bytes(export, "parquet"),
        f"{name}.parquet",
        "application/vnd.apache.parquet",
        key="parquet",
    )
    show_quantized_rows(ctx)
    show_failed_runs(ctx)
    show_open_track(ctx)


def show_paired_caption(students: pd.DataFrame) -> None:
    """How to read the paired test's columns, and which methods beat sft significantly."""
    if students.empty or students["sig_vs_sft"].isna().all():
        return
    better = [group_label(r) for _, r in students.iterrows() if r["sig_vs_sft"] == BETTER]
    st.caption(
        "p vs sft: paired bootstrap over the questions both were scored on (seeds pooled), "
        f"Holm-adjusted over every method of the suite; sig: p < {ALPHA}. "
        + (
            f"Significantly better than sft: {', '.join(better)}."
            if better
            else "No method is significantly better than sft."
        )
    )
    power = power_note(students)
    if power:
        st.caption(power[0].upper() + power[1:] + ".")


BUDGET_WARNING_ROWS = 5
"""How many rows off their budget the warning names (the rest are counted)."""


def show_budget_warning(students: pd.DataFrame) -> None:
    """A warning naming each row with a run off its suite's ``[budget]`` (the first
    :data:`BUDGET_WARNING_ROWS`, then how many more)."""
    if students.empty:
        return
    off = students[students["budget_note"].notna()]
    if off.empty:
        return
    named = off.head(BUDGET_WARNING_ROWS)
    lines = "; ".join(f"{group_label(r)}: {r['budget_note']}" for _, r in named.iterrows())
    more = len(off) - len(named)
    if more:  # a board with many (its budget_note column names them all)
        lines += f"; and {more} more rows (see their budget_note)"
    st.warning(f"Unequal budgets (the comparison is not like for like): {lines}.", icon="⚠️")


def show_failed_runs(ctx: AppContext) -> None:
    """The suite's failed runs: the exception line of each, and a link to its run page with
    the full traceback."""
    failed = ctx.failed
    if failed.empty:
        return
    st.subheader(f"Failed runs ({len(failed)})")
    table = pd.DataFrame(
        {
            "method": failed["method"],
            "student": failed["student"],
            "seed": failed["seed"],
            "error": [last_line(e) for e in failed["error"]],
            "run": [run_url(r) for r in failed["run_id"]],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        placeholder=MISSING,
        column_config={
            "error": st.column_config.TextColumn(
                "error", help="The exception; the run page shows the full traceback."
            ),
            "run": st.column_config.LinkColumn("run", display_text="open"),
        },
    )
