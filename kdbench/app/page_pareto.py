"""The Pareto page: retention against size, training cost and inference speed, the Pareto
front of the students highlighted; and retention against fidelity to the teacher (agreement,
KL, calibration), so a user sees whether matching the teacher goes with generalising. Every
point links to its run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from kdbench import economics
from kdbench.app.context import AppContext
from kdbench.app.formatting import group_label
from kdbench.app.quantized import show_size_chart
from kdbench.app.urls import QP, run_url

if TYPE_CHECKING:  # altair is imported where a chart is drawn: it costs ~0.7 s to import
    import altair as alt
    import pandas as pd

PARETO_AXES = (
    ("params", "parameters (log scale)", True, "log"),
    ("train_cost", "training cost", True, "linear"),
    ("infer_tokens_per_s", "inference tokens/s", False, "linear"),
)


def training_cost_column(view: pd.DataFrame) -> tuple[str, str]:
    """The best training-cost measure the rows have: price, device-hours or wall time."""
    for col, label in (
        ("price_usd", "training price (USD)"),
        ("device_hours", "training device-hours"),
        ("train_wall_s", "training wall time (s)"),
    ):
        if view[col].notna().any():
            return col, label
    return "price_usd", "training price (USD)"


def pareto_chart(
    data: pd.DataFrame, x: str, x_title: str, minimize: bool, scale: str
) -> alt.LayerChart:
    """Retention vs ``x``: every group a point linking to its run page, the front
    highlighted and joined by a line; the teacher a grey diamond for reference."""
    import altair as alt

    pts = data[[x, "retention_avg", "role", "rank_label", "seeds", "run_id"]].assign(
        url=[run_url(r) for r in data["run_id"]],
        group=[group_label(r) for _, r in data.iterrows()],
    )
    students = pts[pts["role"] != "teacher"]
    front = economics.pareto_front(students[x], students["retention_avg"], minimize_x=minimize)
    pts["front"] = "not on the front"
    pts.loc[students.index[front], "front"] = "Pareto front"
    pts.loc[pts["role"] == "teacher", "front"] = "teacher"
    xenc = alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(type=scale, zero=False))
    yenc = alt.Y("retention_avg:Q", title="retention", axis=alt.Axis(format="%"))
    color = alt.Color(
        "front:N",
        title=None,
        scale=alt.Scale(
            domain=["Pareto front", "not on the front", "teacher"],
            range=["#d62728", "#9ecae1", "#7f7f7f"],
        ),
    )
    points = (
        alt.Chart(pts)
        .mark_point(filled=True, size=90)
        .encode(
            x=xenc,
            y=yenc,
            color=color,
            shape=alt.Shape("role:N", title="role"),
            href="url:N",
            tooltip=point_tooltip(x),
        )
    )
    line = (
        alt.Chart(pts[pts["front"] == "Pareto front"].sort_values(x))
        .mark_line(color="#d62728", strokeDash=[4, 3])
        .encode(x=xenc, y=yenc)
    )
    return alt.layer(line, points).properties(height=360)


def render(ctx: AppContext) -> None:
    """Retention against size, training cost and inference speed, with Pareto fronts."""
    view = ctx.view
    data = view[view["retention_avg"].notna()].copy()
    cost_col, cost_label = training_cost_column(data)
    data["train_cost"] = data[cost_col].astype(float)
    st.caption(
        "Red points are Pareto-optimal among the students: no other student has at least "
        "their retention with a smaller size / lower cost / higher speed. Click a point to "
        "open its run."
    )
    for x, title, minimize, scale in PARETO_AXES:
        if x == "train_cost":
            title = cost_label
        st.subheader(f"Retention vs {title}")
        values = data[x].astype(float)
        has_x = data[economics.finite(values) & ((values > 0) if scale == "log" else True)]
        missing = len(data) - len(has_x)
        if has_x.empty:
            st.info(f"No stored {title} for these runs (older runs lack it): nothing to plot.")
            continue
        data_x = has_x.astype({x: float})
        st.altair_chart(pareto_chart(data_x, x, title, minimize, scale), key=f"pareto_{x}")
        if missing:
            st.caption(f"{missing} rows without {title} are not shown.")
    show_size_chart(ctx)
    show_fidelity_chart(data)


FIDELITY_AXES = {
    "agreement with the teacher": ("fidelity_top1", "top-1 agreement with the teacher", "%"),
    "KL(teacher || student)": ("fidelity_kl", "KL(teacher || student), nats per token", ".3f"),
    "calibration error (ECE)": ("ece", "expected calibration error", ".3f"),
}


def point_tooltip(x: str) -> list[object]:
    """The tooltip of a student group's point on a chart of retention against ``x``."""
    import altair as alt

    return [
        "group:N",
        "rank_label:N",
        alt.Tooltip("retention_avg:Q", format=".1%"),
        alt.Tooltip(f"{x}:Q", format=".4g"),
        "seeds:Q",
        "run_id:N",
    ]


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation of two series (Pearson's on their average ranks); NaN
    with fewer than three pairs or no spread."""
    import math

    pairs = x.astype(float).to_frame("x").assign(y=y.astype(float).to_numpy()).dropna()
    if len(pairs) < 3:
        return math.nan
    return float(pairs["x"].corr(pairs["y"], method="spearman"))


def fidelity_chart(data: pd.DataFrame, x: str, title: str, fmt: str) -> alt.Chart:
    """Retention vs a fidelity column: one point per student group, linking to its run."""
    import altair as alt

    pts = data[[x, "retention_avg", "role", "rank_label", "seeds", "run_id"]].assign(
        url=[run_url(r) for r in data["run_id"]],
        group=[group_label(r) for _, r in data.iterrows()],
    )
    return (
        alt.Chart(pts)
        .mark_point(filled=True, size=90)
        .encode(
            x=alt.X(f"{x}:Q", title=title, scale=alt.Scale(zero=False), axis=alt.Axis(format=fmt)),
            y=alt.Y("retention_avg:Q", title="retention", axis=alt.Axis(format="%")),
            color=alt.Color("role:N", title="role"),
            href="url:N",
            tooltip=point_tooltip(x),
        )
        .properties(height=320)
    )


def show_fidelity_chart(data: pd.DataFrame) -> None:
    """Retention against the chosen fidelity measure among the students, with Spearman's
    rank correlation; nothing when no run has fidelity rows (stored before they existed)."""
    students = data[data["role"] != "teacher"]
    have = [c for c, _, _ in FIDELITY_AXES.values() if c in students]
    if not have or students[have].isna().all().all():
        return
    st.subheader("Retention vs fidelity to the teacher")
    choice = st.selectbox("fidelity measure", list(FIDELITY_AXES), key="fidelity_axis", bind=QP)
    x, title, fmt = FIDELITY_AXES[choice]
    points = students[students[x].notna()].astype({x: float})
    if points.empty:
        st.info(f"No stored {choice} for these runs: nothing to plot.")
        return
    st.altair_chart(fidelity_chart(points, x, title, fmt), key="fidelity_chart")
    rho = spearman(points[x], points["retention_avg"])
    rho_text = f"{rho:+.2f}" if rho == rho else "— (fewer than three students)"
    st.caption(
        f"Each point is a student group (mean over seeds). Spearman's rank correlation of "
        f"{choice} with retention over {len(points)} groups: {rho_text}. Distillation papers "
        "disagree on whether students that match the teacher better also generalise better: "
        "this is what this suite says."
    )
