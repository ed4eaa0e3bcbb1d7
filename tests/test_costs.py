"""The sampling costs of on-policy runs (kdbench/costs.py's ``generation_*`` columns) and how
the board reads them (``kdbench.leaderboard.GENERATION_COLUMNS``), on real DuckDB stores:
costs computed by :func:`kdbench.costs.run_costs` from real records and stored with
``store.write_run``, and the multi-seed store of tests/appdata.py with an on-policy method
added (:func:`tests.appdata.add_on_policy`)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from statistics import mean

import duckdb
import pandas as pd
import pytest

from kdbench import leaderboard as lb
from kdbench import store
from kdbench.config import load_suite
from kdbench.costs import TeacherShares, run_costs
from kdbench.leaderboard import GENERATION_COLUMNS, TAIL_COLUMNS, format_table, generated
from kdbench.records import EvalResult, Job, TrainResult

from . import appdata
from .appdata import SEEDS, STUDENTS, SUITE

ROOT = Path(__file__).resolve().parents[1]
HASH = "c0575000cccc3333"
PARAMS = 50_000
TEACHER_PARAMS = 400_000


def _result(train_s: float, gen_s: float = 0.0, gen_tokens: int = 0) -> EvalResult:
    model = TrainResult(
        path="student", params=PARAMS, bytes=4 * PARAMS, tokens=6400, steps=10,
        train_wall_s=train_s, final_loss=0.1, resumed_from=0, teacher_forwards=0,
        peak_rss_mb=None, peak_private_mb=None, signal_cache=False, world_size=1,
        sequences=640, generation_wall_s=gen_s, generated_tokens=gen_tokens,
        generated_sequences=64 if gen_tokens else 0,
    )  # fmt: skip
    return EvalResult(model=model, metrics=[], samples=[], eval_wall_s=1.0, params=PARAMS)


def _metrics(qa: float) -> list[dict]:
    return [{"task": "qa", "metric": "acc", "value": qa, "higher_is_better": True,
             "is_primary": True, "aggregation": "mean"}]  # fmt: skip


def _write(path: Path, run_id: str, method: str, seed: int, result: EvalResult) -> dict:
    """Compute a student run's costs with run_costs and store it; returns the costs."""
    suite = load_suite(ROOT / "leaderboards" / "tiny.toml")
    job = Job(run_id=run_id, method=method, student="small", seed=seed, config={})
    shares = TeacherShares(frozenset(), 0.0, frozenset(), 0.0)
    costs = run_costs(result, suite, 5.0, job=job, shares=shares, teacher_params=TEACHER_PARAMS)
    run = {"run_id": run_id, "suite_hash": HASH, "role": "student", "method": method,
           "family": "on_policy" if method == "gkd" else "baseline", "student": "small",
           "seed": seed, "status": "ok"}  # fmt: skip
    store.write_run(path, run, _metrics(0.5 + 0.01 * seed), costs)
    return costs


@pytest.fixture
def sampled_db(tmp_path: Path) -> Path:
    """A teacher, sft (off-policy: sampling costs recorded as 0) and gkd (on-policy), two
    seeds each, every student cost from run_costs."""
    path = tmp_path / "kdbench.duckdb"
    store.write_suite(path, HASH, "gen", "leaderboards/gen.toml", {})
    teacher = {"run_id": "t", "suite_hash": HASH, "role": "teacher", "method": "teacher",
               "family": "teacher", "student": "big", "seed": 0, "status": "ok"}  # fmt: skip
    store.write_run(path, teacher, _metrics(0.8), {"params": TEACHER_PARAMS, "train_wall_s": 9.0})
    _write(path, "sft-0", "sft", 0, _result(4.0))
    _write(path, "sft-1", "sft", 1, _result(6.0))
    _write(path, "gkd-0", "gkd", 0, _result(10.0, 2.0, 3000))
    _write(path, "gkd-1", "gkd", 1, _result(20.0, 8.0, 5000))
    return path


def test_run_costs_record_what_sampling_cost() -> None:
    """An on-policy run's sampling seconds and tokens are stored as measured, with 2 N_S FLOPs
    per sampled token, inside train_flops; an off-policy run records none (0)."""
    suite = load_suite(ROOT / "leaderboards" / "tiny.toml")
    shares = TeacherShares(frozenset(), 0.0, frozenset(), 0.0)
    job = Job(run_id="r", method="gkd", student="small", seed=0, config={})
    on = run_costs(_result(10.0, 2.5, 3000), suite, 5.0, job=job, shares=shares)
    off = run_costs(_result(10.0), suite, 5.0, job=job, shares=shares)
    assert (on["generation_s"], on["generated_tokens"]) == (2.5, 3000)
    assert on["generation_flops"] == pytest.approx(2 * PARAMS * 3000)
    assert on["train_flops"] - off["train_flops"] == pytest.approx(on["generation_flops"])
    assert (off["generation_s"], off["generated_tokens"], off["generation_flops"]) == (0, 0, 0)
    # the sampling columns are stored columns of the current schema
    assert set(GENERATION_COLUMNS) - {"generation_share"} <= set(store.COST_COLUMNS)


def test_generation_share_is_the_mean_of_each_seeds_share(sampled_db: Path) -> None:
    board = lb.leaderboard(sampled_db).set_index("method")
    gkd = board.loc["gkd"]
    # seconds and tokens: means over seeds; the share: mean of 2/10 and 8/20 (0.3), not the
    # ratio of the means (5/15)
    assert gkd["generation_s"] == pytest.approx(5.0)
    assert gkd["generated_tokens"] == pytest.approx(4000)
    assert gkd["generation_share"] == pytest.approx(mean([2 / 10, 8 / 20]))
    assert gkd["train_flops"] == pytest.approx(
        mean(6 * PARAMS * 6400 + 2 * PARAMS * g for g in (3000, 5000))
    )
    # sft stored zeros (it never sampled), the teacher nothing: no share either way
    assert board.loc["sft", "generation_s"] == 0 and board.loc["sft", "generated_tokens"] == 0
    assert pd.isna(board.loc["sft", "generation_share"])
    assert pd.isna(board.loc["teacher", "generation_share"])
    assert pd.isna(board.loc["teacher", "generation_s"])
    assert generated(board)
    # the columns sit in the board's tail, after the training time
    tail = list(TAIL_COLUMNS)
    assert tail[tail.index("train_wall_s") + 1 : tail.index("train_wall_s") + 4] == list(
        GENERATION_COLUMNS
    )


def test_a_seed_without_training_time_is_left_out_of_the_share(sampled_db: Path) -> None:
    with duckdb.connect(str(sampled_db)) as con:
        con.execute("UPDATE costs SET train_wall_s = NULL WHERE run_id = 'gkd-1'")
    gkd = lb.leaderboard(sampled_db).set_index("method").loc["gkd"]
    assert gkd["generation_share"] == pytest.approx(0.2)  # gkd-0's alone
    assert gkd["generation_s"] == pytest.approx(5.0)  # still both seeds' sampling
    with duckdb.connect(str(sampled_db)) as con:
        con.execute("UPDATE costs SET train_wall_s = 0 WHERE run_id = 'gkd-0'")
    gkd = lb.leaderboard(sampled_db).set_index("method").loc["gkd"]
    assert pd.isna(gkd["generation_share"])  # no seed with a training time: no share


def test_odd_sampling_costs_are_read_as_not_recorded(sampled_db: Path) -> None:
    """A negative or NaN sampling time is not a measurement: that seed is left out of the
    sampling means, and the suite's notes count it."""
    with duckdb.connect(str(sampled_db)) as con:
        con.execute("UPDATE costs SET generation_s = -1 WHERE run_id = 'gkd-0'")
        con.execute("UPDATE costs SET generated_tokens = -5 WHERE run_id = 'gkd-0'")
    data = lb.suite_data(sampled_db, [HASH])
    gkd = data.boards[HASH].set_index("method").loc["gkd"]
    assert gkd["generation_s"] == pytest.approx(8.0)
    assert gkd["generated_tokens"] == pytest.approx(5000)
    assert gkd["generation_share"] == pytest.approx(8 / 20)
    (note,) = data.notes[HASH]
    assert "2 cost values" in note and "generation_s" in note and "generated_tokens" in note


def test_a_board_that_never_sampled(sampled_db: Path) -> None:
    """Filtered to the off-policy rows, the board has the columns but nothing in them, and
    generated() says so; the terminal table drops its sampling column."""
    board = lb.leaderboard(sampled_db, methods=["sft"])
    assert list(board["method"]) == ["teacher", "sft"]
    assert board["generation_share"].isna().all()
    assert not generated(board)
    assert "sampling" not in format_table(board).splitlines()[0]
    assert not generated(pd.DataFrame({"method": ["kd"]}))  # no sampling columns at all
    assert generated(pd.DataFrame({"generated_tokens": [None, 12]}))


def test_terminal_sampling_cell_reads_the_share(sampled_db: Path) -> None:
    lines = format_table(lb.leaderboard(sampled_db)).splitlines()
    assert "sampling" in lines[0].split()
    gkd = next(line for line in lines if line.startswith(("1", "2", "-")) and " gkd " in line)
    assert "5.0s (30%)" in gkd  # the mean of the seeds' shares, not 5 / 15 = 33%
    sft = next(line for line in lines if " sft " in line)
    assert "5.0s" not in sft


@pytest.fixture
def on_policy_db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """tests/appdata.py's database with the on-policy method of add_on_policy."""
    path = tmp_path / "kdbench.duckdb"
    shutil.copyfile(appdata.template(tmp_path_factory), path)
    return appdata.add_on_policy(path)


def test_generation_columns_on_the_app_data(on_policy_db: Path) -> None:
    board = lb.leaderboard(on_policy_db, SUITE).set_index(["method", "student"])
    method = appdata.ON_POLICY[0]
    for student in STUDENTS:
        row = board.loc[(method, student)]
        assert row["family"] == appdata.ON_POLICY[1] and row["seeds"] == len(SEEDS)
        assert row["generation_s"] == pytest.approx(mean(appdata.generation_s(s) for s in SEEDS))
        assert row["generated_tokens"] == pytest.approx(
            mean(appdata.generated_tokens(s) for s in SEEDS)
        )
        share = mean(appdata.generation_s(s) / (40.0 + s) for s in SEEDS)
        assert row["generation_share"] == pytest.approx(share)
        assert 0 < row["generation_share"] < 1
    # the off-policy groups recorded no sampling: nothing in the columns
    others = board.drop(index=method, level="method")
    assert others[list(GENERATION_COLUMNS)].isna().all().all()
    assert generated(board.reset_index())
    assert not generated(lb.leaderboard(on_policy_db, SUITE, methods=["kd", "sft"]))


def test_the_app_data_alone_never_sampled(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    board = lb.leaderboard(appdata.template(tmp_path_factory), SUITE)
    assert not generated(board)
    assert all(math.isnan(x) for x in board["generation_share"].astype(float))
