"""The app's inputs: ``--db`` and ``--prices`` from the script arguments, else the
environment, else the defaults."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kdbench import economics, store


def args_from_argv(argv: list[str]) -> argparse.Namespace:
    """``--db`` and ``--prices`` from the script arguments."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db", default=None)
    parser.add_argument("--prices", default=None)
    args, _ = parser.parse_known_args(argv)
    return args


def db_path_from_args(argv: list[str]) -> Path:
    """``--db`` from the script arguments, else ``$KDBENCH_DB``, else the default path."""
    return Path(args_from_argv(argv).db or os.environ.get("KDBENCH_DB") or store.DEFAULT_DB)


def prices_path_from_args(argv: list[str]) -> Path:
    """``--prices``, else ``$KDBENCH_PRICES``, else the shipped example price table."""
    given = args_from_argv(argv).prices or os.environ.get("KDBENCH_PRICES")
    return Path(given) if given else economics.DEFAULT_PRICES
