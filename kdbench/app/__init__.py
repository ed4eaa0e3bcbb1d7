"""The Streamlit leaderboard app of kdbench.

Run with ``kdbench app --db results/kdbench.duckdb`` or ``streamlit run app.py -- --db PATH
[--prices FILE]`` (the checkout's ``app.py`` and the installed ``streamlit_app.py`` both just
call :func:`main`). Without ``--db`` the database path comes from ``$KDBENCH_DB``, else
``results/kdbench.duckdb``; without ``--prices`` the hardware price table comes from
``$KDBENCH_PRICES``, else :data:`kdbench.economics.DEFAULT_PRICES`.

Pages (``st.navigation``, one module each): Leaderboard (ranked table, filters, export),
Pareto (retention vs size, training cost, inference speed), Tasks (per-task drill-down),
Compare (two methods side by side), Economics (break-even of distilling, confidence-routed
cascade) and Run (full provenance of one run). Every control is bound to a URL query
parameter, so a view is a shareable link; ``?page=<title>`` opens a page from any URL, so a
run's link is ``?page=Run&run=<run_id>``.

Modules: ``shell`` (the script: inputs, sidebar, context, navigation, footer), ``inputs``
(``--db`` / ``--prices``), ``data`` (cached read-only loaders), ``context`` (the typed
:class:`~kdbench.app.context.AppContext` every page gets), ``sidebar`` (suite pickers and
filters), ``urls`` (query-parameter binding, the ``page`` parameter, run links),
``navigation`` (the page registry), ``formatting``, ``columns`` (table columns and their
help), ``export`` (CSV / Parquet), and one ``page_<name>`` module per page (plus
``open_track``, the other suites under the leaderboard).

The app only opens the database read-only, one short connection per group of queries, so it
can stay up while ``kdbench run`` is writing; reads are cached for 5 seconds. A database it
cannot read (damaged, truncated, not DuckDB, a directory, a foreign ``meta`` table, an
unknown schema version, another program's file) is one error line naming the file on every
page; odd values in a readable one (NULL names, infinite or NaN scores, negative costs) are
read as missing and named in a warning; a page that still fails shows one line (the
traceback goes to the server log), never a traceback in the page.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Render the app (imported lazily: ``import kdbench.app`` stays cheap for the CLI)."""
    from kdbench.app.shell import main as render

    render()
