"""The Economics page: the break-even of distilling at a query volume, and the cascade that
routes the student's least confident queries to the teacher."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from kdbench import economics, store
from kdbench.app.context import AppContext
from kdbench.app.formatting import MISSING, finite_or, group_label
from kdbench.app.urls import QP


def render(ctx: AppContext) -> None:
    """Break-even of distilling at a query volume, and the confidence-routed cascade."""
    view = ctx.view
    students = view[view["role"] != "teacher"]
    teacher = view[view["role"] == "teacher"]
    if students.empty or teacher.empty:
        st.info("Economics needs a teacher and a student with successful runs.")
        return
    labels = [group_label(r) for _, r in students.iterrows()]
    row = students.iloc[labels.index(st.selectbox("student", labels, key="econ", bind=QP))]
    trow = teacher.iloc[0]
    prices = ctx.prices
    if prices is not None:
        table = pd.DataFrame(
            [
                (d.name, d.usd_per_hour, ", ".join(d.match) or "(no GPU)", d.source)
                for d in prices.devices.values()
            ],
            columns=["device", "USD per device-hour", "matches GPU names", "source"],
        )
        with st.expander(f"Price table: {prices.path}"):
            st.dataframe(table, hide_index=True, placeholder=MISSING)

    c1, c2 = st.columns(2)
    queries = c1.number_input(
        "queries per month",
        min_value=0.0,
        value=1_000_000.0,
        step=100_000.0,
        key="qpm",
        bind=QP,
    )
    tokens = c2.number_input(
        "tokens per query", min_value=1.0, value=256.0, step=32.0, key="tpq", bind=QP
    )
    # a stored value that is missing, infinite or negative gives no default (NaN)
    t_default = finite_or(economics.cost_per_query(trow["usd_per_mtok"], tokens), math.nan)
    s_default = finite_or(economics.cost_per_query(row["usd_per_mtok"], tokens), math.nan)
    if math.isnan(t_default) or math.isnan(s_default):
        st.caption(
            "No measured inference throughput (or no price for the hardware) for this pair: "
            "enter per-query prices."
        )
    c3, c4, c5 = st.columns(3)
    t_cost = c3.number_input(
        "teacher $ per query",
        min_value=0.0,
        format="%.8f",
        value=finite_or(t_default),
        key="tq",
        bind=QP,
    )
    s_cost = c4.number_input(
        "student $ per query",
        min_value=0.0,
        format="%.8f",
        value=finite_or(s_default),
        key="sq",
        bind=QP,
    )
    one_off = c5.number_input(
        "one-off distillation cost $",
        min_value=0.0,
        format="%.4f",
        value=finite_or(row["price_usd"]),
        key="oneoff",
        bind=QP,
        help="Default: the run's training price (device-hours x $/device-hour).",
    )
    result = economics.break_even(one_off, t_cost, s_cost, queries)
    m1, m2, m3 = st.columns(3)
    m1.metric("saving per query", f"${result.saving_per_query:.8f}")
    m2.metric("monthly saving", f"${result.monthly_saving:,.2f}")
    m3.metric(
        "break-even",
        "never"
        if math.isinf(result.months_to_break_even)
        else f"{result.months_to_break_even:.3g} months",
    )
    st.caption(
        "saving per query s = teacher − student price; monthly saving = s × queries per "
        "month; break-even = one-off cost / monthly saving "
        + (
            ""
            if math.isinf(result.queries_to_break_even)
            else f"(after {result.queries_to_break_even:,.0f} queries)."
        )
    )
    show_routing(ctx, row, trow, s_cost, t_cost)


def show_routing(
    ctx: AppContext, row: pd.Series, trow: pd.Series, s_cost: float, t_cost: float
) -> None:
    """The cascade's quality and cost as the routed share goes from 0 to 100%."""
    import altair as alt

    st.subheader("Routing: send the student's least confident queries to the teacher")
    student = store.read_samples(ctx.db, run_id=row["run_id"])
    teacher = store.read_samples(ctx.db, run_id=trow["run_id"])
    if student.empty or teacher.empty:
        st.info(
            "No per-question samples stored for this student or the teacher (runs written "
            "before samples were recorded): the routing simulation needs them."
        )
        return
    tasks = sorted(set(student["task"]) & set(teacher["task"]))
    choice = st.selectbox("questions of", ["all tasks", *tasks], key="route_task", bind=QP)
    if choice != "all tasks":
        student, teacher = student[student["task"] == choice], teacher[teacher["task"] == choice]
    meta = ctx.task_meta
    used = meta[meta["task"].isin(tasks if choice == "all tasks" else [choice])]
    odd = used[used["aggregation"].notna() & (used["aggregation"] != "mean")]
    if not odd.empty:
        st.warning(
            "Quality here is the mean of per-question correctness; lm-eval aggregates "
            + ", ".join(f"{r.task} by {r.aggregation}" for r in odd.itertuples())
            + ", so the curve only approximates those metrics."
        )
    unusable = sum(int((~economics.finite(f["correct"])).sum()) for f in (student, teacher))
    if unusable:
        st.warning(
            f"{unusable} stored per-question results have no finite correctness value "
            "(missing, infinite or NaN): they are left out of the simulation."
        )
    curve = economics.routing_curve(student, teacher, s_cost, t_cost)
    if curve.empty:
        st.info("The student's and the teacher's questions do not match (task, doc_id).")
        return
    share = alt.X("share:Q", title="share routed to the teacher", axis=alt.Axis(format="%"))
    base = alt.Chart(curve).encode(x=share, tooltip=list(curve.columns))
    quality = base.mark_line(point=True).encode(
        y=alt.Y("quality:Q", title="quality (mean correct)", scale=alt.Scale(zero=False))
    )
    cost = base.mark_line(point=alt.OverlayMarkDef(color="#d62728"), color="#d62728").encode(
        y=alt.Y("cost_per_query:Q", title="$ per query")
    )
    chart = alt.hconcat(
        quality.properties(title="quality", width=380, height=260),
        cost.properties(title="cost", width=380, height=260),
    )
    st.altair_chart(chart, key="routing_chart")
    st.dataframe(
        curve,
        hide_index=True,
        placeholder=MISSING,
        key="routing_table",
        column_config={
            "share": st.column_config.NumberColumn(format="percent"),
            "quality": st.column_config.NumberColumn(format="%.4f"),
            "cost_per_query": st.column_config.NumberColumn("$ per query", format="%.8f"),
            "retention": st.column_config.NumberColumn(format="percent"),
        },
    )
