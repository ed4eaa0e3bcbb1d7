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
    return lb.suite_data(db, hashes, prices=prices)


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
    return stats.compare_test(data.paired[suite_hash], a, b, family)


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
