"""Streamlit leaderboard app for kdbench.

Run with ``streamlit run app.py -- --db results/kdbench.duckdb [--prices FILE]``. Without
``--db`` the database path comes from ``$KDBENCH_DB``, else ``results/kdbench.duckdb``; without
``--prices`` the hardware price table comes from ``$KDBENCH_PRICES``, else
``leaderboards/prices/default.toml``.

Pages: Leaderboard (ranked table, filters, export), Pareto (retention vs size, training cost,
inference speed), Tasks (per-task drill-down), Compare (two methods side by side), Economics
(break-even of distilling, confidence-routed cascade) and Run (full provenance of one run).
Every control is bound to a URL query parameter, so a view is a shareable link; a run's page
is ``?page=Run&run=<run_id>``.

The app only opens the database read-only, one short connection per group of queries, so it
can stay up while ``kdbench run`` is writing; reads are cached for 5 seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st

from kdbench import economics, store
from kdbench import leaderboard as lb

if TYPE_CHECKING:  # altair is imported where a chart is drawn: it costs ~0.7 s to import
    import altair as alt

RUN_HINT = "kdbench run leaderboards/tiny.toml"
PAGES = ("Leaderboard", "Pareto", "Tasks", "Compare", "Economics", "Run")
SORTS = ("rank", "retention", "gain vs sft", "params", "training price", "inference speed")
_SORT_COLUMNS = {
    "retention": ("retention_avg", False),
    "gain vs sft": ("gain_vs_sft", False),
    "params": ("params", True),
    "training price": ("price_usd", True),
    "inference speed": ("infer_tokens_per_s", False),
}
RETENTION_HELP = (
    "Arithmetic mean over tasks of student score / teacher score on each task's primary "
    "metric (teacher / student where lm-eval declares the metric lower-is-better), then the "
    "mean over seeds. The bar is full at 100% (or at the best row when it beats the teacher)."
)
QP = "query-params"  # every control's value lives in the URL under its key
MISSING = "—"
OPEN_TRACK_SUITES = 20  # at most this many other suites (same teacher, newest first) shown


# --------------------------------------------------------------------------- inputs


def args_from_argv(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--prices`` from the script arguments."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db", default=None)
    parser.add_argument("--prices", default=None)
    args, _ = parser.parse_known_args(argv)
    return args


def db_path_from_args(argv: list[str]) -> Path:
    """``--db`` from the script arguments, else ``$KDBENCH_DB``, else the default path."""
    return Path(args_from_argv(argv).db or os.environ.get("KDBENCH_DB") or store.DEFAULT_DB)


def prices_path_from_args(argv: list[str]) -> Path:
    """``--prices``, else ``$KDBENCH_PRICES``, else the shipped example price table."""
    given = args_from_argv(argv).prices or os.environ.get("KDBENCH_PRICES")
    return Path(given) if given else economics.DEFAULT_PRICES


@st.cache_data(ttl=5, show_spinner=False)
def load_suites(db: str) -> pd.DataFrame:
    """Suites, newest first (cached 5 s)."""
    return lb.suites(db)


@st.cache_data(ttl=5, show_spinner=False)
def load_data(db: str, hashes: tuple[str, ...], prices_path: str | None) -> lb.SuiteData:
    """Boards, task info and failed runs of these suites through one short read-only
    connection, priced with the table at ``prices_path`` (None: no prices) (cached 5 s)."""
    prices = load_prices(prices_path) if prices_path else None
    return lb.suite_data(db, hashes, prices=prices)


@st.cache_data(ttl=60, show_spinner=False)
def load_prices(path: str) -> economics.PriceTable:
    """The price table (cached 60 s); raises PriceError on a malformed file."""
    return economics.load_prices(path)


# --------------------------------------------------------------------------- formatting


def run_url(run_id: object) -> str | None:
    """The run page's relative URL (a shareable link)."""
    return None if lb.is_missing(run_id) else f"?page=Run&run={quote(str(run_id), safe='')}"


def fmt(value: object, spec: str = "", suffix: str = "") -> str:
    """``value`` formatted with ``spec``, or an em dash when missing."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING
    try:
        return f"{value:{spec}}{suffix}"
    except (TypeError, ValueError):
        return f"{value}{suffix}"


def export_bytes(view: pd.DataFrame, kind: str) -> bytes:
    """The current view as CSV or Parquet bytes (raw values, the view's columns and order)."""
    if kind == "csv":
        return view.to_csv(index=False).encode()
    buf = io.BytesIO()
    view.to_parquet(buf, index=False)
    return buf.getvalue()


def column_config(tasks: list[str], task_meta: pd.DataFrame) -> dict[str, object]:
    """``st.dataframe`` column configuration for a display frame of the board."""
    cc = st.column_config
    config: dict[str, object] = {
        "rank_label": cc.TextColumn(
            "rank",
            help="Shared ranks: a method's 95% interval of retention overlaps those of the "
            "methods it shares ranks with (e.g. 2–4). The teacher is not ranked.",
        ),
        "method": cc.TextColumn("method", help="Distillation method (plugin name)."),
        "family": cc.TextColumn("family", help="Method family."),
        "student": cc.TextColumn(
            "student", help="Student model; on the teacher row, the teacher model."
        ),
        "role": cc.TextColumn(
            "role", help="teacher = reference; baseline = sft, no distillation; method."
        ),
        "retention_avg": cc.ProgressColumn(
            "retention", help=RETENTION_HELP, min_value=0.0, max_value=1.0, format="percent"
        ),
        "retention_ci": cc.NumberColumn(
            "± 95% CI",
            help="Half-width of the 95% confidence interval over seeds (Student t), in "
            "percentage points. Empty with one seed: no interval.",
            format="± %.1f pts",
        ),
        "gain_vs_sft": cc.NumberColumn(
            "gain vs sft",
            help="Retention minus that of sft on the same student, in percentage points.",
            format="%+.1f pts",
        ),
        "gain_ci": cc.NumberColumn(
            "± gain CI",
            help="Welch 95% interval of the gain, in points; empty unless both have 2+ seeds.",
            format="± %.1f",
        ),
        "params": cc.NumberColumn("params", help="Parameter count.", format="compact"),
        "param_ratio": cc.NumberColumn(
            "size vs teacher", help="Parameters relative to the teacher.", format="percent"
        ),
        "bytes": cc.NumberColumn("bytes", help="Saved model size on disk.", format="compact"),
        "train_wall_s": cc.NumberColumn(
            "train time", help="Mean training wall-clock seconds over seeds.", format="%.1f s"
        ),
        "device_hours": cc.NumberColumn(
            "device-h",
            help="Measured device-hours of the run (GPU-h, or CPU core-h).",
            format="%.4f",
        ),
        "price_usd": cc.NumberColumn(
            "price", help="device-hours x $/device-hour from the price table.", format="$%.4f"
        ),
        "total_flops": cc.NumberColumn(
            "FLOPs",
            help="Analytic FLOPs: student training incl. live teacher passes, plus this "
            "run's share of the teacher's cache building and generation.",
            format="%.3e",
        ),
        "infer_tokens_per_s": cc.NumberColumn(
            "tokens/s", help="Measured inference throughput.", format="%.0f"
        ),
        "infer_latency_ms": cc.NumberColumn(
            "latency", help="Measured ms per query at batch 1.", format="%.1f ms"
        ),
        "speedup": cc.NumberColumn(
            "speed-up",
            help="Tokens/s relative to the teacher on the same hardware.",
            format="%.2fx",
        ),
        "usd_per_mtok": cc.NumberColumn(
            "$/M tokens",
            help="$/device-hour / (tokens/s x 3600) x 1e6: one device at its throughput.",
            format="$%.4f",
        ),
        "seeds": cc.NumberColumn("seeds", help="Successful runs (seeds) averaged over."),
        "failed": cc.NumberColumn("failed", help="Failed runs; listed below the table."),
        "run": cc.LinkColumn(
            "run", help="The run page (lowest seed) with full provenance.", display_text="open"
        ),
    }
    # one row per task (a task whose runs disagree on the primary metric shows the first)
    meta = task_meta.drop_duplicates("task").set_index("task")
    for task in tasks:
        declared = ""
        if task in meta.index:
            m = meta.loc[task]
            direction = "higher is better" if m["higher_is_better"] else "lower is better"
            agg = m["aggregation"] if isinstance(m["aggregation"], str) else "not recorded"
            declared = f" Metric {m['metric']}, {direction}, aggregation {agg} (lm-eval)."
        config[f"retention_{task}"] = cc.NumberColumn(
            f"ret. {task}", help=f"Student / teacher on {task}.{declared}", format="percent"
        )
        config[f"retention_ci_{task}"] = cc.NumberColumn(
            f"± {task}",
            help=f"95% CI half-width of retention on {task}, points.",
            format="± %.1f",
        )
        config[f"score_{task}"] = cc.NumberColumn(
            f"score {task}",
            help=f"Primary metric on {task}, mean over seeds.{declared}",
            format="%.4f",
        )
    return config


DISPLAY_COLUMNS = (
    "rank_label",
    "method",
    "family",
    "student",
    "role",
    "retention_avg",
    "retention_ci",
    "gain_vs_sft",
    "gain_ci",
)
COST_DISPLAY = (
    "params",
    "param_ratio",
    "bytes",
    "train_wall_s",
    "device_hours",
    "price_usd",
    "total_flops",
    "infer_tokens_per_s",
    "infer_latency_ms",
    "speedup",
    "usd_per_mtok",
    "seeds",
    "failed",
)
_POINTS = ("retention_ci", "gain_vs_sft", "gain_ci")  # shown x100, in points


def display_frame(view: pd.DataFrame, tasks: list[str], per_task: bool) -> pd.DataFrame:
    """The on-screen table: chosen columns, interval columns in percentage points, a link."""
    task_cols = []
    if per_task:
        for t in tasks:
            task_cols += [f"retention_{t}", f"retention_ci_{t}", f"score_{t}"]
    shown = view[[*DISPLAY_COLUMNS, *task_cols, *COST_DISPLAY]].copy()
    for col in (*_POINTS, *(c for c in task_cols if c.startswith("retention_ci_"))):
        shown[col] = shown[col].astype(float) * 100
    shown.insert(shown.columns.get_loc("role") + 1, "run", [run_url(r) for r in view["run_id"]])
    return shown


def export_frame(view: pd.DataFrame, tasks: list[str], per_task: bool) -> pd.DataFrame:
    """What the download buttons write: the view's rows and columns, raw values."""
    task_cols = lb.task_columns(tasks) if per_task else []
    cols = ["rank_label", *DISPLAY_COLUMNS[1:], *task_cols, *COST_DISPLAY, "run_id"]
    return view[cols].rename(columns={"rank_label": "rank"}).reset_index(drop=True)


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


def teacher_caption(board: pd.DataFrame, tasks: list[str]) -> str:
    """A one-line description of the teacher and its per-task scores."""
    teacher = board[board["role"] == "teacher"] if not board.empty else board
    if teacher.empty:
        return "No successful teacher run yet: retention cannot be computed."
    row = teacher.iloc[0]
    scores = ", ".join(f"{t} {row[f'score_{t}']:.4f}" for t in tasks if pd.notna(row[f"score_{t}"]))
    return f"Teacher: **{row['student']}** — {scores or 'no scores'}"


def group_label(row: Any) -> str:
    """``method · student`` for a board row."""
    return f"{row['method']} · {row['student']}"


# --------------------------------------------------------------------------- pages


def page_leaderboard(ctx: dict[str, Any]) -> None:
    """The ranked table with filters, per-task toggle, sorting, export, failed runs and the
    other suites (open track)."""
    view: pd.DataFrame = ctx["view"]
    tasks: list[str] = ctx["tasks"]
    st.caption(teacher_caption(view, tasks))
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
    c1, c2 = st.columns(2)
    per_task = c1.toggle(
        "per-task columns", key="per_task", bind=QP, help="Retention and score of each task."
    )
    how = c2.selectbox("sort by", SORTS, key="sort", bind=QP)
    view = sort_view(view, how)
    shown = display_frame(view, tasks, per_task)
    config = column_config(tasks, ctx["task_meta"])
    top = max(1.0, float(np.nanmax(view["retention_avg"].to_numpy(dtype=float), initial=1.0)))
    config["retention_avg"] = st.column_config.ProgressColumn(
        "retention", help=RETENTION_HELP, min_value=0.0, max_value=top, format="percent"
    )
    st.dataframe(shown, column_config=config, hide_index=True, placeholder=MISSING, key="board")
    export = export_frame(view, tasks, per_task)
    name = f"kdbench-{ctx['suite_hash'][:8]}"
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
    show_failed_runs(ctx)
    show_open_track(ctx)


def last_line(error: object) -> str:
    """The last non-empty line of a traceback (the exception), or a note when none."""
    lines = [x for x in str(error).splitlines() if x.strip()] if isinstance(error, str) else []
    return lines[-1].strip() if lines else "(no error recorded)"


def show_failed_runs(ctx: dict[str, Any]) -> None:
    """The suite's failed runs: the exception line of each, and a link to its run page with
    the full traceback."""
    failed = ctx["failed"]
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


def other_suites(ctx: dict[str, Any]) -> pd.DataFrame:
    """The other suites of the selected suite's teacher (newest first, at most
    :data:`OPEN_TRACK_SUITES`), with what differs from the selected one."""
    suites, this = ctx["suites"], ctx["suite"]
    teacher = this["teacher"] if isinstance(this["teacher"], str) else ""
    same = suites[
        (suites["teacher"].fillna("") == teacher) & (suites["suite_hash"] != this["suite_hash"])
    ]
    same = same.head(OPEN_TRACK_SUITES)
    differs = [
        ", ".join(lb.suite_differences(this["config"], c)) or "name only" for c in same["config"]
    ]
    return same.assign(differs=differs)


def show_open_track(ctx: dict[str, Any]) -> None:
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
    data = load_data(ctx["db"], hashes, ctx["prices_path"])
    others = lb.open_track(
        ctx["db"],
        ctx["suite_hash"],
        all_suites=ctx["suites"][ctx["suites"]["suite_hash"].isin([*hashes, ctx["suite_hash"]])],
        board=data.boards.__getitem__,
        **ctx["filters"],
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
            tooltip=[
                "group:N",
                "rank_label:N",
                alt.Tooltip("retention_avg:Q", format=".1%"),
                alt.Tooltip(f"{x}:Q", format=".4g"),
                "seeds:Q",
                "run_id:N",
            ],
        )
    )
    line = (
        alt.Chart(pts[pts["front"] == "Pareto front"].sort_values(x))
        .mark_line(color="#d62728", strokeDash=[4, 3])
        .encode(x=xenc, y=yenc)
    )
    return alt.layer(line, points).properties(height=360)


def page_pareto(ctx: dict[str, Any]) -> None:
    """Retention against size, training cost and inference speed, with Pareto fronts."""
    view: pd.DataFrame = ctx["view"]
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
        has_x = data[data[x].notna() & (data[x] > 0 if scale == "log" else True)]
        missing = len(data) - len(has_x)
        if has_x.empty:
            st.info(f"No stored {title} for these runs (older runs lack it): nothing to plot.")
            continue
        data_x = has_x.astype({x: float})
        st.altair_chart(pareto_chart(data_x, x, title, minimize, scale), key=f"pareto_{x}")
        if missing:
            st.caption(f"{missing} rows without {title} are not shown.")


def page_tasks(ctx: dict[str, Any]) -> None:
    """One task: its metric as lm-eval declared it, and every group's score and retention
    with 95% CIs, as a table and a bar chart with error bars."""
    import altair as alt

    tasks: list[str] = ctx["tasks"]
    if not tasks:
        st.info("No task scores in this suite yet.")
        return
    task = st.selectbox("task", tasks, key="task", bind=QP)
    meta = ctx["task_meta"]
    info = meta[meta["task"] == task]
    if not info.empty:
        m = info.iloc[0]
        direction = "higher is better" if m["higher_is_better"] else "lower is better"
        agg = m["aggregation"] if isinstance(m["aggregation"], str) else "not recorded"
        st.markdown(
            f"Primary metric **{m['metric']}**, {direction}, aggregated over questions by "
            f"**{agg}**, as the lm-eval task declares it."
        )
    view: pd.DataFrame = ctx["view"]
    table = view[["method", "family", "student", "role", "seeds"]].copy()
    table["score"] = view[f"score_{task}"]
    table["score ± CI"] = view[f"score_ci_{task}"]
    table["retention"] = view[f"retention_{task}"]
    table["retention ± CI"] = view[f"retention_ci_{task}"] * 100
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
                max_value=max(1.0, table["retention"].max(skipna=True) or 1.0),
                format="percent",
            ),
            "retention ± CI": st.column_config.NumberColumn(format="± %.1f pts"),
            "run": st.column_config.LinkColumn(display_text="open"),
        },
    )
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


def page_compare(ctx: dict[str, Any]) -> None:
    """Two groups side by side: retention per task with CIs and Welch's interval of the
    difference, per-seed values, sizes and costs."""
    view: pd.DataFrame = ctx["view"]
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
    scores = lb.run_scores(ctx["db"], ctx["suite_hash"], groups)
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


def page_economics(ctx: dict[str, Any]) -> None:
    """Break-even of distilling at a query volume, and the confidence-routed cascade."""
    view: pd.DataFrame = ctx["view"]
    students = view[view["role"] != "teacher"]
    teacher = view[view["role"] == "teacher"]
    if students.empty or teacher.empty:
        st.info("Economics needs a teacher and a student with successful runs.")
        return
    labels = [group_label(r) for _, r in students.iterrows()]
    row = students.iloc[labels.index(st.selectbox("student", labels, key="econ", bind=QP))]
    trow = teacher.iloc[0]
    prices = ctx["prices"]
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
    t_default = economics.cost_per_query(trow["usd_per_mtok"], tokens)
    s_default = economics.cost_per_query(row["usd_per_mtok"], tokens)
    if lb.is_missing(t_default) or lb.is_missing(s_default):
        st.caption(
            "No measured inference throughput (or no price for the hardware) for this pair: "
            "enter per-query prices."
        )
    c3, c4, c5 = st.columns(3)
    t_cost = c3.number_input(
        "teacher $ per query",
        min_value=0.0,
        format="%.8f",
        value=0.0 if lb.is_missing(t_default) else float(t_default),
        key="tq",
        bind=QP,
    )
    s_cost = c4.number_input(
        "student $ per query",
        min_value=0.0,
        format="%.8f",
        value=0.0 if lb.is_missing(s_default) else float(s_default),
        key="sq",
        bind=QP,
    )
    one_off = c5.number_input(
        "one-off distillation cost $",
        min_value=0.0,
        format="%.4f",
        value=0.0 if lb.is_missing(row["price_usd"]) else float(row["price_usd"]),
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
    ctx: dict[str, Any], row: pd.Series, trow: pd.Series, s_cost: float, t_cost: float
) -> None:
    """The cascade's quality and cost as the routed share goes from 0 to 100%."""
    import altair as alt

    st.subheader("Routing: send the student's least confident queries to the teacher")
    student = store.read_samples(ctx["db"], run_id=row["run_id"])
    teacher = store.read_samples(ctx["db"], run_id=trow["run_id"])
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
    meta = ctx["task_meta"]
    used = meta[meta["task"].isin(tasks if choice == "all tasks" else [choice])]
    odd = used[used["aggregation"].notna() & (used["aggregation"] != "mean")]
    if not odd.empty:
        st.warning(
            "Quality here is the mean of per-question correctness; lm-eval aggregates "
            + ", ".join(f"{r.task} by {r.aggregation}" for r in odd.itertuples())
            + ", so the curve only approximates those metrics."
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


def page_run(ctx: dict[str, Any]) -> None:
    """Full provenance of one run: config, versions, git commit, hardware, seed, status,
    error of a failed run, costs, metrics, samples and its sibling seeds."""
    run_id = st.text_input(
        "run id", key="run", bind=QP, help="Open a run from the 'run' links of other pages."
    ).strip()
    if not run_id:
        st.info("Pick a run from the leaderboard's 'run' column, or paste its id.")
        return
    detail = lb.run_detail(ctx["db"], run_id)
    if detail is None:
        st.error(f"No run {run_id!r} in {ctx['db']}.")
        return
    run = detail["run"]
    st.subheader(f"Run {run_id}: {run['method']} · {run['student']} · seed {fmt(run['seed'])}")
    if str(run["suite_name"] or "").startswith(lb.SYNTHETIC_PREFIX):
        st.warning("Synthetic run (benchmark data), not a real result.")
    if run["status"] == "failed":
        st.error("This run failed. Its error:")
        st.code(run["error"] or "(no error recorded)", language=None)
    else:
        st.success("status: ok")
    fields = [
        ("suite", f"{run['suite_name']} ({run['suite_hash']})"),
        ("suite file", run["suite_path"]),
        *((c, run[c]) for c in ("role", "method", "family", "student", "seed", "status")),
        *((c, run[c]) for c in ("started_at", "finished_at", "kdbench_version", "git_commit")),
    ]
    st.table(
        pd.DataFrame([(k, fmt(v)) for k, v in fields], columns=["field", "value"]),
        hide_index=True,
    )
    costs = [(c, fmt(run[c])) for c in store.COST_COLUMNS]
    st.markdown("**Costs** (— = not recorded for this run)")
    st.table(pd.DataFrame(costs, columns=["cost", "value"]), hide_index=True)
    c1, c2, c3 = st.columns(3)
    for col, name in ((c1, "method_config"), (c2, "hardware"), (c3, "versions")):
        col.markdown(f"**{name}**")
        col.json(json.loads(run[name]) if isinstance(run[name], str) else {}, expanded=True)
    st.markdown("**Metrics** (from lm-eval)")
    st.dataframe(detail["metrics"], hide_index=True, placeholder=MISSING, key="run_metrics")
    if not detail["samples"].empty:
        st.markdown("**Per-question samples**")
        st.dataframe(detail["samples"], hide_index=True, placeholder=MISSING, key="run_samples")
    sib = detail["siblings"]
    st.markdown("**Runs of this group (seeds)**")
    st.dataframe(
        sib.assign(page=[run_url(r) for r in sib["run_id"]]),
        hide_index=True,
        placeholder=MISSING,
        key="siblings",
        column_config={"page": st.column_config.LinkColumn(display_text="open")},
    )
    with st.expander("suite config"):
        st.json(json.loads(run["suite_config"]) if run["suite_config"] else {})


RENDER = {
    "Leaderboard": page_leaderboard,
    "Pareto": page_pareto,
    "Tasks": page_tasks,
    "Compare": page_compare,
    "Economics": page_economics,
    "Run": page_run,
}


# --------------------------------------------------------------------------- main


def sidebar_filters(db: str, suites: pd.DataFrame) -> tuple[pd.Series, str | None]:
    """Teacher and suite pickers; returns the chosen suite's row and teacher (None: all)."""
    teachers = sorted(t for t in suites["teacher"].dropna().unique())
    teacher = st.sidebar.selectbox(
        "teacher", ["all", *teachers], key="teacher", bind=QP, help="Narrows the suites."
    )
    if teacher != "all":
        suites = suites[suites["teacher"] == teacher]
    label = st.sidebar.selectbox(
        "suite",
        list(suites["label"]),
        key="suite",
        bind=QP,
        help="Only runs of one suite (same teacher, data, budget) are ranked together.",
    )
    row = suites[suites["label"] == label].iloc[0]
    return row, None if teacher == "all" else teacher


def main() -> None:
    """Render the app."""
    st.set_page_config(page_title="kdbench leaderboard", layout="wide")
    st.title("kdbench leaderboard")
    argv = sys.argv[1:]
    db = db_path_from_args(argv)
    prices_path = prices_path_from_args(argv)

    try:
        suites = load_suites(str(db)) if db.exists() else pd.DataFrame()
    except store.StoreError as exc:
        st.error(str(exc))
        st.stop()
    if suites.empty:
        st.info(f"No results in `{db}` yet. Run `{RUN_HINT}` to create a leaderboard.")
        st.stop()
    prices: economics.PriceTable | None
    try:
        prices = load_prices(str(prices_path))
    except economics.PriceError as exc:
        st.error(f"Price table ignored: {exc}")
        prices = None

    ctx_prices = str(prices_path) if prices is not None else None
    page = st.radio(
        "page", PAGES, key="page", bind=QP, horizontal=True, label_visibility="collapsed"
    )
    suite, teacher = sidebar_filters(str(db), suites)
    if suite["synthetic"]:
        st.warning(
            f"SYNTHETIC DATA: suite {suite['label']} holds generated runs for benchmarking the "
            "app. They are not real results."
        )
    try:
        data = load_data(str(db), (suite["suite_hash"],), ctx_prices)
        board = data.boards[suite["suite_hash"]]
        task_meta = data.tasks.drop(columns="suite_hash")
    except store.StoreError as exc:
        st.error(str(exc))
        st.stop()
    filters: dict[str, list[str] | None] = {}
    view = lb.rank_board(board)
    if board.empty:
        st.info(f"No successful runs in suite {suite['label']} yet. Run `{RUN_HINT}`.")
    else:
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
        filters = {
            "methods": methods or None,
            "families": families or None,
            "students": chosen or None,
        }
        view = lb.rank_board(board, **filters)
    if board.empty and page != "Run":
        st.stop()
    ctx = {
        "db": str(db),
        "suite_hash": suite["suite_hash"],
        "teacher": teacher,
        "suites": suites,
        "suite": suite,
        "failed": data.failed,
        "prices": prices,
        "prices_path": ctx_prices,
        "task_meta": task_meta,
        "view": view,
        "filters": filters,
        "tasks": lb.board_tasks(board) if not board.empty else [],
    }
    RENDER[page](ctx)
    st.caption(f"Database: `{db}` · prices: `{prices_path}` · data refreshes every 5 s.")


main()
