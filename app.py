"""Streamlit entry point of the kdbench leaderboard (the app itself is :mod:`kdbench.app`).

Run with ``streamlit run app.py -- --db results/kdbench.duckdb [--prices FILE]`` (or
``kdbench app``, which runs the installed ``kdbench/app/streamlit_app.py``). Without ``--db``
the database path comes from ``$KDBENCH_DB``, else ``results/kdbench.duckdb``; without
``--prices`` the price table comes from ``$KDBENCH_PRICES``, else the shipped default.
"""

from kdbench.app import main

main()
