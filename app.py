"""Streamlit leaderboard app for kdbench.

Run with ``streamlit run app.py -- --db results/kdbench.duckdb``. Without ``--db`` the
database path comes from the ``KDBENCH_DB`` environment variable, else
``results/kdbench.duckdb``. The app only opens the database read-only, one short query at a
time, so it can stay up while ``kdbench run`` is writing; reads are cached for 5 seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from kdbench import store
from kdbench.leaderboard import leaderboard

RUN_HINT = "kdbench run leaderboards/tiny.toml"


def db_path_from_args(argv: list[str]) -> Path:
    """``--db`` from the script arguments, else ``$KDBENCH_DB``, else the default path."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db", default=None)
    args, _ = parser.parse_known_args(argv)
    return Path(args.db or os.environ.get("KDBENCH_DB") or store.DEFAULT_DB)


@st.cache_data(ttl=5, show_spinner=False)
def load_suites(db: str) -> pd.DataFrame:
    """Suites, newest first (cached 5 s)."""
    return store.list_suites(db)


@st.cache_data(ttl=5, show_spinner=False)
def load_leaderboard(db: str, suite_hash: str) -> pd.DataFrame:
    """The suite's leaderboard (cached 5 s)."""
    return leaderboard(db, suite_hash)


@st.cache_data(ttl=5, show_spinner=False)
def load_runs(db: str, suite_hash: str) -> pd.DataFrame:
    """The suite's runs with costs (cached 5 s)."""
    return store.read_runs(db, suite_hash)


def task_names(df: pd.DataFrame) -> list[str]:
    """Task names, from the ``score_<task>`` columns of a leaderboard frame."""
    return [c.removeprefix("score_") for c in df.columns if c.startswith("score_")]


def per_task_columns(tasks: list[str]) -> list[str]:
    """The ``retention_<task>`` and ``score_<task>`` columns of a leaderboard frame."""
    return [f"retention_{t}" for t in tasks] + [f"score_{t}" for t in tasks]


def column_config(tasks: list[str]) -> dict[str, object]:
    """``st.dataframe`` column configuration for a leaderboard frame."""
    cc = st.column_config
    config: dict[str, object] = {
        "rank": cc.TextColumn(
            "rank",
            help="1 = best average retention. The teacher (shown for reference) is not ranked.",
        ),
        "method": cc.TextColumn("method", help="Distillation method (plugin name)."),
        "family": cc.TextColumn("family", help="Method family."),
        "student": cc.TextColumn(
            "student", help="Student model; on the teacher row, the teacher model."
        ),
        "role": cc.TextColumn(
            "role", help="teacher = reference; baseline = sft without distillation; method."
        ),
        "retention_avg": cc.ProgressColumn(
            "retention",
            help="Mean over tasks of student score / teacher score on each task's primary "
            "metric (teacher / student for lower-is-better metrics), averaged over seeds.",
            min_value=0.0,
            max_value=1.0,
            format="percent",
        ),
        "params": cc.NumberColumn("params", help="Parameter count.", format="compact"),
        "param_ratio": cc.NumberColumn(
            "param ratio", help="Parameters relative to the teacher.", format="percent"
        ),
        "train_wall_s": cc.NumberColumn(
            "train time", help="Mean training wall-clock seconds over seeds.", format="%.1f s"
        ),
        "seeds": cc.NumberColumn("seeds", help="Successful runs (seeds) averaged over."),
        "failed": cc.NumberColumn("failed", help="Failed runs; see the list below."),
    }
    for task in tasks:
        config[f"retention_{task}"] = cc.NumberColumn(
            f"retention {task}", help=f"Student / teacher score on {task}.", format="percent"
        )
        config[f"score_{task}"] = cc.NumberColumn(
            f"score {task}", help=f"Primary metric on {task}, mean over seeds.", format="%.4f"
        )
    return config


def teacher_caption(board: pd.DataFrame, tasks: list[str]) -> str:
    """A one-line description of the teacher and its per-task scores."""
    teacher = board[board["role"] == "teacher"]
    if teacher.empty:
        return "No successful teacher run yet: retention cannot be computed."
    row = teacher.iloc[0]
    scores = ", ".join(f"{t} {row[f'score_{t}']:.4f}" for t in tasks if pd.notna(row[f"score_{t}"]))
    return f"Teacher: **{row['student']}** — {scores or 'no scores'}"


def show_failed_runs(runs: pd.DataFrame) -> None:
    """One expander per failed run, with its error."""
    failed = runs[runs["status"] == "failed"]
    if failed.empty:
        return
    st.subheader(f"Failed runs ({len(failed)})")
    for run in failed.itertuples(index=False):
        seed = "?" if pd.isna(run.seed) else int(run.seed)
        error = run.error if isinstance(run.error, str) and run.error else "(no error recorded)"
        student = run.student if isinstance(run.student, str) else "?"
        with st.expander(f"{run.method} · {student} · seed {seed} · {run.run_id}"):
            st.code(error, language=None)


def main() -> None:
    """Render the app."""
    st.set_page_config(page_title="kdbench leaderboard", layout="wide")
    st.title("kdbench leaderboard")
    db = db_path_from_args(sys.argv[1:])

    try:
        suites = load_suites(str(db)) if db.exists() else pd.DataFrame()
    except store.StoreError as exc:
        st.error(str(exc))
        st.stop()
    if suites.empty:
        st.info(f"No results in `{db}` yet. Run `{RUN_HINT}` to create a leaderboard.")
        st.stop()

    labels = {
        s.suite_hash: f"{s.name} ({s.suite_hash[:8]})" for s in suites.itertuples(index=False)
    }
    suite_hash = st.selectbox("Suite", list(labels), format_func=labels.__getitem__)
    try:
        board = load_leaderboard(str(db), suite_hash)
        runs = load_runs(str(db), suite_hash)
    except store.StoreError as exc:
        st.error(str(exc))
        st.stop()

    tasks = task_names(board)
    st.caption(teacher_caption(board, tasks))
    if board.empty:
        st.info(f"No successful runs in this suite yet. Run `{RUN_HINT}`.")
    else:
        per_task = st.checkbox("per-task columns", value=False)
        view = board if per_task else board.drop(columns=per_task_columns(tasks))
        view = view.assign(rank=[("-" if pd.isna(r) else str(int(r))) for r in view["rank"]])
        st.dataframe(view, column_config=column_config(tasks), hide_index=True)
    show_failed_runs(runs)
    st.caption(f"Database: `{db}` · data refreshes every 5 s on rerun.")


main()
