"""The sidebar: teacher and suite pickers, and the method / family / student filters (all
bound to the URL; they live in the entrypoint, so they stay when the page changes)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench.app.context import Filters
from kdbench.app.urls import QP
from kdbench.verify import division


def suite_picker(suites: pd.DataFrame) -> tuple[pd.Series, str | None]:
    """Teacher and suite pickers; returns the chosen suite's row and teacher (None: all)."""
    teachers = sorted(t for t in suites["teacher"].dropna().unique())
    teacher = st.sidebar.selectbox(
        "teacher", ["all", *teachers], key="teacher", bind=QP, help="Narrows the suites."
    )
    if teacher != "all":
        suites = suites[suites["teacher"] == teacher]
    divisions = pd.Series([division(str(h))[0] for h in suites["suite_hash"]], index=suites.index)
    chosen = st.sidebar.selectbox(
        "division",
        ["all", *sorted(divisions.unique())],
        key="division",
        bind=QP,
        help="closed: the suite is one shipped in leaderboards/ (same recipe for everyone); "
        "open: any other suite.",
    )
    if chosen != "all":
        suites = suites[divisions == chosen]
    label = st.sidebar.selectbox(
        "suite",
        list(suites["label"]),
        key="suite",
        bind=QP,
        help="Only runs of one suite (same teacher, data, budget) are ranked together.",
    )
    row = suites[suites["label"] == label].iloc[0]
    return row, None if teacher == "all" else teacher


def board_filters(board: pd.DataFrame, suite_hash: str | None = None) -> Filters:
    """The method, family, student and submitter filters over a suite's board (none when it
    is empty)."""
    if board.empty:
        return Filters()
    students = board[~board["is_teacher"]]
    methods = st.sidebar.multiselect(
        "method",
        sorted(students["method"].unique()),
        key="method",
        bind=QP,
        placeholder="all methods",
    )
    families = st.sidebar.multiselect(
        "family",
        sorted(students["family"].dropna().unique()),
        key="family",
        bind=QP,
        placeholder="all families",
    )
    by_size = students.groupby("student", dropna=True)["params"].max().sort_values()
    chosen = st.sidebar.multiselect(
        "student (by size)",
        list(by_size.index),
        key="student",
        bind=QP,
        placeholder="all students",
        help="Students, smallest first: "
        + ", ".join(f"{s} {lb.fmt_params(p)}" for s, p in by_size.items()),
    )
    submitters = st.sidebar.multiselect(
        "submitter",
        sorted(board["submitter"].unique()) if "submitter" in board else [lb.LOCAL],
        key="submitter",
        bind=QP,
        placeholder="all submitters",
        help=f"Who submitted the runs (kdbench import); {lb.LOCAL}: this database's own runs.",
    )
    return Filters.of(methods, families, chosen, submitters)
