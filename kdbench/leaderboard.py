"""The ranked leaderboard of one suite, computed from the results store.

Definitions
-----------
* A *group* is one (method, student) pair of a suite; its runs are its seeds. The teacher's
  runs (``role = 'teacher'``) form the teacher row, shown for reference and never ranked.
* Per task, the score is the metric flagged ``is_primary``; whether higher is better comes
  from that metric's ``higher_is_better``, as lm-eval declares it.
* Retention of one run on a task is ``student_score / teacher_score`` for a higher-is-better
  metric and ``teacher_score / student_score`` for a lower-is-better one (e.g. perplexity),
  so retention > 1 always means "better than the teacher". The teacher score is the mean of
  the teacher's ok runs. A zero denominator gives NaN; metrics are assumed non-negative.
* A run's average retention is the **arithmetic mean of its per-task retentions** over every
  task of the suite (each task weighs the same); NaN when any task is missing. A task on which
  the teacher scores 0, or (higher-is-better, with a ``chance`` row: multiple choice) no more
  than chance, is left out of the average, with the reason (:func:`task_info`'s ``excluded``
  and ``reason``): retention against such a teacher says nothing, and would blank the board.
* ``retention_avg`` is the mean over the group's seeds of the runs' average retentions, and
  ``retention_ci`` the half-width of its 95% confidence interval, Student t with n - 1
  degrees of freedom: ``t(0.975, n-1) x sd / sqrt(n)``. With one seed there is no interval
  (NaN). Per-task columns (``retention_<task>``, ``score_<task>``) work the same way.
* ``gain_vs_sft`` is ``retention_avg`` minus that of the ``sft`` group of the same student in
  the same suite (retention points, i.e. fractions of the teacher's score); ``gain_ci`` is
  Welch's 95% interval for that difference, NaN unless both have two or more seeds.
* ``p_vs_sft`` is the Holm-adjusted p-value of the paired test of the group against the
  ``sft`` group of the same student (:mod:`kdbench.stats`: a paired bootstrap over the
  questions both were scored on, seeds pooled, of the same mean-over-tasks retention
  difference; one Holm family per suite: every row with a test, whatever the filters),
  ``p_vs_sft_raw`` the unadjusted one, ``sig_vs_sft`` ``"better"`` / ``"worse"`` when the
  adjusted p-value is below 0.05, else ``"n.s."``; None / NaN for the teacher, sft, and
  groups without per-question samples (runs stored before samples were).
* The budget audit: ``steps`` and ``sequences`` (trained on) are means over the ok seeds,
  ``teacher_side_flops`` the teacher FLOPs charged to the run (its share of the cache and
  generation passes plus live teacher forwards), and ``budget_note`` names each student run
  whose recorded steps or sequences differ from its suite's ``budget.steps`` and
  ``budget.steps x budget.batch_size`` (``"budget differs: 150 of 200 steps (seed 1)"``);
  None when they match or were not recorded.
* Sampling (:data:`GENERATION_COLUMNS`, on-policy methods): ``generation_s`` and
  ``generated_tokens`` are means over the ok seeds of the seconds spent sampling the student
  during training (part of ``train_wall_s``) and of the tokens sampled; ``generation_share``
  is the mean over the ok seeds of each run's ``generation_s / train_wall_s`` (seeds without
  a training time left out), NaN for a group that never sampled. :func:`generated` says
  whether a board has a row that sampled; only then are these columns shown.
* Ranks: a group's interval is ``retention_avg ± retention_ci`` (a point with one seed). Its
  best rank is 1 + the number of groups whose interval lies entirely above it, its worst rank
  the number of ranked groups minus those entirely below it. Groups whose intervals overlap
  thus share ranks, shown as ``rank_label`` ``"2–4"`` (``"3"`` when best = worst). Ranks are
  computed among the rows left after the method / family / student filters.
* Quantised evaluations (``runs.quant`` set, ``[eval] quantize``) are never ranked here: the
  board, its costs, failures and a run's siblings are the full-precision runs;
  :mod:`kdbench.quant_board` shows the quantised rows against the full-precision teacher.
* Fidelity columns (:data:`FIDELITY_COLUMNS`, from the non-primary rows of
  :mod:`kdbench.fidelity`; never used in ranking): ``fidelity_top1`` (top-1 agreement with the
  teacher on the evaluation tokens), ``fidelity_kl`` (KL(teacher || student), nats per token)
  and ``ece`` (expected calibration error), each the mean over seeds per task
  (``<metric>_<task>`` columns), then the mean over the board's tasks that have it;
  ``teacher_ece`` is the teacher row's ``ece``, repeated on every row to read against.
* Closed track: only runs of the same suite (same hash over the suite's identity,
  :data:`kdbench.config.IDENTITY`: teacher, students, data, budget, eval tasks, seeds, methods
  and their configs, DeepSpeed overrides, signal cache) are ranked together. :func:`open_track` shows other suites apart, each with
  its own ranks and a label naming what differs.

Odd values (a database written by hand or by other tools, or damaged) are read, not
trusted: a NULL role is a student, a NULL method or student name reads as
:data:`MISSING_NAME`, a primary score that is infinite or NaN is missing (the run is not
ranked), and a cost that is negative, infinite or NaN is not recorded; :class:`SuiteData`'s
``notes`` say what a suite holds (:func:`odd_data_notes`).

All SQL takes parameters; filters and statistics run in pandas on one row per group.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdbench import snapshots, stats, store
from kdbench.config import identity_differences
from kdbench.economics import PriceTable, cost_per_million_tokens
from kdbench.fidelity import ECE, FIDELITY_METRICS, KL, TOP1

SYNTHETIC_PREFIX = "SYNTHETIC"
"""Suites whose name starts with this hold synthetic runs (benchmarks/app_100k.py)."""
MISSING_NAME = "(missing)"
"""What a run's NULL method or student name is read as (a literal: it reaches SQL)."""
UNNAMED_SUITE = "(unnamed)"
"""A suite's label when its stored name is NULL."""

BASE_COLUMNS: tuple[str, ...] = (
    "rank",
    "rank_worst",
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
PAIRED_COLUMNS: tuple[str, ...] = ("p_vs_sft", "p_vs_sft_raw", "sig_vs_sft")
"""The paired test against sft (:mod:`kdbench.stats`): Holm-adjusted and raw p-values of the
paired bootstrap over questions, and the mark (better / worse / n.s.; None: no test)."""
BUDGET_COLUMNS: tuple[str, ...] = ("steps", "sequences", "teacher_side_flops", "budget_note")
"""The budget audit: mean steps and sequences trained on, the teacher-side FLOPs charged
(cache / generation share plus live teacher passes), and a note naming each run whose steps
or sequences differ from its suite's ``[budget]`` (None: as budgeted, or not recorded)."""
TASK_PREFIXES: tuple[str, ...] = ("retention_", "retention_ci_", "score_", "score_ci_")
"""Per-task columns are ``<prefix><task>`` for each prefix."""
TAIL_COLUMNS: tuple[str, ...] = (
    "params",
    "param_ratio",
    "bytes",
    "train_wall_s",
    "generation_s",
    "generation_share",
    "generated_tokens",
    "device_hours",
    "price_usd",
    "train_flops",
    "teacher_flops",
    "total_flops",
    "infer_tokens_per_s",
    "infer_latency_ms",
    "speedup",
    "usd_per_mtok",
    "seeds",
    "failed",
    "run_id",
    "gpu",
)
GENERATION_COLUMNS: tuple[str, ...] = ("generation_s", "generation_share", "generated_tokens")
"""An on-policy group's sampling of the student during training (part of
:data:`TAIL_COLUMNS`): ``generation_s`` the mean seconds spent sampling (part of
``train_wall_s``), ``generation_share`` the mean over ok seeds of each run's
``generation_s / train_wall_s`` (NaN when the group never sampled or no seed recorded its
training time), ``generated_tokens`` the mean tokens sampled. A board shows them only when
some row sampled (:func:`generated`)."""
FIDELITY_COLUMNS: tuple[str, ...] = (TOP1, KL, ECE, "teacher_ece")
"""A group's fidelity to the teacher and calibration, means over tasks (after the tail)."""
FIDELITY_TASK_PREFIXES: tuple[str, ...] = (f"{TOP1}_", f"{KL}_", f"{ECE}_")
"""Per-task fidelity columns are ``<prefix><task>`` for each prefix."""
_KEYS = ["is_teacher", "method", "student", "submitter"]
LOCAL = "local"
"""The ``submitter`` of the runs made in the database itself (no ``provenance`` row: never
imported by ``kdbench import``)."""
# Cost columns averaged over a group's ok seeds (a literal list: never from input).
_AVG_COSTS = (
    "params",
    "bytes",
    "train_wall_s",
    "generation_s",
    "generated_tokens",
    "device_hours",
    "train_flops",
    "teacher_flops",
    "infer_tokens_per_s",
    "infer_latency_ms",
)


def _finite(expr: str) -> str:
    """SQL: ``expr`` when it is a finite number, else NULL (infinities and NaNs a store
    can hold are read as missing values)."""
    return f"CASE WHEN isfinite({expr}) THEN {expr} END"


def _cost(expr: str) -> str:
    """SQL: a cost ``expr`` when finite and >= 0, else NULL (a negative, infinite or NaN
    measurement is read as not recorded)."""
    return f"CASE WHEN isfinite({expr}) AND {expr} >= 0 THEN {expr} END"


def _is_teacher(r: str) -> str:
    """SQL: whether a run of table alias ``r`` is a teacher run (a NULL role: a student)."""
    return f"coalesce({r}.role = 'teacher', false)"


def _identity(r: str) -> str:
    """SQL: a run's group keys as the board reads them: ``is_teacher``, and ``method`` and
    ``student`` with a NULL name read as :data:`MISSING_NAME` (a literal constant)."""
    return (
        f"{_is_teacher(r)} AS is_teacher, coalesce({r}.method, '{MISSING_NAME}') AS method, "
        f"coalesce({r}.student, '{MISSING_NAME}') AS student, {r}.submitter AS submitter"
    )


def _runs_cte(by_submitter: bool) -> str:
    """SQL: the ``runs`` the board queries read, as a CTE over the table that adds the
    ``submitter`` key: the importer's submitter (``provenance``) when ``by_submitter``, and
    :data:`LOCAL` for runs never imported (and for every run otherwise: one group per method
    and student, whoever submitted its seeds)."""
    who = f"coalesce(p.submitter, '{LOCAL}')" if by_submitter else f"'{LOCAL}'"
    join = " LEFT JOIN main.provenance p USING (run_id)" if by_submitter else ""
    return f"runs AS (SELECT t.*, {who} AS submitter FROM main.runs t{join})"


def _keyed(sql: str, by_submitter: bool = False) -> str:
    """A board query with :func:`_runs_cte` first (its ``runs`` shadows the table)."""
    head = sql.lstrip()
    if head[:4].upper() == "WITH":
        return f"WITH {_runs_cte(by_submitter)},{head[4:]}"
    return f"WITH {_runs_cte(by_submitter)}\n{head}"


_RETENTION = """(CASE WHEN coalesce(t.hib, pm.higher_is_better)
                THEN pm.score / nullif(t.teacher_score, 0)
                ELSE t.teacher_score / nullif(pm.score, 0) END)"""

_CTES = f"""
WITH
r AS (  -- the full-precision runs of the suites in the list parameter (kdbench.quant_board
        -- shows the quantised ones)
    SELECT run_id, suite_hash, {_identity("runs")}, family, seed, status
    FROM runs WHERE list_contains(?, suite_hash) AND quant IS NULL
),
pm AS (  -- primary metric of every ok run and task (a non-finite value: missing)
    SELECT r.run_id, r.suite_hash, r.is_teacher, r.method, r.student, r.submitter, m.task,
           {_finite("m.value")} AS score, m.higher_is_better, m.metric, m.aggregation
    FROM r JOIN metrics m USING (run_id)
    WHERE r.status = 'ok' AND m.is_primary AND m.task IS NOT NULL
),
ch AS (  -- chance level of a multiple-choice task, as its evaluation recorded it
    SELECT r.suite_hash, m.task, avg({_finite("m.value")}) AS chance
    FROM r JOIN metrics m USING (run_id)
    WHERE r.status = 'ok' AND m.metric = 'chance' AND NOT m.is_primary
    GROUP BY r.suite_hash, m.task
),
t AS (  -- the teacher per task; a task it scores 0 on, or at most chance, is left out
    SELECT pm.suite_hash, pm.task, avg(pm.score) AS teacher_score,
           bool_and(pm.higher_is_better) AS hib, any_value(ch.chance) AS chance,
           avg(pm.score) = 0
               OR (bool_and(pm.higher_is_better) AND avg(pm.score) <= any_value(ch.chance) + 1e-9)
               AS excluded
    FROM pm LEFT JOIN ch USING (suite_hash, task)
    WHERE pm.is_teacher GROUP BY pm.suite_hash, pm.task
),
n_tasks AS (  -- the tasks that count in the average
    SELECT pm.suite_hash, count(DISTINCT pm.task) AS n
    FROM pm LEFT JOIN t USING (suite_hash, task)
    WHERE NOT coalesce(t.excluded, false) GROUP BY pm.suite_hash
),
rt AS (  -- per run and task
    SELECT pm.run_id, pm.suite_hash, pm.is_teacher, pm.method, pm.student, pm.submitter,
           pm.task, pm.score,
           pm.metric, pm.aggregation, pm.higher_is_better, t.teacher_score, t.chance,
           coalesce(t.excluded, false) AS excluded,
           {_finite(_RETENTION)} AS retention
    FROM pm LEFT JOIN t USING (suite_hash, task)
),
ra AS (  -- per run: arithmetic mean over its suite's counted tasks, NULL unless all are there
    SELECT rt.run_id,
           CASE WHEN count(rt.retention) FILTER (WHERE NOT rt.excluded) = n_tasks.n
                THEN avg(rt.retention) FILTER (WHERE NOT rt.excluded) END AS retention
    FROM rt JOIN n_tasks USING (suite_hash) GROUP BY rt.run_id, n_tasks.n
)
"""

# Retention per group. The costs go in a separate query (_COSTS_SQL): two two-table joins
# are cheaper in DuckDB than one three-table join over every run.
_GROUPS_SQL = (
    _CTES
    + """
SELECT r.suite_hash, r.is_teacher, r.method, r.student, r.submitter, min(r.family) AS family,
       count(*) FILTER (WHERE r.status = 'ok') AS seeds,
       count(*) FILTER (WHERE r.status = 'failed') AS failed,
       avg(ra.retention) AS retention_avg, stddev_samp(ra.retention) AS retention_sd,
       count(ra.retention) AS retention_n,
       arg_min(r.run_id, (coalesce(r.seed, 2147483647), r.run_id))
           FILTER (WHERE r.status = 'ok') AS run_id
FROM r LEFT JOIN ra USING (run_id)
GROUP BY r.suite_hash, r.is_teacher, r.method, r.student, r.submitter
HAVING count(*) FILTER (WHERE r.status = 'ok') > 0
"""
)

# the costs as the board reads them: a negative, infinite or NaN value is not recorded
_KEPT_COSTS = f"(SELECT run_id, {', '.join(f'{_cost(c)} AS {c}' for c in _AVG_COSTS)} FROM costs)"
_COSTS_SQL = f"""
SELECT r.suite_hash, {_identity("r")},
       {", ".join(f"avg(c.{c}) AS {c}" for c in _AVG_COSTS)},
       -- each seed's share of its training time spent sampling, averaged over the ok seeds
       -- that recorded both (a group that never sampled: cleared in _board)
       avg(CASE WHEN c.train_wall_s > 0 THEN c.generation_s / c.train_wall_s END)
           AS generation_share,
       -- a student: its training (with live teacher passes) plus its share of the
       -- teacher's cache building / generation; the teacher row: its own training
       avg(CASE WHEN {_is_teacher("r")} THEN coalesce(c.teacher_flops, c.train_flops)
                WHEN c.train_flops IS NOT NULL OR c.teacher_flops IS NOT NULL
                THEN coalesce(c.train_flops, 0) + coalesce(c.teacher_flops, 0) END)
           AS total_flops,
       -- the hardware of the representative run (JSON parsed in Python, for these rows only)
       arg_min(r.hardware, (coalesce(r.seed, 2147483647), r.run_id)) AS hardware
FROM runs r LEFT JOIN {_KEPT_COSTS} c USING (run_id)
WHERE list_contains(?, r.suite_hash) AND r.status = 'ok' AND r.quant IS NULL
GROUP BY ALL
"""

# the fidelity rows (kdbench.fidelity) per group, task and metric, mean over its ok seeds
_FIDELITY_SQL = f"""
SELECT r.suite_hash, {_identity("r")}, m.task, m.metric, avg({_finite("m.value")}) AS value
FROM runs r JOIN metrics m USING (run_id)
WHERE list_contains(?, r.suite_hash) AND r.status = 'ok' AND NOT m.is_primary
      AND list_contains(?, m.metric)
GROUP BY ALL
"""

_TASKS_SQL = (
    _CTES
    + """
SELECT suite_hash, is_teacher, method, student, submitter, task,
       avg(score) AS score, stddev_samp(score) AS score_sd, count(score) AS score_n,
       avg(retention) AS retention, stddev_samp(retention) AS retention_sd,
       count(retention) AS retention_n,
       -- the primary metric as lm-eval declared it (for task_info)
       any_value(metric) AS metric, bool_and(higher_is_better) AS higher_is_better,
       any_value(aggregation) AS aggregation, any_value(teacher_score) AS teacher_score,
       any_value(chance) AS chance, bool_or(excluded) AS excluded
FROM rt GROUP BY suite_hash, is_teacher, method, student, submitter, task
"""
)

# grouped by the hardware JSON text (a few distinct values), parsed in Python afterwards
_DEVICE_HOURS_SQL = f"""
SELECT r.suite_hash, {_identity("r")}, r.hardware,
       sum(c.device_hours) AS device_hours, count(*) AS n
FROM runs r JOIN {_KEPT_COSTS} c USING (run_id)
WHERE list_contains(?, r.suite_hash) AND r.status = 'ok' AND c.device_hours IS NOT NULL
      AND r.quant IS NULL
GROUP BY ALL
"""

# Odd values a store can hold (written by hand or by other tools, or damaged): what the board
# reads them as, counted per suite so the app can say so. Conditions are literals.
_ODD_RUNS: tuple[tuple[str, str], ...] = (
    ("r.method IS NULL", f"without a method name (shown as {MISSING_NAME})"),
    ("r.student IS NULL", f"without a student name (shown as {MISSING_NAME})"),
    (
        "r.role IS NULL OR r.role NOT IN ('teacher', 'student')",
        "with a role other than teacher or student (ranked as students)",
    ),
    (
        "r.status IS NULL OR r.status NOT IN ('ok', 'failed')",
        "with a status other than ok or failed (left out)",
    ),
)
_ODD_COUNTS = ",\n       ".join(
    [
        *(f"count(*) FILTER (WHERE {c}) AS odd_run_{i}" for i, (c, _) in enumerate(_ODD_RUNS)),
        *(
            f"count(*) FILTER (WHERE NOT isfinite(c.{c}) OR c.{c} < 0) AS odd_{c}"
            for c in _AVG_COSTS
        ),
    ]
)
_ODD_SQL = f"""
WITH s AS (  -- primary scores that are NULL, infinite or NaN
    SELECT r.suite_hash, count(*) AS odd_scores
    FROM runs r JOIN metrics m USING (run_id)
    WHERE list_contains(?, r.suite_hash) AND m.is_primary
          AND NOT coalesce(isfinite(m.value), false)
    GROUP BY r.suite_hash
)
SELECT r.suite_hash,
       {_ODD_COUNTS},
       any_value(s.odd_scores) AS odd_scores
FROM runs r LEFT JOIN costs c USING (run_id) LEFT JOIN s USING (suite_hash)
WHERE list_contains(?, r.suite_hash)
GROUP BY r.suite_hash
"""

_RUN_SCORES_SQL = (
    _CTES
    + """
SELECT r.run_id, r.method, r.student, r.seed, rt.task, rt.score, rt.retention
FROM r JOIN rt USING (run_id)
WHERE list_contains(?, r.method) AND list_contains(?, r.student)
UNION ALL
SELECT r.run_id, r.method, r.student, r.seed, 'average' AS task, NULL AS score, ra.retention
FROM r JOIN ra USING (run_id)
WHERE list_contains(?, r.method) AND list_contains(?, r.student)
ORDER BY method, student, seed, task
"""
)

_SUITES_SQL = """
WITH n AS (
    SELECT suite_hash, count(*) AS n_runs,
           count(*) FILTER (WHERE status = 'ok') AS n_ok,
           count(*) FILTER (WHERE status = 'failed') AS n_failed
    FROM runs GROUP BY suite_hash
)
SELECT s.suite_hash, s.name, s.path, s.config, s.created_at,
       CASE WHEN json_valid(s.config) THEN json_extract_string(s.config, '$.teacher.name') END
           AS teacher,
       coalesce(n.n_runs, 0) AS n_runs, coalesce(n.n_ok, 0) AS n_ok,
       coalesce(n.n_failed, 0) AS n_failed
FROM suites s LEFT JOIN n USING (suite_hash)
ORDER BY s.created_at DESC, s.suite_hash
"""

_LATEST_SUITE_SQL = "SELECT suite_hash FROM suites ORDER BY created_at DESC, suite_hash LIMIT 1"

_RUN_SQL = f"""
SELECT {", ".join("r." + c for c in store.RUN_COLUMNS)},
       {", ".join("c." + c for c in store.COST_COLUMNS)},
       s.name AS suite_name, s.path AS suite_path, s.config AS suite_config
FROM runs r LEFT JOIN costs c USING (run_id) LEFT JOIN suites s USING (suite_hash)
WHERE r.run_id = ?
"""
_RUN_METRICS_SQL = """
SELECT task, metric, value, stderr, higher_is_better, is_primary, aggregation
FROM metrics WHERE run_id = ? ORDER BY task, NOT is_primary, metric
"""
_RUN_SAMPLES_SQL = """
SELECT task, count(*) AS questions, avg(correct) AS mean_correct,
       avg(confidence) AS mean_confidence
FROM samples WHERE run_id = ? GROUP BY task ORDER BY task
"""
_SIBLINGS_SQL = """
SELECT run_id, seed, status FROM runs
WHERE suite_hash = ? AND role = ? AND method IS NOT DISTINCT FROM ?
      AND student IS NOT DISTINCT FROM ? AND quant IS NOT DISTINCT FROM ?
ORDER BY seed NULLS LAST, run_id
"""


# the per-question results of every ok student run (the paired tests, kdbench.stats)
_PAIRED_SAMPLES_SQL = (
    _CTES
    + """
SELECT r.suite_hash, r.method, r.student, r.seed, s.task, s.doc_id, s.correct
FROM r JOIN samples s USING (run_id)
WHERE r.status = 'ok' AND NOT r.is_teacher AND isfinite(s.correct)
"""
)

# The budget audit, per group: mean steps, sequences and teacher-side FLOPs of the ok runs,
# and a note for each student run whose steps or sequences are not the suite's [budget]
# (a NULL value, as in runs stored before schema 3, is not recorded: no note).
_BUDGET_SQL = f"""
WITH b AS (
    SELECT suite_hash,
           CASE WHEN json_valid(config)
                THEN TRY_CAST(json_extract(config, '$.budget.steps') AS BIGINT) END AS b_steps,
           CASE WHEN json_valid(config)
                THEN TRY_CAST(json_extract(config, '$.budget.batch_size') AS BIGINT) END
               AS b_batch
    FROM suites WHERE list_contains(?, suite_hash)
),
rb AS (
    SELECT r.suite_hash, {_identity("r")}, r.seed, c.steps, c.sequences,
           {_cost("c.teacher_flops")} AS teacher_flops,
           {_cost("c.live_teacher_flops")} AS live_teacher_flops,
           b.b_steps, b.b_steps * b.b_batch AS b_sequences
    FROM runs r LEFT JOIN costs c USING (run_id) LEFT JOIN b USING (suite_hash)
    WHERE list_contains(?, r.suite_hash) AND r.status = 'ok'
),
notes AS (
    -- the note text is built only for a student run off its budget (most runs are on it)
    SELECT *, CASE WHEN NOT is_teacher AND (
                   (steps IS DISTINCT FROM b_steps AND steps IS NOT NULL AND b_steps IS NOT NULL)
                   OR (sequences IS DISTINCT FROM b_sequences AND sequences IS NOT NULL
                       AND b_sequences IS NOT NULL)) THEN concat_ws(', ',
                   CASE WHEN steps IS DISTINCT FROM b_steps AND steps IS NOT NULL
                        AND b_steps IS NOT NULL
                        THEN printf('%d of %d steps', steps, b_steps) END,
                   CASE WHEN sequences IS DISTINCT FROM b_sequences AND sequences IS NOT NULL
                        AND b_sequences IS NOT NULL
                        THEN printf('%d of %d sequences', sequences, b_sequences) END) END
              AS differs
    FROM rb
),
agg AS (
    SELECT suite_hash, is_teacher, method, student, submitter,
           avg(steps) AS steps, avg(sequences) AS sequences,
           avg(CASE WHEN teacher_flops IS NOT NULL OR live_teacher_flops IS NOT NULL
                    THEN coalesce(teacher_flops, 0) + coalesce(live_teacher_flops, 0) END)
               AS teacher_side_flops
    FROM notes GROUP BY ALL
),
noted AS (
    -- only the runs with a note go through the string aggregate (most have none: a FILTER
    -- clause on it would still cost a pass over every run)
    SELECT suite_hash, is_teacher, method, student, submitter,
           string_agg(differs || CASE WHEN seed IS NOT NULL THEN printf(' (seed %d)', seed)
                                      ELSE '' END,
                      '; ' ORDER BY seed NULLS LAST) AS budget_differs
    FROM notes WHERE differs <> '' GROUP BY ALL
)
SELECT agg.*, noted.budget_differs
FROM agg LEFT JOIN noted USING (suite_hash, is_teacher, method, student, submitter)
"""


# --------------------------------------------------------------------------- statistics


def t_quantile(df: float | np.ndarray) -> float | np.ndarray:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (NaN for df <= 0)."""
    from scipy.special import stdtrit  # scipy.special imports fast; scipy.stats does not

    df = np.asarray(df, dtype=float)
    out = np.where(df > 0, stdtrit(np.where(df > 0, df, 1.0), 0.975), np.nan)
    return float(out) if out.ndim == 0 else out


def ci_half_width(sd: Any, n: Any) -> Any:
    """95% CI half-width of a mean of n values with sample sd: ``t(0.975, n-1) sd / sqrt(n)``;
    NaN for n < 2. Works on scalars and arrays."""
    sd = np.asarray(sd, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n >= 2, t_quantile(n - 1) * sd / np.sqrt(n), np.nan)
    return float(half) if half.ndim == 0 else half


def mean_ci(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) of the non-NaN values; half-width NaN when n < 2."""
    x = np.asarray([v for v in values if v is not None and not is_missing(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    sd = float(x.std(ddof=1)) if x.size >= 2 else math.nan
    return float(x.mean()), ci_half_width(sd, x.size), int(x.size)


def welch_ci(m1: Any, s1: Any, n1: Any, m2: Any, s2: Any, n2: Any) -> tuple[Any, Any]:
    """Difference ``m1 - m2`` of two independent means and the half-width of its 95% Welch
    interval: ``t(0.975, nu) sqrt(s1^2/n1 + s2^2/n2)`` with the Welch-Satterthwaite degrees of
    freedom ``nu = (v1 + v2)^2 / (v1^2/(n1-1) + v2^2/(n2-1))``, ``vi = si^2/ni``.
    The half-width is NaN unless both n >= 2; 0 when both samples have no spread."""
    m1, s1, n1, m2, s2, n2 = (np.asarray(v, dtype=float) for v in (m1, s1, n1, m2, s2, n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        v1, v2 = s1**2 / n1, s2**2 / n2
        se = np.sqrt(v1 + v2)
        nu = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
        half = np.where(se > 0, t_quantile(np.nan_to_num(nu, nan=0.0)) * se, 0.0)
        half = np.where((n1 >= 2) & (n2 >= 2), half, np.nan)
    diff = m1 - m2
    if diff.ndim == 0:
        return float(diff), float(half)
    return diff, half


def shared_ranks(mean: Sequence[float], half: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Best and worst rank of each interval ``mean ± half`` (half NaN: a point).

    best = 1 + #intervals entirely above; worst = n - #intervals entirely below, where n is
    the number of intervals. Overlapping intervals share ranks; intervals closer than 1e-9
    count as touching. O(n^2) memory in the number of groups (fine for thousands).
    """
    m = np.asarray(mean, dtype=float)
    h = np.nan_to_num(np.asarray(half, dtype=float), nan=0.0)
    lo, hi = m - h, m + h
    tol = 1e-9  # float noise (0.005 + 0.865 vs 0.87) is a tie, not a separation
    above = (lo[None, :] > hi[:, None] + tol).sum(axis=1)  # j entirely above i
    below = (hi[None, :] < lo[:, None] - tol).sum(axis=1)  # j entirely below i
    return 1 + above, len(m) - below


def is_missing(value: object) -> bool:
    """None, pd.NA or a float NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def rank_label(best: object, worst: object) -> str:
    """``"3"``, ``"2–4"`` (en dash) or ``"-"`` when unranked."""
    if is_missing(best):
        return "-"
    best, worst = int(best), int(worst)  # type: ignore[call-overload]
    return str(best) if best == worst else f"{best}–{worst}"


# --------------------------------------------------------------------------- suites


def suites(db_path: str | Path) -> pd.DataFrame:
    """Suites, newest first: suite_hash, name, path, config (JSON text), created_at, teacher,
    n_runs, n_ok, n_failed, synthetic (name starts with ``SYNTHETIC``), label."""
    with store.reader(db_path) as con:
        df = con.execute(_SUITES_SQL).df()
    df["synthetic"] = df["name"].fillna("").str.startswith(SYNTHETIC_PREFIX)
    names = [n if isinstance(n, str) else UNNAMED_SUITE for n in df["name"]]
    hashes = [str(h) for h in df["suite_hash"]]
    labels = [f"{n} ({h[:8]})" for n, h in zip(names, hashes, strict=True)]
    if len(set(labels)) < len(labels):  # two suites whose hashes share 8 characters
        labels = [f"{n} ({h})" for n, h in zip(names, hashes, strict=True)]
    df["label"] = labels
    return df


def latest_suite(db_path: str | Path) -> str | None:
    """The most recently created suite's hash, or None."""
    with store.reader(db_path) as con:
        row = con.execute(_LATEST_SUITE_SQL).fetchone()
    return None if row is None else row[0]


def task_info(db_path: str | Path, suite_hash: str) -> pd.DataFrame:
    """Per task of a suite, its primary metric as lm-eval declared it: suite_hash, task,
    metric, higher_is_better, aggregation (NULL in rows written before schema 2), runs
    (ok runs scored on it), teacher_score, chance (the guessing score of a multiple-choice
    task, NaN otherwise), excluded (left out of the retention average) and reason (why, else
    None)."""
    return suite_data(db_path, [suite_hash], boards=False).tasks


def exclusion_reason(excluded: object, teacher_score: object, chance: object) -> str | None:
    """Why a task is left out of the retention average (None when it counts): the teacher
    scores 0 on it, or no better than chance, so retention on it says nothing."""
    if not bool(excluded) or is_missing(excluded):
        return None
    if is_missing(teacher_score) or float(teacher_score) == 0:  # type: ignore[arg-type]
        return "teacher scores 0: left out of the retention average"
    return (
        f"teacher scores {float(teacher_score):.4f}, at or below chance "  # type: ignore[arg-type]
        f"({float(chance):.4f}): left out of the retention average"  # type: ignore[arg-type]
    )


def excluded_tasks(tasks: pd.DataFrame) -> dict[str, str]:
    """``{task: reason}`` of the tasks left out of the average, from a :func:`task_info` frame."""
    if tasks.empty or "excluded" not in tasks:
        return {}
    rows = tasks[tasks["excluded"].fillna(False).astype(bool)]
    return dict(zip(rows["task"], rows["reason"], strict=True))


# --------------------------------------------------------------------------- the board


def _empty(tasks: Sequence[str] = ()) -> pd.DataFrame:
    return pd.DataFrame(columns=board_columns(tasks))


def board_columns(tasks: Sequence[str]) -> list[str]:
    """The columns of a ranked board, in order: :data:`BASE_COLUMNS`, :data:`PAIRED_COLUMNS`,
    the per-task columns, :data:`TAIL_COLUMNS`, the fidelity columns,
    :data:`BUDGET_COLUMNS`."""
    return [
        *BASE_COLUMNS,
        *PAIRED_COLUMNS,
        *task_columns(tasks),
        *TAIL_COLUMNS,
        *fidelity_columns(tasks),
        *BUDGET_COLUMNS,
    ]


def task_columns(tasks: Sequence[str]) -> list[str]:
    """The per-task columns of a board, in order."""
    return [f"{prefix}{t}" for prefix in TASK_PREFIXES for t in tasks]


def fidelity_columns(tasks: Sequence[str]) -> list[str]:
    """The fidelity columns of a board, in order: :data:`FIDELITY_COLUMNS`, then per task
    :data:`FIDELITY_TASK_PREFIXES` + task."""
    return [*FIDELITY_COLUMNS, *(f"{p}{t}" for p in FIDELITY_TASK_PREFIXES for t in tasks)]


def add_fidelity(
    groups: pd.DataFrame, fidelity: pd.DataFrame | None, tasks: Sequence[str]
) -> pd.DataFrame:
    """``groups`` with the :func:`fidelity_columns` of ``tasks`` from the fidelity rows
    (:data:`_FIDELITY_SQL`: per group, task and metric, the mean over seeds): per task
    ``<metric>_<task>``, the mean over the tasks that have one as ``<metric>``, and the
    teacher row's ``ece`` as ``teacher_ece``; NaN where a run has none (older runs)."""
    groups = groups.copy()
    rows = fidelity if fidelity is not None else pd.DataFrame()
    if not rows.empty:
        rows = rows[rows["task"].isin(list(tasks)) & rows["metric"].isin(FIDELITY_METRICS)]
    if not rows.empty:
        wide = rows.pivot_table(
            index=_KEYS, columns=["metric", "task"], values="value", aggfunc="mean"
        )
        per_task = wide.copy()
        per_task.columns = [f"{metric}_{task}" for metric, task in per_task.columns]
        means = wide.T.groupby(level="metric").mean().T  # mean over the tasks that have it
        groups = groups.merge(
            pd.concat([per_task, means], axis=1).reset_index(), on=_KEYS, how="left"
        )
    for col in fidelity_columns(tasks):
        if col not in groups:
            groups[col] = np.nan
    teacher = groups.loc[groups["is_teacher"], ECE].astype(float)
    groups["teacher_ece"] = float(teacher.mean()) if teacher.notna().any() else np.nan
    return groups


def board_tasks(df: pd.DataFrame) -> list[str]:
    """The task names of a board frame (from its ``score_<task>`` columns)."""
    return [
        c.removeprefix("score_")
        for c in df.columns
        if c.startswith("score_") and not c.startswith("score_ci_")
    ]


@dataclass
class SuiteData:
    """What one pass over the store gives for some suites (see :func:`suite_data`)."""

    boards: dict[str, pd.DataFrame]
    tasks: pd.DataFrame
    failed: pd.DataFrame
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per suite hash, the odd values found in its rows and how they were read
    (:func:`odd_data_notes`); a suite without any has no entry."""
    paired: dict[str, stats.PairedSamples] = field(default_factory=dict)
    """Per suite hash (read with boards), its per-question samples laid out for paired tests
    (:func:`kdbench.stats.paired_tests`; Compare reads them)."""


BOARD_PARTS: tuple[str, ...] = (
    "per_task",
    "groups",
    "costs",
    "hours",
    "odd",
    "samples",
    "budget",
    "fidelity",
)
"""The board queries of :func:`suite_data`, by name."""
SNAPSHOT_PARTS: tuple[str, ...] = (*(p for p in BOARD_PARTS if p != "samples"), "paired_tests")
"""What a board snapshot holds (:mod:`kdbench.snapshots`): the board queries' results but the
per-question samples, and in their place the paired tests' results
(:func:`paired_test_table`), which is all the board reads of them."""


def _board_queries(by_submitter: bool) -> dict[str, tuple[str, int]]:
    """Each of :data:`BOARD_PARTS`: its SQL and how many times it takes the suites' list."""
    return {
        "per_task": (_keyed(_TASKS_SQL, by_submitter), 1),
        "groups": (_keyed(_GROUPS_SQL, by_submitter), 1),
        "costs": (_keyed(_COSTS_SQL, by_submitter), 1),
        "hours": (_keyed(_DEVICE_HOURS_SQL, by_submitter), 1),
        "odd": (_ODD_SQL, 2),
        "samples": (_keyed(_PAIRED_SAMPLES_SQL, by_submitter), 1),
        "budget": (_keyed(_BUDGET_SQL, by_submitter), 2),
        "fidelity": (_keyed(_FIDELITY_SQL, by_submitter), 1),  # and the fidelity metrics
    }


def board_frames(
    con: Any, hashes: Sequence[str], by_submitter: bool, parts: Sequence[str] = BOARD_PARTS
) -> dict[str, pd.DataFrame]:
    """The board queries' results for ``hashes``, computed live on ``con``."""
    queries = _board_queries(by_submitter)
    out = {}
    for part in parts:
        sql, n = queries[part]
        params: list[Any] = [list(hashes)] * n
        if part == "fidelity":
            params.append(list(FIDELITY_METRICS))
        out[part] = (
            _samples_frame(con, sql, params)
            if part == "samples"
            else (con.execute(sql, params).df())
        )
    return out


def _samples_frame(con: Any, sql: str, params: list[Any]) -> pd.DataFrame:
    """The per-question samples query's rows, names as categoricals (one row per question of
    every run: through Arrow, about half the time and memory of a plain frame). Read on a
    cursor of ``con``: DuckDB's relation API refuses a connection with a result pending."""
    cursor = con.cursor()
    try:
        table = cursor.sql(sql, params=params).to_arrow_table()
    finally:
        cursor.close()
    return table.to_pandas(strings_to_categorical=True)


_QUERIES_SHA = hashlib.sha256(
    "\n".join(sql for split in (False, True) for sql, _ in _board_queries(split).values()).encode()
).hexdigest()


def snapshot_key(by_submitter: bool) -> str:
    """What a board snapshot's fingerprint is keyed by besides its runs: this kdbench's
    board queries (the SHA-256 of their SQL) and the grouping."""
    return f"{_QUERIES_SHA[:16]}/{'by-submitter' if by_submitter else 'pooled'}"


def snapshot_rows(con: Any, hashes: Sequence[str]) -> pd.DataFrame:
    """Fresh ``board_snapshots`` rows of ``hashes`` (grouped by submitter, as the app reads
    them), computed on ``con`` (which may be read-only: nothing is written)."""
    key = snapshot_key(True)
    frames = {}
    for h in hashes:  # one suite at a time: a snapshot holds one suite's rows
        parts = board_frames(con, [h], True)
        paired = stats.paired_samples(parts.pop("samples"), task_table(parts["per_task"]))
        parts["paired_tests"] = paired_test_table(parts["groups"], paired)
        frames[h] = parts
    return snapshots.rows(frames, snapshots.fingerprints(con, list(hashes), key))


def refresh_snapshots(db_path: str | Path, hashes: Sequence[str] | None = None) -> int:
    """Rebuild the board snapshots of ``hashes`` (None: every suite) in ``db_path``, in one
    transaction; returns how many suites. See :mod:`kdbench.snapshots`."""
    con = store.connect(db_path)
    try:
        if hashes is None:
            hashes = [r[0] for r in con.execute("SELECT suite_hash FROM suites").fetchall()]
        hashes = sorted(set(hashes))
        if not hashes:
            return 0
        with store.transaction(
            con, lambda exc: store.StoreError(f"could not write board snapshots: {exc}")
        ):
            snapshots.replace(con, snapshot_rows(con, hashes))
    finally:
        con.close()
    return len(hashes)


def suite_data(
    db_path: str | Path,
    hashes: Sequence[str],
    *,
    prices: PriceTable | None = None,
    boards: bool = True,
    by_submitter: bool = False,
) -> SuiteData:
    """Boards (:func:`suite_board`, unless ``boards=False``), primary-metric info
    (:func:`task_info`) and failed runs (:func:`failed_runs`) of several suites, read through
    one short read-only connection (each new connection starts with a cold cache).

    ``by_submitter``: a group is a (method, student, submitter) of the suite, its submitter
    the one who submitted its runs through ``kdbench import`` (:data:`LOCAL` for the
    database's own runs), so the seeds of several submitters are not pooled into one row;
    the paired tests against sft still pool every submitter's seeds of a (method, student).
    Without it (the default), every run's submitter is :data:`LOCAL`."""
    hashes = list(hashes)
    with store.reader(db_path) as con:
        failed = con.execute(_FAILED_SQL, [hashes]).df()
        wanted = SNAPSHOT_PARTS if boards else ("per_task",)
        frames = snapshots.load(con, hashes, snapshot_key(by_submitter), wanted)
        live = frames is None
        if frames is None:
            frames = board_frames(con, hashes, by_submitter, BOARD_PARTS if boards else wanted)
    tasks = task_table(frames["per_task"])
    out: dict[str, pd.DataFrame] = {}
    paired: dict[str, stats.PairedSamples] = {}
    notes: dict[str, tuple[str, ...]] = {}
    if not boards:
        return SuiteData(out, tasks, failed, notes, paired)
    per_task, groups, hours = frames["per_task"], frames["groups"], frames["hours"]
    costs, budget, fidelity = frames["costs"].copy(), frames["budget"], frames["fidelity"]
    costs["gpu"] = [_gpu(hw) for hw in costs.pop("hardware")]
    merged = groups.merge(costs, on=["suite_hash", *_KEYS], how="left")
    for h in hashes:
        board = _board(
            merged[merged["suite_hash"] == h].drop(columns="suite_hash").reset_index(drop=True),
            per_task[per_task["suite_hash"] == h].drop(columns="suite_hash"),
            hours[hours["suite_hash"] == h].drop(columns="suite_hash"),
            prices,
            fidelity[fidelity["suite_hash"] == h].drop(columns="suite_hash"),
        )
        if live:  # the tests from the per-question samples (a snapshot holds their results)
            paired[h] = stats.paired_samples(
                frames["samples"][frames["samples"]["suite_hash"] == h],
                tasks[tasks["suite_hash"] == h],
            )
            tests = paired_test_table(groups[groups["suite_hash"] == h], paired[h])
        else:
            tests = frames["paired_tests"]
            tests = tests[tests["suite_hash"] == h]
        board = add_paired_tests(board, tests)
        out[h] = add_budget_audit(board, budget[budget["suite_hash"] == h])
    for rec in frames["odd"].to_dict("records"):
        found = odd_data_notes(rec)
        if found:
            notes[rec["suite_hash"]] = found
    return SuiteData(out, tasks, failed, notes, paired)


def task_table(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per suite and task, from the per-task query's rows: the primary metric, its direction
    and aggregation, the runs scored, the teacher's score, chance, and whether (and why) the
    task is left out of the average (:func:`task_info`)."""
    tasks = (
        per_task.groupby(["suite_hash", "task"], as_index=False)
        .agg(
            metric=("metric", "first"),
            higher_is_better=("higher_is_better", "all"),
            aggregation=("aggregation", "first"),
            runs=("score_n", "sum"),
            teacher_score=("teacher_score", "first"),
            chance=("chance", "first"),
            excluded=("excluded", "any"),
        )
        .sort_values(["suite_hash", "task"], ignore_index=True)
    )
    tasks["reason"] = [
        exclusion_reason(x, score, chance)
        for x, score, chance in zip(
            tasks["excluded"], tasks["teacher_score"], tasks["chance"], strict=True
        )
    ]
    return tasks


def suite_paired_samples(
    db_path: str | Path, suite_hash: str, tasks: pd.DataFrame
) -> stats.PairedSamples:
    """One suite's per-question samples laid out for paired tests (Compare reads them), with
    its ``tasks`` (:func:`task_table` rows); what :class:`SuiteData`'s ``paired`` holds when
    its board was computed live rather than read from a snapshot."""
    with store.reader(db_path) as con:
        samples = _samples_frame(con, _keyed(_PAIRED_SAMPLES_SQL), [[suite_hash]])
    return stats.paired_samples(samples, tasks[tasks["suite_hash"] == suite_hash])


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def odd_data_notes(counts: dict[str, Any]) -> tuple[str, ...]:
    """What odd values one suite's rows hold and how the board reads them, one phrase each,
    from a row of the odd-value counts :func:`suite_data` reads (runs without a method or
    student name, unknown roles or statuses, primary scores that are missing, infinite or
    NaN, and cost values that are infinite, NaN or negative). Empty when there are none."""
    notes = []
    for i, (_, meaning) in enumerate(_ODD_RUNS):
        n = int(counts.get(f"odd_run_{i}") or 0)
        if n:
            notes.append(f"{_plural(n, 'run')} {meaning}")
    n = int(counts.get("odd_scores") or 0)
    if n:
        notes.append(
            f"{_plural(n, 'primary score')} missing, infinite or NaN (read as missing: those "
            "runs are not ranked)"
        )
    costs = {c: int(counts.get(f"odd_{c}") or 0) for c in _AVG_COSTS}
    if any(costs.values()):
        notes.append(
            f"{_plural(sum(costs.values()), 'cost value')} infinite, NaN or negative ("
            + ", ".join(c for c, n in costs.items() if n)
            + "; read as not recorded)"
        )
    return tuple(notes)


def _add_prices(
    groups: pd.DataFrame, hours: pd.DataFrame, prices: PriceTable | None
) -> pd.DataFrame:
    """price_usd = mean over seeds of device_hours x rate (NaN when a seed ran on hardware
    the table does not price); usd_per_mtok from the representative run's device and the
    group's mean throughput."""
    groups["price_usd"] = np.nan
    groups["usd_per_mtok"] = np.nan
    if prices is None:
        return groups
    if not hours.empty:
        rates = {hw: _rate(prices, hw) for hw in hours["hardware"].unique()}
        hours = hours.assign(usd=hours["device_hours"] * hours["hardware"].map(rates))
        hours["unpriced"] = hours["usd"].isna()  # a run on hardware the table lacks
        per = hours.groupby(_KEYS, dropna=False).agg(
            usd=("usd", "sum"), n=("n", "sum"), unpriced=("unpriced", "any")
        )
        per = (per["usd"] / per["n"]).where(~per["unpriced"]).rename("price_usd").reset_index()
        groups = groups.drop(columns="price_usd").merge(per, on=_KEYS, how="left")
    rate = np.array([prices.rate(None if is_missing(g) else g) for g in groups["gpu"]], dtype=float)
    groups["usd_per_mtok"] = [
        cost_per_million_tokens(r, tps) if not is_missing(tps) else math.nan
        for r, tps in zip(rate, groups["infer_tokens_per_s"].astype(float), strict=True)
    ]
    return groups


def _gpu(hardware: object) -> str | None:
    """The GPU name in a run's hardware JSON, None for a CPU run or unreadable JSON."""
    if not isinstance(hardware, str):
        return None
    try:
        gpu = json.loads(hardware).get("gpu")
    except (ValueError, AttributeError):
        return None
    return str(gpu) if gpu else None


def _rate(prices: PriceTable, hardware: object) -> float:
    """USD per device-hour of a run's hardware JSON; NaN when missing or unpriced."""
    device = prices.device_for(None if is_missing(hardware) else hardware)  # type: ignore[arg-type]
    return math.nan if device is None else device.usd_per_hour


def _positive_mean(values: pd.Series) -> float:
    """The mean of ``values`` when it is > 0 (a ratio's denominator), else NaN."""
    mean = float(values.astype(float).mean()) if len(values) else math.nan
    return mean if mean > 0 else math.nan


def _in(values: pd.Series, allowed: Sequence[str] | None) -> pd.Series:
    if allowed is None:
        return pd.Series(True, index=values.index)
    return values.isin(list(allowed))


PAIRED_TEST_TABLE: tuple[str, ...] = ("method", "student", "difference", "p_vs_sft_raw", "p_vs_sft")


def paired_test_table(groups: pd.DataFrame, paired: stats.PairedSamples) -> pd.DataFrame:
    """Each student (method, student) of one suite's ``groups`` other than sft against the
    sft group of the same student, by the paired bootstrap of :mod:`kdbench.stats` over the
    questions both were scored on (pooled over seeds and submitters), Holm-adjusted over the
    whole suite (one family: every pair with a test, whatever filters hide later). Columns
    :data:`PAIRED_TEST_TABLE`, the suite's hash first when ``groups`` has it; no row for
    the teacher, sft itself and a student without sft."""
    cols = ["suite_hash", *PAIRED_TEST_TABLE] if "suite_hash" in groups else list(PAIRED_TEST_TABLE)
    students = groups[~groups["is_teacher"]]
    has_sft = set(students.loc[students["method"] == "sft", "student"])
    rows = students[(students["method"] != "sft") & students["student"].isin(has_sft)]
    keys = list(dict.fromkeys(zip(rows["method"], rows["student"], strict=True)))
    if not keys:
        text = ("suite_hash", "method", "student")
        return pd.DataFrame({c: pd.Series(dtype=object if c in text else float) for c in cols})
    tests = stats.paired_tests(paired, [((m, s), ("sft", s)) for m, s in keys], mcnemar=False)
    table = pd.DataFrame(
        {
            "method": [m for m, _ in keys],
            "student": [s for _, s in keys],
            "difference": tests["difference"].to_numpy(dtype=float),
            "p_vs_sft_raw": tests["p_value"].to_numpy(dtype=float),
            "p_vs_sft": stats.holm(tests["p_value"].to_numpy()),
        }
    )
    if "suite_hash" in groups:
        table.insert(0, "suite_hash", groups["suite_hash"].iloc[0])
    return table


def add_paired_tests(board: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """The :data:`PAIRED_COLUMNS` of a board from its suite's :func:`paired_test_table`
    (rows of several submitters share their (method, student)'s test); None / NaN for the
    teacher, sft itself, a student without sft, and runs without samples."""
    board = board.copy()
    for col in ("p_vs_sft", "p_vs_sft_raw"):
        board[col] = np.nan
    board["sig_vs_sft"] = None
    board["sig_vs_sft"] = board["sig_vs_sft"].astype(object)
    if board.empty or tests.empty:
        return board
    by_key = {
        (m, s): (d, raw, adj)
        for m, s, d, raw, adj in zip(
            tests["method"], tests["student"], tests["difference"], tests["p_vs_sft_raw"],
            tests["p_vs_sft"], strict=True,
        )
    }  # fmt: skip
    for i, teacher, method, student in zip(
        board.index, board["is_teacher"], board["method"], board["student"], strict=True
    ):
        found = None if teacher else by_key.get((method, student))
        if found is None:
            continue
        diff, raw, adjusted = found
        board.at[i, "p_vs_sft_raw"] = raw
        board.at[i, "p_vs_sft"] = adjusted
        board.at[i, "sig_vs_sft"] = stats.mark(float(diff), float(adjusted))
    return board


def add_budget_audit(board: pd.DataFrame, budget: pd.DataFrame) -> pd.DataFrame:
    """The :data:`BUDGET_COLUMNS` of a board from the budget query's rows of its suite:
    ``budget_note`` is ``"budget differs: 150 of 200 steps (seed 1)"`` for a group with a run
    off its suite's ``[budget]`` (steps, or sequences = steps x batch size), else None."""
    if board.empty:
        return board
    cols = ["steps", "sequences", "teacher_side_flops", "budget_differs"]
    board = board.merge(budget[[*_KEYS, *cols]], on=_KEYS, how="left")
    board["budget_note"] = [
        f"budget differs: {d}" if isinstance(d, str) and d else None
        for d in board.pop("budget_differs")
    ]
    return board


def suite_boards(
    db_path: str | Path,
    hashes: Sequence[str],
    *,
    prices: PriceTable | None = None,
    by_submitter: bool = False,
) -> dict[str, pd.DataFrame]:
    """:func:`suite_board` of several suites from one pass over the store: ``{hash: board}``
    (an empty frame for a suite without ok runs)."""
    return suite_data(db_path, hashes, prices=prices, by_submitter=by_submitter).boards


def suite_board(
    db_path: str | Path,
    suite_hash: str | None = None,
    *,
    prices: PriceTable | None = None,
    by_submitter: bool = False,
) -> pd.DataFrame:
    """Every group of a suite with its statistics, unfiltered and unranked
    (:func:`rank_board` filters and ranks it). Columns: ``is_teacher``, the
    :func:`leaderboard` columns except the rank ones, and ``retention_sd`` / ``retention_n``
    (seeds with a full set of task retentions). An empty frame when there is nothing."""
    suite = suite_hash if suite_hash is not None else latest_suite(db_path)
    if suite is None:
        return pd.DataFrame()
    return suite_boards(db_path, [suite], prices=prices, by_submitter=by_submitter)[suite]


def _board(
    groups: pd.DataFrame,
    per_task: pd.DataFrame,
    hours: pd.DataFrame,
    prices: PriceTable | None,
    fidelity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One suite's board from its SQL aggregates (CIs, per-task columns, ratios, prices,
    gains, fidelity)."""
    if groups.empty:
        return pd.DataFrame()
    tasks = sorted(per_task["task"].unique())

    groups["retention_ci"] = ci_half_width(groups["retention_sd"], groups["retention_n"])
    if not per_task.empty:
        per_task["retention_ci"] = ci_half_width(per_task["retention_sd"], per_task["retention_n"])
        per_task["score_ci"] = ci_half_width(per_task["score_sd"], per_task["score_n"])
        wide = per_task.pivot(
            index=_KEYS, columns="task", values=["retention", "retention_ci", "score", "score_ci"]
        )
        wide.columns = [f"{kind}_{task}" for kind, task in wide.columns]
        groups = groups.merge(wide.reset_index(), on=_KEYS, how="left")
    for col in task_columns(tasks):
        if col not in groups:
            groups[col] = np.nan
    groups = add_fidelity(groups, fidelity, tasks)

    teacher = groups[groups["is_teacher"]]
    teacher_params = _positive_mean(teacher["params"])
    teacher_tps = _positive_mean(teacher["infer_tokens_per_s"])
    groups["param_ratio"] = groups["params"] / teacher_params
    groups["speedup"] = groups["infer_tokens_per_s"] / teacher_tps
    groups = _add_prices(groups, hours, prices)
    # a share of nothing sampled is no share: missing where the group never sampled
    groups["generation_share"] = (
        groups["generation_share"].astype(float).where(groups["generation_s"].astype(float) > 0)
    )

    # gain over the sft group of the same student (and submitter), before any filter hides sft
    is_sft = (groups["method"] == "sft") & ~groups["is_teacher"]
    sft = groups[is_sft].set_index(["student", "submitter"])
    own = pd.MultiIndex.from_frame(groups[["student", "submitter"]])
    gain, gain_ci = welch_ci(
        groups["retention_avg"],
        groups["retention_sd"],
        groups["retention_n"],
        sft["retention_avg"].reindex(own).to_numpy(),
        sft["retention_sd"].reindex(own).to_numpy(),
        sft["retention_n"].reindex(own).to_numpy(),
    )
    groups["gain_vs_sft"] = np.where(groups["is_teacher"], np.nan, np.where(is_sft, 0.0, gain))
    groups["gain_ci"] = np.where(groups["is_teacher"] | is_sft, np.nan, gain_ci)
    groups["role"] = np.where(
        groups["is_teacher"], "teacher", np.where(is_sft, "baseline", "method")
    )
    for col in ("params", "bytes"):  # a mean past the int64 range is not a size: missing
        rounded = groups[col].astype(float).round()
        groups[col] = rounded.where(rounded.abs() < 2.0**63).astype("Int64")
    for col in ("seeds", "failed", "retention_n"):
        groups[col] = groups[col].astype("int64")
    return groups


def rank_board(
    board: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    submitters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Filter a :func:`suite_board` frame (the teacher row always stays) and rank what is
    left with shared ranks; returns the :func:`leaderboard` columns, sorted by retention,
    and ``submitter`` after ``student`` when the board is split by submitter
    (:func:`suite_data`'s ``by_submitter``) and holds imported runs."""
    if board.empty:
        return _empty()
    submitter = board["submitter"] if "submitter" in board else pd.Series(LOCAL, board.index)
    keep = board["is_teacher"] | (
        _in(board["method"], methods)
        & _in(board["family"], families)
        & _in(board["student"], students)
        & _in(submitter, submitters)
    )
    groups = board[keep].copy()
    ranked = ~groups["is_teacher"] & groups["retention_avg"].notna()
    groups["rank"] = pd.array([pd.NA] * len(groups), dtype="Int64")
    groups["rank_worst"] = pd.array([pd.NA] * len(groups), dtype="Int64")
    if ranked.any():
        best, worst = shared_ranks(
            groups.loc[ranked, "retention_avg"], groups.loc[ranked, "retention_ci"]
        )
        groups.loc[ranked, "rank"] = best
        groups.loc[ranked, "rank_worst"] = worst
    groups["rank_label"] = [
        rank_label(b, w) for b, w in zip(groups["rank"], groups["rank_worst"], strict=True)
    ]
    groups = groups.sort_values(
        ["is_teacher", "retention_avg", "rank", "method", "student"],
        ascending=[False, False, True, True, True],
        na_position="last",
        kind="stable",
    )
    tasks = board_tasks(board)
    columns = [c for c in board_columns(tasks) if c in groups or c not in fidelity_columns(tasks)]
    if (submitter != LOCAL).any():
        columns.insert(columns.index("student") + 1, "submitter")
    return groups[columns].reset_index(drop=True)


def leaderboard(
    db_path: str | Path,
    suite_hash: str | None = None,
    *,
    methods: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    prices: PriceTable | None = None,
    by_submitter: bool = False,
) -> pd.DataFrame:
    """The closed-track leaderboard of ``suite_hash`` (default: the most recent suite).

    One row per (method, student) with at least one ``ok`` run, the teacher row first (it
    stays whatever the filters), then by retention (best first; unranked rows last), best
    rank, method and student. The
    filters keep the groups whose method / family / student is in the given list (None: all).
    ``prices`` fills ``price_usd`` and ``usd_per_mtok`` (NaN without it). ``by_submitter``:
    one row per (method, student, submitter), with a ``submitter`` column (:func:`suite_data`).

    Columns: :data:`BASE_COLUMNS`, :data:`PAIRED_COLUMNS`; per task (sorted)
    :data:`TASK_PREFIXES` + task; then :data:`TAIL_COLUMNS` and :data:`BUDGET_COLUMNS`
    (:func:`board_columns`). Means are over ok seeds; see the module docstring for definitions.
    ``run_id`` is the group's ok run with the lowest seed; ``gpu`` its GPU name (None on CPU).
    Costs the store lacks (older runs) are NaN. An empty frame when nothing is there.
    """
    board = suite_board(db_path, suite_hash, prices=prices, by_submitter=by_submitter)
    return rank_board(board, methods=methods, families=families, students=students)


# --------------------------------------------------------------------------- other suites


def suite_differences(config_a: str | None, config_b: str | None) -> list[str]:
    """The identity sections (:data:`kdbench.config.IDENTITY`: what makes two suites the same
    leaderboard, the sections :attr:`kdbench.config.Suite.hash` covers) in which two stored
    suite configs (JSON text) differ."""
    return identity_differences(_config_dict(config_a), _config_dict(config_b))


def _config_dict(config: object) -> dict[str, Any]:
    """A stored suite config (JSON text) as a dict; {} when missing, unreadable or not an
    object."""
    if not isinstance(config, str) or not config:
        return {}
    try:
        value = json.loads(config)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def differences_label(config_a: str | None, config_b: str | None) -> str:
    """What differs between two suites, for the open track: e.g. ``"budget, cache"``."""
    return ", ".join(suite_differences(config_a, config_b)) or "identical (hashed by older code)"


def open_track(
    db_path: str | Path,
    suite_hash: str,
    *,
    teacher: str | None = None,
    methods: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    prices: PriceTable | None = None,
    limit: int = 20,
    board: Callable[[str], pd.DataFrame] | None = None,
    all_suites: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows of the other suites (at most ``limit``, newest first; those with this
    ``teacher`` name when given), each suite filtered and ranked on its own, never with
    ``suite_hash``.

    ``board(suite_hash)`` returns a suite's :func:`suite_board` (default: computed here; the
    app passes its cached boards) and ``all_suites`` is :func:`suites`' frame (default: read
    here). Columns: ``suite`` (its label), ``suite_hash``,
    ``differs`` (what differs from the selected suite, e.g. "budget, data"), then the
    :func:`leaderboard` columns. Empty when there is no other suite.
    """
    load = board or (lambda h: suite_board(db_path, h, prices=prices))
    if all_suites is None:
        all_suites = suites(db_path)
    this = all_suites[all_suites["suite_hash"] == suite_hash]
    this_config = this["config"].iloc[0] if not this.empty else None
    others = all_suites[all_suites["suite_hash"] != suite_hash]
    if teacher is not None:
        others = others[others["teacher"] == teacher]
    frames = []
    for s in others.head(limit).itertuples(index=False):
        ranked = rank_board(
            load(s.suite_hash), methods=methods, families=families, students=students
        )
        if ranked.empty:
            continue
        differs = differences_label(this_config, s.config)
        ranked.insert(0, "differs", differs)
        ranked.insert(0, "suite_hash", s.suite_hash)
        ranked.insert(0, "suite", s.label)
        frames.append(ranked)
    if not frames:
        return pd.DataFrame(columns=["suite", "suite_hash", "differs", *BASE_COLUMNS, "run_id"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- compare, runs


def run_scores(
    db_path: str | Path, suite_hash: str, groups: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """Per-run scores of the given (method, student) groups of a suite: run_id, method,
    student, seed, task, score, retention; plus a row per run with task ``"average"`` (the
    run's mean retention over tasks, score NaN)."""
    methods = sorted({m for m, _ in groups})
    names = sorted({s for _, s in groups})
    with store.reader(db_path) as con:
        df = con.execute(
            _keyed(_RUN_SCORES_SQL), [[suite_hash], methods, names, methods, names]
        ).df()
    wanted = set(groups)
    keep = [(m, s) in wanted for m, s in zip(df["method"], df["student"], strict=True)]
    return df[np.array(keep, dtype=bool)].reset_index(drop=True)


def compare(scores: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> pd.DataFrame:
    """Side by side, per task (and ``"average"``): mean retention of groups ``a`` and ``b``
    (method, student) over seeds with 95% CIs, the difference a - b with Welch's 95% CI, and
    whether that interval excludes 0. From a :func:`run_scores` frame."""
    rows = []
    for task in sorted(scores["task"].unique(), key=lambda t: (t == "average", t)):
        sub = scores[scores["task"] == task]
        stats = []
        for method, student in (a, b):
            x = sub.loc[(sub["method"] == method) & (sub["student"] == student), "retention"]
            x = x.dropna().to_numpy(dtype=float)
            sd = float(x.std(ddof=1)) if x.size >= 2 else math.nan
            mean, half, n = mean_ci(x)
            stats.append((mean, half, n, sd))
        (ma, ha, na, sa), (mb, hb, nb, sb) = stats
        diff, dhalf = welch_ci(ma, sa, na, mb, sb, nb)
        rows.append(
            {
                "task": task,
                "a_retention": ma,
                "a_ci": ha,
                "a_seeds": na,
                "b_retention": mb,
                "b_ci": hb,
                "b_seeds": nb,
                "difference": diff,
                "difference_ci": dhalf,
                "significant": bool(not is_missing(dhalf) and abs(diff) > dhalf),
            }
        )
    return pd.DataFrame(rows)


_FAILED_SQL = """
SELECT suite_hash, run_id, method, student, seed, error FROM runs
WHERE list_contains(?, suite_hash) AND status = 'failed' AND quant IS NULL
ORDER BY suite_hash, method, student, seed NULLS LAST, run_id
"""


def failed_runs(db_path: str | Path, suite_hash: str) -> pd.DataFrame:
    """The failed runs of a suite: suite_hash, run_id, method, student, seed, error
    (traceback text)."""
    return suite_data(db_path, [suite_hash], boards=False).failed


def run_detail(db_path: str | Path, run_id: str) -> dict[str, Any] | None:
    """Everything stored about one run: ``run`` (its :data:`store.RUN_COLUMNS`, costs and
    suite name/path/config, JSON as text), ``metrics``, ``samples`` (per-task counts) and
    ``siblings`` (the runs of the same group: other seeds) as frames. None if unknown."""
    with store.reader(db_path) as con:
        run = con.execute(_RUN_SQL, [run_id]).df()
        if run.empty:
            return None
        row = run.iloc[0].to_dict()
        metrics = con.execute(_RUN_METRICS_SQL, [run_id]).df()
        samples = con.execute(_RUN_SAMPLES_SQL, [run_id]).df()
        siblings = con.execute(
            _SIBLINGS_SQL,
            [row["suite_hash"], row["role"], row["method"], row["student"], row["quant"]],
        ).df()
    return {"run": row, "metrics": metrics, "samples": samples, "siblings": siblings}


_RUN_FIDELITY_SQL = """
SELECT m.task, m.metric, m.value FROM metrics m
WHERE m.run_id = ? AND list_contains(?, m.metric)
UNION ALL
SELECT m.task, 'teacher_ece' AS metric, avg(m.value) AS value
FROM runs r JOIN metrics m USING (run_id)
WHERE r.suite_hash = (SELECT suite_hash FROM runs WHERE run_id = ?) AND r.role = 'teacher'
      AND r.status = 'ok' AND m.metric = ?
GROUP BY m.task
"""


def run_fidelity(db_path: str | Path, run_id: str) -> pd.DataFrame:
    """One run's fidelity to the teacher per task (:mod:`kdbench.fidelity`): columns task,
    ``fidelity_top1``, ``fidelity_kl``, ``ece`` and ``teacher_ece`` (the teacher's of the same
    suite); only the tasks the run has a fidelity row for. Empty when it has none."""
    with store.reader(db_path) as con:
        rows = con.execute(_RUN_FIDELITY_SQL, [run_id, list(FIDELITY_METRICS), run_id, ECE]).df()
    columns = ["task", *FIDELITY_COLUMNS]
    mine = rows[rows["metric"] != "teacher_ece"]
    if mine.empty:
        return pd.DataFrame(columns=columns)
    wide = rows.pivot_table(index="task", columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex(columns=list(FIDELITY_COLUMNS)).reset_index()
    return wide[wide["task"].isin(set(mine["task"]))][columns].reset_index(drop=True)


# --------------------------------------------------------------------------- terminal


def fmt_params(value: object) -> str:
    """A parameter count as ``0.25M`` / ``1.20B``; ``-`` when missing."""
    if is_missing(value):
        return "-"
    n = float(value)  # type: ignore[arg-type]
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _fmt_pct_ci(mean: object, half: object) -> str:
    if is_missing(mean):
        return "-"
    text = f"{float(mean):.1%}"  # type: ignore[arg-type]
    if not is_missing(half):
        text += f" ±{float(half) * 100:.1f}"  # type: ignore[arg-type]
    return text


def _fmt_gain(gain: object, half: object) -> str:
    if is_missing(gain):
        return "-"
    text = f"{float(gain) * 100:+.1f}"  # type: ignore[arg-type]
    if not is_missing(half):
        text += f" ±{float(half) * 100:.1f}"  # type: ignore[arg-type]
    return text


def format_notes(tasks: pd.DataFrame | None = None, failed: pd.DataFrame | None = None) -> str:
    """The lines printed under a board: each task left out of the retention average and why
    (from :func:`task_info`), and the failed runs, how many and for each its method, student,
    seed and the last line of its error (from :func:`failed_runs`). Empty when neither."""
    lines = []
    for task, reason in excluded_tasks(tasks if tasks is not None else pd.DataFrame()).items():
        lines.append(f"task {task}: {reason}")
    if failed is not None and not failed.empty:
        lines.append(f"failed runs: {len(failed)}")
        for rec in failed.to_dict("records"):
            errors = [x.strip() for x in str(rec.get("error") or "").splitlines() if x.strip()]
            seed = "-" if is_missing(rec.get("seed")) else int(rec["seed"])
            lines.append(
                f"  {rec['method']} -> {rec['student']} seed {seed}: "
                + (errors[-1] if errors else "(no error recorded)")
            )
    return "\n".join(lines)


FIDELITY_HEADER = "agree  KL  ECE/teacher"
FIDELITY_NOTE = (
    "fidelity: top-1 agreement with the teacher on the evaluation tokens, KL(teacher || "
    "student) in nats per token, expected calibration error (10 bins) / the teacher's; means "
    "over tasks and seeds, not used in ranking"
)


def format_fidelity(rec: dict[str, Any]) -> str:
    """One board row's fidelity for the terminal: ``92.1%  0.031  0.052/0.031`` (agreement,
    KL, ECE / the teacher's ECE; ``-`` where missing, so the column keeps its three parts
    for a row without fidelity, e.g. a student with another vocabulary: ``-  -  -/0.031``)."""

    def num(value: object, spec: str) -> str:
        return "-" if is_missing(value) else format(float(value), spec)  # type: ignore[arg-type]

    agree = num(rec.get(TOP1), ".1%")
    return f"{agree}  {num(rec.get(KL), '.3f')}  {num(rec.get(ECE), '.3f')}/" + num(
        rec.get("teacher_ece"), ".3f"
    )


def generated(df: pd.DataFrame) -> bool:
    """Whether any row of a board sampled the student during training (an on-policy method:
    ``generation_s`` or ``generated_tokens`` > 0). Boards show :data:`GENERATION_COLUMNS`
    (the terminal its ``sampling`` column) only then."""
    return any(
        bool((pd.to_numeric(df[c], errors="coerce").fillna(0) > 0).any())
        for c in ("generation_s", "generated_tokens")
        if c in df
    )


def _fmt_sampling(rec: dict) -> str:
    """An on-policy group's sampling seconds and their share of its training time
    (``generation_share``): ``6.1s (21%)``; ``-`` when it did not sample."""
    gen, share = rec.get("generation_s"), rec.get("generation_share")
    if is_missing(gen) or not gen:
        return "-"
    return f"{gen:.1f}s" + ("" if is_missing(share) else f" ({share:.0%})")


def format_table(df: pd.DataFrame) -> str:
    """An aligned plain-text table of a :func:`leaderboard` frame for the terminal.

    Columns: rank (shared ranks as ``2–4``), method, family, student, retention in percent
    with its 95% CI half-width in points (none with one seed), gain over sft in points, the
    paired test against sft (``p vs sft``, Holm-adjusted, and ``sig``: better / worse /
    n.s.), the per-task retentions and scores, fidelity (:func:`format_fidelity`, when a row
    has it), params (``0.25M``), train seconds, ``sampling`` (when a row sampled,
    :func:`generated`: seconds and share of training, ``6.1s (21%)``), seeds, failed runs and
    ``budget``
    (``differs`` when a run is off the suite's ``[budget]``, with a note under the table).
    Missing values are ``-``. Text left-aligned, numbers right-aligned.
    """
    if df.empty:
        return "(no results)"
    tasks = board_tasks(df)
    by_submitter = "submitter" in df  # rank_board adds it for a board split by submitter
    header = ["rank", "method", "family", "student", *(["submitter"] if by_submitter else [])]
    header += ["retention", "vs sft"]
    header += ["p vs sft", "sig"]  # the paired test (PAIRED_COLUMNS)
    header += [f"ret.{t}" for t in tasks] + [t for t in tasks]
    fidelity = all(c in df for c in FIDELITY_COLUMNS) and bool(
        df[[TOP1, KL, ECE]].notna().to_numpy().any()
    )  # shown when a row has a value (runs stored before fidelity have none)
    header += [FIDELITY_HEADER] if fidelity else []
    sampled = generated(df)
    header += ["params", "train"] + (["sampling"] if sampled else []) + ["seeds", "failed"]
    header += ["budget"]  # the budget audit (BUDGET_COLUMNS)
    rows = []
    for rec in df.to_dict("records"):
        cells = [
            rec["rank_label"],
            str(rec["method"]),
            str(rec["family"]),
            str(rec["student"]),
            *([str(rec["submitter"])] if by_submitter else []),
            _fmt_pct_ci(rec["retention_avg"], rec["retention_ci"]),
            _fmt_gain(rec["gain_vs_sft"], rec["gain_ci"]),
            *_fmt_paired(rec),
        ]
        cells += [_fmt_pct_ci(rec[f"retention_{t}"], math.nan) for t in tasks]
        cells += [
            "-" if is_missing(rec[f"score_{t}"]) else f"{rec[f'score_{t}']:.4f}" for t in tasks
        ]
        cells += [format_fidelity(rec)] if fidelity else []
        cells += [
            fmt_params(rec["params"]),
            "-" if is_missing(rec["train_wall_s"]) else f"{rec['train_wall_s']:.1f}s",
            *([_fmt_sampling(rec)] if sampled else []),
            str(rec["seeds"]),
            str(rec["failed"]),
            _fmt_budget(rec),
        ]
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    left = {
        header.index(h) for h in ("method", "family", "student", "submitter", "sig") if h in header
    }

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left or i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    single = (df["seeds"] <= 1).all()
    note = "retention: arithmetic mean over tasks of student/teacher score, mean over seeds" + (
        " (one seed: no confidence interval)" if single else " ± 95% CI half-width (t)"
    )
    if fidelity:
        note = FIDELITY_NOTE + "\n" + note
    return "\n".join([line(header), rule, *(line(r) for r in rows), "", note, *_paired_notes(df)])


def _fmt_paired(rec: dict[str, Any]) -> list[str]:
    """The ``p vs sft`` (Holm-adjusted) and ``sig`` cells of a board row; ``-`` without a
    test (the teacher, sft, runs without per-question samples)."""
    p, sig = rec.get("p_vs_sft"), rec.get("sig_vs_sft")
    if is_missing(p) or not isinstance(sig, str):
        return ["-", "-"]
    return [f"{float(p):.4f}", sig]  # type: ignore[arg-type]


def _fmt_budget(rec: dict[str, Any]) -> str:
    """``differs`` when a run of the row is off its suite's budget (the note is printed
    under the table), else ``ok``; ``-`` for the teacher and runs that recorded neither."""
    if rec.get("role") == "teacher" or (
        is_missing(rec.get("steps")) and is_missing(rec.get("sequences"))
    ):
        return "-"
    return "differs" if isinstance(rec.get("budget_note"), str) else "ok"


def board_power(df: pd.DataFrame) -> stats.Power:
    """The board's power (:func:`kdbench.stats.seed_power`) from its student rows: each row's
    seed-to-seed standard deviation recovered from its 95% t half-width,
    ``sd = half * sqrt(n) / t(0.975, n - 1)``."""
    rows = df[(df["role"] != "teacher") & (df["seeds"] >= 2)]
    n = rows["seeds"].astype(float).to_numpy()
    half = rows["retention_ci"].astype(float).to_numpy()
    sd = half * np.sqrt(n) / np.asarray(t_quantile(np.maximum(n - 1, 1)), dtype=float)
    return stats.seed_power(sd, n.astype(int))


def power_note(df: pd.DataFrame) -> str | None:
    """One line on what the board's seeds can tell apart; None with fewer than two seeds."""
    p = board_power(df)
    if not p.groups:
        return None
    if p.seed_sd == 0:  # no spread measured: it cannot size a detectable difference
        return (
            f"power: every seed gave the same retention in the {p.groups} groups with two or "
            "more seeds: no seed-to-seed spread to size a detectable difference from"
        )
    return (
        f"power: seed-to-seed sd of retention {100 * p.seed_sd:.1f} points (pooled over "
        f"{p.groups} groups); with {p.seeds} seeds per method a difference of "
        f"{100 * p.detectable:.1f} points is detected at {100 * (1 - p.alpha):.0f}% confidence "
        f"with {100 * p.power:.0f}% power (two-sample t)"
    )


def _paired_notes(df: pd.DataFrame) -> list[str]:
    """The lines under the table: how the paired test reads, and each row whose budget
    differs from its suite's."""
    power = power_note(df)
    lines = [
        *([power] if power else []),
        "p vs sft: paired bootstrap over questions of the retention difference to sft on the "
        f"same student, seeds pooled, Holm-adjusted over the board; sig: better / worse at "
        f"p < {stats.ALPHA} (n.s. otherwise)",
    ]
    for rec in df.to_dict("records"):
        if isinstance(rec.get("budget_note"), str):
            lines.append(f"{rec['method']} -> {rec['student']}: {rec['budget_note']}")
    return lines
