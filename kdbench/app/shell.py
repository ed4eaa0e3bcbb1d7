"""The app's script body, once per rerun: page config, inputs, the sidebar, the typed
context, the navigation, the chosen page and the footer."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from kdbench import economics, store
from kdbench.app.context import AppContext, make_context
from kdbench.app.data import (
    OPEN_ERRORS,
    STORE_ERRORS,
    foreign_tables,
    load_data,
    load_prices,
    load_suites,
    unreadable,
)
from kdbench.app.formatting import RUN_HINT
from kdbench.app.inputs import db_path_from_args, prices_path_from_args
from kdbench.app.navigation import Navigation, show_unforeseen
from kdbench.app.sidebar import board_filters, suite_picker


def read_suites(db: Path) -> pd.DataFrame:
    """The database's suites; stops the run with a hint when it has none (or is missing:
    the app never creates it), and with one error line naming the file when it cannot be
    read (damaged, truncated, not a DuckDB file, a directory, a foreign ``meta`` table, an
    unknown or malformed schema version) or is another program's DuckDB database."""
    parquet = store.is_parquet(db)  # a folder or URL of Parquet files: read-only views
    try:
        suites = load_suites(str(db)) if parquet or db.exists() else pd.DataFrame()
        foreign = foreign_tables(db) if suites.empty and db.exists() and not parquet else []
    except OPEN_ERRORS as exc:
        st.error(unreadable(db, exc))
        st.stop()
    if foreign:
        st.error(
            f"{db} is not a kdbench results database: it has no kdbench `meta` table, and "
            f"holds other tables ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''})."
            " Point --db at the file `kdbench run` writes."
        )
        st.stop()
    if suites.empty:
        st.info(f"No results in `{db}` yet. Run `{RUN_HINT}` to create a leaderboard.")
        st.stop()
    return suites


def read_prices(path: Path) -> economics.PriceTable | None:
    """The price table, or None (said so) when it cannot be read."""
    try:
        return load_prices(str(path))
    except economics.PriceError as exc:
        st.error(f"Price table ignored: {exc}")
        return None


def build_context(
    db: Path, suites: pd.DataFrame, prices: economics.PriceTable | None, prices_path: Path
) -> AppContext:
    """Draw the sidebar and the suite's banners and read the chosen suite: the context every
    page gets."""
    suite, teacher = suite_picker(suites)
    if suite["synthetic"]:
        st.warning(
            f"SYNTHETIC DATA: suite {suite['label']} holds generated runs for benchmarking the "
            "app. They are not real results."
        )
    priced_with = str(prices_path) if prices is not None else None
    try:
        data = load_data(str(db), (suite["suite_hash"],), priced_with)
        board = data.boards[suite["suite_hash"]]
    except STORE_ERRORS as exc:
        st.error(unreadable(db, exc))
        st.stop()
    except Exception as exc:  # an unforeseen value: one line, the traceback in the log
        show_unforeseen(f"Suite {suite['label']}", db, exc)
        st.stop()
    notes = data.notes.get(suite["suite_hash"], ())
    if notes:
        st.warning(
            f"Odd values in suite {suite['label']} (the database may be damaged, or written "
            "by another tool): " + "; ".join(notes) + "."
        )
    if board.empty:
        st.info(f"No successful runs in suite {suite['label']} yet. Run `{RUN_HINT}`.")
    return make_context(
        db,
        suites,
        suite,
        data,
        teacher=teacher,
        filters=board_filters(board, suite["suite_hash"]),
        prices=prices,
        prices_path=prices_path,
    )


def main() -> None:
    """Render the app."""
    st.set_page_config(page_title="kdbench leaderboard", layout="wide")
    st.title("kdbench leaderboard")
    argv = sys.argv[1:]
    db = db_path_from_args(argv)
    prices_path = prices_path_from_args(argv)
    suites = read_suites(db)
    prices = read_prices(prices_path)
    nav = Navigation()  # before any widget: following ?page= keeps every parameter
    ctx = build_context(db, suites, prices, prices_path)
    if not ctx.has_runs and nav.title not in ("Run", "Submissions"):
        st.stop()
    nav.run(ctx)
    st.caption(f"Database: `{db}` · prices: `{prices_path}` · data refreshes every 5 s.")
