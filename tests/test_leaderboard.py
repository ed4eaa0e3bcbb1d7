"""Tests for kdbench.leaderboard against a real DuckDB file."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from kdbench import store
from kdbench.leaderboard import format_table, leaderboard

SUITE = "aaaa1111bbbb2222"
# task "qa" is higher-is-better accuracy, task "lm" is lower-is-better perplexity
TEACHER = {"qa": 0.80, "lm": 10.0}


def add_run(
    db: Path,
    run_id: str,
    method: str,
    student: str,
    scores: dict[str, float],
    *,
    seed: int = 0,
    params: int = 250_000,
    train_wall_s: float = 10.0,
    status: str = "ok",
    role: str = "student",
    suite: str = SUITE,
) -> None:
    metrics = []
    for task, value in scores.items():
        hib = task != "lm"
        metric = "acc" if hib else "ppl"
        metrics.append(
            {
                "task": task,
                "metric": metric,
                "value": value,
                "higher_is_better": hib,
                "is_primary": True,
            }
        )
        # a non-primary metric that must be ignored
        metrics.append({"task": task, "metric": "other", "value": 123.0, "is_primary": False})
    run = {
        "run_id": run_id,
        "suite_hash": suite,
        "role": role,
        "method": method,
        "family": {"teacher": "teacher", "sft": "baseline"}.get(method, "logit"),
        "student": student,
        "seed": seed,
        "status": status,
        "error": "CUDA OOM" if status == "failed" else None,
    }
    store.write_run(db, run, metrics, {"params": params, "train_wall_s": train_wall_s})


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teacher + sft (2 seeds) + kd on two students (one failed seed); built once."""
    path = tmp_path_factory.mktemp("template") / "kdbench.duckdb"
    store.write_suite(path, SUITE, "tiny", "leaderboards/tiny.toml", {})
    add_run(path, "teacher", "teacher", "big", TEACHER, params=1_000_000, role="teacher")
    add_run(path, "sft-s-0", "sft", "small", {"qa": 0.40, "lm": 20.0}, train_wall_s=8.0)
    add_run(path, "sft-s-1", "sft", "small", {"qa": 0.60, "lm": 20.0}, seed=1, train_wall_s=12.0)
    add_run(path, "kd-s-0", "kd", "small", {"qa": 0.70, "lm": 12.5})
    add_run(path, "kd-s-1", "kd", "small", {}, seed=1, status="failed")
    add_run(path, "kd-t-0", "kd", "tiny", {"qa": 0.72, "lm": 11.0}, params=100_000)
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    """A private copy of the template database."""
    path = tmp_path / "kdbench.duckdb"
    shutil.copyfile(template_db, path)
    return path


def test_columns_and_order(db: Path) -> None:
    df = leaderboard(db)
    assert list(df.columns) == [
        "rank", "method", "family", "student", "role", "retention_avg",
        "retention_lm", "retention_qa", "score_lm", "score_qa",
        "params", "param_ratio", "train_wall_s", "seeds", "failed",
    ]  # fmt: skip
    assert list(zip(df["method"], df["student"], strict=True)) == [
        ("teacher", "big"),
        ("kd", "tiny"),
        ("kd", "small"),
        ("sft", "small"),
    ]
    assert list(df["role"]) == ["teacher", "method", "method", "baseline"]
    assert pd.isna(df["rank"].iloc[0])
    assert list(df["rank"].iloc[1:]) == [1, 2, 3]


def test_retention_values(db: Path) -> None:
    df = leaderboard(db).set_index(["method", "student"])
    teacher = df.loc[("teacher", "big")]
    assert teacher["retention_avg"] == 1.0
    assert teacher["score_qa"] == 0.80 and teacher["score_lm"] == 10.0
    assert teacher["param_ratio"] == 1.0

    kd = df.loc[("kd", "small")]
    assert kd["retention_qa"] == pytest.approx(0.70 / 0.80)
    assert kd["retention_lm"] == pytest.approx(10.0 / 12.5)  # lower is better: teacher/student
    assert kd["retention_avg"] == pytest.approx((0.70 / 0.80 + 10.0 / 12.5) / 2)
    assert kd["seeds"] == 1 and kd["failed"] == 1

    sft = df.loc[("sft", "small")]  # mean over two seeds
    assert sft["score_qa"] == pytest.approx(0.50)
    assert sft["retention_qa"] == pytest.approx(0.50 / 0.80)
    assert sft["train_wall_s"] == pytest.approx(10.0)
    assert sft["seeds"] == 2 and sft["failed"] == 0

    tiny = df.loc[("kd", "tiny")]
    assert tiny["params"] == 100_000
    assert tiny["param_ratio"] == pytest.approx(0.1)
    assert tiny["retention_avg"] == pytest.approx((0.72 / 0.80 + 10.0 / 11.0) / 2)


def test_missing_task_leaves_row_unranked(db: Path) -> None:
    add_run(db, "fitnets-s-0", "fitnets", "small", {"qa": 0.79})
    df = leaderboard(db).set_index(["method", "student"])
    row = df.loc[("fitnets", "small")]
    assert row["retention_qa"] == pytest.approx(0.79 / 0.80)
    assert pd.isna(row["retention_lm"]) and pd.isna(row["retention_avg"])
    assert pd.isna(row["rank"])
    assert leaderboard(db)["method"].iloc[-1] == "fitnets"  # unranked rows come last


def test_only_failed_group_has_no_row(db: Path) -> None:
    add_run(db, "crd-s-0", "crd", "small", {}, status="failed")
    assert "crd" not in set(leaderboard(db)["method"])


def test_default_suite_is_most_recent(db: Path) -> None:
    time.sleep(0.01)
    store.write_suite(db, "newer", "newer", "other.toml", {})
    add_run(db, "n-teacher", "teacher", "big", {"qa": 0.5}, role="teacher", suite="newer")
    add_run(db, "n-kd", "kd", "small", {"qa": 0.25}, suite="newer")
    latest = leaderboard(db)
    assert list(latest["method"]) == ["teacher", "kd"]
    assert latest["retention_avg"].iloc[1] == pytest.approx(0.5)
    assert "retention_lm" not in latest.columns
    assert len(leaderboard(db, SUITE)) == 4


def test_no_teacher_gives_nan_retention(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    store.write_suite(db, SUITE, "tiny", "t.toml", {})
    add_run(db, "kd-s-0", "kd", "small", {"qa": 0.5})
    df = leaderboard(db)
    assert list(df["role"]) == ["method"]
    assert pd.isna(df["retention_avg"].iloc[0]) and pd.isna(df["param_ratio"].iloc[0])
    assert df["score_qa"].iloc[0] == 0.5


def test_empty_and_missing_db(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    assert leaderboard(missing).empty
    assert not missing.exists()
    db = tmp_path / "k.duckdb"
    store.write_suite(db, SUITE, "tiny", "t.toml", {})
    df = leaderboard(db)
    assert df.empty
    assert list(df.columns)[:6] == ["rank", "method", "family", "student", "role", "retention_avg"]
    assert leaderboard(db, "no-such-suite").empty
    assert format_table(df) == "(no results)"


def test_format_table(db: Path) -> None:
    text = format_table(leaderboard(db))
    lines = text.splitlines()
    assert len(lines) == 2 + 4  # header, rule, 4 rows
    assert len({len(line) for line in lines}) == 1  # aligned
    header, _, teacher, first, *_ = lines
    assert header.split()[:6] == ["rank", "method", "family", "student", "role", "retention"]
    assert teacher.split()[0] == "-" and "100.0%" in teacher and "1.00M" in teacher
    assert first.split()[:4] == ["1", "kd", "logit", "tiny"]
    assert "0.10M" in first
    expected = f"{(0.72 / 0.80 + 10.0 / 11.0) / 2:.1%}"
    assert expected in first
