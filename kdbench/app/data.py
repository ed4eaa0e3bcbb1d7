"""Cached reads: every query goes through one short read-only connection (the app never
blocks ``kdbench run``), and results are reused for 5 s."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kdbench import economics
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


@st.cache_data(ttl=60, show_spinner=False)
def load_prices(path: str) -> economics.PriceTable:
    """The price table (cached 60 s); raises PriceError on a malformed file."""
    return economics.load_prices(path)
