"""Tests for the Streamlit leaderboard app (app.py, which runs kdbench/app/) with streamlit's
AppTest: every page and control, URL state, export, and reading while a writer is busy."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench import economics, store
from kdbench.leaderboard import compare, leaderboard, run_scores

from . import appdata
from .appdata import OTHER, SUITE, TASKS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
LABEL = f"tiny ({SUITE[:8]})"


@pytest.fixture
def db(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A private copy of tests/appdata.py's database, exposed through KDBENCH_DB."""
    path = tmp_path / "kdbench.duckdb"
    shutil.copyfile(appdata.template(tmp_path_factory), path)
    monkeypatch.setenv("KDBENCH_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def _clean_app_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py"])  # not pytest's own arguments
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    st.cache_data.clear()


def run_app(**params: str | list[str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def table(at: AppTest, column: str):
    """The first st.dataframe element with this column (AppTest keeps no keys for them)."""
    for element in at.dataframe:
        if column in element.value.columns:
            return element
    raise AssertionError(f"no table with column {column!r}")


def board(at: AppTest) -> pd.DataFrame:
    return table(at, "gain_vs_sft").value


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def chart_data(chart) -> list[pd.DataFrame]:
    """The Arrow datasets a vega-lite chart element carries."""
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


# --------------------------------------------------------------------------- leaderboard


def test_leaderboard_table(db: Path) -> None:
    at = run_app()
    assert at.title[0].value == "kdbench leaderboard"
    assert at.query_params["page"] == "Leaderboard"  # the default page, named in the URL
    assert at.selectbox(key="suite").options == [LABEL, f"tiny-300 ({OTHER[:8]})"]
    assert (
        "tiny-teacher-0.9M" in at.caption[0].value and "kd_addition 0.9000" in at.caption[0].value
    )
    assert "95% CI" in at.caption[1].value  # several seeds: intervals, said so

    df = board(at)
    expected = leaderboard(db, SUITE, prices=economics.load_prices())
    assert list(df.columns[:10]) == [
        "rank_label",
        "method",
        "family",
        "student",
        "role",
        "run",
        "retention_avg",
        "retention_ci",
        "gain_vs_sft",
        "gain_ci",
    ]
    assert list(df["method"]) == list(expected["method"])
    assert list(df["rank_label"]) == list(expected["rank_label"])
    assert any("–" in r for r in df["rank_label"])  # overlapping intervals share ranks
    assert list(df["retention_avg"]) == pytest.approx(list(expected["retention_avg"]))
    # intervals and gains are shown in percentage points
    ci = df["retention_ci"].iloc[1:].to_numpy()
    assert ci == pytest.approx(expected["retention_ci"].iloc[1:].to_numpy() * 100)
    assert list(df["run"]) == [f"?page=Run&run={r}" for r in expected["run_id"]]
    assert df["price_usd"].iloc[1] == pytest.approx(expected["price_usd"].iloc[1])

    config = json.loads(table(at, "gain_vs_sft").proto.columns)
    retention = config["retention_avg"]
    assert retention["type_config"]["type"] == "progress"
    assert retention["type_config"]["format"] == "percent"
    assert retention["type_config"]["min_value"] == 0 and retention["type_config"]["max_value"] == 1
    assert "arithmetic mean over tasks" in retention["help"].lower()
    for col in ("rank_label", "retention_ci", "gain_vs_sft", "seeds", "price_usd", "speedup"):
        assert config[col]["help"], col
    assert config["run"]["type_config"]["type"] == "link"


def test_single_seed_says_no_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "one.duckdb"
    store.write_suite(path, "s1", "one-seed", "x.toml", {})
    for run_id, role, method, value in (
        ("t", "teacher", "teacher", 0.8),
        ("a", "student", "kd", 0.4),
        ("b", "student", "sft", 0.3),
    ):
        store.write_run(
            path,
            {
                "run_id": run_id,
                "suite_hash": "s1",
                "role": role,
                "method": method,
                "family": method,
                "student": "s",
                "seed": 0,
                "status": "ok",
            },
            [{"task": "q", "metric": "acc", "value": value, "is_primary": True}],
            {},
        )
    monkeypatch.setenv("KDBENCH_DB", str(path))
    at = run_app()
    assert any("no confidence intervals" in c.value for c in at.caption)
    assert list(board(at)["rank_label"]) == ["-", "1", "2"]
    assert board(at)["retention_ci"].isna().all()


def test_task_left_out_of_the_average_is_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task the teacher scores 0 on is named with its reason; the board still ranks."""
    path = tmp_path / "zero.duckdb"
    store.write_suite(path, "s0", "zero", "x.toml", {})
    for run_id, role, method, q in (("t", "teacher", "teacher", 0.8), ("a", "student", "kd", 0.4)):
        store.write_run(
            path,
            {"run_id": run_id, "suite_hash": "s0", "role": role, "method": method,
             "family": method, "student": "s", "seed": 0, "status": "ok"},
            [{"task": "q", "metric": "acc", "value": q, "is_primary": True},
             {"task": "z", "metric": "acc", "value": 0.0 if role == "teacher" else 0.2,
              "is_primary": True}],
            {},
        )  # fmt: skip
    monkeypatch.setenv("KDBENCH_DB", str(path))
    at = run_app()
    assert [w.value for w in at.warning] == [
        "Task **z**: teacher scores 0: left out of the retention average."
    ]
    assert list(board(at)["rank_label"]) == ["-", "1"]


def test_per_task_toggle(db: Path) -> None:
    at = run_app()
    assert not any(c.startswith("score_") for c in board(at).columns)
    at.toggle(key="per_task").set_value(True).run()
    assert not at.exception
    df = board(at)
    for task in TASKS:
        for col in (f"retention_{task}", f"retention_ci_{task}", f"score_{task}"):
            assert col in df.columns
    row = df.set_index(["method", "student"]).loc[("kd", "student-0.1M")]
    scores = [appdata.score("kd", "student-0.1M", s, "kd_compare") for s in appdata.SEEDS]
    assert row["score_kd_compare"] == pytest.approx(sum(scores) / len(scores))
    at.toggle(key="per_task").set_value(False).run()
    assert "score_kd_compare" not in board(at).columns


def test_sort_control(db: Path) -> None:
    at = run_app()
    at.selectbox(key="sort").select("params").run()
    df = board(at)
    assert df["role"].iloc[0] == "teacher"
    assert df["params"].iloc[1:].is_monotonic_increasing
    at.selectbox(key="sort").select("gain vs sft").run()
    assert board(at)["gain_vs_sft"].iloc[1:].is_monotonic_decreasing


def test_filters(db: Path) -> None:
    at = run_app()
    assert at.multiselect(key="method").options == ["fkl", "kd", "seqkd", "sft"]
    assert at.multiselect(key="student").options == ["student-0.1M", "student-0.25M"]  # by size
    at.multiselect(key="method").set_value(["kd", "seqkd"]).run()
    at.multiselect(key="student").set_value(["student-0.1M"]).run()
    df = board(at)
    assert list(df["method"]) == ["teacher", "kd", "seqkd"]
    assert list(df["rank_label"]) == ["-", "1", "2"]  # re-ranked within the view
    at.multiselect(key="method").set_value([]).run()
    at.multiselect(key="family").set_value(["baseline"]).run()
    assert list(board(at)["method"]) == ["teacher", "sft"]


def test_suite_and_teacher_selection(db: Path) -> None:
    at = run_app()
    at.selectbox(key="suite").select(f"tiny-300 ({OTHER[:8]})").run()
    assert list(board(at)["method"]) == ["teacher", "kd"]
    at.selectbox(key="teacher").select("tiny-teacher-0.9M").run()
    assert len(at.selectbox(key="suite").options) == 2


def test_open_track_is_apart_and_labelled(db: Path) -> None:
    at = run_app()
    assert any("not ranked with this one" in h.value for h in at.subheader)
    listed = table(at, "differs").value
    assert list(listed["label"]) == [f"tiny-300 ({OTHER[:8]})"]
    assert list(listed["differs"]) == ["budget"] and list(listed["n_ok"]) == [2]
    assert at.toggle(key="others").value is False  # their rows load on demand
    at.toggle(key="others").set_value(True).run()
    rows = next(d.value for d in at.dataframe if "suite" in d.value.columns)
    assert set(rows["suite"]) == {f"tiny-300 ({OTHER[:8]})"}
    assert set(rows["differs"]) == {"budget"}
    assert list(rows["method"]) == ["teacher", "kd"] and list(rows["rank_label"]) == ["-", "1"]
    assert not set(board(at)["run"]) & set(rows["run"])  # never mixed into the ranking
    at = run_app(others="true", method=["sft"])  # the filters apply there too
    rows = next(d.value for d in at.dataframe if "suite" in d.value.columns)
    assert list(rows["method"]) == ["teacher"]


def test_failed_runs_listed_with_links(db: Path) -> None:
    at = run_app()
    assert any("Failed runs (1)" in h.value for h in at.subheader)
    failed = table(at, "error").value
    assert list(failed["error"]) == ["RuntimeError: CUDA out of memory"]  # the exception line
    assert list(failed["run"]) == ["?page=Run&run=kd-0.1M-s9"]  # the traceback is there
    assert list(failed["seed"]) == [9]


def test_failed_run_without_error_or_seed(db: Path) -> None:
    store.write_run(
        db,
        {
            "run_id": "bare",
            "suite_hash": SUITE,
            "role": "student",
            "method": "kd",
            "status": "failed",
        },
        [],
        {},
    )
    at = run_app()
    failed = table(at, "error").value.set_index("run")
    assert failed.loc["?page=Run&run=bare", "error"] == "(no error recorded)"
    assert pd.isna(failed.loc["?page=Run&run=bare", "seed"])
    at = run_app(page="Run", run="bare")
    assert "(no error recorded)" in at.code[0].value


def test_export_csv_and_parquet(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = appdata.served_downloads(monkeypatch)
    at = run_app(method=["kd", "fkl"], per_task="true")
    labels = [b.label for b in at.download_button]
    assert labels == ["Download CSV", "Download Parquet"]
    name = f"kdbench-{SUITE[:8]}"
    csv = pd.read_csv(io.BytesIO(served[f"{name}.csv"]))
    parquet = pd.read_parquet(io.BytesIO(served[f"{name}.parquet"]))
    shown = board(at)
    for frame in (csv, parquet):  # the current view: its rows, order, per-task columns
        assert list(frame["method"]) == list(shown["method"])
        assert list(frame["rank"]) == list(shown["rank_label"])
        assert "retention_kd_addition" in frame.columns and "run_id" in frame.columns
        assert list(frame["retention_avg"]) == pytest.approx(list(shown["retention_avg"]))
    assert parquet["params"].dtype.kind in "iuf"  # raw numbers, not display strings


def test_url_state_restores_a_view(db: Path) -> None:
    at = run_app(method=["kd"], per_task="true", sort="params", student=["student-0.25M"])
    assert at.multiselect(key="method").value == ["kd"]
    assert at.toggle(key="per_task").value is True
    assert at.selectbox(key="sort").value == "params"
    assert list(board(at)["method"]) == ["teacher", "kd"]
    assert "score_kd_addition" in board(at).columns
    # every control is bound to the URL under its key
    for widget in (*at.multiselect, *at.selectbox, *at.toggle, *at.radio):
        assert widget.proto.query_param_key == widget.key


# --------------------------------------------------------------------------- other pages


def test_pareto_page(db: Path) -> None:
    at = run_app(page="Pareto")
    titles = [h.value for h in at.subheader]
    assert titles == [
        "Retention vs parameters (log scale)",
        "Retention vs training price (USD)",
        "Retention vs inference tokens/s",
        "Retention vs fidelity to the teacher",  # test_fidelity_in_the_app
    ]
    found = charts(at)[:3]
    view = leaderboard(db, SUITE, prices=economics.load_prices())
    students = view[view["role"] != "teacher"]
    for chart, x, minimize in zip(
        found, ("params", "price_usd", "infer_tokens_per_s"), (True, True, False), strict=True
    ):
        spec = json.loads(chart.proto.spec)
        assert spec["layer"][1]["encoding"]["href"]["field"] == "url"
        points = max(chart_data(chart), key=len)
        assert len(points) == len(view)
        on_front = set(points.loc[points["front"] == "Pareto front", "run_id"])
        mask = economics.pareto_front(students[x], students["retention_avg"], minimize_x=minimize)
        assert on_front == set(students.loc[mask, "run_id"]) and on_front
        assert set(points["url"]) == {f"?page=Run&run={r}" for r in view["run_id"]}


def test_fidelity_in_the_app(db: Path) -> None:
    """Agreement, KL and ECE (kdbench.fidelity rows) on the Leaderboard (a toggle), Tasks,
    Run and Pareto pages, next to the teacher's ECE."""
    at = run_app()
    assert "fidelity_top1" not in board(at).columns  # off by default
    at.toggle(key="fidelity").set_value(True).run()
    assert not at.exception
    shown = board(at).set_index(["method", "student"])
    fid = [appdata.fidelity("kd", "student-0.1M", s, t) for s in appdata.SEEDS for t in TASKS]
    row = shown.loc[("kd", "student-0.1M")]
    for metric in ("fidelity_top1", "fidelity_kl", "ece"):
        assert row[metric] == pytest.approx(sum(f[metric] for f in fid) / len(fid))
    teacher_ece = appdata.fidelity("teacher", "", 0, "kd_compare")["ece"]
    assert list(shown["teacher_ece"]) == pytest.approx([teacher_ece] * len(shown))
    assert shown.loc[("teacher", appdata.TEACHER[0]), "fidelity_kl"] == 0.0

    at = run_app(page="Tasks", task="kd_compare")
    tasks = table(at, "agreement").value.set_index(["method", "student"])
    one = [appdata.fidelity("fkl", "student-0.25M", s, "kd_compare") for s in appdata.SEEDS]
    assert tasks.loc[("fkl", "student-0.25M"), "KL"] == pytest.approx(
        sum(f["fidelity_kl"] for f in one) / 3
    )
    assert any(f"teacher's ECE on kd_compare: {teacher_ece:.3f}" in c.value for c in at.caption)

    at = run_app(page="Run", run="kd-0.1M-s1")
    per_task = table(at, "teacher_ece").value.set_index("task")
    assert set(per_task.index) == set(TASKS)
    expected = appdata.fidelity("kd", "student-0.1M", 1, "kd_addition")
    assert per_task.loc["kd_addition", "fidelity_top1"] == pytest.approx(expected["fidelity_top1"])
    assert per_task.loc["kd_addition", "teacher_ece"] == pytest.approx(teacher_ece)

    at = run_app(page="Pareto", fidelity_axis="KL(teacher || student)")
    chart = charts(at)[-1]
    assert json.loads(chart.proto.spec)["encoding"]["x"]["field"] == "fidelity_kl"
    points = max(chart_data(chart), key=len)
    assert len(points) == len(appdata.METHODS) * len(appdata.STUDENTS)  # students only
    assert any("Spearman" in c.value for c in at.caption)


def old_style_db(path: Path) -> Path:
    """A database like those written before schema 2: only the old cost columns, no
    aggregation, no samples."""
    store.write_suite(path, "s1", "old", "x.toml", {})
    for run_id, role, method, value in (
        ("t", "teacher", "teacher", 0.8),
        ("a", "student", "kd", 0.4),
        ("b", "student", "sft", 0.3),
    ):
        store.write_run(
            path,
            {
                "run_id": run_id,
                "suite_hash": "s1",
                "role": role,
                "method": method,
                "family": method,
                "student": run_id,
                "seed": 0,
                "status": "ok",
            },
            [{"task": "q", "metric": "acc", "value": value, "is_primary": True}],
            {"params": 1000 if role == "student" else 9000, "train_wall_s": 3.0},
        )
    return path


def test_pareto_page_without_new_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDBENCH_DB", str(old_style_db(tmp_path / "old.duckdb")))
    at = run_app(page="Pareto")
    assert [h.value for h in at.subheader][1] == "Retention vs training wall time (s)"
    assert any("nothing to plot" in i.value for i in at.info)  # no inference speed stored
    assert len(charts(at)) == 2


def test_tasks_page(db: Path) -> None:
    at = run_app(page="Tasks")
    assert at.selectbox(key="task").options == list(TASKS)
    at.selectbox(key="task").select("kd_compare").run()
    assert (
        "**acc**, higher is better" in at.markdown[0].value and "**mean**" in at.markdown[0].value
    )
    shown = table(at, "retention ± CI").value
    expected = leaderboard(db, SUITE).set_index(["method", "student"])
    row = shown.set_index(["method", "student"]).loc[("fkl", "student-0.1M")]
    assert row["retention"] == pytest.approx(
        expected.loc[("fkl", "student-0.1M"), "retention_kd_compare"]
    )
    assert shown["retention"].is_monotonic_decreasing
    assert len(charts(at)) == 1


def test_compare_page(db: Path) -> None:
    a, b = "fkl · student-0.25M", "sft · student-0.25M"
    at = run_app(page="Compare", a=a, b=b)
    assert at.selectbox(key="a").value == a and at.selectbox(key="b").value == b
    shown = table(at, "difference").value.set_index("task")
    groups = [("fkl", "student-0.25M"), ("sft", "student-0.25M")]
    expected = compare(run_scores(db, SUITE, groups), *groups).set_index("task")
    assert list(shown.index) == [*TASKS, "average"]
    assert shown.loc["average", "difference"] == pytest.approx(
        expected.loc["average", "difference"]
    )
    assert shown.loc["average", "significant"] == expected.loc["average", "significant"]
    side = table(at, "").value
    assert list(side.columns) == ["", a, b]
    at.selectbox(key="b").select("kd · student-0.1M").run()
    assert not at.exception
    assert table(at, "difference").value.columns[0] == "task"


def test_leaderboard_marks_significant_gains(db: Path) -> None:
    from kdbench import stats

    at = run_app()
    df = board(at).set_index(["method", "student"])
    expected = leaderboard(db, SUITE).set_index(["method", "student"])
    assert list(df["sig_vs_sft"].fillna("-")) == list(
        expected.loc[df.index, "sig_vs_sft"].fillna("-")
    )
    assert (df.loc["fkl", "sig_vs_sft"] == stats.BETTER).all()
    assert df["p_vs_sft"].tolist() == pytest.approx(
        expected.loc[df.index, "p_vs_sft"].tolist(), nan_ok=True
    )
    caption = next(c.value for c in at.caption if c.value.startswith("p vs sft"))
    assert "Holm" in caption and "fkl · student-0.25M" in caption
    config = json.loads(table(at, "gain_vs_sft").proto.columns)
    assert "Holm" in config["p_vs_sft"]["help"] and config["sig_vs_sft"]["help"]
    assert config["budget_note"]["help"]
    assert df["budget_note"].isna().all() and not at.warning


def test_leaderboard_flags_a_run_off_the_budget(db: Path) -> None:
    run = {"run_id": "sft-0.1M-s3", "suite_hash": SUITE, "role": "student", "method": "sft",
           "family": "baseline", "student": "student-0.1M", "seed": 3, "status": "ok"}  # fmt: skip
    metrics = [
        {"task": t, "metric": appdata.METRIC[t], "value": 0.5, "is_primary": True} for t in TASKS
    ]
    store.write_run(db, run, metrics, {"steps": 150, "sequences": 150 * 64})
    at = run_app()
    df = board(at).set_index(["method", "student"])
    assert (
        df.loc[("sft", "student-0.1M"), "budget_note"]
        == "⚠️ 150 of 200 steps, 9600 of 12800 sequences (seed 3)"
    )
    assert df["budget_note"].notna().sum() == 1
    warning = " ".join(w.value for w in at.warning)
    assert "Unequal budgets" in warning and "budget differs: 150 of 200 steps" in warning


def test_the_budget_warning_names_five_rows_and_counts_the_rest(db: Path) -> None:
    from kdbench.app.page_leaderboard import BUDGET_WARNING_ROWS

    off = [(m, s) for m in appdata.METHODS for s in appdata.STUDENTS][:7]
    for method, student in off:
        run = {"run_id": f"{method}-{student}-short", "suite_hash": SUITE, "role": "student",
               "method": method, "family": appdata.FAMILY[method], "student": student,
               "seed": 3, "status": "ok"}  # fmt: skip
        metrics = [
            {"task": t, "metric": appdata.METRIC[t], "value": 0.5, "is_primary": True}
            for t in TASKS
        ]
        store.write_run(db, run, metrics, {"steps": 150, "sequences": 150 * 64})
    at = run_app()
    assert board(at)["budget_note"].notna().sum() == 7
    warning = next(w.value for w in at.warning if "Unequal budgets" in w.value)
    assert warning.count("budget differs") == BUDGET_WARNING_ROWS == 5
    assert "and 2 more rows (see their budget_note)" in warning


def test_compare_page_paired_test(db: Path) -> None:
    from kdbench import stats

    a, b = "fkl · student-0.25M", "sft · student-0.25M"
    at = run_app(page="Compare", a=a, b=b)
    shown = table(at, "p (Holm)").value.set_index("test")
    data = stats.paired_samples(
        store.read_samples(db, SUITE)
        .merge(store.read_runs(db, SUITE)[["run_id", "method", "student", "seed", "role"]])
        .query("role == 'student'"),
        leaderboard_tasks(db),
    )
    groups = [(m, s) for m in appdata.METHODS for s in appdata.STUDENTS]
    expected = stats.compare_test(data, ("fkl", "student-0.25M"), ("sft", "student-0.25M"), groups)
    boot = shown.loc["paired bootstrap (retention)"]
    assert boot["p"] == pytest.approx(expected["p_value"])
    assert boot["p (Holm)"] == pytest.approx(expected["holm_p"])
    assert boot["A − B"] == pytest.approx(expected["difference"])
    assert expected["family_size"] == len(groups) * (len(groups) - 1) // 2
    mcnemar = shown.loc["McNemar exact (right/wrong)"]
    assert mcnemar["p"] == pytest.approx(expected["mcnemar_p"])
    assert mcnemar["A wrong, B right"] == 0  # fkl is right on a superset (appdata)
    assert any(f"**{stats.BETTER}**" in c.value for c in at.caption)
    # filtering the view shrinks Compare's Holm family to the pairs shown
    at = run_app(page="Compare", a=a, b=b, method=["fkl", "sft"])
    assert any("the 6 pairwise comparisons" in c.value for c in at.caption)


def leaderboard_tasks(db: Path) -> pd.DataFrame:
    from kdbench.leaderboard import task_info

    return task_info(db, SUITE)


def test_economics_page(db: Path) -> None:
    at = run_app(page="Economics")
    view = leaderboard(db, SUITE, prices=economics.load_prices())
    top = view.iloc[1]
    assert at.selectbox(key="econ").value == f"{top['method']} · {top['student']}"
    tpq = at.number_input(key="tpq").value
    t_cost = economics.cost_per_query(view.iloc[0]["usd_per_mtok"], tpq)
    s_cost = economics.cost_per_query(top["usd_per_mtok"], tpq)
    assert at.number_input(key="tq").value == pytest.approx(t_cost)
    assert at.number_input(key="sq").value == pytest.approx(s_cost)
    assert at.number_input(key="oneoff").value == pytest.approx(top["price_usd"])

    at.number_input(key="tq").set_value(0.003).run()
    at.number_input(key="sq").set_value(0.001).run()
    at.number_input(key="oneoff").set_value(100.0).run()
    at.number_input(key="qpm").set_value(10_000.0).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["monthly saving"] == "$20.00"
    assert metrics["break-even"] == "5 months"
    at.number_input(key="sq").set_value(0.004).run()
    assert {m.label: m.value for m in at.metric}["break-even"] == "never"

    # routing: the curve from the stored samples of the top run and the teacher
    curve = table(at, "cost_per_query").value
    expected = economics.routing_curve(
        store.read_samples(db, run_id=top["run_id"]),
        store.read_samples(db, run_id="teacher-s0"),
        0.004,
        0.003,
    )
    assert list(curve["quality"]) == pytest.approx(list(expected["quality"]))
    assert list(curve["cost_per_query"]) == pytest.approx(list(expected["cost_per_query"]))
    assert len(charts(at)) == 1
    at.selectbox(key="route_task").select("kd_addition").run()
    one = table(at, "cost_per_query").value
    assert one["routed"].iloc[-1] == appdata.QUESTIONS


def test_economics_without_samples_or_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDBENCH_DB", str(old_style_db(tmp_path / "old.duckdb")))
    at = run_app(page="Economics")
    assert any("enter per-query prices" in c.value for c in at.caption)
    assert at.number_input(key="tq").value == 0.0
    assert any("No per-question samples" in i.value for i in at.info)
    at = run_app(page="Run", run="a")  # old rows: dashes, no crash
    costs = dict(at.table[1].value.itertuples(index=False, name=None))
    assert costs["device_hours"] == "—" and costs["infer_tokens_per_s"] == "—"


def test_run_page_ok_and_failed(db: Path) -> None:
    at = run_app(page="Run", run="kd-0.1M-s1")
    assert at.text_input(key="run").value == "kd-0.1M-s1"
    fields = dict(at.table[0].value.itertuples(index=False, name=None))
    assert fields["suite"] == f"tiny ({SUITE})" and fields["git_commit"] == "abc1234"
    assert fields["seed"] == "1" and fields["status"] == "ok"
    costs = dict(at.table[1].value.itertuples(index=False, name=None))
    assert costs["resumed_from"] == "—"  # not recorded: a dash, no crash
    assert float(costs["params"]) == 108_416
    shown = [json.loads(j.value) for j in at.json]
    assert {"temperature": 2.0} in shown and appdata.HARDWARE in shown
    assert {"torch": "2.13.0"} in shown
    metrics = table(at, "metric").value
    assert set(metrics["task"]) == set(TASKS) and "aggregation" in metrics.columns
    siblings = table(at, "page").value
    assert set(siblings["seed"]) == {0, 1, 2, 9}
    assert "?page=Run&run=kd-0.1M-s9" in set(siblings["page"])

    at.text_input(key="run").input("kd-0.1M-s9").run()
    assert at.error[0].value == "This run failed. Its error:"
    assert "RuntimeError: CUDA out of memory" in at.code[0].value
    at.text_input(key="run").input("no-such-run").run()
    assert "No run 'no-such-run'" in at.error[0].value
    at.text_input(key="run").input("").run()
    assert "Pick a run" in at.info[0].value


def test_page_param_switches_pages(db: Path) -> None:
    at = run_app()
    for page in ("Pareto", "Tasks", "Compare", "Economics", "Run", "Leaderboard"):
        at.query_params["page"] = page  # st.navigation: ?page=<title> switches to the page
        at.run()
        assert not at.exception, page
    assert board(at) is not None


def test_page_param_keeps_the_other_parameters(db: Path) -> None:
    at = run_app(page="Pareto", method=["kd"])  # a shared link: a page and its filters
    assert len(max(chart_data(charts(at)[0]), key=len)) == 3  # the teacher, kd on 2 students
    assert at.query_params["page"] == "Pareto" and at.query_params["method"] == "kd"
    at.multiselect(key="method").set_value(["kd", "fkl"]).run()
    at.query_params["page"] = "Tasks"  # a switch within the session keeps them too
    at.run()
    assert not at.exception
    assert at.multiselect(key="method").value == ["kd", "fkl"]
    assert set(table(at, "retention ± CI").value["method"]) == {"teacher", "kd", "fkl"}


# --------------------------------------------------------------------------- robustness


def test_synthetic_suite_banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "syn.duckdb"
    store.write_suite(path, "5y", "SYNTHETIC-bench", "synthetic", {})
    store.write_run(
        path,
        {
            "run_id": "t",
            "suite_hash": "5y",
            "role": "teacher",
            "method": "teacher",
            "student": "t",
            "status": "ok",
        },
        [{"task": "q", "metric": "acc", "value": 0.5, "is_primary": True}],
        {},
    )
    monkeypatch.setenv("KDBENCH_DB", str(path))
    at = run_app()
    assert "SYNTHETIC DATA" in at.warning[0].value


def test_bad_price_table_is_reported(db: Path, tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text('[devices.h100]\nusd_per_hour = "lots"\n')
    monkeypatch.setenv("KDBENCH_PRICES", str(bad))
    at = run_app()
    (error,) = at.error
    assert str(bad) in error.value and "devices.h100.usd_per_hour" in error.value
    assert board(at)["price_usd"].isna().all()  # the app goes on without prices


def test_db_and_prices_arguments_win_over_env(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "p.toml"
    prices.write_text("[devices.cpu]\nusd_per_hour = 1.0\n")
    monkeypatch.setenv("KDBENCH_DB", str(tmp_path / "elsewhere.duckdb"))
    monkeypatch.setattr(sys, "argv", ["app.py", "--db", str(db), "--prices", str(prices)])
    at = run_app()
    df = board(at).set_index(["method", "student"])
    hours = sum((40.0 + s) / 3600 for s in appdata.SEEDS) / len(appdata.SEEDS)
    assert df.loc[("kd", "student-0.1M"), "price_usd"] == pytest.approx(hours * 1.0)


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


def test_reads_while_a_benchmark_writes(db: Path) -> None:
    """A separate process writes runs in a loop (as `kdbench run` does) while the app renders;
    neither blocks the other, and the app holds no connection between reads."""
    writer = textwrap.dedent(
        f"""
        from kdbench import store
        for i in range(15):
            store.write_run(
                {str(db)!r},
                {{"run_id": f"live-{{i}}", "suite_hash": {SUITE!r}, "role": "student",
                  "method": "live", "family": "logit", "student": "student-0.1M",
                  "seed": i, "status": "ok"}},
                [{{"task": t, "metric": m, "value": 0.5, "is_primary": True}}
                 for t, m in {list(appdata.METRIC.items())!r}],
                {{"params": 1}},
            )
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT)
    try:
        for _ in range(3):
            st.cache_data.clear()
            run_app()
    finally:
        assert proc.wait(timeout=120) == 0  # the writer was never locked out
    st.cache_data.clear()
    at = run_app()
    live = board(at).set_index("method").loc["live"]
    assert live["seeds"] == 15 and not math.isnan(live["retention_avg"])
    store.connect(db).close()  # the app left nothing open: a writer gets the file at once
