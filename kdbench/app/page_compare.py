"""The Compare page: two methods side by side, per task and on average, with Welch's 95%
interval of the difference, per-seed values, sizes and costs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench.app.context import AppContext
from kdbench.app.formatting import MISSING, fmt, group_label
from kdbench.app.urls import QP


def render(ctx: AppContext) -> None:
    """Two groups side by side: retention per task with CIs and Welch's interval of the
    difference, per-seed values, sizes and costs."""
    view = ctx.view
    students = view[view["role"] != "teacher"]
    if len(students) < 2:
        st.info("Compare needs two methods with successful runs.")
        return
    labels = [group_label(r) for _, r in students.iterrows()]
    by_label = dict(zip(labels, students.to_dict("records"), strict=True))
    c1, c2 = st.columns(2)
    a = c1.selectbox("method A", labels, index=0, key="a", bind=QP)
    b = c2.selectbox("method B", labels, index=1, key="b", bind=QP)
    ra, rb = by_label[a], by_label[b]
    groups = [(ra["method"], ra["student"]), (rb["method"], rb["student"])]
    scores = lb.run_scores(ctx.db, ctx.suite_hash, groups)
    table = lb.compare(scores, groups[0], groups[1])
    st.dataframe(
        table,
        hide_index=True,
        placeholder=MISSING,
        key="compare_table",
        column_config={
            "a_retention": st.column_config.NumberColumn(f"A: {a}", format="percent"),
            "a_ci": st.column_config.NumberColumn("± A", format="percent"),
            "b_retention": st.column_config.NumberColumn(f"B: {b}", format="percent"),
            "b_ci": st.column_config.NumberColumn("± B", format="percent"),
            "difference": st.column_config.NumberColumn("A − B", format="percent"),
            "difference_ci": st.column_config.NumberColumn(
                "± (Welch 95%)", help="Empty unless both have 2+ seeds.", format="percent"
            ),
            "significant": st.column_config.CheckboxColumn(
                "interval excludes 0", help="Welch's 95% interval of A − B excludes zero."
            ),
        },
    )
    side = pd.DataFrame(
        {
            "": ["rank", "params", "train time (s)", "price (USD)", "tokens/s", "seeds"],
            a: [
                ra["rank_label"],
                fmt(ra["params"], ","),
                fmt(ra["train_wall_s"], ".1f"),
                fmt(ra["price_usd"], ".4f"),
                fmt(ra["infer_tokens_per_s"], ".0f"),
                str(ra["seeds"]),
            ],
            b: [
                rb["rank_label"],
                fmt(rb["params"], ","),
                fmt(rb["train_wall_s"], ".1f"),
                fmt(rb["price_usd"], ".4f"),
                fmt(rb["infer_tokens_per_s"], ".0f"),
                str(rb["seeds"]),
            ],
        }
    )
    if a == b:
        side = side.iloc[:, :2]
    st.dataframe(side, hide_index=True, placeholder=MISSING, key="compare_side")
    with st.expander("per-seed retention"):
        st.dataframe(scores, hide_index=True, placeholder=MISSING)
