"""``kdbench``: run suites, list methods, show the leaderboard, start the web app.

Bad input exits with code 2 and one line ``kdbench: error: ...`` on stderr naming the file, the
field and what is allowed, before Ray starts and before anything is written. An unexpected
internal error exits with code 1 and one line naming the exception and the file that holds its
full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

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


class CommandError(Exception):
    """A bad command line (a filter that matches nothing, a bad port): one line, exit 2."""


def _one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _check_text(path: Path, what: str) -> None:
    """Refuse a ``what`` file that is not UTF-8 text (a binary file) with one line."""
    from kdbench.config import SuiteError

    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(
            path, "(file)", f"not a text file (byte {exc.start} is not UTF-8); a {what} is TOML"
        ) from None
    except OSError as exc:
        raise SuiteError(path, "(file)", f"cannot read it: {exc.strerror or exc}") from None


def _default_db() -> Path:
    from kdbench.store import DEFAULT_DB

    return Path(os.environ.get("KDBENCH_DB") or DEFAULT_DB)


def _check_cache(cache: str | None) -> None:
    """``--cache`` (or ``$KDBENCH_CACHE``, or ``~/.cache/kdbench``) and the folders the stages
    write in it (``teachers``, ``signals``, ``generations``) are folders or can be made."""
    from kdbench.disk_cache import creation_problem
    from kdbench.teacher import cache_root

    root = cache_root(cache)
    for path in (root / "teachers", root / "signals", root / "generations"):
        # a cache that holds every entry already may be read-only: only files in the way count
        problem = creation_problem(path, writable=False)
        if problem:
            raise CommandError(f"--cache {root}: {problem}; give another --cache")


def cmd_run(args: argparse.Namespace) -> int:
    from kdbench import store
    from kdbench.config import load_suite, suite_path
    from kdbench.workers import bound_connect, check_address, parse_address

    # the cheap checks first, all before Ray starts and before anything is written
    if args.address:
        parse_address(args.address)  # its form, even for --dry-run
    if not args.dry_run:
        store.check_writable(args.db)  # a kdbench database or a new file it can create
        _check_cache(args.cache)  # the cache root and its stage folders are folders
        check_address(args.address)  # something answers there, within seconds
        bound_connect(args.address)  # and Ray gives up on it within seconds: before Ray loads
    path = suite_path(args.suite)  # a file, or a bundled suite's name
    _check_text(path, "suite")

    from kdbench.leaderboard import format_notes, format_table, leaderboard, suite_data
    from kdbench.pipeline import plan, run_suite
    from kdbench.preflight import estimates
    from kdbench.transfer import truncation_line

    suite = load_suite(path)
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
    cells = [
        (
            r["name"],
            r["family"],
            ",".join(r["signals"]) or "-",
            ", ".join(f"{p['name']}={p['default']!r}" for p in r["parameters"]) or "-",
        )
        for r in rows
    ]
    header = ("name", "family", "signals", "parameters")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(3)]
    for cell in [header, *cells]:  # columns as wide as their longest entry
        print(" ".join(f"{v:<{w}}" for v, w in zip(cell[:3], widths, strict=True)), cell[3])
    return 0


def _suite_hash(db: Path, wanted: str | None) -> str | None:
    """The stored suite that ``--suite`` names (a hash or a unique prefix of one), the latest
    suite without it; raises :class:`CommandError` listing the stored suites otherwise."""
    from kdbench.leaderboard import latest_suite, suites

    if wanted is None:
        return latest_suite(db)
    stored = suites(db)
    hashes = list(stored["suite_hash"])
    if wanted in hashes:
        return wanted
    matches = [h for h in hashes if wanted and h.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    labels = list(stored["label"])
    listing = (
        "stored: "
        + ", ".join(labels[:10])
        + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
        if labels
        else f"{db} holds no suite yet"
    )
    why = "matches several suites" if matches else "no such suite"
    raise CommandError(f"--suite {wanted!r}: {why}; {listing}")


def _check_filters(db: Path, suite: str | None, args: argparse.Namespace) -> None:
    """Each ``--method`` / ``--family`` / ``--student`` names something the suite has run, and
    together they match a run; raises :class:`CommandError` saying what exists otherwise."""
    from kdbench import store

    filters = {"method": args.method, "family": args.family, "student": args.student}
    if all(values is None for values in filters.values()):
        return
    runs = store.read_runs(db, suite) if suite is not None else None
    where = f"suite {suite}" if suite is not None else str(db)
    if runs is None or runs.empty:
        raise CommandError(f"{where} has no runs yet, so no filter can match")
    runs = runs[runs["role"] == "student"]
    for column, values in filters.items():
        stored = sorted({str(v) for v in runs[column].dropna()})
        for value in values or ():
            if value not in stored:
                raise CommandError(
                    f"--{column} {value!r}: no such {column} in {where}; stored: "
                    + (", ".join(stored) or "none")
                )
    keep = runs
    for column, values in filters.items():
        if values is not None:
            keep = keep[keep[column].isin(values)]
    if keep.empty:
        given = " ".join(f"--{c} {v}" for c, vs in filters.items() for v in vs or ())
        raise CommandError(f"{given}: no run of {where} matches these filters together")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kdbench.economics import load_prices
    from kdbench.leaderboard import format_notes, format_table, leaderboard, suite_data

    if not args.db.exists():
        print(
            f"kdbench: error: {args.db}: no results database; run "
            "`kdbench run leaderboards/tiny.toml` first",
            file=sys.stderr,
        )
        return 2
    prices = load_prices(args.prices)  # a PriceError is one line, exit 2
    suite = _suite_hash(args.db, args.suite)
    _check_filters(args.db, suite, args)
    table = leaderboard(
        args.db,
        suite,
        methods=args.method,
        families=args.family,
        students=args.student,
        prices=prices,
        by_submitter=args.by_submitter,
    )
    quant = None
    if args.quantized:  # the board, then its quantised rows (kdbench.quant_board)
        from kdbench.quant_board import format_quantized, quantized_board

        quant = quantized_board(
            args.db, suite, methods=args.method, families=args.family, students=args.student
        )
    if args.json:
        if quant is None:
            print(table.to_json(orient="records", indent=2))
        else:  # one object with both
            both = {
                k: json.loads(df.to_json(orient="records"))
                for k, df in (("leaderboard", table), ("quantized", quant))
            }
            print(json.dumps(both, indent=2))
        return 0
    print(format_table(table))
    if quant is not None:
        print("\n" + format_quantized(quant))
    if suite is not None:
        data = suite_data(args.db, [suite], boards=False)
        notes = format_notes(data.tasks, data.failed)
        if notes:
            print("\n" + notes)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from kdbench import store

    if not 0 < args.port < 65536:
        raise CommandError(f"--port {args.port}: must be a TCP port from 1 to 65535")
    if args.parquet is not None:
        # readable (and httpfs there for a URL), or one line; never writes
        store.connect(store.parquet_db(args.parquet), read_only=True).close()
        source = ["--parquet", args.parquet]
    else:
        if args.db.exists() or args.db.is_symlink():
            store.connect(args.db, read_only=True).close()  # kdbench's and readable, or one line
        source = ["--db", str(args.db)]
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
        *([f"--server.address={args.address}"] if args.address else []),
        "--",
        *source,
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
    import torch

    if not torch.cuda.is_available():  # DeepSpeed's own guess warns on stderr
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
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


def cmd_export(args: argparse.Namespace) -> int:
    from kdbench.bundle import Submitter, export_all, export_bundle, load_submitter

    if not args.db.exists():
        raise CommandError(f"--db {args.db}: no results database there")
    if args.all:
        if args.suite or args.submitter or args.submitter_file or args.weights_hash:
            raise CommandError(
                "--all writes every table as it is: no --suite, --submitter, --submitter-file,"
                " --weights-hash"
            )
        rows = export_all(args.db, args.out)
        counts = ", ".join(f"{n} {t}" for t, n in rows.items())
        print(
            f"wrote {args.out}: every table of {args.db} ({counts}); serve it with: "
            f"kdbench app --parquet {args.out}"
        )
        return 0
    # the command line's fields first, then the file's (--submitter-file)
    listed = load_submitter(args.submitter_file) if args.submitter_file else {}
    name = args.submitter or listed.get("name")
    if not name:
        raise CommandError(
            "--submitter NAME (or a name in --submitter-file) is required (unless --all)"
        )
    submitter = Submitter(
        name, args.organisation or listed.get("organisation"), args.contact or listed.get("contact")
    )
    result = export_bundle(
        args.db, args.out, submitter, suite=args.suite, weights=args.weights_hash
    )
    suite = result.manifest.suite
    rows = ", ".join(f"{n} {t}" for t, n in result.rows.items() if t != "suites")
    weights = result.manifest.weights
    hashed = f"; weights hashed for {len(weights)} runs" if weights is not None else ""
    print(
        f"wrote {result.path}: suite {suite.name} ({suite.suite_hash}), {rows}{hashed}; "
        f"check it with: kdbench verify {result.path}"
    )
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    import time

    from kdbench.leaderboard import refresh_snapshots

    if not args.db.exists():
        raise CommandError(f"--db {args.db}: no results database there")
    t0 = time.perf_counter()
    n = refresh_snapshots(args.db)
    print(
        f"rebuilt the board snapshots of {n} suites in {args.db} ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from kdbench.verify import verify_bundle

    report = verify_bundle(args.bundle)
    if not report.ok:
        for line in report.lines():
            print(line, file=sys.stderr)
        return 2
    assert report.summary is not None
    print(f"{args.bundle}: ok\n{report.summary.text()}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from kdbench.bundle import BundleRejected, import_bundle

    try:
        result = import_bundle(args.bundle, args.db)
    except BundleRejected as rejected:
        for line in rejected.report.lines():
            print(line, file=sys.stderr)
        print(f"kdbench: error: {args.bundle}: fails verification; not imported", file=sys.stderr)
        return 2
    print(
        f"imported {args.bundle} into {args.db}: {len(result.added)} runs added, "
        f"{len(result.skipped)} already there (identical, skipped)"
        + ("; suite added" if result.suite_added else "")
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line ``kdbench: error: ...`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("kdbench").strip()
        hint = f"see `kdbench {command} --help`" if command else "see `kdbench --help`"
        self.exit(2, f"kdbench: error: {_one_line(message)} ({hint})\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdbench", description=__doc__.splitlines()[0])
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
    lb.add_argument(
        "--by-submitter",
        action="store_true",
        help="one row per method, student and submitter (imported bundles), as the app shows",
    )
    lb.add_argument("--json", action="store_true")
    lb.add_argument(
        "--quantized",
        action="store_true",
        help="also print the quantised rows ([eval] quantize): retention against the "
        "full-precision teacher, bytes on disk and size ratio (with --json: one object with "
        "'leaderboard' and 'quantized')",
    )
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

    ex = sub.add_parser(
        "export",
        help="write one suite's results as a bundle to submit (--all: the whole db as Parquet)",
    )
    ex.add_argument("--db", type=Path, required=True, help="DuckDB results file")
    ex.add_argument("--out", type=Path, required=True, help="the bundle folder to write (new)")
    ex.add_argument(
        "--suite", default=None, help="suite name or hash (needed when the db holds several)"
    )
    ex.add_argument("--submitter", default=None, help="your name (required unless --all)")
    ex.add_argument(
        "--all",
        action="store_true",
        help="write every table of the whole db, one Parquet file each (what `kdbench app "
        "--parquet` serves), not a bundle",
    )
    ex.add_argument("--organisation", default=None)
    ex.add_argument("--contact", default=None, help="an e-mail address")
    ex.add_argument(
        "--submitter-file",
        type=Path,
        default=None,
        metavar="TOML",
        help="a TOML file with name, organisation and contact (in [submitter] or at the top); "
        "the options above override it",
    )
    ex.add_argument(
        "--weights-hash",
        action="store_true",
        help="record the SHA-256 of each run's saved weights (never copied)",
    )
    ex.set_defaults(func=cmd_export)

    sn = sub.add_parser(
        "snapshot",
        help="rebuild every suite's board snapshot (after another tool edited the db in place)",
    )
    sn.add_argument("--db", type=Path, required=True, help="DuckDB results file")
    sn.set_defaults(func=cmd_snapshot)

    v = sub.add_parser("verify", help="check a result bundle (exit 2 on any failure)")
    v.add_argument("bundle", type=Path, help="a folder `kdbench export` wrote")
    v.set_defaults(func=cmd_verify)

    im = sub.add_parser("import", help="verify a result bundle and merge it into a database")
    im.add_argument("bundle", type=Path, help="a folder `kdbench export` wrote")
    im.add_argument("--db", type=Path, required=True, help="DuckDB results file to merge into")
    im.set_defaults(func=cmd_import)

    a = sub.add_parser("app", help="start the Streamlit leaderboard app")
    a.add_argument("--db", type=Path, default=_default_db())
    a.add_argument(
        "--parquet",
        default=None,
        metavar="DIR_OR_URL",
        help="serve read-only from a folder of Parquet files (`kdbench export --all`), or an "
        "s3:// / https:// URL of one (DuckDB's httpfs extension), instead of --db",
    )
    a.add_argument("--port", type=int, default=8501)
    a.add_argument("--address", default=None, help="the address to listen on (e.g. 0.0.0.0)")
    a.set_defaults(func=cmd_app)
    return p


# the errors that mean bad input (one line on stderr, exit 2), by module: a module that was
# never imported cannot have raised its error (so torch's import is not paid for this)
_EXPECTED = {
    "kdbench.config": "SuiteError",
    "kdbench.store": "StoreError",
    "kdbench.bundle": "BundleError",
    "kdbench.economics": "PriceError",
    "kdbench.workers": "ClusterError",
    "kdbench.methods": "MethodError",
    "kdbench.data_sources": "DataError",
    "kdbench.evaluate": "TaskError",
    "kdbench.teacher": "TeacherGateError",
}


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is bad input (exit 2, one line) rather than an internal error."""
    kinds = [CommandError] + [
        getattr(sys.modules[module], name)
        for module, name in _EXPECTED.items()
        if module in sys.modules
    ]
    return isinstance(exc, tuple(kinds))


def _write_traceback(exc: BaseException) -> str:
    """Write ``exc``'s full traceback to a new file in the temp folder and return its path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix="kdbench-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"kdbench {__version__}: {' '.join(sys.argv)}\n{text}")
    except OSError:
        return "(could not be written)"
    return path


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 failed runs or internal error, 2 bad
    input, 130 interrupted). Never lets a traceback reach the terminal."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(
            "kdbench: interrupted; finished runs are stored, rerun to do the rest", file=sys.stderr
        )
        return 130
    except Exception as e:
        cause = getattr(e, "cause", None)  # a Ray task's error: the exception raised remotely
        error = cause if isinstance(cause, Exception) else e
        if is_expected(error):
            print(f"kdbench: error: {_one_line(str(error))}", file=sys.stderr)
            return 2
        where = _write_traceback(e)
        lines = [line for line in str(error).splitlines() if line.strip()]
        first = _one_line(lines[0] if lines else "")[:300]
        print(
            f"kdbench: error: internal error {type(error).__name__}"
            + (f": {first}" if first else "")
            + f"; full traceback in {where} (please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
