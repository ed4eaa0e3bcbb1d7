"""Cached reads: every query goes through one short read-only connection (the app never
blocks ``kdbench run``), and results are reused for 5 s; and what a read of a damaged or
foreign database can raise, turned into one line for the page (:func:`unreadable`)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from kdbench import economics, stats, store
from kdbench import leaderboard as lb


@st.cache_data(ttl=5, show_spinner=False)
def load_suites(db: str) -> pd.DataFrame:
    """Suites, newest first (cached 5 s)."""
    return lb.suites(db)


@st.cache_data(ttl=5, show_spinner=False)
def load_data(db: str, hashes: tuple[str, ...], prices_path: str | None) -> lb.SuiteData:
    """Boards, task info and failed runs of these suites through one short read-only
    connection, priced with the table at ``prices_path`` (None: no prices) (cached 5 s)."""
    prices = load_prices(prices_path) if prices_path else None
    return lb.suite_data(db, hashes, prices=prices, by_submitter=True)


@st.cache_data(ttl=5, show_spinner=False)
def load_compare_test(
    db: str,
    suite_hash: str,
    prices_path: str | None,
    a: tuple[str, str],
    b: tuple[str, str],
    family: tuple[tuple[str, str], ...],
) -> dict[str, object]:
    """Compare's paired test of groups ``a`` and ``b`` of a suite, Holm-adjusted over every
    pair of ``family`` (:func:`kdbench.stats.compare_test`) (cached 5 s)."""
    data = load_data(db, (suite_hash,), prices_path)
    paired = data.paired.get(suite_hash)  # a board read from its snapshot has none
    if paired is None:
        paired = load_paired(db, suite_hash, data.tasks)
    return stats.compare_test(paired, a, b, family)


@st.cache_data(ttl=5, show_spinner=False)
def load_paired(db: str, suite_hash: str, tasks: pd.DataFrame) -> stats.PairedSamples:
    """A suite's per-question samples laid out for paired tests
    (:func:`kdbench.leaderboard.suite_paired_samples`) (cached 5 s)."""
    return lb.suite_paired_samples(db, suite_hash, tasks)


_SUBMISSIONS_SQL = """
WITH p AS (
    SELECT p.bundle_sha256, any_value(p.submitter) AS submitter,
           any_value(p.organisation) AS organisation, min(p.imported_at) AS imported_at,
           count(*) AS runs,
           string_agg(DISTINCT r.method, ', ' ORDER BY r.method) AS methods,
           string_agg(DISTINCT CAST(r.seed AS VARCHAR), ', ' ORDER BY CAST(r.seed AS VARCHAR))
               FILTER (WHERE r.role = 'student') AS seeds
    FROM provenance p LEFT JOIN runs r USING (run_id)
    GROUP BY p.bundle_sha256
)
SELECT bundle_sha256, coalesce(b.submitter, p.submitter) AS submitter,
       coalesce(b.organisation, p.organisation) AS organisation,
       coalesce(b.imported_at, p.imported_at) AS imported_at,
       coalesce(p.runs, 0) AS runs, p.methods, p.seeds, b.contact,
       CAST(b.manifest AS VARCHAR) AS manifest, b.checker
FROM bundles b FULL OUTER JOIN p USING (bundle_sha256)
ORDER BY imported_at NULLS LAST, bundle_sha256
"""
_BUNDLE_RUNS_SQL = """
SELECT r.run_id, r.suite_hash, r.role, r.method, r.student, r.seed, r.status, r.quant
FROM provenance p JOIN runs r USING (run_id)
WHERE p.bundle_sha256 = ?
ORDER BY r.role DESC, r.method, r.student, r.seed NULLS LAST, r.run_id
"""


@st.cache_data(ttl=5, show_spinner=False)
def load_submissions(db: str) -> pd.DataFrame:
    """The bundles merged by ``kdbench import``, first imported first: bundle_sha256,
    submitter, organisation, imported_at, runs (that it added), methods, seeds, contact,
    manifest (JSON text) and checker (the verify summary stored at import; None for bundles
    imported before schema 6, known from ``provenance`` only) (cached 5 s)."""
    with store.reader(db) as con:
        return con.execute(_SUBMISSIONS_SQL).df()


@st.cache_data(ttl=5, show_spinner=False)
def load_bundle_runs(db: str, bundle_sha256: str) -> pd.DataFrame:
    """The runs one imported bundle added (cached 5 s)."""
    with store.reader(db) as con:
        return con.execute(_BUNDLE_RUNS_SQL, [bundle_sha256]).df()


@st.cache_data(ttl=60, show_spinner=False)
def load_prices(path: str) -> economics.PriceTable:
    """The price table (cached 60 s); raises PriceError on a malformed file."""
    return economics.load_prices(path)


# What reading a results database can raise: the store's own error, DuckDB's (a damaged or
# foreign file: IO, binder or catalog errors), and the OS's (a directory, no permission).
STORE_ERRORS: tuple[type[BaseException], ...] = (store.StoreError, duckdb.Error, OSError)
# ... and, where the database is first opened, what the store raises today on a schema
# version that is not an integer (int() of the ``meta`` value)
OPEN_ERRORS: tuple[type[BaseException], ...] = (*STORE_ERRORS, ValueError, TypeError)

_KDBENCH_TABLES = frozenset(store.ALL_TABLES)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def unreadable(db: Path, exc: BaseException) -> str:
    """One line for the page: the database cannot be read, naming the file and the cause."""
    if isinstance(exc, (store.StoreError, duckdb.Error)):  # "IO Error: ...", "Binder Error: ..."
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        cause = lines[0] if lines else type(exc).__name__
        if str(db) in cause and isinstance(exc, store.StoreError):  # names the file already
            return cause
    else:
        cause = one_line(exc)
    return f"Cannot read the results database {db}: {cause}"


def foreign_tables(db: Path) -> list[str]:
    """The tables of a DuckDB file that holds no kdbench ``meta`` table (another program's
    database), sorted; empty when it has the ``meta`` table or no tables at all."""
    import duckdb

    # duckdb's own connection: store.connect refuses such a file itself (StoreError)
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = {r[0] for r in con.execute(_TABLES_SQL).fetchall()}
    finally:
        con.close()
    return [] if "meta" in names else sorted(names - _KDBENCH_TABLES)


_TABLES_SQL = "SELECT table_name FROM information_schema.tables"
