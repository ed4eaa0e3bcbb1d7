"""The ranked leaderboard of one suite, computed from the results store.

Definitions
-----------
* A *group* is one (method, student) pair; its scores are means over its ``ok`` seeds.
  The teacher's runs (``role = 'teacher'``) form the teacher row.
* Per task, the score is the metric flagged ``is_primary``.
* Retention on a task is ``student_score / teacher_score`` when the primary metric is
  higher-is-better, and ``teacher_score / student_score`` when it is lower-is-better (e.g.
  perplexity), so that retention > 1 always means "better than the teacher". A zero
  denominator gives NaN. Retention assumes non-negative metrics.
* ``retention_avg`` is the arithmetic mean of the per-task retentions over every task of the
  suite; it is NaN (and the row is unranked) when any task's retention is missing.
  The teacher's is 1.0.
* ``rank`` orders non-teacher rows by ``retention_avg`` (1 = best; ties share the best rank);
  the teacher row and rows without a ``retention_avg`` have no rank.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd

from kdbench import store

BASE_COLUMNS: tuple[str, ...] = (
    "rank",
    "method",
    "family",
    "student",
    "role",
    "retention_avg",
)
TAIL_COLUMNS: tuple[str, ...] = ("params", "param_ratio", "train_wall_s", "seeds", "failed")
_KEYS = ["is_teacher", "method", "student"]

# Shared CTEs; the single parameter is the suite hash.
_CTES = """
WITH
r AS (
    SELECT r.run_id, r.role = 'teacher' AS is_teacher, r.method, r.family, r.student,
           r.status, c.params, c.train_wall_s
    FROM runs r LEFT JOIN costs c USING (run_id)
    WHERE r.suite_hash = ?
),
g AS (  -- one row per (method, student) with at least one ok run
    SELECT is_teacher, method, student, min(family) AS family,
           count(*) FILTER (WHERE status = 'ok') AS seeds,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           avg(params) FILTER (WHERE status = 'ok') AS params,
           avg(train_wall_s) FILTER (WHERE status = 'ok') AS train_wall_s
    FROM r
    GROUP BY is_teacher, method, student
    HAVING count(*) FILTER (WHERE status = 'ok') > 0
),
s AS (  -- mean primary score per group and task over ok seeds
    SELECT r.is_teacher, r.method, r.student, m.task, avg(m.value) AS score,
           bool_and(m.higher_is_better) AS higher_is_better
    FROM r JOIN metrics m USING (run_id)
    WHERE r.status = 'ok' AND m.is_primary
    GROUP BY r.is_teacher, r.method, r.student, m.task
),
t AS (  -- the teacher's score per task
    SELECT task, avg(score) AS teacher_score, bool_and(higher_is_better) AS higher_is_better
    FROM s WHERE is_teacher GROUP BY task
),
tasks AS (SELECT DISTINCT task FROM s),
cells AS (  -- every group x every task, with score and retention (NULL when missing)
    SELECT g.is_teacher, g.method, g.student, tasks.task, s.score,
           CASE WHEN coalesce(t.higher_is_better, s.higher_is_better)
                THEN s.score / nullif(t.teacher_score, 0)
                ELSE t.teacher_score / nullif(s.score, 0) END AS retention
    FROM g CROSS JOIN tasks
    LEFT JOIN s USING (is_teacher, method, student, task)
    LEFT JOIN t USING (task)
),
avg_ret AS (
    SELECT is_teacher, method, student,
           CASE WHEN count(retention) = (SELECT count(*) FROM tasks)
                THEN avg(retention) END AS retention_avg
    FROM cells GROUP BY is_teacher, method, student
),
summary AS (
    SELECT g.*, a.retention_avg,
           g.params / nullif((SELECT avg(params) FROM g WHERE is_teacher), 0) AS param_ratio,
           NOT g.is_teacher AND a.retention_avg IS NOT NULL AS ranked
    FROM g LEFT JOIN avg_ret a USING (is_teacher, method, student)
)
"""

_SUMMARY_SQL = (
    _CTES
    + """
SELECT is_teacher, method, student, family, retention_avg, params, param_ratio,
       train_wall_s, seeds, failed,
       CASE WHEN ranked THEN rank() OVER (PARTITION BY ranked ORDER BY retention_avg DESC)
       END AS rank,
       CASE WHEN is_teacher THEN 'teacher' WHEN method = 'sft' THEN 'baseline'
            ELSE 'method' END AS role
FROM summary
ORDER BY is_teacher DESC, rank NULLS LAST, method, student
"""
)

_CELLS_SQL = _CTES + "SELECT * FROM cells ORDER BY task"

_LATEST_SUITE_SQL = "SELECT suite_hash FROM suites ORDER BY created_at DESC, suite_hash LIMIT 1"


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=list(BASE_COLUMNS + TAIL_COLUMNS))


def _latest_suite(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(_LATEST_SUITE_SQL).fetchone()
    return None if row is None else row[0]


def leaderboard(db_path: str | Path, suite_hash: str | None = None) -> pd.DataFrame:
    """The leaderboard of ``suite_hash`` (default: the most recently created suite).

    One row per (method, student) with at least one ``ok`` run, plus the teacher row first,
    then by rank. Columns, in order: ``rank`` (nullable Int64), ``method``, ``family``,
    ``student``, ``role`` ('teacher' / 'baseline' for sft / 'method'), ``retention_avg``,
    ``retention_<task>`` and ``score_<task>`` per task (tasks sorted), ``params``,
    ``param_ratio``, ``train_wall_s`` (mean over ok seeds), ``seeds`` (ok runs),
    ``failed`` (failed runs). See the module docstring for the definitions.
    Returns an empty frame with the fixed columns when there is nothing to show.
    """
    with store.reader(db_path) as con:
        suite = suite_hash if suite_hash is not None else _latest_suite(con)
        if suite is None:
            return _empty()
        summary = con.execute(_SUMMARY_SQL, [suite]).df()
        cells = con.execute(_CELLS_SQL, [suite]).df()
    if summary.empty:
        return _empty()

    tasks = sorted(cells["task"].unique())
    if tasks:
        wide = cells.pivot(index=_KEYS, columns="task", values=["retention", "score"])
        wide.columns = [f"{kind}_{task}" for kind, task in wide.columns]
        summary = summary.merge(wide.reset_index(), on=_KEYS, how="left")

    summary["rank"] = summary["rank"].astype("Int64")
    summary["params"] = summary["params"].round().astype("Int64")
    for col in ("seeds", "failed"):
        summary[col] = summary[col].astype("int64")
    task_cols = [f"retention_{t}" for t in tasks] + [f"score_{t}" for t in tasks]
    columns = list(BASE_COLUMNS) + task_cols + list(TAIL_COLUMNS)
    return summary[columns].reset_index(drop=True)


# --------------------------------------------------------------------------- terminal


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt_params(value: object) -> str:
    if _is_missing(value):
        return "-"
    n = float(value)  # type: ignore[arg-type]
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _fmt_cell(column: str, value: object) -> str:
    if _is_missing(value):
        return "-"
    if column == "retention_avg" or column.startswith("retention_"):
        return f"{float(value):.1%}"  # type: ignore[arg-type]
    if column.startswith("score_"):
        return f"{float(value):.4f}"  # type: ignore[arg-type]
    if column == "params":
        return _fmt_params(value)
    if column == "param_ratio":
        return f"{float(value):.3f}"  # type: ignore[arg-type]
    if column == "train_wall_s":
        return f"{float(value):.1f}s"  # type: ignore[arg-type]
    return str(value)


_HEADERS = {"retention_avg": "retention", "train_wall_s": "train", "param_ratio": "p_ratio"}
_LEFT_ALIGNED = {"method", "family", "student", "role"}


def format_table(df: pd.DataFrame) -> str:
    """An aligned plain-text table of a :func:`leaderboard` frame for the terminal.

    Retention is shown in percent, params in millions (``0.25M``), missing values as ``-``.
    Text columns are left-aligned, numbers right-aligned.
    """
    if df.empty:
        return "(no results)"
    columns = list(df.columns)
    headers = [_HEADERS.get(c, c) for c in columns]
    rows = [
        [_fmt_cell(c, v) for c, v in zip(columns, rec, strict=True)]
        for rec in df.itertuples(index=False)
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        parts = [
            cell.ljust(w) if col in _LEFT_ALIGNED else cell.rjust(w)
            for col, cell, w in zip(columns, cells, widths, strict=True)
        ]
        return "  ".join(parts)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
