"""Paired tests over questions: is method A's retention really above method B's?

The leaderboard's intervals (:mod:`kdbench.leaderboard`) are over seeds, so with three seeds
they are wide and say nothing about two methods that were scored **on the same questions**.
Every run stores its per-question results (``samples``: ``correct`` per ``(task, doc_id)``), so
two groups (method, student) of one suite can be compared question by question, pooling the
seeds: the pairs are the ``(seed, task, doc_id)`` that both groups were scored on (seed ``s``
of A against seed ``s`` of B).

The test shown (THE test): a paired bootstrap of the retention difference
--------------------------------------------------------------------------
Per task ``t``, with ``T_t`` the teacher's score on it (the board's denominator) and ``m_X,t``
group X's mean ``correct`` over its pairs, retention is ``m_X,t / T_t`` (``T_t / m_X,t`` for a
lower-is-better metric) and the statistic is what the board ranks, the **mean over tasks of the
retention difference**

    D = (1 / |tasks|) sum_t (ret_A,t - ret_B,t).

The bootstrap (Efron & Tibshirani 1993, ch. 16; the paired form of Koehn 2004, "Statistical
significance tests for machine translation evaluation") redraws, per task, ``n_t`` doc ids
with replacement from the task's doc ids (every doc id some run of the suite was scored on),
**one draw shared by both groups and every seed**, so question difficulty cancels; each drawn
doc brings all its pairs. :data:`RESAMPLES` draws from a generator seeded with :data:`SEED`
and the task's name: the same data always gives the same p-value. Two-sided p-value:

    p = min(1, 2 (1 + min(#{D* <= 0}, #{D* >= 0})) / (1 + R))

over the ``R`` resamples ``D*`` (draws in which a task got no pair are left out), so identical
groups get p = 1 and the smallest p-value is ``2 / (R + 1)``. The 95% interval is the
percentile interval of ``D*``. Why this one: it tests the quantity the board ranks (retention,
each task weighing the same, the teacher's score as denominator) and works for any per-question
score in [0, 1], not only right/wrong.

McNemar's exact test (McNemar 1947), shown beside it in Compare
---------------------------------------------------------------
Where every ``correct`` is 0 or 1: ``b`` pairs where A is right and B wrong, ``c`` the other way
round, ``p = binomtest(b, b + c, 0.5)`` (``scipy.stats.binomtest``, two-sided; 1 when there is
no discordant pair). It pools questions over tasks (a task with more questions weighs more) and
ignores the teacher's score, so it can disagree with the bootstrap when tasks differ in size or
in teacher score. Pooling seeds treats the seeds' answers to one question as separate pairs.

Multiple comparisons: Holm (1979)
---------------------------------
:func:`holm` is Holm's step-down correction (scipy and the installed stack have no Holm, so
it is the textbook formula, tested against a worked example): with ``m`` p-values sorted
``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; it controls the
family-wise error rate at ``alpha`` for any dependence between the tests. Families:

- the board: every (method, student) of the suite against ``sft`` on the same student is one
  family, whatever filters hide rows (a filter cannot make a gain significant);
- Compare: every pair of student groups in the current (filtered) view, ``k (k - 1) / 2`` tests.

A comparison is significant when its Holm-adjusted p-value is below :data:`ALPHA`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
"""Family-wise error rate of the significance marks."""
RESAMPLES = 2000
"""Bootstrap resamples per test."""
SEED = 20_240_601
"""Seed of the bootstrap's generator (with each task's name): deterministic p-values."""
BETTER, WORSE, NOT_SIGNIFICANT = "better", "worse", "n.s."
"""The significance marks (:func:`mark`)."""

TEST_COLUMNS: tuple[str, ...] = (
    "a_method",
    "a_student",
    "b_method",
    "b_student",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "pairs",
    "seeds",
    "mcnemar_p",
    "a_only",
    "b_only",
)
"""The columns of :func:`paired_tests`' frame."""

Group = tuple[str, str]
"""(method, student)."""


@dataclass(frozen=True, eq=False)
class PairedSamples:
    """One suite's per-question results, laid out for paired tests.

    ``correct[t]`` has shape (groups, docs of task t, seeds): the stored ``correct`` (NaN where
    that group's run of that seed has no result for the doc). ``tasks`` are the tasks that count
    in the retention average, ``teacher`` and ``higher_is_better`` their denominators and
    directions, in the same order."""

    groups: tuple[Group, ...]
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    teacher: tuple[float, ...]
    higher_is_better: tuple[bool, ...]
    docs: tuple[np.ndarray, ...]
    correct: tuple[np.ndarray, ...]

    def index(self, group: Group) -> int | None:
        """The position of ``group`` in :attr:`groups`, None when it has no samples."""
        try:
            return self.groups.index(group)
        except ValueError:
            return None


def paired_samples(samples: pd.DataFrame, tasks: pd.DataFrame) -> PairedSamples:
    """Lay out a suite's samples for :func:`paired_tests`.

    ``samples``: one row per student run and question, columns method, student, seed, task,
    doc_id, correct (a NULL seed reads as -1; duplicate runs of one seed are averaged; NaN
    ``correct`` is dropped). ``tasks``: per task its ``teacher_score``, ``higher_is_better``
    and ``excluded`` (:func:`kdbench.leaderboard.task_info`); the excluded tasks and those
    without a teacher score are left out, as in the retention average."""
    counted = tasks[~tasks["excluded"].fillna(False).astype(bool)].drop_duplicates("task")
    counted = counted.sort_values("task")
    df = samples.dropna(subset=["correct"])
    df = df[np.isfinite(df["correct"].astype(float))]
    df = df.assign(seed=df["seed"].fillna(-1).astype("int64"))
    # vectorised (a suite can hold millions of samples): each row's group, seed and doc as
    # positions in the sorted groups, seeds and (per task) doc ids
    pairs = pd.MultiIndex.from_arrays([df["method"], df["student"]])  # str or categorical
    ordered = pairs.unique().sort_values()
    groups = tuple((str(m), str(s)) for m, s in ordered)
    g_all = ordered.get_indexer(pairs)
    seed_all = df["seed"].to_numpy(np.int64)
    seeds_arr = np.unique(seed_all)
    seeds = tuple(int(x) for x in seeds_arr)
    s_all = np.searchsorted(seeds_arr, seed_all)
    doc_all = df["doc_id"].to_numpy(np.int64)
    value_all = df["correct"].to_numpy(float)
    docs, correct = [], []
    for task in counted["task"]:
        rows = (df["task"] == task).to_numpy(bool)
        ids = np.unique(doc_all[rows])
        d = np.searchsorted(ids, doc_all[rows])
        shape = (len(groups), len(ids), len(seeds))
        flat = np.ravel_multi_index((g_all[rows], d, s_all[rows]), shape)
        size = int(np.prod(shape))
        # duplicate runs of one seed are averaged
        total = np.bincount(flat, weights=value_all[rows], minlength=size)
        count = np.bincount(flat, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            array = np.where(count > 0, total / count, np.nan).reshape(shape)
        docs.append(ids)
        correct.append(array)
    return PairedSamples(
        groups=groups,
        seeds=seeds,
        tasks=tuple(str(t) for t in counted["task"]),
        teacher=tuple(float(x) for x in counted["teacher_score"]),
        higher_is_better=tuple(bool(x) for x in counted["higher_is_better"]),
        docs=tuple(docs),
        correct=tuple(correct),
    )


def _weights(task: str, n: int, resamples: int) -> np.ndarray:
    """How often each of ``n`` docs is drawn in each of ``resamples`` bootstrap draws of ``n``
    docs with replacement, shape (resamples, n); the generator is seeded with :data:`SEED` and
    the task's name, so each task has its own fixed draws."""
    rng = np.random.default_rng([SEED, zlib.crc32(task.encode()), n])
    picks = rng.integers(0, n, size=(resamples, n))
    rows = np.repeat(np.arange(resamples), n)
    counts = np.bincount(rows * n + picks.ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(float)


def _retention(mean: np.ndarray, teacher: float, higher_is_better: bool) -> np.ndarray:
    """Per-task retention from a mean score (NaN where it is undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = mean / teacher if higher_is_better else teacher / mean
    return np.where(np.isfinite(ret), ret, np.nan)


def paired_tests(
    data: PairedSamples,
    pairs: Sequence[tuple[Group, Group]],
    *,
    resamples: int = RESAMPLES,
    mcnemar: bool = True,
) -> pd.DataFrame:
    """The paired bootstrap (and, where ``correct`` is 0/1, McNemar's exact test) of each
    (A, B) in ``pairs``, all at once (one matrix product per task). Columns
    :data:`TEST_COLUMNS`: the observed retention difference A - B over the pairs, its 95%
    percentile interval, the bootstrap p-value, the number of (seed, task, doc) pairs, the
    seeds they span, McNemar's p-value (NaN unless every paired ``correct`` is 0 or 1) and the
    discordant counts (A right and B wrong, and the other way round; NaN with McNemar).
    A pair with no samples on some counted task (an old run) has NaN statistics and 0 pairs.
    ``mcnemar=False`` skips McNemar (NaN columns; the board does not show it, and scipy.stats
    is slow to import).
    """
    rows = pd.DataFrame(
        [(a[0], a[1], b[0], b[1]) for a, b in pairs], columns=list(TEST_COLUMNS[:4])
    )
    n = len(pairs)
    ia = np.array([data.index(a) if data.index(a) is not None else -1 for a, _ in pairs])
    ib = np.array([data.index(b) if data.index(b) is not None else -1 for _, b in pairs])
    known = (ia >= 0) & (ib >= 0)
    ia, ib = np.where(known, ia, 0), np.where(known, ib, 0)
    n_tasks = len(data.tasks)
    observed = np.zeros(n)
    boot = np.zeros((resamples, n))
    n_pairs = np.zeros(n, dtype=np.int64)
    seeds_hit = np.zeros((n, len(data.seeds)), dtype=bool)
    a_only = np.zeros(n)
    b_only = np.zeros(n)
    binary = np.ones(n, dtype=bool)
    complete = known & (n_tasks > 0)
    for task, teacher, hib, array in zip(
        data.tasks, data.teacher, data.higher_is_better, data.correct, strict=True
    ):
        if n == 0 or array.shape[1] == 0:
            complete &= False
            continue
        a, b = array[ia], array[ib]  # (pairs, docs, seeds)
        both = ~np.isnan(a) & ~np.isnan(b) & known[:, None, None]
        a0, b0 = np.where(both, a, 0.0), np.where(both, b, 0.0)
        sums = np.concatenate([a0.sum(2), b0.sum(2), both.sum(2)], axis=0)  # (3 pairs, docs)
        per_task_pairs = both.sum((1, 2))
        complete &= per_task_pairs > 0
        n_pairs += per_task_pairs
        seeds_hit |= both.any(1)
        binary &= ~(both & ~np.isin(a, (0.0, 1.0))).any((1, 2))
        binary &= ~(both & ~np.isin(b, (0.0, 1.0))).any((1, 2))
        a_only += (both & (a0 == 1) & (b0 == 0)).sum((1, 2))
        b_only += (both & (a0 == 0) & (b0 == 1)).sum((1, 2))
        drawn = _weights(task, array.shape[1], resamples) @ sums.T  # (resamples, 3 pairs)
        full = sums.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            for out, (sa, sb, cnt) in (
                (boot, np.split(drawn, 3, axis=1)),
                (observed, np.split(full, 3)),
            ):
                diff = _retention(sa / cnt, teacher, hib) - _retention(sb / cnt, teacher, hib)
                out += diff / n_tasks
    observed = np.where(complete, observed, np.nan)
    boot = np.where(complete[None, :], boot, np.nan)
    valid = np.isfinite(boot)
    r = valid.sum(0)
    low = (valid & (boot <= 0)).sum(0)
    high = (valid & (boot >= 0)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2 * (1 + np.minimum(low, high)) / (1 + r))
    p = np.where(complete & (r > 0), p, np.nan)
    ci_low = np.full(n, np.nan)
    ci_high = np.full(n, np.nan)
    for j in np.flatnonzero(complete & (r > 0)):
        ci_low[j], ci_high[j] = np.percentile(boot[valid[:, j], j], [2.5, 97.5])
    rows["difference"] = observed
    rows["ci_low"] = ci_low
    rows["ci_high"] = ci_high
    rows["p_value"] = p
    rows["pairs"] = np.where(complete, n_pairs, 0)
    rows["seeds"] = np.where(complete, seeds_hit.sum(1), 0)
    exact = complete & binary & mcnemar
    rows["mcnemar_p"] = [
        mcnemar_exact(int(x), int(y)) if ok else np.nan
        for x, y, ok in zip(a_only, b_only, exact, strict=True)
    ]
    rows["a_only"] = np.where(exact, a_only, np.nan)
    rows["b_only"] = np.where(exact, b_only, np.nan)
    return rows[list(TEST_COLUMNS)]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts: ``binomtest(a_only,
    a_only + b_only, 0.5)`` (1 when there is no discordant pair)."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest  # scipy.stats imports slowly: only when asked

    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order; NaN entries stay
    NaN and are not counted in the family: with the ``m`` others sorted ascending,
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def mark(difference: float, adjusted_p: float, alpha: float = ALPHA) -> str | None:
    """``"better"`` / ``"worse"`` when the adjusted p-value is below ``alpha`` (by the sign of
    the difference), ``"n.s."`` otherwise, None when there is no test."""
    if not np.isfinite(adjusted_p) or not np.isfinite(difference):
        return None
    if adjusted_p >= alpha or difference == 0:
        return NOT_SIGNIFICANT
    return BETTER if difference > 0 else WORSE


def all_pairs(groups: Sequence[Group]) -> list[tuple[Group, Group]]:
    """Every unordered pair of distinct groups, in order: Compare's Holm family."""
    groups = list(dict.fromkeys(groups))
    return [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]


def compare_test(
    data: PairedSamples, a: Group, b: Group, family: Sequence[Group]
) -> dict[str, float | int | str | None]:
    """Compare's A vs B: the :func:`paired_tests` row of (A, B), plus ``holm_p`` (Holm over
    every pair of ``family``, the groups of the current view, with A vs B among them),
    ``family_size`` and its ``mark``. A == B: p = 1, nothing to correct."""
    tests = paired_tests(data, [(a, b)])
    row = tests.iloc[0].to_dict()
    if a == b:
        row.update(holm_p=row["p_value"], family_size=1)
    else:
        pairs = all_pairs([*family, a, b])
        found = next(i for i, (x, y) in enumerate(pairs) if {x, y} == {a, b})
        family_tests = paired_tests(data, pairs, mcnemar=False)
        adjusted = holm(family_tests["p_value"].to_numpy())
        row.update(holm_p=float(adjusted[found]), family_size=len(pairs))
    row["mark"] = mark(float(row["difference"]), float(row["holm_p"]))
    return row


# --- power ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Power:
    """What a suite's seeds can tell apart (:func:`seed_power`)."""

    seed_sd: float  # pooled seed-to-seed standard deviation of a group's retention
    groups: int  # (method, student) groups with two or more seeds that it pools
    seeds: int  # seeds per group
    detectable: float  # smallest true retention difference detected (two groups, Welch)
    alpha: float
    power: float


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true difference between two groups' mean retentions, each the mean of
    ``n`` seeds with standard deviation ``sd``, that a two-sided t-test at level ``alpha``
    detects with probability ``power`` (the minimum detectable effect of a two-sample t-test,
    Cohen 1988, ch. 2, with Student's t in place of the normal for ``2 (n - 1)`` degrees of
    freedom):

        MDE = (t_{1 - alpha/2, df} + t_{power, df}) * sd * sqrt(2 / n).

    NaN with fewer than two seeds."""
    from scipy.stats import t as student_t

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    df = 2 * (n - 1)
    z = student_t.ppf(1 - alpha / 2, df) + student_t.ppf(power, df)
    return float(z * sd * np.sqrt(2 / n))


def seed_power(
    sd: Sequence[float] | np.ndarray,
    n: Sequence[int] | np.ndarray,
    alpha: float = ALPHA,
    power: float = 0.8,
) -> Power:
    """The suite's power from its measured seed-to-seed spread: ``sd[g]`` and ``n[g]`` are
    the standard deviation over seeds of group ``g``'s retention and its number of seeds; the
    spread is the pooled standard deviation over the groups with two or more seeds,
    ``sqrt(sum_g (n_g - 1) sd_g^2 / sum_g (n_g - 1))``, and the detectable difference is
    :func:`detectable_difference` at the most common seed count."""
    sd_a, n_a = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    keep = (n_a >= 2) & np.isfinite(sd_a)
    if not keep.any():
        return Power(float("nan"), 0, int(n_a.max()) if len(n_a) else 0, float("nan"), alpha, power)
    dof = (n_a[keep] - 1).sum()
    pooled = float(np.sqrt(((n_a[keep] - 1) * sd_a[keep] ** 2).sum() / dof))
    values, counts = np.unique(n_a[keep].astype(int), return_counts=True)
    seeds = int(values[counts.argmax()])
    return Power(
        pooled,
        int(keep.sum()),
        seeds,
        detectable_difference(pooled, seeds, alpha, power),
        alpha,
        power,
    )
