"""The quantised rows of a suite's leaderboard (``[eval] quantize``, :mod:`kdbench.quantize`):
each (method, student, scheme) and the teacher's quantised variants, next to their
full-precision groups, shown on demand (``kdbench leaderboard --quantized``, the app's
*quantised rows* checkbox and the Pareto page's bytes-on-disk chart). The ranked board
(:func:`kdbench.leaderboard.leaderboard`) stays the full-precision runs.

Definitions (as in :mod:`kdbench.leaderboard`, with the full-precision teacher as reference):

* a quantised run's retention on a task is its score over the **full-precision** teacher's
  (the inverse for a lower-is-better metric); its average is the mean over the tasks that
  count in the suite's average (a task the teacher scores 0 or at most chance on is left out),
  NaN when one is missing; ``retention_avg`` is the mean over seeds and ``retention_ci`` the
  95% Student-t half-width (NaN with one seed);
* ``retention_fp`` is the full-precision group's retention and ``retention_drop`` =
  ``retention_avg - retention_fp`` (retention points lost to quantisation);
* ``bytes`` is the mean size of the quantised weights file on disk; ``bytes_fp`` the
  full-precision group's saved weights; ``size_ratio`` = ``bytes`` / the full-precision
  teacher's bytes; ``compression`` = ``bytes_fp / bytes``; ``quantized_params`` the
  parameters stored in the quantised format (0: no layer of the model fits the scheme).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdbench import store
from kdbench.leaderboard import (
    ci_half_width,
    is_missing,
    latest_suite,
    suite_board,
    task_info,
)

QUANT_COLUMNS: tuple[str, ...] = (
    "method",
    "family",
    "student",
    "role",
    "quant",
    "retention_avg",
    "retention_ci",
    "retention_fp",
    "retention_drop",
    "bytes",
    "bytes_fp",
    "size_ratio",
    "compression",
    "quantized_params",
    "params",
    "infer_tokens_per_s",
    "eval_wall_s",
    "seeds",
    "failed",
    "run_id",
    "parent_run_id",
)
"""The columns of :func:`quantized_board`, then ``retention_<task>`` and ``score_<task>``."""

_SCORES_SQL = """
SELECT r.run_id, r.parent_run_id, r.quant, coalesce(r.role = 'teacher', false) AS is_teacher,
       coalesce(r.method, '(missing)') AS method, r.family,
       coalesce(r.student, '(missing)') AS student, r.seed, r.status,
       m.task, CASE WHEN isfinite(m.value) THEN m.value END AS score, m.higher_is_better
FROM runs r LEFT JOIN metrics m ON m.run_id = r.run_id AND m.is_primary
WHERE r.suite_hash = ? AND r.quant IS NOT NULL
"""
_COSTS_SQL = """
SELECT r.run_id, c.bytes, c.params, c.quantized_params, c.infer_tokens_per_s, c.eval_wall_s
FROM runs r JOIN costs c USING (run_id)
WHERE r.suite_hash = ? AND r.quant IS NOT NULL AND r.status = 'ok'
"""
_KEYS = ["is_teacher", "method", "student", "quant"]


def _empty(tasks: Sequence[str] = ()) -> pd.DataFrame:
    return pd.DataFrame(columns=[*QUANT_COLUMNS, *_task_columns(tasks)])


def _task_columns(tasks: Sequence[str]) -> list[str]:
    return [f"{p}_{t}" for p in ("retention", "score") for t in tasks]


def _keep(values: pd.Series, allowed: Sequence[str] | None) -> pd.Series:
    return pd.Series(True, index=values.index) if allowed is None else values.isin(allowed)


def quantized_board(
    db_path: str | Path,
    suite_hash: str | None = None,
    *,
    methods: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    board: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per quantised (method, student, scheme) group of ``suite_hash`` (default: the
    most recent suite) with at least one run, the teacher's first, then by retention (best
    first). Columns: :data:`QUANT_COLUMNS`, then per task ``retention_<task>`` and
    ``score_<task>``; see the module docstring. ``board`` is the suite's full-precision
    :func:`kdbench.leaderboard.suite_board` when the caller has it (the app caches it). The
    filters keep the groups whose method / family / student is listed (the teacher's rows
    stay). An empty frame when the suite has no quantised runs."""
    suite = suite_hash if suite_hash is not None else latest_suite(db_path)
    if suite is None:
        return _empty()
    with store.reader(db_path) as con:
        scores = con.execute(_SCORES_SQL, [suite]).df()
        costs = con.execute(_COSTS_SQL, [suite]).df()
    if scores.empty:
        return _empty()
    tasks_meta = task_info(db_path, suite)
    counted = tasks_meta[~tasks_meta["excluded"].fillna(False).astype(bool)]
    teacher = dict(zip(counted["task"], counted["teacher_score"], strict=True))
    hib = dict(zip(counted["task"], counted["higher_is_better"], strict=True))
    tasks = sorted(tasks_meta["task"])

    ok = scores[(scores["status"] == "ok") & scores["task"].notna()].copy()
    denom = ok["task"].map(teacher).astype(float)
    score = ok["score"].astype(float)
    higher = ok["task"].map(hib).fillna(True).astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(higher, score / denom.where(denom != 0), denom / score.where(score != 0))
    ok["retention"] = pd.Series(ret, index=ok.index).where(lambda x: np.isfinite(x))
    runs = scores.drop_duplicates("run_id")[
        ["run_id", "parent_run_id", *_KEYS, "family", "seed", "status"]
    ]
    in_avg = ok[ok["task"].isin(list(teacher))]
    per_run = in_avg.groupby("run_id")["retention"].agg(["mean", "count"])
    full = per_run["count"] == len(teacher)
    runs = runs.assign(
        retention=runs["run_id"].map(per_run["mean"].where(full)) if len(teacher) else math.nan
    )
    runs = runs.merge(costs, on="run_id", how="left")
    good = runs[runs["status"] == "ok"]
    groups = good.groupby(_KEYS, as_index=False).agg(
        family=("family", "first"),
        retention_avg=("retention", "mean"),
        retention_sd=("retention", "std"),
        retention_n=("retention", "count"),
        bytes=("bytes", "mean"),
        params=("params", "mean"),
        quantized_params=("quantized_params", "mean"),
        infer_tokens_per_s=("infer_tokens_per_s", "mean"),
        eval_wall_s=("eval_wall_s", "mean"),
        seeds=("run_id", "count"),
    )
    # a group whose runs all failed (the scheme does not fit the model) is listed too
    bad = runs[runs["status"] == "failed"]
    failed = bad.groupby(_KEYS, as_index=False).agg(
        failed=("run_id", "count"), family_failed=("family", "first")
    )
    groups = groups.merge(failed, on=_KEYS, how="outer")
    groups["family"] = groups["family"].fillna(groups.pop("family_failed"))
    groups["failed"] = groups["failed"].fillna(0).astype("int64")
    groups["seeds"] = groups["seeds"].fillna(0).astype("int64")
    if groups.empty:
        return _empty(tasks)
    # the group's run with the lowest seed represents it (as on the board), else its failure
    first = pd.concat([good, bad]).sort_values(
        ["status", "seed", "run_id"], ascending=[False, True, True]
    )
    first = first.drop_duplicates(_KEYS)
    groups = groups.merge(first[[*_KEYS, "run_id", "parent_run_id"]], on=_KEYS, how="left")
    groups["retention_ci"] = ci_half_width(groups["retention_sd"], groups["retention_n"])

    per_task = ok.merge(runs[["run_id", *_KEYS]], on="run_id", suffixes=("_x", ""))
    wide = per_task.groupby([*_KEYS, "task"])[["retention", "score"]].mean().unstack("task")
    wide.columns = [f"{kind}_{task}" for kind, task in wide.columns]
    groups = groups.merge(wide.reset_index(), on=_KEYS, how="left")
    for col in _task_columns(tasks):
        if col not in groups:
            groups[col] = np.nan

    fp = board if board is not None else suite_board(db_path, suite)
    if fp is not None and not fp.empty:
        fp_keys = fp.set_index(["is_teacher", "method", "student"])
        key = pd.MultiIndex.from_frame(groups[["is_teacher", "method", "student"]])
        groups["retention_fp"] = fp_keys["retention_avg"].reindex(key).to_numpy(dtype=float)
        groups["bytes_fp"] = fp_keys["bytes"].astype(float).reindex(key).to_numpy()
        teacher_bytes = fp.loc[fp["is_teacher"], "bytes"].astype(float)
        teacher_bytes = float(teacher_bytes.mean()) if len(teacher_bytes) else math.nan
    else:
        groups["retention_fp"] = groups["bytes_fp"] = math.nan
        teacher_bytes = math.nan
    groups["retention_drop"] = groups["retention_avg"] - groups["retention_fp"]
    groups["size_ratio"] = groups["bytes"] / teacher_bytes if teacher_bytes > 0 else math.nan
    groups["compression"] = groups["bytes_fp"] / groups["bytes"].where(groups["bytes"] > 0)
    groups["role"] = np.where(groups["is_teacher"], "teacher", "method")
    for col in ("bytes", "params", "quantized_params"):
        groups[col] = groups[col].astype(float).round().astype("Int64")

    keep = groups["is_teacher"] | (
        _keep(groups["method"], methods)
        & _keep(groups["family"], families)
        & _keep(groups["student"], students)
    )
    groups = groups[keep].sort_values(
        ["is_teacher", "retention_avg", "method", "student", "quant"],
        ascending=[False, False, True, True, True],
        na_position="last",
        kind="stable",
    )
    return groups[[*QUANT_COLUMNS, *_task_columns(tasks)]].reset_index(drop=True)


def size_points(board: pd.DataFrame, quantized: pd.DataFrame) -> pd.DataFrame:
    """The points of the Pareto page's retention-vs-bytes chart: every full-precision group of
    a (filtered) leaderboard frame with ``variant`` ``"full precision"``, and every quantised
    group with its scheme as ``variant``; those with a retention and bytes on disk. Columns:
    method, student, role, variant, retention_avg, bytes, run_id."""
    cols = ["method", "student", "role", "variant", "retention_avg", "bytes", "run_id"]
    parts = []
    if not board.empty:
        parts.append(board.assign(variant="full precision")[cols])
    if not quantized.empty:
        q = quantized.assign(variant=quantized["quant"])
        q = q[q["method"].isin(board["method"]) | (q["role"] == "teacher")] if len(board) else q
        parts.append(q[cols])
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["bytes"] = out["bytes"].astype(float)
    keep = out["retention_avg"].notna() & (out["bytes"] > 0)
    return out[keep].reset_index(drop=True)


def _fmt_bytes(value: object) -> str:
    if is_missing(value):
        return "-"
    n = float(value)  # type: ignore[arg-type]
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _fmt_pct(value: object, half: object = math.nan) -> str:
    if is_missing(value):
        return "-"
    text = f"{float(value):.1%}"  # type: ignore[arg-type]
    if not is_missing(half):
        text += f" ±{float(half) * 100:.1f}"  # type: ignore[arg-type]
    return text


def format_quantized(df: pd.DataFrame) -> str:
    """An aligned plain-text table of a :func:`quantized_board` frame for the terminal: the
    scheme, retention against the full-precision teacher (± 95% CI with several seeds), the
    full-precision retention and the drop in points, bytes on disk against full precision,
    the size ratio to the teacher and the share of parameters quantised."""
    if df.empty:
        return '(no quantised runs: add quantize = ["int8"] to the suite\'s [eval])'
    header = [
        "method",
        "student",
        "quant",
        "retention",
        "fp",
        "drop",
        "bytes",
        "fp bytes",
        "x smaller",
        "vs teacher",
        "quantised",
        "seeds",
        "failed",
    ]
    rows = []
    for rec in df.to_dict("records"):
        share = (
            "-"
            if is_missing(rec["quantized_params"]) or is_missing(rec["params"])
            else f"{float(rec['quantized_params']) / max(float(rec['params']), 1):.0%}"
        )
        rows.append(
            [
                str(rec["method"]),
                str(rec["student"]),
                str(rec["quant"]),
                _fmt_pct(rec["retention_avg"], rec["retention_ci"]),
                _fmt_pct(rec["retention_fp"]),
                "-" if is_missing(rec["retention_drop"]) else f"{rec['retention_drop'] * 100:+.1f}",
                _fmt_bytes(rec["bytes"]),
                _fmt_bytes(rec["bytes_fp"]),
                "-" if is_missing(rec["compression"]) else f"{rec['compression']:.2f}",
                _fmt_pct(rec["size_ratio"]),
                share,
                str(rec["seeds"]),
                str(rec["failed"]),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    note = (
        "quantised rows: retention against the full-precision teacher; drop: points lost to "
        "quantisation; bytes: the quantised weights file; vs teacher: bytes / the teacher's "
        "full-precision bytes; quantised: share of parameters stored quantised"
    )
    return "\n".join(
        [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows), "", note]
    )


__all__ = ["QUANT_COLUMNS", "format_quantized", "quantized_board", "size_points"]
