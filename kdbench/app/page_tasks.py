"""The Tasks page: one task's primary metric as lm-eval declares it, and every method's
score and retention on it with 95% intervals, as a table and a bar chart."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench.app.columns import AGREEMENT_HELP, ECE_HELP, KL_HELP
from kdbench.app.context import AppContext
from kdbench.app.formatting import MISSING, finite_max
from kdbench.app.urls import QP, run_url


def add_fidelity_columns(table: pd.DataFrame, view: pd.DataFrame, task: str) -> bool:
    """Add ``task``'s agreement, KL and ECE to the page's table when some row has one;
    whether it did."""
    cols = {"agreement": f"fidelity_top1_{task}", "KL": f"fidelity_kl_{task}", "ECE": f"ece_{task}"}
    if not all(c in view for c in cols.values()) or view[list(cols.values())].isna().all().all():
        return False
    for name, col in cols.items():
        table[name] = view[col]
    return True


def fidelity_caption(view: pd.DataFrame, task: str) -> str:
    """What the fidelity columns are, with the teacher's ECE on ``task``."""
    teacher = view.loc[view["role"] == "teacher", f"ece_{task}"].dropna()
    ece = f"{float(teacher.iloc[0]):.3f}" if not teacher.empty else MISSING
    return (
        f"Agreement: top-1 agreement with the teacher on {task}'s evaluation tokens; KL: "
        f"KL(teacher || model) per token; ECE: expected calibration error (10 bins). The "
        f"teacher's ECE on {task}: {ece}. Not used in ranking."
    )


def render(ctx: AppContext) -> None:
    """One task: its metric as lm-eval declared it, and every group's score and retention
    with 95% CIs, as a table and a bar chart with error bars."""
    import altair as alt

    tasks = ctx.tasks
    if not tasks:
        st.info("No task scores in this suite yet.")
        return
    task = st.selectbox("task", tasks, key="task", bind=QP)
    meta = ctx.task_meta
    info = meta[meta["task"] == task]
    if not info.empty:
        m = info.iloc[0]
        direction = "higher is better" if m["higher_is_better"] else "lower is better"
        agg = m["aggregation"] if isinstance(m["aggregation"], str) else "not recorded"
        st.markdown(
            f"Primary metric **{m['metric']}**, {direction}, aggregated over questions by "
            f"**{agg}**, as the lm-eval task declares it."
        )
    view = ctx.view
    table = view[["method", "family", "student", "role", "seeds"]].copy()
    table["score"] = view[f"score_{task}"]
    table["score ± CI"] = view[f"score_ci_{task}"]
    table["retention"] = view[f"retention_{task}"]
    table["retention ± CI"] = view[f"retention_ci_{task}"] * 100
    fidelity = add_fidelity_columns(table, view, task)
    table["run"] = [run_url(r) for r in view["run_id"]]
    table = table.sort_values("retention", ascending=False, na_position="last")
    st.dataframe(
        table,
        hide_index=True,
        placeholder=MISSING,
        key="task_table",
        column_config={
            "score": st.column_config.NumberColumn(format="%.4f"),
            "score ± CI": st.column_config.NumberColumn(format="± %.4f"),
            "retention": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=finite_max(table["retention"]),
                format="percent",
            ),
            "retention ± CI": st.column_config.NumberColumn(format="± %.1f pts"),
            "agreement": st.column_config.NumberColumn(help=AGREEMENT_HELP, format="percent"),
            "KL": st.column_config.NumberColumn(help=KL_HELP, format="%.4f"),
            "ECE": st.column_config.NumberColumn(help=ECE_HELP, format="%.3f"),
            "run": st.column_config.LinkColumn(display_text="open"),
        },
    )
    if fidelity:
        st.caption(fidelity_caption(view, task))
    bars = table.dropna(subset=["retention"]).assign(
        group=lambda d: d["method"] + " · " + d["student"].astype(str),
        lo=lambda d: d["retention"] - d["retention ± CI"].fillna(0) / 100,
        hi=lambda d: d["retention"] + d["retention ± CI"].fillna(0) / 100,
    )
    if bars.empty:
        return
    order = list(bars["group"])
    base = alt.Chart(bars).encode(
        y=alt.Y("group:N", sort=order, title=None, axis=alt.Axis(labelLimit=300))
    )
    chart = base.mark_bar().encode(
        x=alt.X("retention:Q", axis=alt.Axis(format="%")), color="role:N", href="run:N"
    ) + base.mark_rule().encode(x="lo:Q", x2="hi:Q")
    chart = chart.properties(height=max(120, 28 * len(bars)), title=f"retention on {task}")
    st.altair_chart(chart, key="task_chart")
