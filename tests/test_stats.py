"""Tests for kdbench/stats.py: the paired bootstrap, McNemar's exact test and Holm's
correction, on hand-checkable cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kdbench import stats

A, B, C = ("a", "s"), ("b", "s"), ("c", "s")


def tasks(**teacher: float) -> pd.DataFrame:
    """Task info: teacher score per task, higher is better, none excluded."""
    return pd.DataFrame(
        {
            "task": list(teacher),
            "teacher_score": list(teacher.values()),
            "higher_is_better": True,
            "excluded": False,
        }
    )


def rows(group: tuple[str, str], task: str, correct, seeds=(0,)) -> list[dict]:
    """Sample rows of one group on one task: ``correct[d]`` for doc d, the same each seed."""
    return [
        {
            "method": group[0],
            "student": group[1],
            "seed": s,
            "task": task,
            "doc_id": d,
            "correct": float(c),
        }  # fmt: skip
        for s in seeds
        for d, c in enumerate(correct)
    ]


def layout(*parts: list[dict], info: pd.DataFrame) -> stats.PairedSamples:
    return stats.paired_samples(pd.DataFrame([r for p in parts for r in p]), info)


def test_identical_methods_have_p_one() -> None:
    rng = np.random.default_rng(1)
    answers = rng.integers(0, 2, 50)
    data = layout(rows(A, "t", answers, (0, 1, 2)), rows(B, "t", answers, (0, 1, 2)),
                  info=tasks(t=0.9))  # fmt: skip
    test = stats.paired_tests(data, [(A, B)]).iloc[0]
    assert test["difference"] == 0 and test["p_value"] == 1.0
    assert test["ci_low"] == 0 and test["ci_high"] == 0
    assert test["pairs"] == 150 and test["seeds"] == 3
    assert test["mcnemar_p"] == 1.0 and test["a_only"] == 0 and test["b_only"] == 0


def test_a_method_right_wherever_the_other_is_wrong_has_a_tiny_p() -> None:
    n = 40
    data = layout(rows(A, "t", [1] * n), rows(B, "t", [0] * n), info=tasks(t=0.8))
    test = stats.paired_tests(data, [(A, B)]).iloc[0]
    assert test["difference"] == pytest.approx(1 / 0.8)  # retention 1.25 against 0
    # every resample favours A: the smallest p-value the bootstrap can give
    assert test["p_value"] == pytest.approx(2 / (stats.RESAMPLES + 1))
    assert test["mcnemar_p"] == pytest.approx(2 * 0.5**n)  # exact binomial, both tails
    assert (test["a_only"], test["b_only"]) == (n, 0)
    reverse = stats.paired_tests(data, [(B, A)]).iloc[0]
    assert reverse["difference"] == pytest.approx(-1 / 0.8)
    assert reverse["p_value"] == test["p_value"]


def test_difference_is_the_mean_over_tasks_of_retention_differences() -> None:
    # task x (teacher 0.5): A 2/4 right, B 1/4 -> retention 1.0 vs 0.5
    # task y (teacher 1.0): A and B both 3/4 -> 0 difference; the mean: 0.25
    data = layout(
        rows(A, "x", [1, 1, 0, 0]),
        rows(B, "x", [1, 0, 0, 0]),
        rows(A, "y", [1, 1, 1, 0]),
        rows(B, "y", [1, 1, 1, 0]),
        info=tasks(x=0.5, y=1.0),
    )
    test = stats.paired_tests(data, [(A, B)]).iloc[0]
    assert test["difference"] == pytest.approx(0.25)
    assert test["ci_low"] <= 0.25 <= test["ci_high"]
    assert test["pairs"] == 8


def test_lower_is_better_uses_teacher_over_student() -> None:
    info = tasks(t=2.0).assign(higher_is_better=False)
    data = layout(rows(A, "t", [0.5, 0.5]), rows(B, "t", [1.0, 1.0]), info=info)
    test = stats.paired_tests(data, [(A, B)]).iloc[0]
    assert test["difference"] == pytest.approx(2.0 / 0.5 - 2.0 / 1.0)
    assert math.isnan(test["mcnemar_p"])  # not right/wrong answers: no McNemar


def test_mcnemar_matches_the_binomial_by_hand() -> None:
    # 7 questions only A gets, 2 only B gets, 3 both, 1 neither:
    # p = 2 (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 92 / 512
    a = [1] * 7 + [0] * 2 + [1] * 3 + [0]
    b = [0] * 7 + [1] * 2 + [1] * 3 + [0]
    data = layout(rows(A, "t", a), rows(B, "t", b), info=tasks(t=1.0))
    test = stats.paired_tests(data, [(A, B)]).iloc[0]
    assert (test["a_only"], test["b_only"]) == (7, 2)
    assert test["mcnemar_p"] == pytest.approx(92 / 512)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_pairs_need_both_groups_and_pool_seeds() -> None:
    # B lacks seed 1: only seed 0 pairs; C has no samples on task y: no test
    data = layout(
        rows(A, "x", [1, 0, 1], (0, 1)),
        rows(B, "x", [0, 0, 1], (0,)),
        rows(C, "x", [1, 1, 1], (0, 1)),
        rows(A, "y", [1, 1], (0, 1)),
        rows(B, "y", [1, 0], (0,)),
        info=tasks(x=1.0, y=1.0),
    )
    out = stats.paired_tests(data, [(A, B), (A, C), (A, ("ghost", "s"))])
    assert list(out["pairs"]) == [5, 0, 0] and list(out["seeds"]) == [1, 0, 0]
    assert out["difference"].iloc[0] == pytest.approx(((2 / 3 - 1 / 3) + (1 - 1 / 2)) / 2)
    assert out[["difference", "p_value", "mcnemar_p"]].iloc[1:].isna().all().all()


def test_excluded_tasks_are_left_out() -> None:
    info = tasks(x=1.0, y=1.0)
    info.loc[info["task"] == "y", "excluded"] = True
    data = layout(rows(A, "x", [1, 0]), rows(B, "x", [1, 0]), rows(A, "y", [1, 1]),
                  rows(B, "y", [0, 0]), info=info)  # fmt: skip
    assert data.tasks == ("x",)
    assert stats.paired_tests(data, [(A, B)])["difference"].iloc[0] == 0


def test_the_bootstrap_is_deterministic_and_pair_order_free() -> None:
    rng = np.random.default_rng(7)
    data = layout(
        rows(A, "t", rng.integers(0, 2, 60), (0, 1)),
        rows(B, "t", rng.integers(0, 2, 60), (0, 1)),
        rows(C, "t", rng.integers(0, 2, 60), (0, 1)),
        info=tasks(t=0.9),
    )
    one = stats.paired_tests(data, [(A, B), (A, C)])
    two = stats.paired_tests(data, [(A, C), (A, B)])
    pd.testing.assert_frame_equal(one, two.iloc[::-1].reset_index(drop=True))
    assert 0 < one["p_value"].iloc[0] <= 1


def test_holm_against_the_textbook() -> None:
    # Holm (1979) step-down, by hand: sorted 0.005 0.01 0.03 0.04, m = 4 ->
    # 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN (no test) is not in the family; large values are capped at 1
    out = stats.holm([0.2, math.nan, 0.6])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert stats.holm([0.7, 0.8]).tolist() == [1.0, 1.0]
    assert stats.holm([]).size == 0


def test_marks() -> None:
    assert stats.mark(0.1, 0.01) == stats.BETTER
    assert stats.mark(-0.1, 0.01) == stats.WORSE
    assert stats.mark(0.1, 0.2) == stats.NOT_SIGNIFICANT
    assert stats.mark(0.1, math.nan) is None


def test_compare_test_is_holm_adjusted_over_the_view() -> None:
    rng = np.random.default_rng(3)
    groups = [A, B, C]
    data = layout(*(rows(g, "t", rng.integers(0, 2, 80), (0, 1)) for g in groups),
                  info=tasks(t=1.0))  # fmt: skip
    row = stats.compare_test(data, A, B, groups)
    assert row["family_size"] == 3 == len(stats.all_pairs(groups))
    raw = stats.paired_tests(data, stats.all_pairs(groups))["p_value"].to_numpy()
    assert row["holm_p"] == pytest.approx(stats.holm(raw)[0])
    assert row["holm_p"] >= row["p_value"]
    same = stats.compare_test(data, A, A, groups)
    assert same["p_value"] == 1.0 and same["family_size"] == 1


def test_detectable_difference_is_the_two_sample_t_minimum_effect():
    """MDE = (t_{0.975, 4} + t_{0.8, 4}) * sd * sqrt(2 / 3) for three seeds a side:
    (2.776445 + 0.940965) * 0.816497 = 3.0353 sd (t quantiles from the tables)."""
    assert stats.detectable_difference(1.0, 3) == pytest.approx(3.0353, abs=1e-3)
    assert stats.detectable_difference(0.02, 3) == pytest.approx(0.060706, abs=1e-4)
    assert math.isnan(stats.detectable_difference(1.0, 1))


def test_seed_power_pools_the_groups_spread():
    """Pooled sd of groups with sd 1 and 2 over three seeds each: sqrt((2 + 8) / 4)."""
    p = stats.seed_power([1.0, 2.0, float("nan")], [3, 3, 1])
    assert p.seed_sd == pytest.approx(math.sqrt(2.5))
    assert (p.groups, p.seeds) == (2, 3)
    assert p.detectable == pytest.approx(3.0353 * math.sqrt(2.5), rel=1e-3)
    assert stats.seed_power([float("nan")], [1]).groups == 0
