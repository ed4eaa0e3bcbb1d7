"""URL state: every control is bound to a query parameter under its key (``bind=QP``), the
``page`` parameter names the page, and a run's page has a relative, shareable link."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import streamlit as st

from kdbench import leaderboard as lb

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage

QP = "query-params"  # every control's value lives in the URL under its key
PAGE_PARAM = "page"
_SHOWN = "_kdbench_page"  # session state: the page the last run showed


def run_url(run_id: object) -> str | None:
    """The run page's relative URL (a shareable link; it opens the Run page from any page)."""
    if lb.is_missing(run_id):
        return None
    return f"?{PAGE_PARAM}=Run&run={quote(str(run_id), safe='')}"


def unbound_query_params() -> dict[str, list[str]]:
    """The current query parameters, every value of a repeated key, but those of widgets
    already drawn in this session (their key is in ``st.session_state``): Streamlit refuses to
    set those directly, and they keep their values anyway."""
    return {k: st.query_params.get_all(k) for k in st.query_params if k not in st.session_state}


def follow_page_param(current: StreamlitPage, pages: Mapping[str, StreamlitPage]) -> None:
    """Make ``?page=<title>`` and the page shown agree; call it before any widget is drawn.

    A ``page`` parameter naming another page wins over the URL path, so ``?page=Run&run=<id>``
    opens that run from any page's URL: the app switches there, keeping the other parameters.
    Only right after the menu changed the page does the menu win over a left-over ``page``.
    Then the shown page's title is written to ``page``: every view's URL names its page.
    """
    wanted = st.query_params.get(PAGE_PARAM)
    shown_before = st.session_state.get(_SHOWN)
    menu_moved = shown_before is not None and shown_before != current.title
    if wanted in pages and wanted != current.title and not menu_moved:
        st.switch_page(pages[wanted], query_params=unbound_query_params())
    st.session_state[_SHOWN] = current.title
    if wanted != current.title:
        st.query_params[PAGE_PARAM] = current.title
