"""The pages: their registry, and ``st.navigation`` over them with the ``page`` query
parameter followed (:func:`kdbench.app.urls.follow_page_param`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from kdbench.app import (
    page_compare,
    page_economics,
    page_leaderboard,
    page_pareto,
    page_run,
    page_submissions,
    page_tasks,
)
from kdbench.app.context import AppContext
from kdbench.app.data import STORE_ERRORS, one_line, unreadable
from kdbench.app.urls import follow_page_param

_log = logging.getLogger(__name__)
UNFORESEEN = "could not be drawn from the data in"
"""The words of the line shown instead of a traceback when a page, or the context every page
reads, fails on something unforeseen (the traceback is logged in full)."""


def show_unforeseen(what: str, db: Path, exc: Exception) -> None:
    """Log ``exc`` with its traceback and show one error line naming ``what`` and ``db``."""
    _log.exception("%s failed on %s", what, db)
    st.error(f"{what} {UNFORESEEN} {db}: {one_line(exc)}")


@dataclass(frozen=True)
class PageSpec:
    """One page: its title (also its ``?page=`` value), URL path and render function."""

    title: str
    url_path: str
    render: Callable[[AppContext], None]


PAGES = (  # the first is the default page, served at the app's root
    PageSpec("Leaderboard", "leaderboard", page_leaderboard.render),
    PageSpec("Pareto", "pareto", page_pareto.render),
    PageSpec("Tasks", "tasks", page_tasks.render),
    PageSpec("Compare", "compare", page_compare.render),
    PageSpec("Economics", "economics", page_economics.render),
    PageSpec("Run", "run", page_run.render),
    PageSpec("Submissions", "submissions", page_submissions.render),
)


class Navigation:
    """``st.navigation`` over :data:`PAGES`, with the ``page`` query parameter followed.

    Made before any widget is drawn (so a switch to the page ``?page=`` names keeps every
    parameter); the chosen page is rendered afterwards by :meth:`run`, with the context the
    sidebar's widgets gave.
    """

    def __init__(self) -> None:
        self._ctx: AppContext | None = None
        pages = {
            spec.title: st.Page(
                partial(self._render, spec),
                title=spec.title,
                url_path=spec.url_path,
                default=i == 0,
            )
            for i, spec in enumerate(PAGES)
        }
        self.page: StreamlitPage = st.navigation(list(pages.values()), position="top")
        follow_page_param(self.page, pages)

    @property
    def title(self) -> str:
        """The chosen page's title."""
        return self.page.title

    def run(self, ctx: AppContext) -> None:
        """Render the chosen page with ``ctx``."""
        self._ctx = ctx
        self.page.run()

    def _render(self, spec: PageSpec) -> None:
        """Render a page; a read that fails (the file changed under the app, or is damaged
        in a way the first read did not reach) or an unforeseen value shows one error line
        in the page instead of a traceback (which goes to the server's log)."""
        ctx = self._ctx
        if ctx is None:  # pragma: no cover - st.navigation runs a page only via run()
            raise RuntimeError("Navigation.run() renders the page")
        try:
            spec.render(ctx)
        except STORE_ERRORS as exc:
            st.error(unreadable(ctx.db, exc))
        except Exception as exc:  # st.stop / st.rerun are BaseExceptions: they pass
            show_unforeseen(f"The {spec.title} page", ctx.db, exc)
