"""Time the leaderboard app over 100,000 SYNTHETIC runs.

    python benchmarks/app_100k.py [--db PATH] [--runs N] [--suites K]

Fills a separate DuckDB file (default ``results/app_100k_synthetic.duckdb``; it refuses any
file holding a suite whose name does not start with ``SYNTHETIC``, so real results are never
touched or mixed) with generated runs: K suites named ``SYNTHETIC-<i>``, each with a teacher
and N / K student runs (methods x students x seeds), two tasks with a primary and a
secondary metric each, every cost column, 1% failed runs, and per-question samples for the
teacher and a few students. The rows go in through DuckDB bulk inserts from pandas frames
into the schema ``kdbench.store`` creates; nothing here is a real result.

Then it renders the app with Streamlit's AppTest (the same script the server runs, in this
process) and prints the wall time of ``AppTest.run()`` for:

* the first render in a fresh process: Python and Streamlit imports, empty caches, the
  newest suite's leaderboard (25,000 runs by default);
* a one-line app through the same harness, for scale (AppTest's own cost per session);
* the first render of a new session with empty caches, as when someone opens the app on a
  running server;
* a filter change: five methods picked in the sidebar.

first with the boards computed live from the runs (the database as the bulk insert left it),
then again, in a new process, after building every suite's board snapshot
(:mod:`kdbench.snapshots`), as ``kdbench import`` and ``kdbench run`` leave a database; the
build's own time is printed in between (``--render-only`` times a database as it is). Every run is on its suite's budget (as verified
bundles are) but for 5 a suite, which the budget audit names.

``--submitters N`` adds a provenance row per run, as if N groups had imported them
(``make bench-app`` runs 1,000,000 runs from 20 submitters, target 1 s). Target on the
2-core development machine: under ``--target`` seconds (default 2) each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdbench import store  # noqa: E402
from kdbench.leaderboard import SYNTHETIC_PREFIX, refresh_snapshots  # noqa: E402

DEFAULT_DB = ROOT / "results" / "app_100k_synthetic.duckdb"
TASKS = (("syn_arith", "exact_match"), ("syn_choice", "acc"))
GPU = json.dumps(
    {
        "platform": "synthetic",
        "machine": "x86_64",
        "cpu_count": 16,
        "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_count": 1,
    }
)
CPU = json.dumps({"platform": "synthetic", "machine": "x86_64", "cpu_count": 2})


def guard(path: Path) -> None:
    """Refuse a database that holds anything but synthetic suites; delete a synthetic one."""
    if not path.exists():
        return
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM suites").fetchall()]
    except duckdb.Error:
        names = ["(not a kdbench database)"]
    finally:
        con.close()
    real = [n for n in names if not str(n).startswith(SYNTHETIC_PREFIX)]
    if real:
        sys.exit(f"app_100k: {path} holds non-synthetic suites {real[:3]}; use another --db")
    path.unlink()


def frames(runs: int, n_suites: int, submitters: int = 0, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The generated rows of every table, as pandas frames; with ``submitters``, a
    ``provenance`` row per run (schema 5), as if each run came in a bundle of one of them."""
    rng = np.random.default_rng(seed)
    per_suite = runs // n_suites
    n_methods, n_students = 25, 10
    n_seeds = max(1, per_suite // (n_methods * n_students))
    methods = [f"syn_method_{i:02d}" for i in range(n_methods)]
    families = ["logit", "feature", "attention", "chain_of_thought", "baseline"]
    student_params = np.geomspace(5e6, 5e8, n_students).round().astype(np.int64)
    now = pd.Timestamp("2026-01-01")
    suites, run_rows = [], []
    for s in range(n_suites):
        h = f"5y{s:014x}"
        config = {
            "name": f"{SYNTHETIC_PREFIX}-{s}",
            "synthetic": True,
            "teacher": {"name": "SYNTHETIC-teacher-1B"},
            "budget": {"steps": 1000 * (s + 1), "batch_size": 64},
            "data": {"kind": "synthetic"},
        }
        suites.append(
            (h, config["name"], "synthetic", json.dumps(config), now + pd.Timedelta(minutes=s))
        )
        m = np.repeat(np.arange(n_methods), n_students * n_seeds)
        k = np.tile(np.repeat(np.arange(n_students), n_seeds), n_methods)
        sd = np.tile(np.arange(n_seeds), n_methods * n_students)
        ids = [f"syn{s}-{i:07d}" for i in range(len(m))]
        run_rows.append(
            pd.DataFrame(
                {
                    "run_id": [f"syn{s}-teacher", *ids],
                    "suite_hash": h,
                    "role": ["teacher"] + ["student"] * len(m),
                    "method": ["teacher", *(methods[i] for i in m)],
                    "family": ["teacher", *(families[i % 5] for i in m)],
                    "m": np.r_[-1, m],
                    "k": np.r_[-1, k],
                    "seed": np.r_[0, sd],
                }
            )
        )
    runs_df = pd.concat(run_rows, ignore_index=True)
    n = len(runs_df)
    teacher = runs_df["role"].eq("teacher").to_numpy()
    failed = (rng.random(n) < 0.01) & ~teacher
    params = np.where(teacher, 1_000_000_000, student_params[runs_df["k"].clip(0)])
    runs_df["student"] = np.where(
        teacher, "SYNTHETIC-teacher-1B", [f"syn-student-{p / 1e6:.0f}M" for p in params]
    )
    runs_df["status"] = np.where(failed, "failed", "ok")
    runs_df["error"] = np.where(failed, "Traceback (most recent call last):\nSyntheticError", None)
    gpu = rng.random(n) < 0.5
    runs_df["hardware"] = np.where(gpu, GPU, CPU)
    runs_df["quant"] = None  # full precision
    runs_df["parent_run_id"] = None
    runs_df["method_config"] = "{}"
    runs_df["versions"] = '{"kdbench": "synthetic"}'
    runs_df["git_commit"] = "synthetic"
    runs_df["kdbench_version"] = "synthetic"
    runs_df["started_at"] = now
    runs_df["finished_at"] = now + pd.Timedelta(minutes=5)

    # every run trained on its suite's budget (``kdbench import`` refuses a bundle whose runs
    # did not), but for 5 student runs a suite that stopped short (the budget audit's notes)
    budget_steps = 1000 * (runs_df["suite_hash"].str.slice(2).map(lambda h: int(h, 16)) + 1)
    short = np.zeros(n, dtype=bool)
    for h in runs_df["suite_hash"].unique():
        short[np.flatnonzero((runs_df["suite_hash"] == h).to_numpy() & ~teacher)[:5]] = True
    steps = np.where(short, budget_steps // 2, budget_steps).astype(np.int64)

    ok = ~failed
    effect = np.where(teacher, 0.3, 0.02 * (runs_df["m"] % 7) + 0.03 * np.log10(params / 5e6))
    metric_rows = []
    for t, (task, metric) in enumerate(TASKS):
        value = np.clip(0.35 + 0.3 * t + effect + rng.normal(0, 0.02, n), 0, 1)
        base = pd.DataFrame(
            {
                "run_id": runs_df["run_id"],
                "task": task,
                "value": value,
                "stderr": 0.01,
                "higher_is_better": True,
                "aggregation": "mean",
            }
        )[ok]
        metric_rows.append(base.assign(metric=metric, is_primary=True))
        metric_rows.append(base.assign(metric="secondary", is_primary=False, value=value[ok] / 2))
    metrics = pd.concat(metric_rows, ignore_index=True)

    hours = np.where(gpu, 0.05, 0.8) * params / 1e8
    costs = pd.DataFrame(
        {
            "run_id": runs_df["run_id"],
            "train_wall_s": hours * 3600,
            "eval_wall_s": 60.0,
            "total_wall_s": hours * 3600 + 60,
            "params": params,
            "bytes": params * 2,
            "tokens": 10_000_000,
            "steps": steps,
            "resumed_from": None,
            "peak_rss_mb": 4000.0,
            "teacher_forwards": 640_000,
            "train_flops": 6.0 * params * 1e7,
            "teacher_flops": 2.0 * 1e9 * 1e7 / 100,
            "device_hours": hours,
            "queue_s": 1.0,
            "infer_tokens_per_s": 2e12 / params,
            "infer_latency_ms": params / 1e7,
            "sequences": steps * 64,
            "live_teacher_flops": 0.0,
            "quantized_params": None,
            "generation_s": 0.0,  # schema 4: off-policy runs sample nothing
            "generated_tokens": 0,
            "generation_flops": 0.0,
        }
    )[ok]

    sample_rows = []
    for s in range(n_suites):
        chosen = runs_df[(runs_df["suite_hash"] == f"5y{s:014x}") & ok].head(4)["run_id"]
        for run_id in chosen:
            for task, _ in TASKS:
                conf = rng.random(500)
                correct = (rng.random(500) < 0.3 + 0.6 * conf).astype(float)
                sample_rows.append(
                    pd.DataFrame(
                        {
                            "run_id": run_id,
                            "task": task,
                            "doc_id": np.arange(500),
                            "correct": correct,
                            "confidence": conf,
                        }
                    )
                )
    samples = pd.concat(sample_rows, ignore_index=True)
    suites_df = pd.DataFrame(suites, columns=["suite_hash", "name", "path", "config", "created_at"])
    out = {
        "suites": suites_df,
        "runs": runs_df[list(store.RUN_COLUMNS)],
        "metrics": metrics[["run_id", *store.METRIC_COLUMNS]],
        "costs": costs[["run_id", *store.COST_COLUMNS]],
        "samples": samples[["run_id", *store.SAMPLE_COLUMNS]],
    }
    if submitters:
        # each submitter runs some (method, student) cells of every suite and sends one bundle
        # per suite; a suite's teacher comes from the first submitter
        who = ((runs_df["m"] * n_students + runs_df["k"]).clip(0) % submitters).to_numpy()
        suite_no = runs_df["suite_hash"].str.slice(2).map(lambda h: int(h, 16)).to_numpy()
        names = np.array([f"{SYNTHETIC_PREFIX}-submitter-{i:02d}" for i in range(submitters)])
        orgs = np.array([f"{SYNTHETIC_PREFIX} lab {i % 7}" for i in range(submitters)])
        out["provenance"] = pd.DataFrame(
            {
                "run_id": runs_df["run_id"],
                "submitter": names[who],
                "organisation": orgs[who],
                "bundle_sha256": [f"{s:032x}{w:032x}" for s, w in zip(suite_no, who, strict=True)],
                "imported_at": now + pd.to_timedelta(suite_no * 60 + who, unit="s"),
            }
        )
    return out


def fill(path: Path, runs: int, n_suites: int, submitters: int = 0) -> dict[str, int]:
    """Create the schema through kdbench.store, then bulk-insert every generated frame."""
    guard(path)
    data = frames(runs, n_suites, submitters)
    con = store.connect(path)
    try:
        con.execute("BEGIN TRANSACTION")
        for table, df in data.items():  # table names from the literal dict above
            con.register("frame", df)
            cols = ", ".join(df.columns)
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM frame")
            con.unregister("frame")
        con.execute("COMMIT")
    finally:
        con.close()
    return {table: len(df) for table, df in data.items()}


def render_times(path: Path) -> dict[str, float]:
    """Wall time of AppTest.run() for the first render and for a filter change, and the same
    harness on a trivial app for scale."""
    import tempfile

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["KDBENCH_DB"] = str(path)
    sys.argv = ["app.py"]
    out: dict[str, float] = {}

    def timed(at: AppTest) -> float:
        t0 = time.perf_counter()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return time.perf_counter() - t0

    app = str(ROOT / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    out["first render, fresh process (imports included)"] = timed(at)

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write("import streamlit as st\nst.title('trivial')\n")
    out["  for scale: a one-line app, new AppTest session"] = timed(
        AppTest.from_file(f.name, default_timeout=120)
    )
    os.unlink(f.name)

    st.cache_data.clear()
    at = AppTest.from_file(app, default_timeout=120)
    out["first render, new session, empty cache"] = timed(at)
    rows = len(at.dataframe[0].value)

    picked = at.multiselect(key="method").options[:5]
    at.multiselect(key="method").set_value(picked)
    out["filter change (5 methods)"] = timed(at)
    shown = set(at.dataframe[0].value["method"]) - {"teacher"}
    assert shown == set(picked), shown
    assert "SYNTHETIC DATA" in at.warning[0].value
    out["rows in the first table"] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--suites", type=int, default=4)
    parser.add_argument(
        "--submitters", type=int, default=0, help="a provenance row per run, from this many"
    )
    parser.add_argument("--target", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="time the renders of the database as it is (no fill, no snapshots)",
    )
    args = parser.parse_args()
    if args.render_only:
        report(render_times(args.db), args.target)
        return
    t0 = time.perf_counter()
    counts = fill(args.db, args.runs, args.suites, args.submitters)
    print(
        f"filled {args.db} in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + " (all SYNTHETIC)"
    )
    print("board computed live (no snapshot):")
    report(render_times(args.db), args.target)
    t0 = time.perf_counter()
    suites = refresh_snapshots(args.db)  # what `kdbench import` and `kdbench run` end with
    print(
        f"board snapshots of {suites} suites built in {time.perf_counter() - t0:.2f}s "
        "(as kdbench import leaves them)"
    )
    print("board read from its snapshot (a new process, for the fresh-process render):")
    sys.stdout.flush()
    again = [sys.executable, __file__, "--render-only", "--db", str(args.db)]
    subprocess.run([*again, "--target", str(args.target)], check=True)


def report(times: dict[str, float], target: float) -> None:
    """Print render_times' figures, marking those over ``target``."""
    for what, value in times.items():
        text = f"{value:,.0f}" if what.startswith("rows") else f"{value:.2f}s"
        over = not what.startswith(("rows", "  ")) and value >= target
        print(f"  {what:<52} {text}{f'  (over the {target:g} s target)' if over else ''}")


if __name__ == "__main__":
    main()
