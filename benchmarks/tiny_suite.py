"""Benchmark: wall time of the tiny suite (every method, two students, three seeds, the int8
rows) on this machine, first cold (no cached teacher, signals or generations), then with the
teacher cached. Target (issue 12): cold within 15 minutes on a 2-core machine.

    python benchmarks/tiny_suite.py [--suite leaderboards/tiny.toml]

Each run is a real ``kdbench run`` in a subprocess, with its own empty cache and database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS_S = {"no cached teacher": 15 * 60, "cached teacher": 15 * 60}


def timed_run(suite: str, db: Path, cache: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kdbench.cli",
            "run",
            suite,
            "--db",
            str(db),
            "--cache",
            str(cache),
            "--force",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="leaderboards/tiny.toml")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        figures = {
            "no cached teacher": timed_run(args.suite, Path(tmp) / "a" / "kdbench.duckdb", cache),
            "cached teacher": timed_run(args.suite, Path(tmp) / "b" / "kdbench.duckdb", cache),
        }
    print(f"machine: {os.cpu_count()} CPUs; suite {args.suite}")
    for name, seconds in figures.items():
        target = TARGETS_S[name]
        verdict = "ok" if seconds <= target else "OVER"
        print(
            f"{name:>18}: {seconds / 60:5.2f} min  (target {target / 60:.0f} min, "
            f"{seconds / target:.2f} of it: {verdict})"
        )
    print(json.dumps({k: round(v, 1) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
