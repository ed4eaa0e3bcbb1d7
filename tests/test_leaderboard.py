"""Tests for kdbench.leaderboard against real DuckDB files written by kdbench.store."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from statistics import mean, stdev

import pandas as pd
import pytest

from kdbench import store
from kdbench.economics import load_prices
from kdbench.leaderboard import (
    BASE_COLUMNS,
    BUDGET_COLUMNS,
    PAIRED_COLUMNS,
    TAIL_COLUMNS,
    ci_half_width,
    compare,
    fidelity_columns,
    format_table,
    leaderboard,
    mean_ci,
    open_track,
    rank_label,
    run_detail,
    run_scores,
    shared_ranks,
    suite_differences,
    suites,
    t_quantile,
    task_info,
    welch_ci,
)

from . import appdata
from .appdata import SEEDS, SUITE, TASKS, TEACHER_SCORE, score

SMALL = "aaaa1111bbbb2222"
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
    suite: str = SMALL,
) -> None:
    metrics = []
    for task, value in scores.items():
        hib = task != "lm"
        metrics.append(
            {"task": task, "metric": "acc" if hib else "ppl", "value": value,
             "higher_is_better": hib, "is_primary": True}
        )  # fmt: skip
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
def small_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Schema-1-like data (no new cost columns, no samples): teacher + sft (2 seeds) + kd on
    two students (one failed seed)."""
    path = tmp_path_factory.mktemp("template") / "kdbench.duckdb"
    store.write_suite(path, SMALL, "small", "leaderboards/small.toml", {})
    add_run(path, "teacher", "teacher", "big", TEACHER, params=1_000_000, role="teacher")
    add_run(path, "sft-s-0", "sft", "small", {"qa": 0.40, "lm": 20.0}, train_wall_s=8.0)
    add_run(path, "sft-s-1", "sft", "small", {"qa": 0.60, "lm": 20.0}, seed=1, train_wall_s=12.0)
    add_run(path, "kd-s-0", "kd", "small", {"qa": 0.70, "lm": 12.5})
    add_run(path, "kd-s-1", "kd", "small", {}, seed=1, status="failed")
    add_run(path, "kd-t-0", "kd", "tiny", {"qa": 0.72, "lm": 11.0}, params=100_000)
    return path


@pytest.fixture
def small(small_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "small.duckdb"
    shutil.copyfile(small_template, path)
    return path


@pytest.fixture
def db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A private copy of the multi-seed database of tests/appdata.py."""
    path = tmp_path / "kdbench.duckdb"
    shutil.copyfile(appdata.template(tmp_path_factory), path)
    return path


def expected_retention(method: str, student: str) -> tuple[float, float]:
    """Mean and 95% CI half-width over seeds of the per-seed task-mean retention."""
    per_seed = [mean(score(method, student, s, t) / TEACHER_SCORE[t] for t in TASKS) for s in SEEDS]
    n = len(per_seed)
    return mean(per_seed), t_quantile(n - 1) * stdev(per_seed) / math.sqrt(n)


# --------------------------------------------------------------------------- statistics


def test_t_quantile_matches_tables() -> None:
    # Student t 0.975 quantiles from any statistics table
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(1e6) == pytest.approx(1.95996, abs=1e-4)
    assert math.isnan(t_quantile(0))


def test_mean_ci_and_one_seed() -> None:
    m, half, n = mean_ci([0.5, 0.6, 0.7])
    assert (m, n) == (pytest.approx(0.6), 3)
    assert half == pytest.approx(4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    m, half, n = mean_ci([0.5, float("nan")])
    assert (m, n) == (0.5, 1) and math.isnan(half)
    assert math.isnan(ci_half_width(0.1, 1))
    assert mean_ci([])[2] == 0


def test_welch_ci_by_hand() -> None:
    a, b = [0.70, 0.72, 0.75], [0.60, 0.61]
    diff, half = welch_ci(mean(a), stdev(a), 3, mean(b), stdev(b), 2)
    v1, v2 = stdev(a) ** 2 / 3, stdev(b) ** 2 / 2
    nu = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 1)
    assert diff == pytest.approx(mean(a) - mean(b))
    assert half == pytest.approx(t_quantile(nu) * math.sqrt(v1 + v2))
    assert math.isnan(welch_ci(0.7, math.nan, 1, 0.6, 0.01, 3)[1])
    assert welch_ci(0.7, 0.0, 3, 0.6, 0.0, 3) == (pytest.approx(0.1), 0.0)


def test_shared_ranks() -> None:
    # A [0.80, 0.90] is above C [0.50, 0.60]; B [0.55, 0.85] overlaps both
    best, worst = shared_ranks([0.85, 0.70, 0.55], [0.05, 0.15, 0.05])
    assert list(best) == [1, 1, 2] and list(worst) == [2, 3, 3]
    assert [rank_label(b, w) for b, w in zip(best, worst, strict=True)] == ["1–2", "1–3", "2–3"]
    # points (one seed): only exact ties share, float noise counts as a tie
    best, worst = shared_ranks([0.5, 0.005 + 0.865, 0.87, 0.1], [math.nan] * 4)
    assert list(best) == [3, 1, 1, 4] and list(worst) == [3, 2, 2, 4]
    assert rank_label(pd.NA, pd.NA) == "-"


# --------------------------------------------------------------------------- the board


def test_columns_and_order(small: Path) -> None:
    df = leaderboard(small)
    tasks = ["lm", "qa"]
    per_task = [f"{p}{t}" for p in ("retention_", "retention_ci_", "score_", "score_ci_")
                for t in tasks]  # fmt: skip
    assert list(df.columns) == [
        *BASE_COLUMNS,
        *PAIRED_COLUMNS,
        *per_task,
        *TAIL_COLUMNS,
        *fidelity_columns(tasks),
        *BUDGET_COLUMNS,
    ]
    assert list(zip(df["method"], df["student"], strict=True)) == [
        ("teacher", "big"),
        ("kd", "tiny"),
        ("kd", "small"),
        ("sft", "small"),
    ]  # by mean retention
    assert list(df["role"]) == ["teacher", "method", "method", "baseline"]
    assert pd.isna(df["rank"].iloc[0]) and df["rank_label"].iloc[0] == "-"
    # the kd rows (one seed each) are points, kd/tiny above kd/small; sft's two seeds give
    # a wide interval that overlaps both, so it shares ranks 1-3
    assert list(df["rank_label"].iloc[1:]) == ["1–2", "2–3", "1–3"]


def test_retention_direction_and_seed_means(small: Path) -> None:
    df = leaderboard(small).set_index(["method", "student"])
    teacher = df.loc[("teacher", "big")]
    assert teacher["retention_avg"] == 1.0 and teacher["param_ratio"] == 1.0
    assert teacher["score_qa"] == 0.80 and teacher["score_lm"] == 10.0

    kd = df.loc[("kd", "small")]
    assert kd["retention_qa"] == pytest.approx(0.70 / 0.80)
    assert kd["retention_lm"] == pytest.approx(10.0 / 12.5)  # lower is better: teacher/student
    assert kd["retention_avg"] == pytest.approx((0.70 / 0.80 + 10.0 / 12.5) / 2)
    assert kd["seeds"] == 1 and kd["failed"] == 1
    assert math.isnan(kd["retention_ci"])  # one seed: no interval

    sft = df.loc[("sft", "small")]  # two seeds
    per_seed = [(0.40 / 0.80 + 10.0 / 20.0) / 2, (0.60 / 0.80 + 10.0 / 20.0) / 2]
    assert sft["retention_avg"] == pytest.approx(mean(per_seed))
    assert sft["retention_ci"] == pytest.approx(12.7062 * stdev(per_seed) / math.sqrt(2), 1e-4)
    assert sft["score_qa"] == pytest.approx(0.50)
    assert sft["score_ci_qa"] == pytest.approx(12.7062 * stdev([0.4, 0.6]) / math.sqrt(2), 1e-4)
    assert sft["train_wall_s"] == pytest.approx(10.0)
    assert sft["gain_vs_sft"] == 0.0 and math.isnan(sft["gain_ci"])
    assert kd["gain_vs_sft"] == pytest.approx(kd["retention_avg"] - sft["retention_avg"])
    assert math.isnan(kd["gain_ci"])  # kd has one seed

    tiny = df.loc[("kd", "tiny")]
    assert tiny["params"] == 100_000 and tiny["param_ratio"] == pytest.approx(0.1)
    assert math.isnan(tiny["gain_vs_sft"])  # no sft on the tiny student
    # schema-2 columns the old rows lack are NaN, not errors
    for col in ("device_hours", "price_usd", "total_flops", "speedup", "usd_per_mtok"):
        assert df[col].isna().all(), col


def test_multi_seed_intervals_gains_and_shared_ranks(db: Path) -> None:
    df = leaderboard(db)
    rows = df.set_index(["method", "student"])
    for method in ("sft", "kd", "fkl", "seqkd"):
        for student in appdata.STUDENTS:
            m, half = expected_retention(method, student)
            row = rows.loc[(method, student)]
            assert row["retention_avg"] == pytest.approx(m)
            assert row["retention_ci"] == pytest.approx(half)
            assert row["seeds"] == 3
    fkl, sft = rows.loc[("fkl", "student-0.1M")], rows.loc[("sft", "student-0.1M")]
    assert fkl["gain_vs_sft"] == pytest.approx(fkl["retention_avg"] - sft["retention_avg"])
    assert fkl["gain_ci"] > 0
    # ranks follow from the intervals: best = 1 + #above, worst = n - #below
    ranked = df[df["role"] != "teacher"]
    lo = ranked["retention_avg"] - ranked["retention_ci"]
    hi = ranked["retention_avg"] + ranked["retention_ci"]
    for i, row in ranked.reset_index(drop=True).iterrows():
        above = int((lo > hi.iloc[i]).sum())
        below = int((hi < lo.iloc[i]).sum())
        assert row["rank"] == 1 + above and row["rank_worst"] == len(ranked) - below
    assert any("–" in label for label in ranked["rank_label"])  # some ranks are shared
    assert ranked["rank"].is_monotonic_increasing


def test_filters_rerank_and_keep_teacher(db: Path) -> None:
    full = leaderboard(db).set_index(["method", "student"])
    only = leaderboard(db, methods=["kd", "seqkd"], students=["student-0.1M"])
    assert list(only["method"]) == ["teacher", "kd", "seqkd"]
    # kd [55.9%, 62.1%] lies above seqkd [48.4%, 54.6%]: ranks 1 and 2 within the view
    assert list(only["rank_label"]) == ["-", "1", "2"]
    assert full.loc[("kd", "student-0.1M"), "rank"] > 1  # in the full board it ranks lower
    # the gain stays relative to sft even when sft is filtered out
    kd = only.set_index("method").loc["kd"]
    assert kd["gain_vs_sft"] == pytest.approx(full.loc[("kd", "student-0.1M"), "gain_vs_sft"])
    assert set(leaderboard(db, families=["baseline"])["method"]) == {"teacher", "sft"}
    assert list(leaderboard(db, methods=["nope"])["method"]) == ["teacher"]


def test_costs_prices_and_speed(db: Path) -> None:
    prices = load_prices()
    df = leaderboard(db, prices=prices).set_index(["method", "student"])
    row = df.loc[("kd", "student-0.25M")]
    cpu = prices.devices["cpu"].usd_per_hour
    hours = [(40.0 + s) / 3600 for s in SEEDS]
    assert row["device_hours"] == pytest.approx(mean(hours))
    assert row["price_usd"] == pytest.approx(mean(hours) * cpu)
    assert row["total_flops"] == pytest.approx(6.0 * 252_160 * 400_000 + 1.0e12)
    teacher = df.loc[("teacher", appdata.TEACHER[0])]
    assert teacher["total_flops"] == pytest.approx(6.0 * appdata.TEACHER[1] * 400_000)
    teacher_tps = 2_000.0
    tps = teacher_tps * 856_320 / 252_160
    assert row["speedup"] == pytest.approx(tps / teacher_tps)
    assert row["usd_per_mtok"] == pytest.approx(cpu / (tps * 3600) * 1e6)
    assert row["bytes"] == 252_160 * 4
    assert leaderboard(db)["price_usd"].isna().all()  # no price table: no prices


def test_missing_task_leaves_row_unranked(small: Path) -> None:
    add_run(small, "fitnets-s-0", "fitnets", "small", {"qa": 0.79})
    df = leaderboard(small).set_index(["method", "student"])
    row = df.loc[("fitnets", "small")]
    assert row["retention_qa"] == pytest.approx(0.79 / 0.80)
    assert pd.isna(row["retention_lm"]) and pd.isna(row["retention_avg"])
    assert pd.isna(row["rank"]) and row["rank_label"] == "-"
    assert leaderboard(small)["method"].iloc[-1] == "fitnets"  # unranked rows come last


def test_only_failed_group_has_no_row(small: Path) -> None:
    add_run(small, "crd-s-0", "crd", "small", {}, status="failed")
    assert "crd" not in set(leaderboard(small)["method"])


def test_default_suite_is_most_recent_and_closed_track(small: Path) -> None:
    time.sleep(0.01)
    store.write_suite(small, "newer", "newer", "other.toml", {"budget": {"steps": 9}})
    add_run(small, "n-teacher", "teacher", "big", {"qa": 0.5}, role="teacher", suite="newer")
    add_run(small, "n-kd", "kd", "small", {"qa": 0.25}, suite="newer")
    latest = leaderboard(small)
    assert list(latest["method"]) == ["teacher", "kd"]  # nothing of the other suite
    assert latest["retention_avg"].iloc[1] == pytest.approx(0.5)
    assert "retention_lm" not in latest.columns
    assert len(leaderboard(small, SMALL)) == 4


def test_open_track_labels_other_suites(db: Path) -> None:
    others = open_track(db, SUITE)
    assert set(others["suite_hash"]) == {appdata.OTHER}
    assert set(others["differs"]) == {"budget"}
    assert others["suite"].iloc[0] == f"tiny-300 ({appdata.OTHER[:8]})"
    kd = others[others["method"] == "kd"].iloc[0]
    assert kd["rank_label"] == "1"  # ranked within its own suite only
    assert kd["retention_avg"] == pytest.approx(mean(0.5 / TEACHER_SCORE[t] for t in TASKS))
    assert open_track(db, SUITE, teacher="someone else").empty
    assert suite_differences('{"data": 1, "budget": 2}', '{"data": 1, "budget": 3}') == ["budget"]


def test_no_teacher_gives_nan_retention(tmp_path: Path) -> None:
    path = tmp_path / "k.duckdb"
    store.write_suite(path, SMALL, "small", "t.toml", {})
    add_run(path, "kd-s-0", "kd", "small", {"qa": 0.5})
    df = leaderboard(path)
    assert list(df["role"]) == ["method"]
    assert pd.isna(df["retention_avg"].iloc[0]) and pd.isna(df["param_ratio"].iloc[0])
    assert df["score_qa"].iloc[0] == 0.5


def test_empty_and_missing_db(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    assert leaderboard(missing).empty
    assert not missing.exists()
    path = tmp_path / "k.duckdb"
    store.write_suite(path, SMALL, "small", "t.toml", {})
    df = leaderboard(path)
    assert df.empty and list(df.columns)[:4] == ["rank", "rank_worst", "rank_label", "method"]
    assert leaderboard(path, "no-such-suite").empty
    assert format_table(df) == "(no results)"


def test_suites_and_task_info(db: Path) -> None:
    s = suites(db)
    assert list(s["suite_hash"]) == [SUITE, appdata.OTHER]  # newest first
    assert list(s["teacher"]) == [appdata.TEACHER[0]] * 2
    assert not s["synthetic"].any() and s["label"].iloc[0] == f"tiny ({SUITE[:8]})"
    info = task_info(db, SUITE)
    assert list(info["task"]) == list(TASKS)
    assert list(info["metric"]) == ["exact_match", "acc"]
    assert info["higher_is_better"].all() and (info["aggregation"] == "mean").all()


def test_run_scores_and_compare(db: Path) -> None:
    a, b = ("fkl", "student-0.25M"), ("sft", "student-0.25M")
    scores = run_scores(db, SUITE, [a, b])
    assert set(zip(scores["method"], scores["student"], strict=True)) == {a, b}
    assert len(scores) == 2 * len(SEEDS) * (len(TASKS) + 1)
    table = compare(scores, a, b).set_index("task")
    assert list(table.index) == [*TASKS, "average"]
    ma, ha = expected_retention(*a)
    mb, _ = expected_retention(*b)
    avg = table.loc["average"]
    assert avg["a_retention"] == pytest.approx(ma) and avg["a_ci"] == pytest.approx(ha)
    assert avg["difference"] == pytest.approx(ma - mb)
    assert avg["a_seeds"] == avg["b_seeds"] == 3
    assert bool(avg["significant"]) == (abs(avg["difference"]) > avg["difference_ci"])
    task = table.loc["kd_addition"]
    ret = [score(*a, s, "kd_addition") / TEACHER_SCORE["kd_addition"] for s in SEEDS]
    assert task["a_retention"] == pytest.approx(mean(ret))


def test_run_detail(db: Path) -> None:
    detail = run_detail(db, "kd-0.1M-s9")
    assert detail is not None
    run = detail["run"]
    assert run["status"] == "failed" and "CUDA out of memory" in run["error"]
    assert run["suite_name"] == "tiny" and run["git_commit"] == "abc1234"
    assert set(detail["siblings"]["seed"]) == {*SEEDS, 9}
    ok = run_detail(db, "kd-0.1M-s1")
    assert ok is not None
    assert list(ok["metrics"]["task"].unique()) == list(TASKS)
    assert ok["metrics"].iloc[0]["is_primary"]
    assert list(ok["samples"]["questions"]) == [appdata.QUESTIONS] * len(TASKS)
    assert run_detail(db, "nope") is None


def test_format_table(small: Path, db: Path) -> None:
    text = format_table(leaderboard(small))
    lines = text.splitlines()
    # header, rule, 4 rows, blank, retention note, power note, paired-test note
    assert len(lines) == 2 + 4 + 4
    assert lines[-2].startswith("power: seed-to-seed sd of retention")
    assert len({len(line) for line in lines[:6]}) == 1  # aligned
    header, _, teacher, first, *_ = lines
    assert header.split()[:5] == ["rank", "method", "family", "student", "retention"]
    assert teacher.split()[0] == "-" and "100.0%" in teacher and "1.00M" in teacher
    assert first.split()[:4] == ["1–2", "kd", "logit", "tiny"]
    assert f"{(0.72 / 0.80 + 10.0 / 11.0) / 2:.1%}" in first
    assert "no confidence interval" not in lines[-3]  # sft has two seeds
    assert lines[-1].startswith("p vs sft: paired bootstrap")

    multi = format_table(leaderboard(db))
    m, half = expected_retention("fkl", "student-0.25M")
    assert f"{m:.1%} ±{half * 100:.1f}" in multi
    assert "–" in multi and "95% CI" in multi.splitlines()[-3]
    assert multi.splitlines()[-2].startswith("power: seed-to-seed sd of retention")


def test_cli_leaderboard_filters_and_prices(db: Path, tmp_path: Path, capsys) -> None:
    import json

    from kdbench.cli import main

    assert main(["leaderboard", "--db", str(db), "--method", "kd", "--method", "sft"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[1] for line in out.splitlines()[2:] if line and line[0] in "-0123456789"]
    assert sorted(set(rows)) == ["kd", "sft", "teacher"]
    assert main(["leaderboard", "--db", str(db), "--student", "student-0.1M", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["student"] for r in data} == {"student-0.1M", appdata.TEACHER[0]}
    assert all(r["price_usd"] is not None for r in data)  # the shipped price table applies
    bad = tmp_path / "p.toml"
    bad.write_text("[devices.cpu]\nusd_per_hour = -3\n")
    assert main(["leaderboard", "--db", str(db), "--prices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "devices.cpu.usd_per_hour" in err


def test_gpu_runs_priced_by_their_gpu(tmp_path: Path) -> None:
    path = tmp_path / "gpu.duckdb"
    store.write_suite(path, SMALL, "gpu", "g.toml", {})
    h100 = {"platform": "Linux", "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1}
    t4 = {"platform": "Linux", "gpu": "Tesla T4", "gpu_count": 1}
    for run_id, role, method, hw, hours, tps in (
        ("t", "teacher", "teacher", h100, 2.0, 1_000.0),
        ("a", "student", "kd", h100, 0.5, 4_000.0),
        ("b", "student", "sft", t4, 0.5, 3_000.0),  # a GPU the table does not price
    ):
        store.write_run(
            path,
            {"run_id": run_id, "suite_hash": SMALL, "role": role, "method": method,
             "family": method, "student": run_id, "seed": 0, "status": "ok", "hardware": hw},
            [{"task": "q", "metric": "acc", "value": 0.5, "is_primary": True}],
            {"device_hours": hours, "infer_tokens_per_s": tps},
        )  # fmt: skip
    prices = load_prices()
    rate = prices.devices["h100"].usd_per_hour
    df = leaderboard(path, prices=prices).set_index("method")
    assert df.loc["kd", "gpu"] == "NVIDIA H100 80GB HBM3"
    assert df.loc["kd", "price_usd"] == pytest.approx(0.5 * rate)
    assert df.loc["kd", "usd_per_mtok"] == pytest.approx(rate / (4_000 * 3600) * 1e6)
    assert df.loc["kd", "speedup"] == pytest.approx(4.0)
    assert math.isnan(df.loc["sft", "price_usd"]) and math.isnan(df.loc["sft", "usd_per_mtok"])


def _with_chance(db: Path, run_id: str, task: str, chance: float) -> None:
    """Add a ``chance`` row (what evaluate records for a multiple-choice task) to a run."""
    import duckdb

    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO metrics (run_id, task, metric, value, is_primary) VALUES (?, ?, ?, ?, ?)",
        [run_id, task, "chance", chance, False],
    )
    con.close()


def test_teacher_at_zero_is_left_out_and_the_rest_still_ranks(tmp_path: Path) -> None:
    """A teacher scoring 0 on a task no longer blanks the board: that task is flagged with
    its reason and the average is over the other tasks."""
    from kdbench.leaderboard import excluded_tasks, failed_runs, format_notes, task_info

    db = tmp_path / "zero.duckdb"
    store.write_suite(db, SMALL, "small", "small.toml", {})
    add_run(db, "teacher", "teacher", "big", {"qa": 0.8, "zero": 0.0}, role="teacher")
    add_run(db, "kd-0", "kd", "small", {"qa": 0.4, "zero": 0.1})
    add_run(db, "sft-0", "sft", "small", {"qa": 0.2, "zero": 0.0})
    add_run(db, "sft-1", "sft", "small", {}, seed=1, status="failed")
    df = leaderboard(db).set_index("method")
    assert df.loc["kd", "retention_avg"] == pytest.approx(0.5)  # qa only
    assert df.loc["sft", "retention_avg"] == pytest.approx(0.25)
    assert df.loc["kd", "rank_label"] == "1" and df.loc["sft", "rank_label"] == "2"
    info = task_info(db, SMALL)
    assert excluded_tasks(info) == {"zero": "teacher scores 0: left out of the retention average"}
    notes = format_notes(info, failed_runs(db, SMALL))
    assert notes.splitlines() == [
        "task zero: teacher scores 0: left out of the retention average",
        "failed runs: 1",
        "  sft -> small seed 1: CUDA OOM",
    ]


def test_teacher_at_chance_is_left_out(small: Path) -> None:
    from kdbench.leaderboard import excluded_tasks, task_info

    _with_chance(small, "teacher", "qa", 0.8)  # the teacher's 0.80 is a coin flip here
    _with_chance(small, "kd-s-0", "qa", 0.8)
    df = leaderboard(small).set_index(["method", "student"])
    # only the lower-is-better task counts now: teacher 10 / student 12.5
    assert df.loc[("kd", "small"), "retention_avg"] == pytest.approx(10.0 / 12.5)
    reason = excluded_tasks(task_info(small, SMALL))
    assert list(reason) == ["qa"] and "at or below chance (0.8000)" in reason["qa"]


def test_cli_leaderboard_prints_exclusions_and_failed_runs(small: Path, capsys) -> None:
    from kdbench.cli import main

    assert main(["leaderboard", "--db", str(small)]) == 0
    out = capsys.readouterr().out
    assert "failed runs: 1" in out and "kd -> small seed 1: CUDA OOM" in out


# --------------------------------------------------------------------------- paired tests


def test_paired_tests_against_sft_are_holm_adjusted_over_the_board(db: Path) -> None:
    from kdbench import stats

    df = leaderboard(db)
    tested = df[df["p_vs_sft"].notna()]
    # every method but sft, on both students; sft and the teacher have no test
    assert len(tested) == (len(appdata.METHODS) - 1) * len(appdata.STUDENTS)
    assert df.loc[df["method"].isin(["sft", "teacher"]), "sig_vs_sft"].isna().all()
    assert tested["p_vs_sft"].to_numpy() == pytest.approx(
        stats.holm(tested["p_vs_sft_raw"].to_numpy())
    )
    # fkl is right on a superset of sft's questions (appdata.right_answers): every resample
    # favours it, so its raw p-value is the smallest the bootstrap gives
    fkl = tested[tested["method"] == "fkl"]
    assert fkl["p_vs_sft_raw"].tolist() == pytest.approx([2 / (stats.RESAMPLES + 1)] * 2)
    assert (fkl["sig_vs_sft"] == stats.BETTER).all()
    for rec in tested.to_dict("records"):
        assert rec["sig_vs_sft"] == stats.mark(rec["gain_vs_sft"], rec["p_vs_sft"])
    # a filter does not change the family: the p-values stay
    kd = leaderboard(db, methods=["kd", "sft"]).set_index(["method", "student"])
    full = df.set_index(["method", "student"])
    assert (
        kd.loc[("kd", "student-0.1M"), "p_vs_sft"] == full.loc[("kd", "student-0.1M"), "p_vs_sft"]
    )
    text = format_table(df)
    assert "better" in text and "Holm" in text.splitlines()[-1]


def test_runs_without_samples_show_no_test(small: Path) -> None:
    df = leaderboard(small)
    assert df["p_vs_sft"].isna().all() and df["sig_vs_sft"].isna().all()
    kd = format_table(df).splitlines()[3].split()
    assert kd[6:8] == ["-", "-"]  # p vs sft, sig


# --------------------------------------------------------------------------- budget audit


def test_a_run_off_the_budget_is_flagged(db: Path, capsys) -> None:
    from kdbench.cli import main

    board = leaderboard(db).set_index(["method", "student"])
    assert board["budget_note"].isna().all()  # every appdata run trained on 200 x 64
    assert board.loc[("kd", "student-0.1M"), "sequences"] == 200 * 64
    run = {
        "run_id": "kd-0.1M-s3",
        "suite_hash": SUITE,
        "role": "student",
        "method": "kd",
        "family": "logit",
        "student": "student-0.1M",
        "seed": 3,
        "status": "ok",
    }
    metrics = [
        {"task": t, "metric": appdata.METRIC[t], "value": score("kd", "student-0.1M", 0, t),
         "is_primary": True}
        for t in TASKS
    ]  # fmt: skip
    store.write_run(db, run, metrics, {"steps": 150, "sequences": 150 * 64})
    board = leaderboard(db).set_index(["method", "student"])
    note = board.loc[("kd", "student-0.1M"), "budget_note"]
    assert note == "budget differs: 150 of 200 steps, 9600 of 12800 sequences (seed 3)"
    assert board["budget_note"].notna().sum() == 1
    assert main(["leaderboard", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.split()[1:4] == ["kd", "logit", "student-0.1M"])
    assert line.split()[-1] == "differs"
    assert f"kd -> student-0.1M: {note}" in out


def test_teacher_side_flops_and_sequences_are_recorded() -> None:
    from types import SimpleNamespace

    from kdbench.config import Budget
    from kdbench.costs import TeacherShares, run_costs
    from kdbench.records import EvalResult, TrainResult

    model = TrainResult(
        path="x", params=1000, bytes=4000, tokens=6400, steps=10, train_wall_s=1.0,
        final_loss=0.1, resumed_from=0, teacher_forwards=640, peak_rss_mb=None,
        peak_private_mb=None, signal_cache=False, world_size=1, sequences=640,
    )  # fmt: skip
    result = EvalResult(model=model, metrics=[], samples=[], eval_wall_s=1.0, params=1000)
    suite = SimpleNamespace(
        budget=Budget(steps=10, batch_size=64),
        resources=SimpleNamespace(gpus_per_job=0, cpus_per_job=1, workers_per_job=1),
    )
    job = SimpleNamespace(run_id="r")
    shares = TeacherShares(frozenset({"r"}), 5.0, frozenset(), 0.0)
    costs = run_costs(result, suite, 2.0, job=job, shares=shares, teacher_params=10_000)
    assert costs["sequences"] == 640
    # the live teacher ran on every sequence: 2 N_T per token, 6400 tokens
    assert costs["live_teacher_flops"] == pytest.approx(2 * 10_000 * 6400)
    assert costs["train_flops"] == pytest.approx(6 * 1000 * 6400 + 2 * 10_000 * 6400)


def test_power_note_without_seed_spread_says_so() -> None:
    """Seeds that agree exactly give no spread: no "difference of 0.0 points" claim."""
    from kdbench.leaderboard import power_note

    board = pd.DataFrame(
        {"role": ["student", "student"], "seeds": [2, 2], "retention_ci": [0.0, 0.0]}
    )
    note = power_note(board)
    assert note is not None and "no seed-to-seed spread" in note and "0.0 points" not in note
    board["retention_ci"] = [0.1, 0.2]
    assert "points is detected at 95% confidence" in power_note(board)


def test_sampling_cost_of_an_on_policy_run_is_counted() -> None:
    """The student's sampling is charged: 2 N_S per sampled token in train_flops, its seconds
    recorded; an off-policy run has none."""
    from types import SimpleNamespace

    from kdbench.config import Budget
    from kdbench.costs import TeacherShares, run_costs
    from kdbench.records import EvalResult, TrainResult

    def costs(**sampled):
        model = TrainResult(
            path="x", params=1000, bytes=4000, tokens=6400, steps=10, train_wall_s=4.0,
            final_loss=0.1, resumed_from=0, teacher_forwards=0, peak_rss_mb=None,
            peak_private_mb=None, signal_cache=False, world_size=1, sequences=640, **sampled,
        )  # fmt: skip
        result = EvalResult(model=model, metrics=[], samples=[], eval_wall_s=1.0, params=1000)
        suite = SimpleNamespace(
            budget=Budget(steps=10, batch_size=64),
            resources=SimpleNamespace(gpus_per_job=0, cpus_per_job=1, workers_per_job=1),
        )
        shares = TeacherShares(frozenset(), 0.0, frozenset(), 0.0)
        job = SimpleNamespace(run_id="r")
        return run_costs(result, suite, 5.0, job=job, shares=shares, teacher_params=10_000)

    on = costs(generation_wall_s=1.5, generated_tokens=3000, generated_sequences=640)
    assert on["generation_flops"] == pytest.approx(2 * 1000 * 3000)
    assert on["train_flops"] == pytest.approx(6 * 1000 * 6400 + 2 * 1000 * 3000)
    assert on["generation_s"] == 1.5 and on["generated_tokens"] == 3000
    off = costs()
    assert off["generation_flops"] == 0 and off["train_flops"] == pytest.approx(6 * 1000 * 6400)


def test_sampling_cell_gives_seconds_and_share_of_training() -> None:
    from kdbench.leaderboard import _fmt_sampling

    # the share is the board's generation_share (the mean of each seed's ratio)
    assert _fmt_sampling({"generation_s": 2.5, "generation_share": 0.25}) == "2.5s (25%)"
    assert _fmt_sampling({"generation_s": 2.5, "generation_share": None}) == "2.5s"
    assert _fmt_sampling({"generation_s": 0.0, "generation_share": None}) == "-"
    assert _fmt_sampling({"generation_s": None, "generation_share": None}) == "-"
