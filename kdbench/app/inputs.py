"""The app's inputs: ``--db`` (or ``--parquet``) and ``--prices`` from the script arguments,
else the environment, else the defaults."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kdbench import economics, store


def args_from_argv(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--prices`` from the script arguments."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db", default=None)
    parser.add_argument("--parquet", default=None)
    parser.add_argument("--prices", default=None)
    args, _ = parser.parse_known_args(argv)
    return args


def db_path_from_args(argv: list[str]) -> Path:
    """``--parquet DIR_OR_URL`` (served read-only: :func:`kdbench.store.parquet_db`), else
    ``--db``, else ``$KDBENCH_PARQUET``, else ``$KDBENCH_DB``, else the default path."""
    args = args_from_argv(argv)
    if args.parquet:
        return Path(store.parquet_db(args.parquet))
    if args.db:
        return Path(args.db)
    if os.environ.get("KDBENCH_PARQUET"):
        return Path(store.parquet_db(os.environ["KDBENCH_PARQUET"]))
    return Path(os.environ.get("KDBENCH_DB") or store.DEFAULT_DB)


def prices_path_from_args(argv: list[str]) -> Path:
    """``--prices``, else ``$KDBENCH_PRICES``, else the shipped example price table."""
    given = args_from_argv(argv).prices or os.environ.get("KDBENCH_PRICES")
    return Path(given) if given else economics.DEFAULT_PRICES
