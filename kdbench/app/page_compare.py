"""The Compare page: two methods side by side, per task and on average, with Welch's 95%
interval of the difference over seeds, the paired test over questions (:mod:`kdbench.stats`),
per-seed values, sizes and costs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench import stats
from kdbench.app.context import AppContext
from kdbench.app.data import load_compare_test
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
    show_paired_test(ctx, a, b, groups[0], groups[1], students)
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


def show_paired_test(
    ctx: AppContext,
    a: str,
    b: str,
    group_a: tuple[str, str],
    group_b: tuple[str, str],
    students: pd.DataFrame,
) -> None:
    """The paired test of A vs B over the questions both were scored on (seeds pooled): the
    bootstrap of the retention difference (the test), its p-value and the Holm-adjusted one
    over every pair of methods in the view, and McNemar's exact test beside it."""
    family = tuple(zip(students["method"], students["student"], strict=True))
    test = load_compare_test(str(ctx.db), ctx.suite_hash, ctx.priced_with, group_a, group_b, family)
    st.subheader("Paired test over questions")
    if not test["pairs"]:
        st.info(
            "No paired test: A and B have no per-question samples in common on every task "
            "(runs stored before samples were)."
        )
        return
    holm_p, mark = test["holm_p"], test["mark"] or MISSING
    st.caption(
        f"Paired bootstrap ({stats.RESAMPLES} resamples of each task's questions, shared by A "
        f"and B and every seed) of the retention difference A − B over {test['pairs']} "
        f"(seed, task, question) pairs from {test['seeds']} seeds. Holm's correction over "
        f"the {test['family_size']} pairwise comparisons of the methods in this view. "
        f"Result: **{mark}** (adjusted p {fmt(holm_p, '.4f')}, significant below "
        f"{stats.ALPHA})."
    )
    table = pd.DataFrame(
        [
            {
                "test": "paired bootstrap (retention)",
                "A − B": test["difference"],
                "95% low": test["ci_low"],
                "95% high": test["ci_high"],
                "p": test["p_value"],
                "p (Holm)": holm_p,
                "A right, B wrong": None,
                "A wrong, B right": None,
            },
            {
                "test": "McNemar exact (right/wrong)",
                "A − B": None,
                "95% low": None,
                "95% high": None,
                "p": test["mcnemar_p"],
                "p (Holm)": None,
                "A right, B wrong": test["a_only"],
                "A wrong, B right": test["b_only"],
            },
        ]
    )
    pct = st.column_config.NumberColumn
    st.dataframe(
        table,
        hide_index=True,
        placeholder=MISSING,
        key="compare_paired",
        column_config={
            "A − B": pct(format="percent", help="Mean over tasks of the retention difference."),
            "95% low": pct(format="percent", help="Percentile bootstrap interval."),
            "95% high": pct(format="percent"),
            "p": pct(format="%.4f", help="Two-sided, unadjusted."),
            "p (Holm)": pct(
                format="%.4f",
                help="Holm-adjusted over every pair of methods shown (the sidebar filters).",
            ),
            "A right, B wrong": pct(format="%d"),
            "A wrong, B right": pct(format="%d"),
        },
    )
    st.caption(
        "The bootstrap is the test: it measures what the board ranks (retention, each task "
        "weighing the same). McNemar's exact test pools right/wrong answers over tasks and "
        "is shown only where every answer is 0 or 1."
    )
