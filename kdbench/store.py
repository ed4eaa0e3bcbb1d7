"""DuckDB results store for kdbench.

One DuckDB file (``results/kdbench.duckdb`` by default) holds every suite, run, metric and
cost. The only writer is the ``kdbench run`` driver process; the Streamlit app and the CLI
only read.

Concurrency model
-----------------
DuckDB lets one process open a file read-write, and a read-only connection cannot be opened
while another process holds the file read-write (nor the other way round). To let the
leaderboard app read while a benchmark is writing, nobody keeps the file open:

* the writer opens a connection per write (:func:`write_suite`, :func:`write_run`) and closes
  it right after the transaction commits;
* readers open a ``read_only`` connection per query and close it right away;
* both sides retry with exponential backoff (about :data:`LOCK_TIMEOUT_S` seconds) while the
  other process holds the file, then raise :class:`StoreError`.

Schema
------
Versioned by ``meta.schema_version`` (:data:`SCHEMA_VERSION`). Tables are created idempotently
when a read-write connection opens, and an older file is upgraded in place then (version 2
added cost columns: resume step, peak memory, teacher passes, FLOPs, device-hours, queueing
time, inference speed; and the ``samples`` table of per-question results; version 3 the
budget audit's ``sequences`` and ``live_teacher_flops``, and ``runs.quant`` and
``runs.parent_run_id``, a quantised evaluation stored as its own run linked to its
full-precision one, and ``costs.quantized_params``; version 4 what an on-policy run's sampling
cost: ``generation_s``, ``generated_tokens``, ``generation_flops``; version 5 the
``provenance`` table: who submitted each run that ``kdbench import`` merged from a result
bundle, :mod:`kdbench.bundle`; version 6 the ``bundles`` table: per imported bundle its
submitter, manifest and the checker's summary). A read-only
connection refuses an older file with a message that says how to upgrade it. Opening a database written by a newer kdbench raises
:class:`StoreError`. Timestamps are stored as naive UTC. JSON columns are stored as JSON text
and come back from the ``read_*`` functions as ``str`` (use :func:`json.loads`).
"""

from __future__ import annotations

import json
import math
import operator
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from kdbench.disk_cache import creation_problem

SCHEMA_VERSION = 7
DEFAULT_DB = Path("results/kdbench.duckdb")
LOCK_TIMEOUT_S = 10.0
"""How long :func:`connect` keeps retrying while another process holds the database file."""

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "suite_hash",
    "role",
    "method",
    "family",
    "method_config",
    "student",
    "seed",
    "status",
    "error",
    "started_at",
    "finished_at",
    "kdbench_version",
    "versions",
    "git_commit",
    "hardware",
    # schema 3: a quantised evaluation (kdbench.quantize) is its own run: its scheme ('int8',
    # 'int4'; NULL for full precision) and the full-precision run it was quantised from
    "quant",
    "parent_run_id",
)
METRIC_COLUMNS: tuple[str, ...] = (
    "task",
    "metric",
    "value",
    "stderr",
    "higher_is_better",
    "is_primary",
    "aggregation",  # schema 2: how lm-eval aggregates the metric over questions ("mean", ...)
)
COST_COLUMNS: tuple[str, ...] = (
    "train_wall_s",
    "eval_wall_s",
    "total_wall_s",
    "params",
    "bytes",
    "tokens",
    "steps",
    # schema 2
    "resumed_from",
    "peak_rss_mb",
    "teacher_forwards",
    "train_flops",
    "teacher_flops",
    "device_hours",
    "queue_s",
    "infer_tokens_per_s",
    "infer_latency_ms",
    # schema 3: the budget audit
    "sequences",
    "live_teacher_flops",
    # schema 3: parameters stored in the quantised format (NULL for full precision)
    "quantized_params",
    # schema 4: sampling the student during training (on-policy methods; 0 for the others)
    "generation_s",
    "generated_tokens",
    "generation_flops",
)
SAMPLE_COLUMNS: tuple[str, ...] = ("task", "doc_id", "correct", "confidence")
ROLES = ("teacher", "student")
STATUSES = ("ok", "failed")

_JSON_RUN_COLUMNS = frozenset({"method_config", "versions", "hardware"})
_TS_RUN_COLUMNS = frozenset({"started_at", "finished_at"})
_INT_COST_COLUMNS = frozenset(
    {
        "params",
        "bytes",
        "tokens",
        "steps",
        "resumed_from",
        "teacher_forwards",
        "sequences",
        "quantized_params",
        "generated_tokens",
    }
)

_META_DDL = "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
# schema 5: per run merged by ``kdbench import`` (kdbench.bundle), who submitted it and the
# SHA-256 of the bundle's manifest.json; runs made here by ``kdbench run`` have no row
_PROVENANCE_DDL = """CREATE TABLE IF NOT EXISTS provenance (
        run_id VARCHAR PRIMARY KEY, submitter VARCHAR, organisation VARCHAR,
        bundle_sha256 VARCHAR, imported_at TIMESTAMP)"""
# schema 6: per bundle ``kdbench import`` merged (keyed by the SHA-256 of its manifest.json),
# who submitted it, its manifest and the checker's summary lines (what ``kdbench verify`` says)
_BUNDLES_DDL = """CREATE TABLE IF NOT EXISTS bundles (
        bundle_sha256 VARCHAR PRIMARY KEY, submitter VARCHAR, organisation VARCHAR,
        contact VARCHAR, imported_at TIMESTAMP, manifest JSON, checker VARCHAR)"""
# schema 7: per suite, the results of its board queries (kdbench.snapshots): derived from
# the other tables, rebuilt by kdbench's writers, used when its fingerprint still matches
_SNAPSHOTS_DDL = """CREATE TABLE IF NOT EXISTS board_snapshots (
        suite_hash VARCHAR, part VARCHAR, fingerprint VARCHAR, written_at TIMESTAMP,
        data BLOB)"""
_TABLES_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS suites (
        suite_hash VARCHAR PRIMARY KEY, name VARCHAR, path VARCHAR, config JSON,
        created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, suite_hash VARCHAR, role VARCHAR, method VARCHAR,
        family VARCHAR, method_config JSON, student VARCHAR, seed INTEGER, status VARCHAR,
        error VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, kdbench_version VARCHAR,
        versions JSON, git_commit VARCHAR, hardware JSON, quant VARCHAR,
        parent_run_id VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id VARCHAR, task VARCHAR, metric VARCHAR, value DOUBLE, stderr DOUBLE,
        higher_is_better BOOLEAN, is_primary BOOLEAN, aggregation VARCHAR,
        PRIMARY KEY (run_id, task, metric))""",
    """CREATE TABLE IF NOT EXISTS costs (
        run_id VARCHAR PRIMARY KEY, train_wall_s DOUBLE, eval_wall_s DOUBLE,
        total_wall_s DOUBLE, params BIGINT, bytes BIGINT, tokens BIGINT, steps INTEGER,
        resumed_from INTEGER, peak_rss_mb DOUBLE, teacher_forwards BIGINT,
        train_flops DOUBLE, teacher_flops DOUBLE, device_hours DOUBLE, queue_s DOUBLE,
        infer_tokens_per_s DOUBLE, infer_latency_ms DOUBLE, sequences BIGINT,
        live_teacher_flops DOUBLE, quantized_params BIGINT, generation_s DOUBLE,
        generated_tokens BIGINT, generation_flops DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS samples (
        run_id VARCHAR, task VARCHAR, doc_id INTEGER, correct DOUBLE, confidence DOUBLE,
        PRIMARY KEY (run_id, task, doc_id))""",
    _PROVENANCE_DDL,
    _BUNDLES_DDL,
    _SNAPSHOTS_DDL,
)
_TABLES = ("meta", "suites", "runs", "metrics", "costs", "samples")
ALL_TABLES: tuple[str, ...] = (*_TABLES, "provenance", "bundles", "board_snapshots")
"""Every table of a results database: what ``kdbench export --all`` writes, one
``<table>.parquet`` each, and what a Parquet source (:func:`parquet_connection`) reads."""
# Upgrades, applied in order inside the schema transaction: _MIGRATIONS[v] takes v to v + 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE metrics ADD COLUMN IF NOT EXISTS aggregation VARCHAR",
        *(
            f"ALTER TABLE costs ADD COLUMN IF NOT EXISTS {name} {kind}"
            for name, kind in (
                ("resumed_from", "INTEGER"),
                ("peak_rss_mb", "DOUBLE"),
                ("teacher_forwards", "BIGINT"),
                ("train_flops", "DOUBLE"),
                ("teacher_flops", "DOUBLE"),
                ("device_hours", "DOUBLE"),
                ("queue_s", "DOUBLE"),
                ("infer_tokens_per_s", "DOUBLE"),
                ("infer_latency_ms", "DOUBLE"),
            )
        ),
    ),
    2: (  # the budget audit (sequences, the teacher's live forward FLOPs) and quantised runs
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS sequences BIGINT",
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS live_teacher_flops DOUBLE",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS quant VARCHAR",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS parent_run_id VARCHAR",
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS quantized_params BIGINT",
    ),
    3: (  # on-policy sampling during training
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS generation_s DOUBLE",
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS generated_tokens BIGINT",
        "ALTER TABLE costs ADD COLUMN IF NOT EXISTS generation_flops DOUBLE",
    ),
    4: (_PROVENANCE_DDL,),  # who submitted the runs merged from result bundles
    5: (_BUNDLES_DDL,),  # the bundles merged, with their manifest and checker output
    6: (_SNAPSHOTS_DDL,),  # the board queries' results per suite (kdbench.snapshots)
}

# Substrings of DuckDB errors raised while another connection holds the file.
_LOCK_MARKERS = (
    "could not set lock",
    "conflicting lock",
    "different configuration than existing connections",
)


# Same as datetime.UTC, which needs Python 3.11 (this package supports 3.10).
_UTC = timezone(timedelta(0))


class StoreError(Exception):
    """A results-store problem with a message meant for the user."""


# --------------------------------------------------------------------------- connections


def _is_lock_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return any(marker in msg for marker in _LOCK_MARKERS)


def _open_with_retry(path: Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` that retries with jittered exponential backoff on lock conflicts."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise StoreError(f"cannot open results database {path}: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                mode = "read-only" if read_only else "read-write"
                raise StoreError(
                    f"results database {path} is locked by another process; gave up opening "
                    f"it {mode} after {timeout:.0f}s. Only one process may write it at a time "
                    f"(is another `kdbench run` active, or a tool holding the file open?). "
                    f"DuckDB said: {exc}"
                ) from exc
            time.sleep(min(delay * (0.5 + random.random()), remaining))
            delay = min(delay * 2, 0.1)


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])


# The columns each kdbench table has had since schema 1 (later versions only add columns):
# a file whose tables lack them is damaged or not kdbench's.
_REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "meta": frozenset({"key", "value"}),
    "suites": frozenset({"suite_hash", "name", "path", "config", "created_at"}),
    "runs": frozenset(RUN_COLUMNS) - {"quant", "parent_run_id"},
    "metrics": frozenset({"run_id", *METRIC_COLUMNS} - {"aggregation"}),
    "costs": frozenset({"run_id", *COST_COLUMNS[:7]}),
    "samples": frozenset({"run_id", *SAMPLE_COLUMNS}),
}


def _not_ours(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} is not a kdbench results database ({why}); kdbench refuses to touch it: "
        "give another --db (a new file, or one written by `kdbench run`)"
    )


def _damaged(path: Path, exc: Exception) -> StoreError:
    return StoreError(
        f"results database {path} is damaged (truncated or overwritten?): {exc}; restore it "
        "from a backup or give another --db"
    )


def _stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """The kdbench schema version of the open database, or None when it has no tables at all
    (a new or empty database: kdbench may create its schema there).

    Raises :class:`StoreError` for a database that is not kdbench's (tables but no kdbench
    ``meta`` table, a ``meta`` table of other columns or without ``schema_version``) or is
    damaged (a version that is not an integer >= 1, a kdbench table without its columns).
    Only reads.
    """
    try:
        rows = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        ).fetchall()
    except duckdb.Error as exc:
        raise _damaged(path, exc) from exc
    columns: dict[str, set[str]] = {}
    others: set[str] = set()
    for schema, table, column in rows:
        if schema == "main" and table in _REQUIRED_COLUMNS:
            columns.setdefault(table, set()).add(column)
        else:
            others.add(f"{schema}.{table}" if schema != "main" else table)
    if not columns and not others:
        return None
    if "meta" not in columns:
        shown = sorted(others | set(columns))
        more = f", ... ({len(shown)} in all)" if len(shown) > 5 else ""
        raise _not_ours(path, f"it has tables {', '.join(shown[:5])}{more} but no `meta` table")
    for table, have in columns.items():
        missing = sorted(_REQUIRED_COLUMNS[table] - have)
        if missing:
            raise _not_ours(path, f"its `{table}` table lacks the columns {', '.join(missing)}")
    try:
        found = con.execute(
            "SELECT CAST(value AS VARCHAR) FROM meta WHERE CAST(key AS VARCHAR) = 'schema_version'"
        ).fetchall()
    except duckdb.IOException as exc:
        raise _damaged(path, exc) from exc
    except duckdb.Error as exc:
        raise _not_ours(path, f"its `meta` table cannot be read: {exc}") from exc
    if len(found) != 1:
        raise _not_ours(path, f"its `meta` table has {len(found)} schema_version rows, not 1")
    text = found[0][0]
    if text is None or not re.fullmatch(r"-?[0-9]{1,9}", text.strip()):
        raise StoreError(
            f"results database {path} has schema version {text!r}, not an integer: it is "
            "damaged or not kdbench's; give another --db"
        )
    version = int(text)
    if version < 1:
        raise StoreError(
            f"results database {path} has unknown schema version {version} (kdbench's are 1 "
            f"to {SCHEMA_VERSION}): it is damaged or not kdbench's; give another --db"
        )
    return version


def _check_version(version: int | None, path: Path) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"results database {path} has schema version {version}, but this kdbench only "
            f"understands version {SCHEMA_VERSION}: upgrade kdbench or use another --db"
        )


def _check_readable(version: int | None, path: Path) -> None:
    _check_version(version, path)
    if version is not None and version < SCHEMA_VERSION:
        raise StoreError(
            f"results database {path} has old schema version {version} (need "
            f"{SCHEMA_VERSION}): `kdbench snapshot --db {path}` (or any `kdbench run --db "
            f"{path}`) upgrades it in place"
        )


@contextmanager
def transaction(
    con: duckdb.DuckDBPyConnection, fail: Callable[[duckdb.Error], Exception]
) -> Iterator[None]:
    """One transaction on ``con``: committed when the block ends, rolled back on any error
    (nothing half-written); a DuckDB error leaves as ``fail(error)`` (a one-line error of the
    caller's kind), any other exception as itself."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException as exc:
        con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):
            raise fail(exc) from exc
        raise


def _ensure_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Check that the database is kdbench's (or empty) and of a known schema version, then
    create the tables if missing (idempotent) or upgrade an older file. Nothing is written
    to a database that fails the check."""
    con.execute("BEGIN TRANSACTION")
    try:
        version = _stored_version(con, path)  # first: refuse a foreign file untouched
        _check_version(version, path)
        con.execute(_META_DDL)
        if version is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        else:
            for step in range(version, SCHEMA_VERSION):  # upgrade an older file in place
                for sql in _MIGRATIONS[step]:
                    con.execute(sql)
            con.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
            )
        for ddl in _TABLES_DDL:
            con.execute(ddl)
        con.execute("COMMIT")
    except BaseException as exc:
        con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):
            raise StoreError(f"cannot set up results database {path}: {exc}") from exc
        raise


def _check_path(path: Path, read_only: bool) -> None:
    """The file itself: an existing path must be a file; a new one needs a folder that
    exists or can be created. Creates nothing."""
    if path.is_dir():
        raise StoreError(f"results database {path} is a folder, not a DuckDB file")
    if path.exists():
        if not path.is_file():
            raise StoreError(f"results database {path} is not a regular file")
        return
    if read_only:
        raise StoreError(f"no results database at {path}; run `kdbench run <suite.toml>` first")
    problem = creation_problem(path.parent)
    if problem:
        raise StoreError(f"cannot create results database {path}: {problem}")


def check_writable(db_path: str | Path) -> None:
    """Raise :class:`StoreError` unless ``db_path`` can take kdbench's results: a kdbench
    database of a version this kdbench reads or upgrades, an empty DuckDB database, or a new
    file in a folder that exists or can be created. Writes nothing (an existing file is
    opened read-only): what ``kdbench run`` checks before Ray starts."""
    if is_memory(db_path):
        return
    if is_parquet(db_path):
        raise StoreError(
            f"{parquet_source(db_path)} is a read-only Parquet export: nothing writes to it"
        )
    path = Path(db_path)
    _check_path(path, read_only=False)
    if not path.exists():
        return
    con = _open_with_retry(path, True, LOCK_TIMEOUT_S)
    try:
        _check_version(_stored_version(con, path), path)
    finally:
        con.close()


def is_memory(db_path: str | Path) -> bool:
    """``:memory:NAME`` is a named in-memory DuckDB database, shared by the connections of one
    process while at least one of them is open (used by conformance checks and tests)."""
    return str(db_path).startswith(":memory:")


PARQUET_PREFIX = "parquet:"
"""A database "path" ``parquet:DIR_OR_URL`` names a folder of Parquet files, one per table
(``kdbench export --all``), served read-only (:func:`parquet_connection`)."""
_REMOTE = re.compile(r"^(s3|s3a|gs|gcs|r2|https?|hf)://", re.IGNORECASE)
_PARQUET_REQUIRED = ("suites", "runs", "metrics", "costs", "samples")


def parquet_db(source: str | Path) -> str:
    """The database "path" that names the Parquet folder or URL ``source``."""
    return PARQUET_PREFIX + str(source)


def is_parquet(db_path: str | Path) -> bool:
    """Whether ``db_path`` names a Parquet source (:func:`parquet_db`)."""
    return str(db_path).startswith(PARQUET_PREFIX)


def parquet_source(db_path: str | Path) -> str:
    """The folder or URL of a Parquet source. ``pathlib.Path`` folds the ``//`` of a URL to
    one slash (``Path("parquet:https://h/x")`` prints ``parquet:https:/h/x``): put it back."""
    source = str(db_path).removeprefix(PARQUET_PREFIX)
    return re.sub(r"^([A-Za-z][A-Za-z0-9]*):/(?!/)", r"\1://", source)


def is_remote(source: str) -> bool:
    """Whether a Parquet source is a URL DuckDB reads through its ``httpfs`` extension
    (``s3://``, ``gs://``, ``r2://``, ``http(s)://``, ``hf://``)."""
    return bool(_REMOTE.match(source))


def load_httpfs(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Load DuckDB's ``httpfs`` extension into ``con`` (installing it first when it is not
    there yet: that downloads it once from DuckDB's extension repository); raises
    :class:`StoreError` with one line when it cannot be had (offline, no extension)."""
    try:
        con.execute("LOAD httpfs")
        return
    except duckdb.Error:
        pass
    try:
        con.execute("INSTALL httpfs")
        con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        first = next((x.strip() for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
        raise StoreError(
            f"cannot read {source}: DuckDB's httpfs extension, needed for remote Parquet, "
            f"could not be installed or loaded ({first}); install it where there is network "
            "(python -c \"import duckdb; duckdb.sql('INSTALL httpfs')\") or serve a local folder"
        ) from exc


def parquet_connection(source: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose tables are views over the Parquet files of
    ``source`` (a folder, or an ``s3://`` / ``https://`` URL of one, read through
    ``httpfs``): ``<table>.parquet`` per table of :data:`ALL_TABLES`. Each view has at least
    the current schema's columns (a file of an older schema reads NULL for the newer ones);
    the results tables must be there, ``meta``, ``provenance`` and ``bundles`` may be missing
    (a bundle folder of ``kdbench export``: read as empty). Nothing is ever written to the
    source. Raises :class:`StoreError` with one line when it cannot be read."""
    remote = is_remote(source)
    if not remote and not Path(source).is_dir():
        why = "is not a folder" if Path(source).exists() else "no such folder"
        raise StoreError(
            f"Parquet source {source}: {why}; give a folder `kdbench export --all` wrote"
        )
    con = duckdb.connect(":memory:")
    try:
        if remote:
            load_httpfs(con, source)
        con.execute("CREATE SCHEMA kdbench_empty")
        con.execute("SET schema = 'kdbench_empty'")
        con.execute(_META_DDL)
        for ddl in _TABLES_DDL:
            con.execute(ddl)
        con.execute("SET schema = 'main'")
        base = source.rstrip("/")
        for table in ALL_TABLES:
            target = f"{base}/{table}.parquet"
            if not remote and not Path(target).is_file():
                found = False
            else:
                literal = "'" + target.replace("'", "''") + "'"
                try:
                    con.execute(
                        f"CREATE VIEW {table} AS SELECT * FROM kdbench_empty.{table} "
                        f"UNION ALL BY NAME SELECT * FROM read_parquet({literal})"
                    )
                    found = True
                except duckdb.Error as exc:
                    if table in _PARQUET_REQUIRED and (not remote or "404" not in str(exc)):
                        first = next(
                            (x.strip() for x in str(exc).splitlines() if x.strip()), "error"
                        )
                        raise StoreError(f"cannot read {target}: {first}") from exc
                    found = False
            if not found:
                if table in _PARQUET_REQUIRED:
                    raise StoreError(
                        f"Parquet source {source} has no {table}.parquet; give a folder "
                        "`kdbench export --all` (or `kdbench export`) wrote"
                    )
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM kdbench_empty.{table}")
        version = con.execute(
            "SELECT max(TRY_CAST(value AS INTEGER)) FROM meta WHERE key = 'schema_version'"
        ).fetchone()[0]
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"Parquet source {source} has schema version {version}, but this kdbench only "
                f"understands version {SCHEMA_VERSION}: upgrade kdbench"
            )
    except BaseException:
        con.close()
        raise
    return con


def connect(
    db_path: str | Path, read_only: bool = False, *, timeout: float = LOCK_TIMEOUT_S
) -> duckdb.DuckDBPyConnection:
    """Open the results database; the caller must ``close()`` it soon.

    Read-write: creates the parent directory and the schema (idempotent). Read-only: the file
    must exist (its schema may be missing when nothing was written yet). Either way, retries
    for up to ``timeout`` seconds while another process holds the file, then raises
    :class:`StoreError`; also raises it, before anything is written, for a path that is a
    folder, a file that is not a DuckDB database (empty, text, truncated), a database that is
    not kdbench's (tables but no kdbench ``meta`` table) and a schema version that is not an
    integer from 1 to :data:`SCHEMA_VERSION`.
    """
    if is_parquet(db_path):
        if not read_only:
            raise StoreError(
                f"{parquet_source(db_path)} is a read-only Parquet export: nothing writes to it"
            )
        return parquet_connection(parquet_source(db_path))
    path = Path(db_path)
    if is_memory(db_path):  # a named in-memory database: lives while a connection holds it
        con = duckdb.connect(str(db_path))
        _ensure_schema(con, path)
        return con
    _check_path(path, read_only)
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of results database {path}: {exc}") from exc
    con = _open_with_retry(path, read_only, timeout)
    try:
        if read_only:
            _check_readable(_stored_version(con, path), path)
        else:
            _ensure_schema(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _schema_only_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory database with the empty schema: queries on it return typed, empty frames."""
    con = duckdb.connect(":memory:")
    con.execute(_META_DDL)
    for ddl in _TABLES_DDL:
        con.execute(ddl)
    return con


@contextmanager
def reader(db_path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a short-lived read-only connection for a few queries, closing it on exit.

    When the database does not exist yet (or has no tables), yields an in-memory database
    with the empty schema instead, so the same SQL returns empty, correctly-typed results.
    Never creates the file.
    """
    path = Path(db_path)
    if is_memory(db_path) or is_parquet(db_path):
        con = connect(db_path, read_only=is_parquet(db_path))
    else:
        con = connect(path, read_only=True) if path.exists() else _schema_only_connection()
    try:
        if not all(_has_table(con, t) for t in _TABLES):
            con.close()
            con = _schema_only_connection()
        yield con
    finally:
        con.close()


def _query_df(db_path: str | Path, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    with reader(db_path) as con:
        return con.execute(sql, list(params)).df()


# --------------------------------------------------------------------------- value coercion


def _now_utc() -> datetime:
    return datetime.now(_UTC).replace(tzinfo=None)


def _ts(value: Any, column: str) -> datetime | None:
    """datetime / ISO string / epoch seconds -> naive UTC datetime."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=_UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError) as exc:
            raise StoreError(f"{column}: not a valid epoch timestamp: {value!r}") from exc
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise StoreError(f"{column}: not an ISO timestamp: {value!r}") from exc
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return value
    raise StoreError(f"{column}: expected a datetime, ISO string or epoch seconds, got {value!r}")


def _json(value: Any, column: str) -> str | None:
    """Python object -> JSON text; a ``str`` is taken as JSON text already (and validated)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise StoreError(f"{column}: a str value must be JSON text, got {value!r}") from exc
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _opt(value: Any, kind: type, column: str = "value") -> Any:
    """``value`` as ``kind`` (int or float or str; None stays None), or :class:`StoreError`
    naming ``column``: an int column takes only whole numbers, a number column no text."""
    if value is None:
        return None
    if kind is str:
        return str(value)
    if isinstance(value, (str, bytes)):
        raise StoreError(f"{column}: must be a number, got {value!r}")
    if kind is int:
        try:
            return operator.index(value)  # int, numpy integers: exact
        except TypeError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"{column}: must be a number, got {value!r}") from exc
    if kind is float:
        return number
    if not math.isfinite(number) or number != int(number):
        raise StoreError(f"{column}: must be a whole number, got {value!r}")
    return int(number)


def _check_keys(given: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    if not isinstance(given, Mapping):
        raise StoreError(f"{what}: must be a dict, got {type(given).__name__} {given!r:.80}")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise StoreError(f"{what}: unknown keys {unknown}; allowed: {list(allowed)}")


def _run_row(run: Mapping[str, Any]) -> list[Any]:
    _check_keys(run, RUN_COLUMNS, "run")
    if not run.get("run_id"):
        raise StoreError("run: 'run_id' is required")
    if run.get("role") not in ROLES:
        raise StoreError(
            f"run {run['run_id']}: role must be one of {ROLES}, got {run.get('role')!r}"
        )
    if run.get("status") not in STATUSES:
        raise StoreError(
            f"run {run['run_id']}: status must be one of {STATUSES}, got {run.get('status')!r}"
        )
    quant = run.get("quant")
    if quant is not None and not (isinstance(quant, str) and quant and run.get("parent_run_id")):
        raise StoreError(
            f"run {run['run_id']}: quant must be a scheme name with a parent_run_id (the "
            f"full-precision run), got quant={quant!r}, parent_run_id={run.get('parent_run_id')!r}"
        )
    row: list[Any] = []
    for col in RUN_COLUMNS:
        value = run.get(col)
        if col in _JSON_RUN_COLUMNS:
            value = _json(value, col)
        elif col in _TS_RUN_COLUMNS:
            value = _ts(value, col)
        elif col == "seed":
            value = _opt(value, int, f"run {run['run_id']}: seed")
        elif value is not None:
            value = str(value)
        row.append(value)
    return row


def _metric_row(run_id: str, metric: Mapping[str, Any]) -> list[Any]:
    _check_keys(metric, METRIC_COLUMNS, f"run {run_id} metric")
    for key in ("task", "metric"):
        if not metric.get(key):
            raise StoreError(f"run {run_id} metric: {key!r} is required ({dict(metric)})")
    where = f"run {run_id} metric {metric['task']}/{metric['metric']}"
    return [
        run_id,
        str(metric["task"]),
        str(metric["metric"]),
        _opt(metric.get("value"), float, f"{where}: value"),
        _opt(metric.get("stderr"), float, f"{where}: stderr"),
        bool(metric.get("higher_is_better", True)),
        bool(metric.get("is_primary", False)),
        _opt(metric.get("aggregation"), str),
    ]


def _cost_row(run_id: str, costs: Mapping[str, Any]) -> list[Any]:
    _check_keys(costs, COST_COLUMNS, f"run {run_id} costs")
    return [run_id] + [
        _opt(costs.get(c), int if c in _INT_COST_COLUMNS else float, f"run {run_id} costs: {c}")
        for c in COST_COLUMNS
    ]


def _sample_row(run_id: str, sample: Mapping[str, Any]) -> list[Any]:
    _check_keys(sample, SAMPLE_COLUMNS, f"run {run_id} sample")
    for key in ("task", "doc_id"):
        if sample.get(key) is None or sample.get(key) == "":
            raise StoreError(f"run {run_id} sample: {key!r} is required ({dict(sample)})")
    where = f"run {run_id} sample {sample['task']}/{sample['doc_id']!r}"
    return [
        run_id,
        str(sample["task"]),
        _opt(sample["doc_id"], int, f"{where}: doc_id"),
        _opt(sample.get("correct"), float, f"{where}: correct"),
        _opt(sample.get("confidence"), float, f"{where}: confidence"),
    ]


# --------------------------------------------------------------------------- writes


def write_suite(
    db_path: str | Path, suite_hash: str, name: str, path: str, config: dict[str, Any]
) -> None:
    """Insert or update a suite. Re-writing an existing suite keeps its ``created_at``."""
    con = connect(db_path)
    try:
        con.execute(
            """INSERT INTO suites (suite_hash, name, path, config, created_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (suite_hash) DO UPDATE SET
                 name = excluded.name, path = excluded.path, config = excluded.config""",
            [suite_hash, name, str(path), _json(config, "config"), _now_utc()],
        )
    finally:
        con.close()


def write_run(
    db_path: str | Path,
    run: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    costs: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write one run with its metrics, costs and per-question samples in one transaction.

    ``run`` has keys from :data:`RUN_COLUMNS` (``run_id``, ``role`` and ``status`` required;
    missing keys are NULL; JSON columns take Python objects or JSON text; timestamps take
    datetimes, ISO strings or epoch seconds). ``metrics`` are dicts with keys from
    :data:`METRIC_COLUMNS` (``higher_is_better`` defaults to True, ``is_primary`` to False).
    ``costs`` has keys from :data:`COST_COLUMNS`. ``samples`` are dicts with keys from
    :data:`SAMPLE_COLUMNS`: per evaluated question, whether the model got it right (``correct``
    in [0, 1]) and how confident it was (``confidence``, a probability). An existing run with the same ``run_id``
    is replaced. On any error the transaction is rolled back: nothing is half-written.
    """
    run_row = _run_row(run)
    run_id = run_row[0]
    metric_rows = [_metric_row(run_id, m) for m in metrics]
    cost_row = _cost_row(run_id, costs)
    sample_rows = [_sample_row(run_id, x) for x in samples]

    con = connect(db_path)
    try:
        with transaction(con, lambda exc: StoreError(f"could not write run {run_id}: {exc}")):
            # the board snapshot of its suite (and of the replaced row's) no longer holds
            con.execute(
                "DELETE FROM board_snapshots WHERE suite_hash = ? "
                "OR suite_hash IN (SELECT suite_hash FROM runs WHERE run_id = ?)",
                [run_row[1], run_id],
            )
            for table in ("metrics", "costs", "samples", "runs"):
                # table names come from the literal tuple above, never from input
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            placeholders = ", ".join("?" * len(RUN_COLUMNS))
            con.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders})", run_row
            )
            if metric_rows:
                con.executemany(
                    "INSERT INTO metrics (run_id, task, metric, value, stderr, higher_is_better,"
                    " is_primary, aggregation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    metric_rows,
                )
            if sample_rows:
                con.executemany(
                    "INSERT INTO samples (run_id, task, doc_id, correct, confidence)"
                    " VALUES (?, ?, ?, ?, ?)",
                    sample_rows,
                )
            con.execute(
                f"INSERT INTO costs (run_id, {', '.join(COST_COLUMNS)})"
                f" VALUES ({', '.join('?' * (len(COST_COLUMNS) + 1))})",
                cost_row,
            )
    finally:
        con.close()


# --------------------------------------------------------------------------- reads

_RUNS_SQL = f"""
SELECT {", ".join("r." + c for c in RUN_COLUMNS)}, {", ".join("c." + c for c in COST_COLUMNS)}
FROM runs r LEFT JOIN costs c USING (run_id)
WHERE ?::VARCHAR IS NULL OR r.suite_hash = ?
ORDER BY r.started_at NULLS LAST, r.run_id
"""

_METRICS_SQL = """
SELECT m.run_id, r.suite_hash, r.role, r.method, r.family, r.student, r.seed, r.status,
       m.task, m.metric, m.value, m.stderr, m.higher_is_better, m.is_primary, m.aggregation
FROM metrics m JOIN runs r USING (run_id)
WHERE ?::VARCHAR IS NULL OR r.suite_hash = ?
ORDER BY m.run_id, m.task, m.metric
"""

_SUITES_SQL = """
SELECT s.suite_hash, s.name, s.path, s.config, s.created_at,
       count(r.run_id) AS n_runs,
       count(r.run_id) FILTER (WHERE r.status = 'ok') AS n_ok,
       count(r.run_id) FILTER (WHERE r.status = 'failed') AS n_failed
FROM suites s LEFT JOIN runs r USING (suite_hash)
GROUP BY s.suite_hash, s.name, s.path, s.config, s.created_at
ORDER BY s.created_at DESC, s.suite_hash
"""


def read_runs(db_path: str | Path, suite_hash: str | None = None) -> pd.DataFrame:
    """All runs (optionally of one suite) joined with their costs, one row per run.

    Columns: :data:`RUN_COLUMNS` then :data:`COST_COLUMNS`. Empty if the database is missing.
    """
    return _query_df(db_path, _RUNS_SQL, [suite_hash, suite_hash])


def ok_run_ids(db_path: str | Path, suite_hash: str) -> set[str]:
    """The ids of the runs of ``suite_hash`` stored with status ok (empty without a database):
    what a rerun of the suite skips."""
    runs = read_runs(db_path, suite_hash)
    return set(runs.loc[runs.status == "ok", "run_id"]) if len(runs) else set()


def read_metrics(db_path: str | Path, suite_hash: str | None = None) -> pd.DataFrame:
    """All metrics (optionally of one suite), with the run's identifying columns.

    Columns: run_id, suite_hash, role, method, family, student, seed, status, then
    :data:`METRIC_COLUMNS`. Empty if the database is missing.
    """
    return _query_df(db_path, _METRICS_SQL, [suite_hash, suite_hash])


_SAMPLES_SQL = """
SELECT s.run_id, s.task, s.doc_id, s.correct, s.confidence
FROM samples s JOIN runs r USING (run_id)
WHERE (?::VARCHAR IS NULL OR r.suite_hash = ?) AND (?::VARCHAR IS NULL OR s.run_id = ?)
ORDER BY s.run_id, s.task, s.doc_id
"""


def read_samples(
    db_path: str | Path, suite_hash: str | None = None, run_id: str | None = None
) -> pd.DataFrame:
    """Per-question results (columns: run_id, then :data:`SAMPLE_COLUMNS`), optionally of one
    suite and/or one run. Empty if the database is missing."""
    return _query_df(db_path, _SAMPLES_SQL, [suite_hash, suite_hash, run_id, run_id])


def list_suites(db_path: str | Path) -> pd.DataFrame:
    """Suites, newest first, with run counts (n_runs, n_ok, n_failed)."""
    return _query_df(db_path, _SUITES_SQL)
