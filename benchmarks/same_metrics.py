"""Compare every stored metric of two results databases run by the same suite (before and after
a change that must not move results): ``python benchmarks/same_metrics.py A.duckdb B.duckdb``.

Runs are matched by (role, method, student, seed), not by run id or suite hash (both change
with the code version or the suite's identity); metrics by (task, metric). Prints how many are
bit-identical and every one that differs or is missing on one side; exits 1 if any does."""

from __future__ import annotations

import sys

from kdbench import store

KEY = ["role", "method", "student", "seed", "task", "metric"]


def main(a: str, b: str) -> int:
    ma = store.read_metrics(a)
    mb = store.read_metrics(b)
    ma, mb = (m[m.status == "ok"].set_index(KEY)["value"] for m in (ma, mb))
    both = ma.index.intersection(mb.index)
    same = (ma.loc[both] == mb.loc[both]) | (ma.loc[both].isna() & mb.loc[both].isna())
    print(f"{int(same.sum())} of {len(both)} metrics identical ({a} vs {b})")
    for key in both[~same.to_numpy()]:
        print(f"DIFFERS {key}: {ma.loc[key]!r} vs {mb.loc[key]!r}")
    for key in ma.index.difference(mb.index):
        print(f"ONLY IN {a}: {key}")
    for key in mb.index.difference(ma.index):
        print(f"ONLY IN {b}: {key}")
    return 0 if same.all() and len(ma) == len(mb) == len(both) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
