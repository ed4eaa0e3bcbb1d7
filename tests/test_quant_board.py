"""The quantised rows (kdbench.quant_board) on a hand-written DuckDB store: retention against
the full-precision teacher, bytes and ratios, and the ranked board left to full precision."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kdbench import store
from kdbench.leaderboard import leaderboard, run_detail
from kdbench.quant_board import QUANT_COLUMNS, format_quantized, quantized_board, size_points

SUITE = "quant0000suite00"
# task "qa" is higher-is-better accuracy, task "lm" lower-is-better perplexity
TEACHER = {"qa": 0.80, "lm": 10.0}


def add(
    db: Path,
    run_id: str,
    method: str,
    scores: dict[str, float],
    *,
    bytes_: int,
    seed: int = 0,
    quant: str | None = None,
    parent: str | None = None,
    status: str = "ok",
) -> None:
    teacher = method == "teacher"
    metrics = [
        {"task": t, "metric": "acc" if t == "qa" else "ppl", "value": v,
         "higher_is_better": t == "qa", "is_primary": True}
        for t, v in scores.items()
    ]  # fmt: skip
    run = {
        "run_id": run_id,
        "suite_hash": SUITE,
        "role": "teacher" if teacher else "student",
        "method": method,
        "family": "teacher" if teacher else "baseline",
        "student": "T" if teacher else "S",
        "seed": seed,
        "status": status,
        "error": "no int4 kernel" if status == "failed" else None,
        "quant": quant,
        "parent_run_id": parent,
    }
    costs = {"params": 1000 if teacher else 250, "bytes": bytes_}
    if quant:
        costs["quantized_params"] = 900 if teacher else 200
    store.write_run(db, run, metrics, costs)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "kdbench.duckdb"
    store.write_suite(path, SUITE, "q", "q.toml", {"eval": {"quantize": ["int8", "int4"]}})
    add(path, "t", "teacher", TEACHER, bytes_=4000)
    add(path, "t-int8", "teacher", {"qa": 0.78, "lm": 10.5}, bytes_=1100, quant="int8", parent="t")
    for seed, (qa, lm) in enumerate([(0.40, 20.0), (0.48, 16.0)]):
        add(path, f"s{seed}", "sft", {"qa": qa, "lm": lm}, bytes_=1000, seed=seed)
        q = {"qa": qa - 0.08, "lm": lm * 1.25}
        add(path, f"s{seed}-int8", "sft", q, bytes_=300, seed=seed, quant="int8", parent=f"s{seed}")
    add(path, "s0-int4", "sft", {}, bytes_=0, quant="int4", parent="s0", status="failed")
    return path


def test_quantised_groups_against_the_full_precision_teacher(db: Path) -> None:
    q = quantized_board(db, SUITE)
    assert list(q.columns[: len(QUANT_COLUMNS)]) == list(QUANT_COLUMNS)
    assert q[["method", "quant"]].values.tolist() == [
        ["teacher", "int8"],
        ["sft", "int8"],
        ["sft", "int4"],  # its only run failed: listed last, with no retention
    ]
    teacher, sft, failed = q.iloc[0], q.iloc[1], q.iloc[2]
    assert (failed["seeds"], failed["failed"], failed["run_id"]) == (0, 1, "s0-int4")
    assert math.isnan(failed["retention_avg"]) and failed["family"] == "baseline"
    # the quantised teacher: (0.78/0.80 + 10/10.5) / 2
    assert teacher["retention_avg"] == pytest.approx((0.78 / 0.8 + 10 / 10.5) / 2)
    assert teacher["retention_fp"] == pytest.approx(1.0)
    assert teacher["bytes"] == 1100 and teacher["size_ratio"] == pytest.approx(1100 / 4000)
    # sft int8, two seeds: per seed (qa/0.8 + 10/lm) / 2
    runs = [((0.32 / 0.8) + 10 / 25.0) / 2, ((0.40 / 0.8) + 10 / 20.0) / 2]
    assert sft["retention_avg"] == pytest.approx(sum(runs) / 2)
    sd = abs(runs[0] - runs[1]) / math.sqrt(2)
    assert sft["retention_ci"] == pytest.approx(12.706204736 * sd / math.sqrt(2), rel=1e-6)
    fp = [((0.40 / 0.8) + 10 / 20.0) / 2, ((0.48 / 0.8) + 10 / 16.0) / 2]
    assert sft["retention_fp"] == pytest.approx(sum(fp) / 2)
    assert sft["retention_drop"] == pytest.approx(sum(runs) / 2 - sum(fp) / 2)
    assert (sft["bytes"], sft["bytes_fp"]) == (300, 1000)
    assert sft["compression"] == pytest.approx(1000 / 300)
    assert sft["size_ratio"] == pytest.approx(300 / 4000)
    assert (sft["seeds"], sft["failed"], sft["quantized_params"]) == (2, 0, 200)
    assert (sft["run_id"], sft["parent_run_id"]) == ("s0-int8", "s0")
    assert sft["score_qa"] == pytest.approx(0.36) and sft["retention_lm"] == pytest.approx(
        (10 / 25 + 10 / 20) / 2
    )
    # the filters keep the teacher's rows
    assert quantized_board(db, SUITE, methods=["kd"])["method"].tolist() == ["teacher"]


def test_the_ranked_board_stays_full_precision(db: Path) -> None:
    board = leaderboard(db, SUITE)
    assert sorted(board["method"]) == ["sft", "teacher"]
    assert board.set_index("method").loc["sft", "seeds"] == 2
    assert board.set_index("method").loc["sft", "failed"] == 0  # the failed int4 is not its
    assert board.set_index("method").loc["teacher", "retention_avg"] == pytest.approx(1.0)
    # a quantised run's page lists its own siblings: the other seeds of the same scheme
    detail = run_detail(db, "s0-int8")
    assert detail["run"]["quant"] == "int8" and detail["run"]["parent_run_id"] == "s0"
    assert sorted(detail["siblings"]["run_id"]) == ["s0-int8", "s1-int8"]
    assert sorted(run_detail(db, "s0")["siblings"]["run_id"]) == ["s0", "s1"]


def test_size_points_and_the_terminal_table(db: Path) -> None:
    board, q = leaderboard(db, SUITE), quantized_board(db, SUITE)
    points = size_points(board, q)
    assert sorted(points["variant"]) == ["full precision"] * 2 + ["int8"] * 2
    assert points.set_index(["method", "variant"]).loc[("sft", "int8"), "bytes"] == 300
    text = format_quantized(q)
    assert text.splitlines()[0].split()[:4] == ["method", "student", "quant", "retention"]
    assert "3.33" in text  # 1000 / 300 times smaller
    assert format_quantized(quantized_board(db, "nosuchsuite")).startswith("(no quantised runs")


def test_cli_leaderboard_shows_quantised_rows_on_demand(db: Path, capsys) -> None:
    import json

    from kdbench.cli import main

    assert main(["leaderboard", "--db", str(db), "--suite", SUITE]) == 0
    plain = capsys.readouterr().out
    assert "int8" not in plain and "quantised rows" not in plain
    assert main(["leaderboard", "--db", str(db), "--suite", SUITE, "--quantized"]) == 0
    out = capsys.readouterr().out
    board, quant = out.split("\n\nmethod", 1)
    assert "int8" not in board
    rows = [line.split() for line in quant.splitlines()[2:4]]
    assert [r[:3] for r in rows] == [["teacher", "T", "int8"], ["sft", "S", "int8"]]
    assert main(["leaderboard", "--db", str(db), "--suite", SUITE, "--quantized", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in both["leaderboard"]] == ["teacher", "sft"]
    assert [(r["method"], r["quant"], r["bytes"]) for r in both["quantized"]] == [
        ("teacher", "int8", 1100),
        ("sft", "int8", 300),
        ("sft", "int4", None),
    ]
