"""Tests for the Streamlit leaderboard app (app.py) with streamlit's AppTest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench import store

APP = Path(__file__).resolve().parents[1] / "app.py"
SUITE = "f00dcafe12345678"
TEACHER = {"qa": 0.80, "copy": 0.50}


def add_run(
    db: Path, run_id: str, method: str, student: str, scores: dict[str, float], **kw: object
) -> None:
    run = {
        "run_id": run_id,
        "suite_hash": kw.get("suite", SUITE),
        "role": kw.get("role", "student"),
        "method": method,
        "family": method,
        "student": student,
        "seed": kw.get("seed", 0),
        "status": kw.get("status", "ok"),
        "error": kw.get("error"),
    }
    metrics = [
        {"task": t, "metric": "acc", "value": v, "higher_is_better": True, "is_primary": True}
        for t, v in scores.items()
    ]
    store.write_run(db, run, metrics, {"params": kw.get("params", 250_000), "train_wall_s": 5.0})


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teacher + sft + kd on two students, two tasks, one failed run."""
    db = tmp_path_factory.mktemp("app") / "kdbench.duckdb"
    store.write_suite(db, SUITE, "tiny", "leaderboards/tiny.toml", {})
    add_run(db, "teacher", "teacher", "big-teacher", TEACHER, role="teacher", params=1_000_000)
    add_run(db, "sft-small", "sft", "small", {"qa": 0.40, "copy": 0.25})
    add_run(db, "kd-small", "kd", "small", {"qa": 0.60, "copy": 0.45})
    add_run(db, "kd-tiny", "kd", "tiny", {"qa": 0.56, "copy": 0.30}, params=100_000)
    add_run(db, "kd-tiny-1", "kd", "tiny", {}, seed=1, status="failed", error="RuntimeError: boom")
    return db


@pytest.fixture
def db(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the template DB, exposed to the app through KDBENCH_DB."""
    path = tmp_path / "kdbench.duckdb"
    path.write_bytes(template_db.read_bytes())
    monkeypatch.setenv("KDBENCH_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def _clean_app_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py"])  # not pytest's own arguments
    st.cache_data.clear()


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_leaderboard_table(db: Path) -> None:
    at = run_app()
    assert at.title[0].value == "kdbench leaderboard"
    assert at.selectbox[0].options == [f"tiny ({SUITE[:8]})"]
    caption = at.caption[0].value
    assert "big-teacher" in caption and "qa 0.8000" in caption and "copy 0.5000" in caption

    df = at.dataframe[0].value
    assert list(df.columns) == [
        "rank", "method", "family", "student", "role", "retention_avg",
        "params", "param_ratio", "train_wall_s", "seeds", "failed",
    ]  # fmt: skip
    assert list(zip(df["role"], df["method"], df["student"], strict=True)) == [
        ("teacher", "teacher", "big-teacher"),
        ("method", "kd", "small"),
        ("method", "kd", "tiny"),
        ("baseline", "sft", "small"),
    ]
    rows = df.set_index(["method", "student"])
    assert rows.loc[("teacher", "big-teacher"), "retention_avg"] == 1.0
    assert rows.loc[("kd", "small"), "retention_avg"] == pytest.approx(
        (0.60 / 0.80 + 0.45 / 0.50) / 2
    )
    assert rows.loc[("sft", "small"), "retention_avg"] == pytest.approx(
        (0.40 / 0.80 + 0.25 / 0.50) / 2
    )
    assert rows.loc[("kd", "tiny"), "param_ratio"] == pytest.approx(0.1)
    assert rows.loc[("kd", "tiny"), "failed"] == 1
    assert list(df["rank"]) == ["-", "1", "2", "3"]

    config = json.loads(at.dataframe[0].proto.columns)
    retention = config["retention_avg"]
    assert retention["type_config"]["type"] == "progress"
    assert retention["type_config"]["format"] == "percent"
    assert retention["type_config"]["min_value"] == 0 and retention["type_config"]["max_value"] == 1
    assert config["seeds"]["help"] and config["rank"]["help"]


def test_per_task_toggle(db: Path) -> None:
    at = run_app()
    assert not any(c.startswith("score_") for c in at.dataframe[0].value.columns)
    at.checkbox[0].check().run()
    assert not at.exception
    df = at.dataframe[0].value
    for col in ("retention_copy", "retention_qa", "score_copy", "score_qa"):
        assert col in df.columns
    kd = df.set_index(["method", "student"]).loc[("kd", "small")]
    assert kd["score_qa"] == pytest.approx(0.60)
    assert kd["retention_qa"] == pytest.approx(0.60 / 0.80)
    assert kd["retention_copy"] == pytest.approx(0.45 / 0.50)
    at.checkbox[0].uncheck().run()
    assert "score_qa" not in at.dataframe[0].value.columns


def test_failed_runs_listed(db: Path) -> None:
    at = run_app()
    assert any("Failed runs (1)" in h.value for h in at.subheader)
    assert len(at.expander) == 1
    assert "kd-tiny-1" in at.expander[0].label
    assert at.expander[0].code[0].value == "RuntimeError: boom"


def test_failed_run_without_error_or_seed(db: Path) -> None:
    store.write_run(
        db,
        {"run_id": "bare", "suite_hash": SUITE, "role": "student", "method": "kd",
         "status": "failed"},
        [],
        {},
    )  # fmt: skip
    at = run_app()
    labels = sorted(e.label for e in at.expander)
    assert labels[0].endswith("seed ? · bare")
    codes = [e.code[0].value for e in at.expander]
    assert "(no error recorded)" in codes


def test_suite_selection(db: Path) -> None:
    store.write_suite(db, "beef000000000000", "other", "other.toml", {})
    add_run(db, "o-teacher", "teacher", "t2", {"qa": 0.5}, role="teacher", suite="beef000000000000")
    at = run_app()
    assert at.selectbox[0].options == ["other (beef0000)", f"tiny ({SUITE[:8]})"]
    assert list(at.dataframe[0].value["method"]) == ["teacher"]
    assert not at.expander
    at.selectbox[0].select(SUITE).run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 4


def test_db_argument_wins_over_env(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDBENCH_DB", str(tmp_path / "elsewhere.duckdb"))
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", str(db)])
    at = run_app()
    assert len(at.dataframe[0].value) == 4


@pytest.mark.parametrize("kind", ["missing", "no-suites"])
def test_empty_db_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    path = tmp_path / "results" / "kdbench.duckdb"
    if kind == "no-suites":
        store.connect(path).close()
    monkeypatch.setenv("KDBENCH_DB", str(path))
    at = run_app()
    assert not at.dataframe
    assert len(at.info) == 1
    assert "kdbench run leaderboards/tiny.toml" in at.info[0].value
    assert path.exists() == (kind == "no-suites")  # the app never creates the database
