"""Tests for kdbench.store against real DuckDB files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from kdbench import store

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = "suite0123456789"


def make_run(run_id: str, **overrides: object) -> dict:
    run = {
        "run_id": run_id,
        "suite_hash": SUITE,
        "role": "student",
        "method": "kd",
        "family": "logit",
        "method_config": {"temperature": 2.0},
        "student": "tiny-student",
        "seed": 0,
        "status": "ok",
        "error": None,
        "started_at": datetime(2024, 5, 1, 12, 0, 0),
        "finished_at": datetime(2024, 5, 1, 12, 5, 0),
        "kdbench_version": "0.1.0",
        "versions": {"torch": "2.4.0"},
        "git_commit": "abc123",
        "hardware": {"gpu": None, "cpus": 2},
    }
    run.update(overrides)
    return run


def make_metrics(acc: float = 0.5) -> list[dict]:
    return [
        {
            "task": "arith",
            "metric": "acc",
            "value": acc,
            "stderr": 0.01,
            "higher_is_better": True,
            "is_primary": True,
        },
        {"task": "arith", "metric": "ppl", "value": 3.5, "higher_is_better": False},
    ]


COSTS = {"train_wall_s": 10.0, "eval_wall_s": 2.0, "total_wall_s": 12.5, "params": 250_000}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "kdbench.duckdb"


def test_connect_creates_parent_and_schema_idempotently(db: Path) -> None:
    for _ in range(2):
        con = store.connect(db)
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        con.close()
        assert {"meta", "suites", "runs", "metrics", "costs"} <= tables
        assert version == [(str(store.SCHEMA_VERSION),)]
    ro = store.connect(db, read_only=True)
    ro.close()


def test_newer_schema_version_is_rejected(db: Path) -> None:
    store.connect(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(99)])
    con.close()
    for read_only in (False, True):
        with pytest.raises(store.StoreError, match="schema version 99"):
            store.connect(db, read_only=read_only)
    with pytest.raises(store.StoreError, match="schema version 99"):
        store.read_runs(db)


def test_read_only_missing_db_is_a_clear_error(db: Path) -> None:
    with pytest.raises(store.StoreError, match="no results database"):
        store.connect(db, read_only=True)
    assert not db.exists()


def test_reads_on_missing_db_are_empty_and_do_not_create_it(db: Path) -> None:
    runs = store.read_runs(db)
    assert runs.empty
    assert list(runs.columns) == list(store.RUN_COLUMNS + store.COST_COLUMNS)
    assert store.read_metrics(db).empty
    suites = store.list_suites(db)
    assert suites.empty and "suite_hash" in suites.columns
    assert not db.exists()


def test_write_suite_upserts_and_keeps_created_at(db: Path) -> None:
    store.write_suite(db, SUITE, "tiny", "leaderboards/tiny.toml", {"tasks": ["arith"]})
    first = store.list_suites(db)
    time.sleep(0.01)
    store.write_suite(db, SUITE, "tiny-renamed", "x.toml", {"tasks": ["arith", "copy"]})
    store.write_suite(db, "other", "other", "o.toml", {})
    suites = store.list_suites(db)
    assert len(suites) == 2
    row = suites.set_index("suite_hash").loc[SUITE]
    assert row["name"] == "tiny-renamed"
    assert row["path"] == "x.toml"
    assert json.loads(row["config"]) == {"tasks": ["arith", "copy"]}
    assert row["created_at"] == first["created_at"].iloc[0]
    assert suites["suite_hash"].iloc[0] == "other"  # newest first


def test_write_run_roundtrip(db: Path) -> None:
    started = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    epoch = 1714564800  # 2024-05-01T12:00:00Z
    store.write_run(
        db, make_run("r1", started_at=started, finished_at=epoch), make_metrics(), COSTS
    )
    store.write_run(db, make_run("r2", suite_hash="elsewhere"), make_metrics(), {})

    runs = store.read_runs(db, SUITE)
    assert list(runs["run_id"]) == ["r1"]
    r = runs.iloc[0]
    assert r["role"] == "student" and r["status"] == "ok" and r["seed"] == 0
    assert json.loads(r["method_config"]) == {"temperature": 2.0}
    assert json.loads(r["hardware"]) == {"cpus": 2, "gpu": None}
    assert r["started_at"] == datetime(2024, 5, 1, 12, 0)  # stored as naive UTC
    assert r["finished_at"] == datetime(2024, 5, 1, 12, 0)
    assert r["params"] == 250_000 and r["total_wall_s"] == 12.5
    assert len(store.read_runs(db)) == 2

    metrics = store.read_metrics(db, SUITE)
    assert len(metrics) == 2
    acc = metrics.set_index("metric").loc["acc"]
    assert acc["value"] == 0.5 and acc["stderr"] == 0.01
    assert bool(acc["is_primary"]) and bool(acc["higher_is_better"])
    ppl = metrics.set_index("metric").loc["ppl"]
    assert not bool(ppl["is_primary"]) and not bool(ppl["higher_is_better"])
    assert metrics["method"].eq("kd").all()

    suites = store.list_suites(db)
    assert suites.empty  # runs do not create suites


def test_write_run_replaces_same_run_id(db: Path) -> None:
    store.write_run(db, make_run("r1"), make_metrics(0.5), COSTS)
    store.write_run(
        db,
        make_run("r1", status="failed", error="OOM"),
        [{"task": "copy", "metric": "acc", "value": 0.1, "is_primary": True}],
        {"params": 7},
    )
    runs = store.read_runs(db)
    assert len(runs) == 1
    assert runs.iloc[0]["status"] == "failed" and runs.iloc[0]["error"] == "OOM"
    assert runs.iloc[0]["params"] == 7
    metrics = store.read_metrics(db)
    assert list(metrics["task"]) == ["copy"]


def test_write_run_is_atomic(db: Path) -> None:
    store.write_run(db, make_run("r1"), make_metrics(0.5), COSTS)
    duplicate = make_metrics(0.9) + [make_metrics(0.9)[0]]  # primary-key violation
    with pytest.raises(store.StoreError, match="could not write run r1"):
        store.write_run(db, make_run("r1", seed=1), duplicate, {"params": 1})
    with pytest.raises(store.StoreError):
        store.write_run(db, make_run("r2"), duplicate, COSTS)
    # the earlier version of r1 is intact, r2 left no trace
    runs = store.read_runs(db)
    assert list(runs["run_id"]) == ["r1"]
    assert runs.iloc[0]["seed"] == 0 and runs.iloc[0]["params"] == 250_000
    assert sorted(store.read_metrics(db)["value"]) == [0.5, 3.5]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (make_run("r1", colour="red"), "unknown keys"),
        (make_run("r1", role="assistant"), "role must be"),
        (make_run("r1", status="running"), "status must be"),
        (make_run(""), "run_id"),
        (make_run("r1", started_at="yesterday"), "ISO timestamp"),
        (make_run("r1", versions="not json"), "JSON text"),
    ],
)
def test_write_run_validates_input(db: Path, run: dict, message: str) -> None:
    with pytest.raises(store.StoreError, match=message):
        store.write_run(db, run, make_metrics(), COSTS)


def test_write_run_rejects_unknown_metric_and_cost_keys(db: Path) -> None:
    with pytest.raises(store.StoreError, match="unknown keys"):
        store.write_run(db, make_run("r1"), [{"task": "a", "metric": "m", "x": 1}], {})
    with pytest.raises(store.StoreError, match="unknown keys"):
        store.write_run(db, make_run("r1"), [], {"gpu_hours": 1.0})


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_lock_conflicts_are_retried_then_reported(db: Path) -> None:
    store.connect(db).close()
    holder = _python(
        f"""
        import time, duckdb
        con = duckdb.connect({str(db)!r})
        print("locked", flush=True)
        time.sleep(1.0)
        con.close()
        """
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.StoreError, match="locked by another process"):
            store.connect(db, read_only=True, timeout=0.2)
        # the holder lets go after ~1 s: the default retry window covers that
        start = time.monotonic()
        store.write_run(db, make_run("r1"), make_metrics(), COSTS)
        assert time.monotonic() - start < store.LOCK_TIMEOUT_S
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""
    assert list(store.read_runs(db)["run_id"]) == ["r1"]


def test_reader_and_writer_processes_run_concurrently(db: Path) -> None:
    """A writer process writes runs in a loop while this process keeps reading."""
    n_runs = 20
    writer = _python(
        f"""
        from kdbench import store
        store.write_suite({str(db)!r}, {SUITE!r}, "tiny", "tiny.toml", {{}})
        for i in range({n_runs}):
            run = {{"run_id": f"run{{i:03d}}", "suite_hash": {SUITE!r}, "role": "student",
                    "method": "kd", "student": "s", "seed": i, "status": "ok"}}
            metrics = [{{"task": t, "metric": "acc", "value": i / 100, "is_primary": True}}
                       for t in ("a", "b", "c")]
            store.write_run({str(db)!r}, run, metrics, {{"params": 1000 + i}})
        print("done", flush=True)
        """
    )
    reads = 0
    deadline = time.monotonic() + 60
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            metrics = store.read_metrics(db, SUITE)
            runs = store.read_runs(db, SUITE)  # read after metrics: a superset of their runs
            store.list_suites(db)
            # every visible run is complete: costs joined and all three metrics present
            assert runs["params"].notna().all()
            per_run = metrics.groupby("run_id").size()
            assert (per_run == 3).all()
            assert set(per_run.index) <= set(runs["run_id"])
            with store.reader(db) as con:  # one snapshot: no run without its metrics
                incomplete = con.execute(
                    "SELECT count(*) FROM runs r WHERE (SELECT count(*) FROM metrics m"
                    " WHERE m.run_id = r.run_id) != 3"
                ).fetchone()
            assert incomplete == (0,)
            reads += 1
        out, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:  # a failed assertion above: do not leave it running
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    assert out.strip() == "done"
    assert reads > 0
    runs = store.read_runs(db, SUITE)
    assert len(runs) == n_runs
    assert sorted(runs["params"]) == [1000 + i for i in range(n_runs)]
    assert len(store.read_metrics(db, SUITE)) == 3 * n_runs


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    """A file written by schema 1 keeps its runs and gains the version 2 columns and table."""
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for ddl in store._TABLES_DDL[:3]:
        con.execute(ddl)
    con.execute(
        """CREATE TABLE costs (run_id VARCHAR PRIMARY KEY, train_wall_s DOUBLE,
        eval_wall_s DOUBLE, total_wall_s DOUBLE, params BIGINT, bytes BIGINT, tokens BIGINT,
        steps INTEGER)"""
    )
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.execute("INSERT INTO costs (run_id, params) VALUES ('old', 7)")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 1.*kdbench run"):
        store.connect(path, read_only=True).close()
    store.write_run(
        path,
        {"run_id": "new", "role": "student", "status": "ok"},
        [],
        {"params": 3, "peak_rss_mb": 512.0},
        [{"task": "t", "doc_id": 0, "correct": 1.0, "confidence": 0.9}],
    )
    runs = store.read_runs(path).set_index("run_id")
    assert runs.loc["old", "params"] == 7 and pd.isna(runs.loc["old", "peak_rss_mb"])
    assert runs.loc["new", "peak_rss_mb"] == 512.0
    assert store.read_samples(path, run_id="new").correct.tolist() == [1.0]
    con = store.connect(path, read_only=True)
    assert con.execute("SELECT value FROM meta").fetchone()[0] == str(store.SCHEMA_VERSION)
    con.close()


def test_a_version_2_database_gains_the_budget_columns(tmp_path):
    """A file written by schema 2 keeps its runs (their new budget columns NULL: not
    recorded) and takes runs with ``sequences`` and ``live_teacher_flops``."""
    path = tmp_path / "v2.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    for ddl in (*store._TABLES_DDL[:3], store._TABLES_DDL[4]):
        con.execute(ddl)
    v2_costs = ", ".join(f"{c} DOUBLE" for c in store.COST_COLUMNS[:16])
    con.execute(f"CREATE TABLE costs (run_id VARCHAR PRIMARY KEY, {v2_costs})")
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.execute("INSERT INTO costs (run_id, steps) VALUES ('old', 200)")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 2.*kdbench run"):
        store.connect(path, read_only=True).close()
    store.write_run(
        path,
        {"run_id": "new", "role": "student", "status": "ok"},
        [],
        {"steps": 150, "sequences": 150 * 64, "live_teacher_flops": 1.5e9},
    )
    runs = store.read_runs(path).set_index("run_id")
    assert runs.loc["old", "steps"] == 200 and pd.isna(runs.loc["old", "sequences"])
    assert runs.loc["new", "sequences"] == 150 * 64
    assert runs.loc["new", "live_teacher_flops"] == 1.5e9


def test_a_version_2_database_gains_the_quantisation_columns(tmp_path):
    """A file written by schema 2 (no quantised runs) is refused read-only with how to upgrade,
    upgraded in place by a write: its runs read as full precision (``quant`` NULL), and a
    quantised run linked to one of them can be stored."""
    path = tmp_path / "v2.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    for table, column in (
        ("runs", "quant"),
        ("runs", "parent_run_id"),
        ("costs", "quantized_params"),
    ):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.execute("INSERT INTO costs (run_id, params, bytes) VALUES ('old', 7, 28)")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 2.*kdbench run"):
        store.connect(path, read_only=True).close()
    quantised = {"run_id": "old-int8", "role": "student", "status": "ok", "quant": "int8"}
    store.write_run(
        path, {**quantised, "parent_run_id": "old"}, [], {"bytes": 9, "quantized_params": 6}
    )
    runs = store.read_runs(path).set_index("run_id")
    assert pd.isna(runs.loc["old", "quant"]) and pd.isna(runs.loc["old", "parent_run_id"])
    assert runs.loc["old", "bytes"] == 28 and pd.isna(runs.loc["old", "quantized_params"])
    assert runs.loc["old-int8", ["quant", "parent_run_id"]].tolist() == ["int8", "old"]
    assert runs.loc["old-int8", "quantized_params"] == 6
    # a quantised run names its full-precision run
    with pytest.raises(store.StoreError, match="quant must be a scheme name with a parent_run_id"):
        store.write_run(path, {**quantised, "run_id": "orphan"}, [], {})
    assert "orphan" not in set(store.read_runs(path).run_id)


SAMPLE = {"task": "arith", "doc_id": 0, "correct": 1.0, "confidence": 0.9}


@pytest.mark.parametrize(
    ("metrics", "costs", "samples", "message"),
    [
        ([{"task": "arith", "metric": "acc", "value": "high"}], {}, [], "arith/acc: value"),
        ([{"task": "arith", "metric": "acc", "value": [1]}], {}, [], "must be a number"),
        ([{"task": "arith", "metric": "acc", "stderr": object()}], {}, [], "stderr"),
        (["acc"], {}, [], "must be a dict"),
        ([], {"params": "big"}, [], "costs: params"),
        ([], {"params": 1.5}, [], "whole number"),
        ([], {"tokens": float("inf")}, [], "whole number"),
        ([], {"train_wall_s": "1s"}, [], "train_wall_s"),
        ([], {}, [{**SAMPLE, "doc_id": "seven"}], "doc_id"),
        ([], {}, [{**SAMPLE, "doc_id": 1.5}], "whole number"),
        ([], {}, [{**SAMPLE, "doc_id": float("nan")}], "whole number"),
        ([], {}, [{"doc_id": 0, "correct": 1.0}], "'task' is required"),
        ([], {}, [{"task": "arith"}], "'doc_id' is required"),
        ([], {}, [{**SAMPLE, "correct": "yes"}], "correct"),
    ],
)
def test_bad_values_raise_store_error_and_write_nothing(
    db: Path, metrics: list, costs: dict, samples: list, message: str
) -> None:
    """A bad metric value, doc id or missing task is the store's own error, and the earlier
    version of the run stays whole."""
    store.write_run(db, make_run("r1"), make_metrics(0.5), COSTS, [SAMPLE])
    with pytest.raises(store.StoreError, match=message):
        store.write_run(db, make_run("r1", seed=3), metrics, costs, samples)
    with pytest.raises(store.StoreError):
        store.write_run(db, make_run("r1", seed="three"), [], {})
    runs = store.read_runs(db)
    assert list(runs["run_id"]) == ["r1"] and runs.iloc[0]["seed"] == 0
    assert sorted(store.read_metrics(db)["value"]) == [0.5, 3.5]
    assert len(store.read_samples(db)) == 1


def test_numpy_and_bool_values_are_stored(db: Path) -> None:
    import numpy as np

    sample = {
        "task": "arith",
        "doc_id": np.int64(3),
        "correct": True,
        "confidence": np.float32(0.5),
    }
    store.write_run(db, make_run("r1", seed=np.int64(2)), [], {"params": np.int64(2**60)}, [sample])
    runs = store.read_runs(db)
    assert runs.iloc[0]["seed"] == 2 and runs.iloc[0]["params"] == 2**60
    assert store.read_samples(db).iloc[0][["doc_id", "correct"]].tolist() == [3, 1.0]


def _foreign(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (run_id VARCHAR, total DOUBLE)")
    con.close()


def _bad_version(value: str):
    def make(path: Path) -> None:
        store.connect(path).close()
        con = duckdb.connect(str(path))
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [value])
        con.close()

    return make


def _other_meta(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('app', 'someone else')")
    con.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_foreign, "not a kdbench results database.*orders"),
        (_other_meta, "0 schema_version rows"),
        (_bad_version("two"), "'two', not an integer"),
        (_bad_version(" "), "not an integer"),
        (_bad_version("-1"), "unknown schema version -1"),
        (_bad_version("1" * 30), "not an integer"),
        (_bad_version("0"), "unknown schema version 0"),
        (
            _bad_version(str(store.SCHEMA_VERSION + 1)),
            f"schema version {store.SCHEMA_VERSION + 1}, but this kdbench only",
        ),
        (lambda p: p.write_bytes(b""), "not a valid DuckDB database"),
        (lambda p: p.write_text("hello\n"), "not a valid DuckDB database"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_foreign_and_damaged_databases_are_refused_untouched(
    tmp_path: Path, make, message: str
) -> None:
    path = tmp_path / "other.duckdb"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    for attempt in (
        lambda: store.check_writable(path),
        lambda: store.connect(path),
        lambda: store.connect(path, read_only=True),
        lambda: store.write_suite(path, SUITE, "s", "s.toml", {}),
        lambda: store.write_run(path, make_run("r1"), make_metrics(), COSTS),
        lambda: store.read_runs(path),
    ):
        with pytest.raises(store.StoreError, match=message):
            attempt()
    assert (path.read_bytes() if path.is_file() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.duckdb"]  # no WAL either


def test_an_empty_duckdb_database_is_taken(tmp_path: Path) -> None:
    """A DuckDB file without any table (nothing to damage) becomes a kdbench database."""
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    store.check_writable(path)
    store.write_suite(path, SUITE, "s", "s.toml", {})
    assert list(store.list_suites(path)["suite_hash"]) == [SUITE]


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    store.check_writable(tmp_path / "a" / "b" / "new.duckdb")  # a folder it can create
    assert not list(tmp_path.iterdir())
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "x.duckdb", tmp_path / "file" / "a" / "x.duckdb"):
        with pytest.raises(store.StoreError, match="is a file, not a folder"):
            store.check_writable(bad)
        with pytest.raises(store.StoreError, match="is a file, not a folder"):
            store.write_suite(bad, SUITE, "s", "s.toml", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    store.check_writable(":memory:x")


def test_a_version_3_database_gains_the_sampling_columns(tmp_path):
    """A schema-3 file is upgraded in place: its runs read with no sampling recorded, and an
    on-policy run's sampling seconds, tokens and FLOPs are stored."""
    path = tmp_path / "v3.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    for column in ("generation_s", "generated_tokens", "generation_flops"):
        con.execute(f"ALTER TABLE costs DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.execute("INSERT INTO costs (run_id, steps) VALUES ('old', 200)")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 3.*kdbench run"):
        store.connect(path, read_only=True).close()
    store.write_run(
        path,
        {"run_id": "new", "role": "student", "status": "ok"},
        [],
        {"generation_s": 1.5, "generated_tokens": 3000, "generation_flops": 6e6},
    )
    runs = store.read_runs(path).set_index("run_id")
    assert pd.isna(runs.loc["old", "generation_s"]) and runs.loc["old", "steps"] == 200
    assert runs.loc["new", ["generated_tokens", "generation_flops"]].tolist() == [3000, 6e6]


def test_a_version_4_database_gains_the_provenance_table(tmp_path):
    """A schema-4 file (no ``provenance`` table) is refused read-only with the upgrade hint,
    then upgraded in place by a writer: its runs stay, and the empty table is there."""
    path = tmp_path / "v4.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE provenance")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 4.*kdbench run"):
        store.connect(path, read_only=True).close()
    store.write_run(path, {"run_id": "new", "role": "student", "status": "ok"}, [], {})
    assert sorted(store.read_runs(path)["run_id"]) == ["new", "old"]
    con = store.connect(path, read_only=True)
    try:
        assert con.execute("SELECT value FROM meta").fetchone()[0] == str(store.SCHEMA_VERSION)
        assert con.execute("SELECT count(*) FROM provenance").fetchone()[0] == 0
        columns = [r[0] for r in con.execute("DESCRIBE provenance").fetchall()]
        assert columns == ["run_id", "submitter", "organisation", "bundle_sha256", "imported_at"]
    finally:
        con.close()


def test_a_version_5_database_gains_the_bundles_table(tmp_path):
    """A schema-5 file (no ``bundles`` table) is refused read-only with the upgrade hint, then
    upgraded in place by a writer: its runs and provenance stay, and the empty table is there."""
    path = tmp_path / "v5.duckdb"
    store.connect(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE bundles")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.execute("INSERT INTO runs (run_id, role, status) VALUES ('old', 'student', 'ok')")
    con.execute("INSERT INTO provenance (run_id, submitter) VALUES ('old', 'Ann')")
    con.close()
    with pytest.raises(store.StoreError, match="old schema version 5.*kdbench run"):
        store.connect(path, read_only=True).close()
    store.write_run(path, {"run_id": "new", "role": "student", "status": "ok"}, [], {})
    assert sorted(store.read_runs(path)["run_id"]) == ["new", "old"]
    con = store.connect(path, read_only=True)
    try:
        assert con.execute("SELECT value FROM meta").fetchone()[0] == str(store.SCHEMA_VERSION)
        assert con.execute("SELECT submitter FROM provenance").fetchall() == [("Ann",)]
        assert con.execute("SELECT count(*) FROM bundles").fetchone()[0] == 0
        columns = [r[0] for r in con.execute("DESCRIBE bundles").fetchall()]
        assert columns == [
            "bundle_sha256", "submitter", "organisation", "contact", "imported_at", "manifest",
            "checker",
        ]  # fmt: skip
    finally:
        con.close()
