"""``kdbench``: run suites, list methods, show the leaderboard, start the web app.

Bad input exits with code 2 and one line naming the file, the field and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from kdbench import __version__

# Before any heavy import: keep library chatter (and Ray's) out of the terminal.
for _key, _value in {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONWARNINGS": "ignore",
}.items():
    os.environ.setdefault(_key, _value)

# the Streamlit script inside the installed package (a wheel has no checkout's app.py)
APP = Path(__file__).resolve().parent / "app" / "streamlit_app.py"


def _default_db() -> Path:
    from kdbench.store import DEFAULT_DB

    return Path(os.environ.get("KDBENCH_DB") or DEFAULT_DB)


def cmd_run(args: argparse.Namespace) -> int:
    from kdbench.config import load_suite, suite_path
    from kdbench.leaderboard import format_notes, format_table, leaderboard, suite_data
    from kdbench.pipeline import plan, run_suite
    from kdbench.preflight import estimates
    from kdbench.transfer import truncation_line

    suite = load_suite(suite_path(args.suite))  # a file, or a bundled suite's name
    planned = plan(suite)  # all input errors before anything starts or is written
    truncated = truncation_line(suite.data, suite.teacher)  # what max_length cuts
    if truncated:
        print(truncated)
    if args.dry_run:
        for job in planned[1]:
            print(f"{job.run_id}  {job.method:<14} {job.student:<16} seed {job.seed}")
        for estimate in estimates(suite, planned[0]):  # the preflight's figures, per student
            print(f"memory: {estimate.describe()}")
        return 0
    summary = run_suite(
        suite, args.db, address=args.address, cache=args.cache, force=args.force, planned=planned
    )
    print()
    print(format_table(leaderboard(args.db, summary.suite_hash)))
    data = suite_data(args.db, [summary.suite_hash], boards=False)
    notes = format_notes(data.tasks, data.failed)  # tasks left out of the average, failures
    if notes:
        print("\n" + notes)
    print(
        f"\n{summary.ran} runs done, {summary.failed} failed; results in {args.db}. "
        f"Browse them with: kdbench app --db {args.db}"
    )
    return 1 if summary.failed else 0


def cmd_methods(args: argparse.Namespace) -> int:
    from kdbench.methods import registry

    methods = registry()
    rows = [
        {
            "name": m.name,
            "family": m.family,
            "signals": sorted(m.signals),
            "parameters": m.parameters(),
            "plugin": m.plugin,
            "paper": m.paper,
            "description": m.description,
        }
        for m in methods.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'name':<14} {'family':<17} {'signals':<14} parameters")
    for r in rows:
        params = ", ".join(f"{p['name']}={p['default']!r}" for p in r["parameters"]) or "-"
        print(f"{r['name']:<14} {r['family']:<17} {','.join(r['signals']) or '-':<14} {params}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kdbench.economics import PriceError, load_prices
    from kdbench.leaderboard import (
        format_notes,
        format_table,
        latest_suite,
        leaderboard,
        suite_data,
    )

    if not args.db.exists():
        print(
            f"kdbench: error: {args.db}: no results database; run "
            "`kdbench run leaderboards/tiny.toml` first",
            file=sys.stderr,
        )
        return 2
    try:
        prices = load_prices(args.prices)
    except PriceError as e:
        print(f"kdbench: error: {e}", file=sys.stderr)
        return 2
    table = leaderboard(
        args.db,
        args.suite,
        methods=args.method,
        families=args.family,
        students=args.student,
        prices=prices,
    )
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print(format_table(table))
        suite = args.suite or latest_suite(args.db)
        if suite is not None:
            data = suite_data(args.db, [suite], boards=False)
            notes = format_notes(data.tasks, data.failed)
            if notes:
                print("\n" + notes)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless=true",
        f"--server.port={args.port}",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",
        "--",
        "--db",
        str(args.db),
    ]
    print(f"leaderboard at http://localhost:{args.port}  (Ctrl-C to stop)")
    return subprocess.call(cmd)


def cmd_plugin_new(args: argparse.Namespace) -> int:
    from kdbench.scaffold import new_plugin

    try:
        root = new_plugin(args.name, args.dir)
    except ValueError as e:
        print(f"kdbench: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {root}\nnext:\n  pip install -e {root}\n  kdbench plugin check {args.name}"
        f"\n  pytest {root}"
    )
    return 0


def cmd_plugin_check(args: argparse.Namespace) -> int:
    from kdbench.methods import MethodError
    from kdbench.testing import run_checks

    try:
        results = run_checks(args.name)
    except MethodError as e:
        print(f"kdbench: error: {e}", file=sys.stderr)
        return 2
    for check, ok, message in results:
        print(f"{'PASS' if ok else 'FAIL'}  {check:<32} {message}")
    failed = sum(not ok for _, ok, _ in results)
    print(f"{args.name}: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdbench", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"kdbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a suite (every method x student x seed)")
    r.add_argument(
        "suite",
        type=Path,
        help="suite TOML file, e.g. leaderboards/tiny.toml, or a bundled suite's name, e.g. tiny",
    )
    r.add_argument(
        "--address",
        default=None,
        help="Ray cluster address, or 'auto' for the cluster started on this machine with `ray start`"
        " (default: $RAY_ADDRESS, else a private local Ray instance)",
    )
    r.add_argument("--db", type=Path, default=_default_db(), help="DuckDB results file")
    r.add_argument("--cache", default=None, help="teacher cache folder (default ~/.cache/kdbench)")
    r.add_argument("--force", action="store_true", help="re-run runs already stored as ok")
    r.add_argument("--dry-run", action="store_true", help="validate and list the runs only")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("methods", help="list registered distillation methods")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_methods)

    lb = sub.add_parser("leaderboard", help="print the ranked leaderboard")
    lb.add_argument("--db", type=Path, default=_default_db())
    lb.add_argument("--suite", default=None, help="suite hash (default: the latest suite)")
    for flag, what in (("method", "method"), ("family", "method family"), ("student", "student")):
        lb.add_argument(
            f"--{flag}",
            action="append",
            default=None,
            metavar=flag.upper(),
            help=f"only this {what} (repeatable; ranks are recomputed within the view)",
        )
    lb.add_argument(
        "--prices",
        type=Path,
        default=None,
        help="hardware price table (default: leaderboards/prices/default.toml)",
    )
    lb.add_argument("--json", action="store_true")
    lb.set_defaults(func=cmd_leaderboard)

    pl = sub.add_parser("plugin", help="write or check a method plugin")
    plsub = pl.add_subparsers(dest="plugin_command", required=True)
    new = plsub.add_parser("new", help="write a pip-installable method plugin package")
    new.add_argument("name", help="method name (a Python identifier, lower case)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write it")
    new.set_defaults(func=cmd_plugin_new)
    check = plsub.add_parser("check", help="run the conformance checks on a registered method")
    check.add_argument("name")
    check.set_defaults(func=cmd_plugin_check)

    a = sub.add_parser("app", help="start the Streamlit leaderboard app")
    a.add_argument("--db", type=Path, default=_default_db())
    a.add_argument("--port", type=int, default=8501)
    a.set_defaults(func=cmd_app)
    return p


def main(argv: list[str] | None = None) -> int:
    from kdbench.config import SuiteError
    from kdbench.store import StoreError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SuiteError as e:
        print(f"kdbench: error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"kdbench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "kdbench: interrupted; finished runs are stored, rerun to do the rest", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
