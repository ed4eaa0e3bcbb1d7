"""Bad-input corpus, app part (issue 11, item 3): odd databases the app must survive.

Each case is a real kdbench database (tests/appdata.py's, written through kdbench.store)
changed with SQL to hold NULLs, infinities, NaNs, negative costs, empty tables or tables
made by hand; or a damaged or foreign file given as the database. The app is rendered with
Streamlit's AppTest over every page (``?page=<title>``, as tests/test_app.py switches them),
with the per-task columns, the open track and a run page shown. Every page must render
without an exception and without the last-resort "could not be drawn" line (the odd value
is handled, not caught); a damaged or foreign file shows one error line naming the
file on every page; odd values show the warning that says how they were read; and the
database file is never changed by the app.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench.app.navigation import PAGES, UNFORESEEN

from .. import appdata

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TITLES = [p.title for p in PAGES]
KD_RUN = appdata.run_id("kd", "student-0.1M", 0)

# Hand-made copies of the tables without their keys (CREATE TABLE AS keeps no constraint),
# so rows may have NULL keys and duplicates: a database kdbench still opens.
KEYLESS = """
CREATE TABLE r2 AS SELECT * FROM runs; DROP TABLE runs; ALTER TABLE r2 RENAME TO runs;
CREATE TABLE m2 AS SELECT * FROM metrics; DROP TABLE metrics; ALTER TABLE m2 RENAME TO metrics;
CREATE TABLE s2 AS SELECT * FROM samples; DROP TABLE samples; ALTER TABLE s2 RENAME TO samples;
CREATE TABLE c2 AS SELECT * FROM costs; DROP TABLE costs; ALTER TABLE c2 RENAME TO costs;
CREATE TABLE u2 AS SELECT * FROM suites; DROP TABLE suites; ALTER TABLE u2 RENAME TO suites;
"""


@dataclass(frozen=True)
class Case:
    """One odd database: how it is made from the template (SQL run on a copy) or written
    from scratch (``write(path)``), and what the page must say."""

    name: str
    sql: str = ""
    write: Callable[[Path, Path], None] | None = None  # (path, template) -> None
    warning: str = ""  # words of the odd-value warning every page shows
    damaged: bool = False  # an error line naming the file on every page, nothing else
    run: str = KD_RUN  # the run the Run page opens
    check: Callable[[AppTest, dict[str, Shown]], None] | None = None


# --------------------------------------------------------------------------- damaged files


def truncated(fraction: float) -> Callable[[Path, Path], None]:
    def write(path: Path, template: Path) -> None:
        raw = template.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])

    return write


def text_file(path: Path, template: Path) -> None:
    path.write_text("run_id,method\nkd-0.1M-s0,kd\n")


def empty_file(path: Path, template: Path) -> None:
    path.write_bytes(b"")


def directory(path: Path, template: Path) -> None:
    path.mkdir()
    (path / "runs.csv").write_text("x\n")


def zeroed_blocks(path: Path, template: Path) -> None:
    raw = template.read_bytes()
    path.write_bytes(raw[:4096] + bytes(len(raw) - 4096))


def duckdb_file(*sql: str) -> Callable[[Path, Path], None]:
    """A DuckDB file made from nothing by ``sql`` (another program's database)."""

    def write(path: Path, template: Path) -> None:
        con = duckdb.connect(str(path))
        for statement in sql:
            con.execute(statement)
        con.close()

    return write


# --------------------------------------------------------------------------- checks


def board(page: Shown) -> pd.DataFrame:
    for table in page.tables:
        if "gain_vs_sft" in table.columns:
            return table
    raise AssertionError("no leaderboard table")


def missing_name_row(pages: dict[str, Shown]) -> None:
    df = board(pages["Leaderboard"])
    assert "(missing)" in set(df["method"]) | set(df["student"])


def missing_method_is_filterable(at: AppTest, pages: dict[str, Shown]) -> None:
    missing_name_row(pages)
    assert "(missing)" in at.multiselect(key="method").options


def unranked_kd(at: AppTest, pages: dict[str, Shown]) -> None:
    df = board(pages["Leaderboard"]).set_index(["method", "student"])
    assert df.loc[("kd", "student-0.1M"), "rank_label"] == "-"  # no score: not ranked
    assert df.loc[("fkl", "student-0.1M"), "rank_label"] != "-"


def costs_not_recorded(at: AppTest, pages: dict[str, Shown]) -> None:
    df = board(pages["Leaderboard"])
    assert df["device_hours"].isna().all() and df["price_usd"].isna().all()
    econ = pages["Economics"]
    assert econ.numbers["oneoff"] == 0.0  # no usable training price


def samples_left_out(at: AppTest, pages: dict[str, Shown]) -> None:
    assert any("no finite correctness" in w for w in pages["Economics"].warning)


def no_successful_runs(at: AppTest, pages: dict[str, Shown]) -> None:
    assert any("No successful runs" in i for i in pages["Leaderboard"].info)


def one_line_errors(at: AppTest, pages: dict[str, Shown]) -> None:
    for page in pages.values():
        assert all("\n" not in e for e in page.error)


CASES = [
    # NULLs in the runs table
    Case(
        "null method name",
        "UPDATE runs SET method = NULL WHERE method = 'kd'",
        warning="without a method name",
        check=missing_method_is_filterable,
    ),
    Case(
        "null student name",
        "UPDATE runs SET student = NULL WHERE method = 'fkl'",
        warning="without a student name",
        run=appdata.run_id("fkl", "student-0.1M", 0),
        check=lambda at, pages: missing_name_row(pages),
    ),
    Case("null role", "UPDATE runs SET role = NULL WHERE method = 'sft'", warning="role other"),
    Case("unknown role", "UPDATE runs SET role = 'judge' WHERE method = 'kd'", warning="role"),
    Case("null status", "UPDATE runs SET status = NULL WHERE method = 'sft'", warning="status"),
    Case("null seed", "UPDATE runs SET seed = NULL"),
    Case("a run without its suite", f"UPDATE runs SET suite_hash = NULL WHERE run_id = '{KD_RUN}'"),
    Case("null family and json", "UPDATE runs SET family = NULL, hardware = NULL, versions = NULL"),
    # NULLs, infinities and NaNs in the metrics
    Case(
        "null metric values",
        "UPDATE metrics SET value = NULL, stderr = NULL WHERE run_id LIKE 'kd-%'",
        warning="primary score",
        check=unranked_kd,
    ),
    Case("null metric flags", "UPDATE metrics SET higher_is_better = NULL, is_primary = NULL"),
    Case(
        "infinite scores",
        "UPDATE metrics SET value = 'inf' WHERE run_id LIKE 'kd-%'",
        warning="primary score",
        check=unranked_kd,
    ),
    Case(
        "nan scores",
        "UPDATE metrics SET value = 'nan', stderr = 'nan' WHERE run_id LIKE 'kd-%'",
        warning="primary score",
        check=unranked_kd,
    ),
    Case(
        "infinite teacher score",
        "UPDATE metrics SET value = '-inf' WHERE run_id = 'teacher-s0'",
        warning="primary score",
    ),
    # infinities, NaNs, negatives and NULLs in the costs
    Case(
        "infinite device hours",
        "UPDATE costs SET device_hours = 'inf', train_wall_s = 'inf', train_flops = 'inf'",
        warning="cost value",
        check=costs_not_recorded,
    ),
    Case(
        "nan costs",
        "UPDATE costs SET device_hours = 'nan', infer_tokens_per_s = 'nan',"
        " infer_latency_ms = 'nan'",
        warning="cost value",
        check=costs_not_recorded,
    ),
    Case(
        "negative costs",
        "UPDATE costs SET device_hours = -1, params = -5, bytes = -1,"
        " infer_tokens_per_s = -3, train_wall_s = -2",
        warning="cost value",
        check=costs_not_recorded,
    ),
    Case(
        "null costs",
        "UPDATE costs SET "
        + ", ".join(
            f"{c} = NULL"
            for c in (
                "params",
                "bytes",
                "device_hours",
                "infer_tokens_per_s",
                "train_wall_s",
                "total_wall_s",
            )
        ),
    ),  # fmt: skip
    Case("zero teacher size and speed", "UPDATE costs SET params = 0, infer_tokens_per_s = 0"),
    Case(
        "costs that overflow",
        "UPDATE costs SET device_hours = 1e308, train_wall_s = 1e308, train_flops = 1e308,"
        " infer_tokens_per_s = 5e-324, params = 9223372036854775807",
    ),
    Case(
        "scores that overflow",
        "UPDATE metrics SET value = 1e308 WHERE run_id LIKE 'kd-%';"
        " UPDATE metrics SET value = 5e-324 WHERE run_id = 'teacher-s0'",
    ),
    # samples
    Case(
        "infinite and nan samples",
        "UPDATE samples SET correct = 'inf', confidence = 'nan' WHERE doc_id % 2 = 0",
        check=samples_left_out,
    ),
    Case("null samples", "UPDATE samples SET correct = NULL, confidence = NULL"),
    Case("minus infinite confidence", "UPDATE samples SET confidence = '-inf'"),
    # empty tables
    Case(
        "a suite and no runs",
        "DELETE FROM samples; DELETE FROM costs; DELETE FROM metrics; DELETE FROM runs",
        check=no_successful_runs,
    ),
    Case("runs and no metrics", "DELETE FROM metrics"),
    Case("runs and no costs or samples", "DELETE FROM costs; DELETE FROM samples"),
    # suites
    Case("null suite name and time", "UPDATE suites SET name = NULL, created_at = NULL"),
    Case("suite config not an object", "UPDATE suites SET config = '[1, 2]' WHERE name = 'tiny'"),
    Case("null suite config", "UPDATE suites SET config = NULL"),
    # tables made by hand: NULL keys, duplicates, text that is not JSON
    Case(
        "keyless tables with null keys",
        KEYLESS
        + """
        INSERT INTO runs SELECT * REPLACE (NULL AS run_id) FROM runs WHERE run_id = 'kd-0.1M-s0';
        INSERT INTO runs SELECT * FROM runs WHERE run_id = 'fkl-0.1M-s0';
        INSERT INTO metrics SELECT * REPLACE (NULL AS task) FROM metrics
            WHERE run_id = 'kd-0.1M-s0';
        INSERT INTO samples SELECT * REPLACE (NULL AS doc_id, NULL AS task) FROM samples
            WHERE run_id = 'teacher-s0';
        INSERT INTO costs SELECT * FROM costs WHERE run_id = 'kd-0.1M-s0';
        INSERT INTO suites VALUES (NULL, NULL, NULL, NULL, NULL);
        """,
    ),
    Case(
        "text that is not json",
        """
        CREATE TABLE u2 AS SELECT * REPLACE (config::VARCHAR AS config) FROM suites;
        DROP TABLE suites; ALTER TABLE u2 RENAME TO suites;
        CREATE TABLE r2 AS SELECT * REPLACE (hardware::VARCHAR AS hardware,
            method_config::VARCHAR AS method_config, versions::VARCHAR AS versions) FROM runs;
        DROP TABLE runs; ALTER TABLE r2 RENAME TO runs;
        UPDATE suites SET config = 'not json {' WHERE name = 'tiny';
        UPDATE runs SET hardware = '{bad', method_config = 'nope', versions = '[1';
        """,
    ),
    # damaged or foreign files given as the database
    Case("truncated to half", write=truncated(0.5), damaged=True, check=one_line_errors),
    Case("truncated to a block", write=truncated(0.001), damaged=True),
    Case("zeroed blocks", write=zeroed_blocks, damaged=True),
    Case("text file", write=text_file, damaged=True, check=one_line_errors),
    Case("empty file", write=empty_file, damaged=True),
    Case("directory", write=directory, damaged=True),
    Case(
        "foreign meta table",
        write=duckdb_file("CREATE TABLE meta (id INTEGER, note VARCHAR)"),
        damaged=True,
    ),
    Case(
        "foreign meta table over kdbench's",
        "DROP TABLE meta; CREATE TABLE meta (id INTEGER, note VARCHAR)",
        damaged=True,
    ),
    Case(
        "non-integer schema version",
        "UPDATE meta SET value = 'two' WHERE key = 'schema_version'",
        damaged=True,
        check=one_line_errors,
    ),
    Case(
        "null schema version",
        "UPDATE meta SET value = NULL WHERE key = 'schema_version'",
        damaged=True,
    ),
    Case(
        "newer schema version",
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        damaged=True,
    ),
    Case(
        "another program's duckdb file",
        write=duckdb_file("CREATE TABLE customers (id INTEGER, name VARCHAR)"),
        damaged=True,
    ),
    Case("a kdbench table without a column", "ALTER TABLE runs DROP COLUMN method", damaged=True),
]


def fingerprint(path: Path) -> str:
    """What the app must leave as it was: a file's bytes, or a directory's listing."""
    if path.is_dir():
        return repr(sorted((p.name, p.read_bytes()) for p in path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make(case: Case, path: Path, template: Path) -> Path:
    if case.write is not None:
        case.write(path, template)
        return path
    shutil.copyfile(template, path)
    con = duckdb.connect(str(path))
    try:
        con.execute(case.sql)
    finally:
        con.close()
    return path


def render_every_page(db: Path, run: str) -> tuple[AppTest, dict[str, Shown]]:
    """One AppTest session through every page (the page parameter switches them), with the
    per-task columns, the open track and a run shown; each page's elements kept."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"run": run, "per_task": "true", "others": "true"})
    pages: dict[str, Shown] = {}
    for title in TITLES:
        at.query_params["page"] = title
        at.run()
        assert not at.exception, (title, [e.message for e in at.exception])
        errors = [e.value for e in at.error]
        assert not any(UNFORESEEN in e for e in errors), (title, errors)
        pages[title] = Shown(at)
    return at, pages


class Shown:
    """What one page showed (AppTest's tree is replaced by the next run): its messages,
    tables and number inputs' values."""

    def __init__(self, at: AppTest) -> None:
        self.error = [e.value for e in at.error]
        self.warning = [w.value for w in at.warning]
        self.info = [i.value for i in at.info]
        self.tables = [d.value for d in at.dataframe]
        self.numbers = {e.key: e.value for e in at.number_input}


@pytest.fixture(autouse=True)
def _app_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    st.cache_data.clear()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_app_survives_odd_database(
    case: Case, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    db = make(case, tmp_path / "kdbench.duckdb", appdata.template(tmp_path_factory))
    before = fingerprint(db)
    monkeypatch.setenv("KDBENCH_DB", str(db))
    at, pages = render_every_page(db, case.run)
    for title, page in pages.items():
        if case.damaged:  # one error line naming the file, and nothing drawn
            assert any(str(db) in e for e in page.error), (title, page.error)
            assert not page.tables, title
        else:
            assert not page.error or title == "Run", (title, page.error)  # a run's own error
            if case.warning:
                assert any(case.warning in w for w in page.warning), (title, case.warning)
            else:
                assert not any("Odd values" in w for w in page.warning), (title, page.warning)
    if case.check is not None:
        case.check(at, pages)
    assert fingerprint(db) == before  # the app never writes


ODD_PARAMS = [
    {"page": "Leaderboard", "method": ["(missing)", "nope"], "sort": "price", "suite": "x"},
    {"page": "Tasks", "task": "no-such-task", "teacher": "nobody"},
    {"page": "Compare", "a": "(missing) · student-0.1M", "b": "nope"},
    {"page": "Economics", "econ": "zzz", "qpm": "-inf", "tq": "nan", "oneoff": "1e999"},
    {"page": "Run", "run": "'; DROP TABLE runs; --"},
    {"page": "nope", "per_task": "maybe", "others": "2"},
]


@pytest.mark.parametrize("params", ODD_PARAMS, ids=[p["page"] for p in ODD_PARAMS])
def test_bad_query_parameters_on_odd_data(
    params: dict, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    """Bad query parameters still render safely, on a database with a NULL method name."""
    path = tmp_path_factory.getbasetemp() / "odd-params.duckdb"
    if not path.exists():
        make(CASES[0], path, appdata.template(tmp_path_factory))
    monkeypatch.setenv("KDBENCH_DB", str(path))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not any(UNFORESEEN in e.value for e in at.error)
