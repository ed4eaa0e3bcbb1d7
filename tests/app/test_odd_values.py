"""How the app's read side takes odd values (kdbench/leaderboard.py, kdbench/economics.py,
kdbench/app/formatting.py and data.py), without Streamlit; the whole app over odd
databases is tests/bad_input/test_app_data.py."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from kdbench import economics, store
from kdbench import leaderboard as lb
from kdbench.app.data import foreign_tables, one_line, unreadable
from kdbench.app.formatting import finite_max, finite_or

from .. import appdata
from ..appdata import SUITE


@pytest.fixture
def odd_db(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the app's test database with SQL applied to it."""

    def make(sql: str) -> Path:
        path = tmp_path / "odd.duckdb"
        shutil.copyfile(appdata.template(tmp_path_factory), path)
        con = duckdb.connect(str(path))
        con.execute(sql)
        con.close()
        return path

    return make


def test_null_names_and_roles_are_read_as_missing_and_student(odd_db) -> None:
    db = odd_db("UPDATE runs SET method = NULL WHERE method = 'kd';"
                "UPDATE runs SET role = NULL WHERE method = 'sft'")  # fmt: skip
    data = lb.suite_data(db, [SUITE])
    board = lb.rank_board(data.boards[SUITE])
    assert lb.MISSING_NAME in set(board["method"])
    assert board["method"].map(type).eq(str).all()  # sortable: no NaN among the names
    assert list(board["role"]).count("teacher") == 1  # a NULL role is not a teacher
    assert data.notes[SUITE] == (
        f"7 runs without a method name (shown as {lb.MISSING_NAME})",
        "6 runs with a role other than teacher or student (ranked as students)",
    )
    groups = [(lb.MISSING_NAME, "student-0.1M"), ("fkl", "student-0.1M")]
    scores = lb.run_scores(db, SUITE, groups)
    assert set(scores["method"]) == {lb.MISSING_NAME, "fkl"}
    assert not lb.run_scores(db, SUITE, [("nope", "nobody")]).columns.empty  # no rows, columns


def test_non_finite_scores_and_costs_are_missing(odd_db) -> None:
    db = odd_db("UPDATE metrics SET value = 'inf' WHERE run_id LIKE 'kd-%';"
                "UPDATE costs SET device_hours = 'nan', params = -1, infer_tokens_per_s = 'inf'"
                " WHERE run_id LIKE 'fkl-%'")  # fmt: skip
    board = lb.leaderboard(db, SUITE, prices=economics.load_prices()).set_index(
        ["method", "student"]
    )
    kd, fkl = board.loc[("kd", "student-0.1M")], board.loc[("fkl", "student-0.1M")]
    assert kd["rank_label"] == "-" and math.isnan(kd["retention_avg"])
    assert math.isnan(kd["score_kd_addition"])
    assert fkl["rank_label"] != "-"
    for col in ("device_hours", "price_usd", "infer_tokens_per_s", "usd_per_mtok", "speedup"):
        assert math.isnan(fkl[col]), col
    assert pd.isna(fkl["params"])
    numbers = board.select_dtypes("number").to_numpy(dtype=float)
    assert not np.isinf(numbers).any()
    (notes,) = lb.suite_data(db, [SUITE]).notes.values()
    assert notes[0].startswith("12 primary scores missing, infinite or NaN")
    assert notes[1] == (
        "18 cost values infinite, NaN or negative (params, device_hours, infer_tokens_per_s;"
        " read as not recorded)"
    )


def test_zero_teacher_size_gives_no_ratio(odd_db) -> None:
    db = odd_db("UPDATE costs SET params = 0, infer_tokens_per_s = 0 WHERE run_id = 'teacher-s0'")
    board = lb.leaderboard(db, SUITE)
    assert board["param_ratio"].isna().all() and board["speedup"].isna().all()


def test_clean_database_has_no_notes(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert lb.suite_data(appdata.template(tmp_path_factory), [SUITE]).notes == {}


def test_suite_configs_that_are_not_objects() -> None:
    assert lb.suite_differences("[1]", "null") == []
    assert lb.suite_differences("not json", None) == []
    assert lb.differences_label('{"budget": {"steps": 1}}', "[]") == "budget"


def test_suite_labels_stay_apart(tmp_path: Path) -> None:
    path = tmp_path / "two.duckdb"
    store.write_suite(path, "abcdefgh1", "x", "x.toml", {})
    store.write_suite(path, "abcdefgh2", "x", "x.toml", {})
    con = duckdb.connect(str(path))
    con.execute("UPDATE suites SET name = NULL WHERE suite_hash = 'abcdefgh2'")
    con.close()
    assert sorted(lb.suites(path)["label"]) == ["(unnamed) (abcdefgh)", "x (abcdefgh)"]
    con = duckdb.connect(str(path))
    con.execute("UPDATE suites SET name = 'x'")
    con.close()
    assert sorted(lb.suites(path)["label"]) == ["x (abcdefgh1)", "x (abcdefgh2)"]


def test_routing_leaves_out_non_finite_correctness() -> None:
    student = pd.DataFrame(
        {
            "task": "t",
            "doc_id": [0, 1, 2, 3],
            "correct": [1.0, math.inf, math.nan, 0.0],
            "confidence": [0.9, 0.1, -math.inf, math.nan],
        }
    )
    teacher = student.assign(correct=[1.0, 1.0, 1.0, 1.0])
    curve = economics.routing_curve(student, teacher, 0.1, 1.0, shares=[0.0, 1.0])
    assert list(curve["routed"]) == [0, 2]  # docs 1 and 2 are left out
    assert list(curve["quality"]) == [0.5, 1.0]
    assert list(economics.finite([1, None, math.inf, "x", 0.5])) == [
        True,
        False,
        False,
        False,
        True,
    ]


def test_widget_defaults_and_bar_tops() -> None:
    assert finite_or(math.inf) == 0.0 and finite_or(-2.0) == 0.0 and finite_or(pd.NA) == 0.0
    assert math.isnan(finite_or(None, math.nan)) and finite_or("3.5") == 3.5
    assert finite_max([0.4, math.inf, math.nan, None]) == 1.0
    assert finite_max(pd.Series([1.3, -math.inf])) == 1.3 and finite_max([]) == 1.0


def test_unreadable_names_the_file(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    own = store.StoreError(f"cannot open results database {db}: IO Error: bad\nmore")
    assert unreadable(db, own) == f"cannot open results database {db}: IO Error: bad"
    assert unreadable(db, duckdb.BinderException("Binder Error: no column\nLINE 1")) == (
        f"Cannot read the results database {db}: Binder Error: no column"
    )
    assert unreadable(db, ValueError("invalid literal for int(): 'two'")) == (
        f"Cannot read the results database {db}: ValueError: invalid literal for int(): 'two'"
    )
    assert one_line(KeyError()) == "KeyError"


def test_foreign_tables(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE customers (id INTEGER); CREATE TABLE runs (x INTEGER)")
    con.close()
    assert foreign_tables(other) == ["customers"]
    assert foreign_tables(appdata.template(tmp_path_factory)) == []
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert foreign_tables(empty) == []


def _unforeseen_app() -> None:
    from pathlib import Path

    from kdbench.app.navigation import show_unforeseen

    show_unforeseen("The Tasks page", Path("results/x.duckdb"), ValueError("boom\nsecond line"))


def test_unforeseen_failure_is_one_line() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_unforeseen_app)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The Tasks page could not be drawn from the data in results/x.duckdb: ValueError: boom"
    ]
