"""Board snapshots (kdbench.snapshots): a board read from one equals the board computed live;
kdbench's writers keep them current, and a snapshot that no longer matches is never read."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from kdbench import economics, snapshots, store
from kdbench import leaderboard as lb
from kdbench.bundle import export_all
from tests import appdata
from tests.appdata import OTHER, SUITE


@pytest.fixture
def db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A copy of the app's test database (two suites, written by store.write_run)."""
    path = tmp_path / "kdbench.duckdb"
    shutil.copy(appdata.template(tmp_path_factory), path)
    return path


@pytest.fixture
def live_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The suites of every live computation of board queries, recorded as they happen."""
    calls: list[tuple[str, ...]] = []
    original = lb.board_frames

    def record(con, hashes, by_submitter, parts=lb.BOARD_PARTS):  # type: ignore[no-untyped-def]
        calls.append(tuple(hashes))
        return original(con, hashes, by_submitter, parts)

    monkeypatch.setattr(lb, "board_frames", record)
    return calls


def snapshot_suites(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            r[0] for r in con.execute("SELECT DISTINCT suite_hash FROM board_snapshots").fetchall()
        }
    finally:
        con.close()


def in_order(board: pd.DataFrame) -> pd.DataFrame:
    """A board's rows in one order (the queries' own is arbitrary: rank_board sorts)."""
    keys = ["is_teacher", "method", "student", "submitter"]
    return board.sort_values(keys, kind="stable").reset_index(drop=True)


def assert_same(a: lb.SuiteData, b: lb.SuiteData, hashes: list[str]) -> None:
    for h in hashes:
        pd.testing.assert_frame_equal(in_order(a.boards[h]), in_order(b.boards[h]))
    pd.testing.assert_frame_equal(a.tasks, b.tasks)
    pd.testing.assert_frame_equal(a.failed, b.failed)
    assert a.notes == b.notes


def test_a_board_read_from_its_snapshot_equals_the_live_one(db: Path, live_calls) -> None:
    prices = economics.load_prices(economics.DEFAULT_PRICES)
    both = [SUITE, OTHER]
    live = lb.suite_data(db, both, prices=prices, by_submitter=True)
    assert live_calls == [(SUITE, OTHER)] and snapshot_suites(db) == set()
    assert lb.refresh_snapshots(db) == 2
    assert snapshot_suites(db) == {SUITE, OTHER}
    live_calls.clear()
    read = lb.suite_data(db, both, prices=prices, by_submitter=True)
    assert live_calls == []  # nothing computed: every part came from the snapshots
    assert_same(read, live, both)
    assert read.boards[SUITE]["p_vs_sft"].notna().any()  # the paired tests ran on its samples
    assert read.boards[SUITE]["price_usd"].notna().any()  # priced after reading, as live
    one = lb.suite_data(db, [OTHER], by_submitter=True)  # one suite of the two
    assert live_calls == [] and not one.boards[OTHER].empty


def test_a_written_run_drops_its_suites_snapshot(db: Path, live_calls) -> None:
    lb.refresh_snapshots(db)
    live_calls.clear()
    store.write_run(
        db,
        {"run_id": "late", "suite_hash": SUITE, "role": "student", "method": "kd",
         "student": "student-0.1M", "seed": 9, "status": "failed", "error": "boom"},
        [],
        {},
    )  # fmt: skip
    assert snapshot_suites(db) == {OTHER}  # the other suite's still holds
    data = lb.suite_data(db, [SUITE], by_submitter=True)
    assert live_calls == [(SUITE,)] and "late" in set(data.failed["run_id"])


def test_a_run_written_behind_kdbenchs_back_is_seen(db: Path, live_calls) -> None:
    """A run another tool inserted changes the suite's fingerprint: the snapshot is stale."""
    lb.refresh_snapshots(db)
    live_calls.clear()
    before = lb.suite_data(db, [SUITE], by_submitter=True)
    assert live_calls == []
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO runs (run_id, suite_hash, role, method, student, seed, status) "
        "VALUES ('by-hand', ?, 'student', 'kd', 'student-0.1M', 7, 'failed')",
        [SUITE],
    )
    con.close()
    after = lb.suite_data(db, [SUITE], by_submitter=True)
    assert live_calls == [(SUITE,)]
    kd = after.boards[SUITE].set_index(["method", "student"]).loc[("kd", "student-0.1M")]
    was = before.boards[SUITE].set_index(["method", "student"]).loc[("kd", "student-0.1M")]
    assert kd["failed"] == was["failed"] + 1


def test_another_grouping_or_kdbench_version_reads_live(db: Path, live_calls, monkeypatch) -> None:
    lb.refresh_snapshots(db)  # grouped by submitter, as the app reads
    live_calls.clear()
    lb.suite_data(db, [SUITE])  # pooled (the CLI's board): not what the snapshot holds
    assert live_calls == [(SUITE,)]
    monkeypatch.setattr(lb, "_QUERIES_SHA", "another-kdbench-with-other-sql")
    lb.suite_data(db, [SUITE], by_submitter=True)
    assert live_calls == [(SUITE,), (SUITE,)]


def test_import_and_export_all_leave_current_snapshots(tmp_path: Path, live_calls) -> None:
    merged, suite_hash = appdata.merged_submissions(tmp_path)
    assert snapshot_suites(merged) == {suite_hash}  # each import rebuilt it
    live_calls.clear()
    imported = lb.suite_data(merged, [suite_hash], by_submitter=True)
    assert live_calls == [] and {"Ann", "Bob"} <= set(imported.boards[suite_hash]["submitter"])
    # the public folder carries snapshots computed at export, even where the store has none
    con = duckdb.connect(str(merged))
    con.execute("DELETE FROM board_snapshots")
    con.close()
    rows = export_all(merged, tmp_path / "public")
    assert rows["board_snapshots"] == len(lb.BOARD_PARTS)
    served = lb.suite_data(store.parquet_db(tmp_path / "public"), [suite_hash], by_submitter=True)
    assert live_calls == [(suite_hash,)]  # the export's computation, none when serving
    live = lb.suite_data(merged, [suite_hash], by_submitter=True)
    assert_same(served, live, [suite_hash])


def test_a_schema_6_database_gains_the_snapshots_table(tmp_path: Path) -> None:
    path = tmp_path / "v6.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE board_snapshots")
    con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 6.*`kdbench snapshot --db"):
        store.connect(path, read_only=True).close()
    from kdbench.cli import main

    assert main(["snapshot", "--db", str(path)]) == 0  # what the error says to run
    con = store.connect(path, read_only=True)
    try:
        assert con.execute("SELECT value FROM meta").fetchone()[0] == "7"
        assert con.execute(f"SELECT count(*) FROM {snapshots.TABLE}").fetchone()[0] == 0
    finally:
        con.close()


def test_the_snapshot_command_rebuilds_every_suite(db: Path, tmp_path: Path, capsys) -> None:
    from kdbench.cli import main

    assert main(["snapshot", "--db", str(db)]) == 0
    assert "rebuilt the board snapshots of 2 suites" in capsys.readouterr().out
    assert snapshot_suites(db) == {SUITE, OTHER}
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for bad in (tmp_path / "missing.duckdb", text):
        assert main(["snapshot", "--db", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kdbench: error:") and str(bad) in err and len(err.splitlines()) == 1
    assert text.read_text() == "not a database\n"


def test_the_app_shows_the_same_board_and_compare_from_a_snapshot(
    db: Path, live_calls, monkeypatch
) -> None:
    """The leaderboard and the Compare page's paired test (which reads the samples the
    snapshot does not hold) are the same over a snapshot as computed live."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("KDBENCH_DB", str(db))
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    monkeypatch.setattr("sys.argv", ["app.py"])
    app = str(Path(__file__).resolve().parents[1] / "app.py")

    def shown(page: str) -> list[pd.DataFrame]:
        st.cache_data.clear()
        at = AppTest.from_file(app, default_timeout=60)
        at.query_params.update(
            {"page": page, "a": "fkl · student-0.25M", "b": "sft · student-0.25M"}
        )
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return [d.value for d in at.dataframe]

    live = {page: shown(page) for page in ("Leaderboard", "Compare")}
    assert live_calls
    lb.refresh_snapshots(db)
    live_calls.clear()
    read = {page: shown(page) for page in ("Leaderboard", "Compare")}
    assert live_calls == []
    for page, frames in live.items():
        assert len(read[page]) == len(frames) > 0
        for a, b in zip(read[page], frames, strict=True):
            pd.testing.assert_frame_equal(a, b, obj=page)
    assert any("p (Holm)" in f.columns for f in read["Compare"])
