"""The open track under the leaderboard: the other suites of the chosen suite's teacher,
apart and labelled, each ranked within itself only (never with the chosen suite)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench.app.context import AppContext
from kdbench.app.data import load_data
from kdbench.app.formatting import MISSING
from kdbench.app.urls import QP, run_url

OPEN_TRACK_SUITES = 20  # at most this many other suites (same teacher, newest first) shown


def other_suites(ctx: AppContext) -> pd.DataFrame:
    """The other suites of the selected suite's teacher (newest first, at most
    :data:`OPEN_TRACK_SUITES`), with what differs from the selected one."""
    suites, this = ctx.suites, ctx.suite
    teacher = this["teacher"] if isinstance(this["teacher"], str) else ""
    same = suites[
        (suites["teacher"].fillna("") == teacher) & (suites["suite_hash"] != this["suite_hash"])
    ]
    same = same.head(OPEN_TRACK_SUITES)
    differs = [lb.differences_label(this["config"], c) for c in same["config"]]
    return same.assign(differs=differs)


def show_open_track(ctx: AppContext) -> None:
    """Other suites of the same teacher, apart and labelled: they are not ranked with this
    suite. Their rows (each ranked within its own suite) load on demand."""
    others_meta = other_suites(ctx)
    if others_meta.empty:
        return
    st.subheader("Other suites — not ranked with this one")
    st.caption(
        "Only runs of the same suite (teacher, data, budget) are ranked together. These "
        "suites share the teacher but differ as listed; each is ranked within itself only."
    )
    st.dataframe(
        others_meta[["label", "differs", "n_ok", "n_failed"]],
        hide_index=True,
        placeholder=MISSING,
        column_config={
            "label": st.column_config.TextColumn("suite"),
            "differs": st.column_config.TextColumn(
                "differs in", help="Suite sections that differ from the selected suite."
            ),
            "n_ok": st.column_config.NumberColumn("ok runs"),
            "n_failed": st.column_config.NumberColumn("failed runs"),
        },
    )
    if not st.toggle(
        "show their rows",
        key="others",
        bind=QP,
        help="Each suite's methods, ranked within that suite only.",
    ):
        return
    hashes = tuple(others_meta["suite_hash"])
    data = load_data(str(ctx.db), hashes, ctx.priced_with)
    others = lb.open_track(
        ctx.db,
        ctx.suite_hash,
        all_suites=ctx.suites[ctx.suites["suite_hash"].isin([*hashes, ctx.suite_hash])],
        board=data.boards.__getitem__,
        **ctx.filters.as_kwargs(),
    )
    if others.empty:
        st.info("No rows in those suites match the filters.")
        return
    cols = ["suite", "differs", "rank_label", "method", "student", "retention_avg", "seeds"]
    shown = others[cols].assign(run=[run_url(r) for r in others["run_id"]])
    st.dataframe(
        shown,
        hide_index=True,
        placeholder=MISSING,
        key="open_track",
        column_config={
            "suite": st.column_config.TextColumn("suite", help="The run's own suite."),
            "differs": st.column_config.TextColumn(
                "differs in", help="Suite sections that differ from the selected suite."
            ),
            "rank_label": st.column_config.TextColumn("rank in its suite"),
            "retention_avg": st.column_config.ProgressColumn(
                "retention", min_value=0.0, max_value=1.0, format="percent"
            ),
            "run": st.column_config.LinkColumn("run", display_text="open"),
        },
    )
