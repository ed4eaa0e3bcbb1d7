"""The quantised rows in the app (``[eval] quantize``, :mod:`kdbench.quant_board`): on the
Leaderboard page behind a *quantised rows* checkbox (kept in the URL), and on the Pareto page
as a retention-vs-bytes-on-disk chart where each scheme has its own marker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from kdbench import quant_board
from kdbench.app.context import AppContext
from kdbench.app.formatting import MISSING
from kdbench.app.urls import QP, run_url

if TYPE_CHECKING:
    import altair as alt

# the marker of each variant on the bytes chart
SHAPES = {"full precision": "circle", "int8": "square", "int4": "triangle-up"}


@st.cache_data(ttl=5, show_spinner=False)
def load_quantized(
    db: str,
    suite_hash: str,
    methods: tuple[str, ...] | None,
    families: tuple[str, ...] | None,
    students: tuple[str, ...] | None,
) -> pd.DataFrame:
    """:func:`kdbench.quant_board.quantized_board` of a suite with the sidebar's filters
    (cached 5 s)."""
    return quant_board.quantized_board(
        db, suite_hash, methods=methods, families=families, students=students
    )


def quantized_view(ctx: AppContext) -> pd.DataFrame:
    """The chosen suite's quantised rows, filtered as the board is."""
    return load_quantized(str(ctx.db), ctx.suite_hash, **ctx.filters.as_kwargs())


def show_quantized_rows(ctx: AppContext) -> None:
    """The *quantised rows* checkbox and, when ticked, the table of quantised groups."""
    if not st.checkbox(
        "quantised rows",
        key="quantized",
        bind=QP,
        help="Each model also scored after weight-only quantisation ([eval] quantize): "
        "retention against the full-precision teacher, bytes on disk and size ratios.",
    ):
        return
    view = quantized_view(ctx)
    if view.empty:
        st.info('No quantised runs in this suite: add `quantize = ["int8"]` to its `[eval]`.')
        return
    st.subheader("Quantised rows")
    shown = view[list(quant_board.QUANT_COLUMNS)].drop(columns=["parent_run_id"])
    shown = shown.assign(run_id=[run_url(r) for r in shown["run_id"]])
    cc = st.column_config
    st.dataframe(
        shown,
        hide_index=True,
        placeholder=MISSING,
        key="quantized_board",
        column_config={
            "quant": cc.TextColumn("quant", help="Weight-only scheme (torchao)."),
            "retention_avg": cc.NumberColumn(
                "retention", help="Against the full-precision teacher.", format="percent"
            ),
            "retention_ci": cc.NumberColumn("± 95% CI", format="percent"),
            "retention_fp": cc.NumberColumn(
                "full precision", help="The full-precision group's retention.", format="percent"
            ),
            "retention_drop": cc.NumberColumn(
                "drop", help="Retention lost to quantisation.", format="percent"
            ),
            "bytes": cc.NumberColumn("bytes", help="The quantised weights file on disk."),
            "bytes_fp": cc.NumberColumn("fp bytes", help="The full-precision saved weights."),
            "size_ratio": cc.NumberColumn(
                "vs teacher", help="bytes / the full-precision teacher's bytes.", format="percent"
            ),
            "compression": cc.NumberColumn("x smaller", format="%.2f"),
            "quantized_params": cc.NumberColumn(
                "quantised params", help="Parameters stored in the quantised format."
            ),
            "run_id": cc.LinkColumn("run", display_text="open"),
        },
    )


def size_chart(points: pd.DataFrame) -> alt.Chart:
    """Retention vs bytes on disk (log scale): full-precision and quantised groups, a marker
    per variant, each point linking to its run."""
    import altair as alt

    data = points.assign(
        url=[run_url(r) for r in points["run_id"]],
        group=[f"{m} → {s}" for m, s in zip(points["method"], points["student"], strict=True)],
    )
    domain = [v for v in SHAPES if v in set(data["variant"])]
    return (
        alt.Chart(data)
        .mark_point(filled=True, size=90)
        .encode(
            x=alt.X("bytes:Q", title="bytes on disk (log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("retention_avg:Q", title="retention", axis=alt.Axis(format="%")),
            shape=alt.Shape(
                "variant:N",
                title="weights",
                scale=alt.Scale(domain=domain, range=[SHAPES[v] for v in domain]),
            ),
            color=alt.Color("variant:N", title="weights", scale=alt.Scale(domain=domain)),
            href="url:N",
            tooltip=[
                "group:N",
                "variant:N",
                alt.Tooltip("retention_avg:Q", format=".1%"),
                alt.Tooltip("bytes:Q", format=",.0f"),
                "run_id:N",
            ],
        )
        .properties(height=360)
    )


def show_size_chart(ctx: AppContext) -> None:
    """On the Pareto page, for a suite with quantised runs: retention vs bytes on disk of
    the full-precision and quantised groups."""
    quantized = quantized_view(ctx)
    if quantized.empty:
        return
    points = quant_board.size_points(ctx.view, quantized)
    st.subheader("Retention vs bytes on disk, quantised")
    st.caption(
        "Full-precision groups and their weight-only quantised variants ([eval] quantize), "
        "retention against the full-precision teacher; each variant has its own marker."
    )
    st.altair_chart(size_chart(points), key="pareto_bytes")
