"""``kdbench verify``: the checker of a result bundle (:mod:`kdbench.bundle`).

Each failure is one :class:`Problem`, printed as ``BUNDLE/<file>: run <run_id>: <rule>:
<what is wrong>`` (the run part only when the rule is about one run). The rules:

- ``manifest``: ``manifest.json`` is there, parses and its digest matches its content;
- ``schema``: the bundle format and store schema versions are known (not newer than this
  kdbench's), and each table's columns are the store's;
- ``files`` / ``hash``: every file the manifest lists is there with that SHA-256, and nothing
  else is; ``parquet``: each table file is a readable Parquet file (truncated, corrupt);
- ``suite``: ``suites.parquet`` holds the manifest's suite only, with the manifest's config,
  and that config's identity hashes to the suite hash; ``suite_hash``: every run is of it;
- ``duplicate``: no run id (nor metric, cost or sample key) appears twice; ``orphan``: no
  metric, cost or sample row of a run the bundle does not hold;
- ``budget``: every ok student run trained on the suite's ``[budget]``: ``steps`` and
  ``sequences = steps x batch_size``;
- ``metric``: every stored primary metric that lm-eval aggregates as a mean of per-question
  values (``aggregation = 'mean'``, the value the ``samples`` table stores per question) is
  the mean of its samples within :data:`REL_TOL` relative; the other metrics (no samples:
  fidelity, groups, stderr-only) are counted as not re-checkable, not failures;
- ``complete``: in the closed division (the suite's identity hash is one of the suites that
  ship in ``leaderboards/``), an ok run exists for every method and seed of the suite. A suite
  that matches none is in the open division: reported, not a failure.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb

from kdbench import store
from kdbench.bundle import (
    BUNDLE_FORMAT,
    MANIFEST,
    TABLES,
    BundleError,
    Manifest,
    manifest_digest,
    sha256_file,
)

REL_TOL = 1e-9
"""How close a recomputed mean must be to the stored metric, relative."""
ABS_TOL = 1e-12
"""... and absolute, for values at or near zero."""

# the primary key of each table: a bundle with two rows of one key cannot be merged
_KEYS: dict[str, tuple[str, ...]] = {
    "suites": ("suite_hash",),
    "runs": ("run_id",),
    "metrics": ("run_id", "task", "metric"),
    "costs": ("run_id",),
    "samples": ("run_id", "task", "doc_id"),
}


@dataclass(frozen=True)
class Problem:
    """One failed rule: in ``file`` of the bundle (empty: the bundle itself), for ``run_id``
    when the rule is about one run."""

    file: str
    rule: str
    message: str
    run_id: str | None = None

    def line(self, bundle: Path) -> str:
        """``BUNDLE/<file>: run <run_id>: <rule>: <what is wrong>``, on one line."""
        where = f"{bundle}/{self.file}" if self.file else str(bundle)
        run = f"run {self.run_id}: " if self.run_id is not None else ""
        return " ".join(f"{where}: {run}{self.rule}: {self.message}".split())


@dataclass(frozen=True)
class Summary:
    """What a bundle holds."""

    suite_hash: str
    suite_name: str | None
    division: str  # "closed" or "open"
    shipped: str | None  # the shipped suite file it matches (closed division)
    submitter: str
    runs_by_method: dict[str, int]  # ok runs per method (quantised variants apart)
    failed_runs: int
    seeds: tuple[int, ...]
    metrics_checked: int
    metrics_unchecked: int

    def text(self) -> str:
        """A few lines for the terminal."""
        division = (
            f"closed division (matches {self.shipped})"
            if self.division == "closed"
            else "open division (matches no suite shipped in leaderboards/)"
        )
        methods = ", ".join(f"{m} {n}" for m, n in sorted(self.runs_by_method.items()))
        return "\n".join(
            [
                f"suite {self.suite_name or '?'} ({self.suite_hash}): {division}",
                f"submitter: {self.submitter}",
                f"ok runs per method: {methods or 'none'}; {self.failed_runs} failed",
                f"seeds: {', '.join(map(str, self.seeds)) or 'none'}",
                f"metrics: {self.metrics_checked} re-checked from the samples, "
                f"{self.metrics_unchecked} not re-checkable (no per-question values)",
            ]
        )


@dataclass(frozen=True)
class Report:
    """The checker's result: the problems (none: the bundle is good) and, when the manifest
    and the tables could be read, the summary."""

    bundle: Path
    problems: tuple[Problem, ...]
    manifest: Manifest | None = None
    summary: Summary | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem."""
        return [p.line(self.bundle) for p in self.problems]


@lru_cache(maxsize=1)
def shipped_suites() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """The suites that ship with kdbench (``leaderboards/*.toml``): hash -> (file name,
    methods, seeds). A file that does not load is left out."""
    import kdbench_leaderboards

    from kdbench.config import SuiteError, load_suite

    out = {}
    for path in sorted(kdbench_leaderboards.path().glob("*.toml")):
        try:
            suite = load_suite(path)
        except SuiteError:
            continue
        out[suite.hash] = (f"leaderboards/{path.name}", suite.methods, suite.seeds)
    return out


def division(suite_hash: str) -> tuple[str, str | None]:
    """A suite's division: ``("closed", "leaderboards/<file>")`` when its identity hash is
    one of the :func:`shipped_suites`, else ``("open", None)``."""
    match = shipped_suites().get(suite_hash)
    return ("closed", match[0]) if match else ("open", None)


def _store_columns() -> dict[str, list[str]]:
    """The columns of each results table in this kdbench's schema."""
    con = store._schema_only_connection()
    try:
        return {t: [r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()] for t in TABLES}
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return lines[0] if lines else type(exc).__name__


def _read_manifest(bundle: Path, problems: list[Problem]) -> Manifest | None:
    path = bundle / MANIFEST
    if not path.is_file():
        problems.append(Problem(MANIFEST, "manifest", "missing: not a kdbench bundle"))
        return None
    try:
        manifest = Manifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(MANIFEST, "manifest", f"cannot read it: {exc}"))
        return None
    except BundleError as exc:
        problems.append(Problem(MANIFEST, "manifest", str(exc)))
        return None
    digest = manifest_digest(manifest.body())
    if digest != manifest.digest:
        problems.append(
            Problem(
                MANIFEST,
                "manifest",
                f"edited: its content hashes to {digest[:16]}..., not its digest "
                f"{manifest.digest[:16]}...",
            )
        )
    if manifest.bundle_format > BUNDLE_FORMAT or manifest.bundle_format < 1:
        problems.append(
            Problem(
                MANIFEST,
                "schema",
                f"bundle format {manifest.bundle_format} is unknown (this kdbench reads 1 to "
                f"{BUNDLE_FORMAT}): upgrade kdbench",
            )
        )
    if manifest.schema_version > store.SCHEMA_VERSION or manifest.schema_version < 1:
        problems.append(
            Problem(
                MANIFEST,
                "schema",
                f"store schema version {manifest.schema_version} is unknown (this kdbench "
                f"understands 1 to {store.SCHEMA_VERSION}): upgrade kdbench",
            )
        )
    return manifest


def _check_files(bundle: Path, manifest: Manifest, problems: list[Problem]) -> None:
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for name in sorted(set(f"{t}.parquet" for t in TABLES) - set(manifest.files)):
        problems.append(Problem(MANIFEST, "files", f"lists no {name}: a bundle has every table"))
    for name, expected in sorted(manifest.files.items()):
        if name not in present:
            problems.append(Problem(name, "files", "listed in the manifest but missing"))
            continue
        actual = sha256_file(bundle / name)
        if actual != expected:
            problems.append(
                Problem(
                    name,
                    "hash",
                    f"SHA-256 {actual[:16]}... does not match the manifest's {expected[:16]}...",
                )
            )
    for name in sorted(present - set(manifest.files) - {MANIFEST}):
        problems.append(Problem(name, "files", "not listed in the manifest"))


def _load_tables(con: duckdb.DuckDBPyConnection, bundle: Path, problems: list[Problem]) -> set[str]:
    """Load each table file into ``con`` as a table of its name; returns the tables loaded
    with the store's columns."""
    columns = _store_columns()
    required = store._REQUIRED_COLUMNS
    loaded = set()
    for table in TABLES:
        name = f"{table}.parquet"
        path = bundle / name
        if not path.is_file():
            continue
        target = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet({target})")
        except duckdb.Error as exc:
            problems.append(
                Problem(
                    name,
                    "parquet",
                    f"not a readable Parquet file (truncated or corrupt?): {_first_line(exc)}",
                )  # fmt: skip
            )
            continue
        have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        missing = sorted(required[table] - set(have))
        unknown = sorted(set(have) - set(columns[table]))
        if missing or unknown:
            what = "; ".join(
                x
                for x in (
                    f"lacks {', '.join(missing)}" if missing else "",
                    f"has unknown {', '.join(unknown)}" if unknown else "",
                )
                if x
            )
            problems.append(Problem(name, "schema", f"not the store's {table} columns: {what}"))
            con.execute(f"DROP TABLE {table}")
            continue
        loaded.add(table)
    return loaded


def _check_keys(con: duckdb.DuckDBPyConnection, loaded: set[str], problems: list[Problem]) -> None:
    for table in sorted(loaded):
        keys = _KEYS[table]
        cols = ", ".join(keys)
        rows = con.execute(
            f"SELECT {cols}, count(*) FROM {table} GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL"
        ).fetchall()
        for row in rows:
            run = row[0] if keys[0] == "run_id" else None
            rest = ", ".join(f"{k}={v!r}" for k, v in zip(keys[1:], row[1:-1], strict=False))
            what = f"{keys[0]} {row[0]}" if run is None else (rest or "run id")
            problems.append(
                Problem(f"{table}.parquet", "duplicate", f"{what} appears {row[-1]} times", run)
            )
        if table != "runs" and "runs" in loaded and keys[0] == "run_id":
            for (run_id,) in con.execute(
                f"SELECT DISTINCT run_id FROM {table} WHERE run_id NOT IN "
                "(SELECT run_id FROM runs) ORDER BY run_id"
            ).fetchall():
                problems.append(
                    Problem(
                        f"{table}.parquet",
                        "orphan",
                        "rows of a run runs.parquet does not hold",
                        run_id,
                    )  # fmt: skip
                )


def _check_suite(
    con: duckdb.DuckDBPyConnection, manifest: Manifest, loaded: set[str], problems: list[Problem]
) -> dict | None:
    """The suite rules; returns the suite's stored config (None when it cannot be trusted)."""
    from kdbench.config import identity_hash

    want = manifest.suite.suite_hash
    recomputed = identity_hash(manifest.suite.config)
    if recomputed != want:
        problems.append(
            Problem(
                MANIFEST,
                "suite",
                f"the suite config's identity hashes to {recomputed}, not the suite hash {want}",
            )
        )
    if "suites" in loaded:
        rows = con.execute("SELECT suite_hash, CAST(config AS VARCHAR) FROM suites").fetchall()
        if [r[0] for r in rows] != [want]:
            problems.append(
                Problem(
                    "suites.parquet",
                    "suite",
                    f"holds suites {', '.join(r[0] for r in rows) or 'none'}, not the "
                    f"manifest's {want} only",
                )
            )
        else:
            try:
                config = json.loads(rows[0][1] or "null")
            except ValueError:
                config = None
            if config != manifest.suite.config:
                problems.append(
                    Problem("suites.parquet", "suite", "its config is not the manifest's")
                )
    if "runs" in loaded:
        for run_id, suite_hash in con.execute(
            "SELECT run_id, suite_hash FROM runs WHERE suite_hash IS DISTINCT FROM ? "
            "ORDER BY run_id",
            [want],
        ).fetchall():
            problems.append(
                Problem(
                    "runs.parquet",
                    "suite_hash",
                    f"of suite {suite_hash}, not the bundle's {want}",
                    run_id,
                )
            )
    return manifest.suite.config if recomputed == want else None


def _check_budget(
    con: duckdb.DuckDBPyConnection, config: dict, loaded: set[str], problems: list[Problem]
) -> None:
    if not {"runs", "costs"} <= loaded:
        return
    budget = config.get("budget") or {}
    steps, batch = budget.get("steps"), budget.get("batch_size")
    if not isinstance(steps, int) or not isinstance(batch, int):
        problems.append(
            Problem(MANIFEST, "budget", "the suite config has no budget.steps/batch_size")
        )
        return
    rows = con.execute(
        "SELECT r.run_id, c.run_id IS NOT NULL, c.steps, c.sequences FROM runs r "
        "LEFT JOIN costs c USING (run_id) WHERE r.status = 'ok' AND r.role = 'student' "
        "ORDER BY r.run_id"
    ).fetchall()
    for run_id, has_costs, got_steps, got_sequences in rows:
        if not has_costs:
            problems.append(Problem("costs.parquet", "budget", "no costs row", run_id))
            continue
        wrong = []
        if got_steps != steps:
            wrong.append(f"{'no' if got_steps is None else got_steps} steps, not {steps}")
        if got_sequences != steps * batch:
            wrong.append(
                f"{'no' if got_sequences is None else got_sequences} sequences, not "
                f"{steps * batch} ({steps} x {batch})"
            )
        if wrong:
            problems.append(
                Problem(
                    "costs.parquet",
                    "budget",
                    f"trained on {' and '.join(wrong)} (the suite's [budget])",
                    run_id,
                )
            )


def _check_metrics(
    con: duckdb.DuckDBPyConnection, loaded: set[str], problems: list[Problem]
) -> tuple[int, int]:
    """Recompute each sampled mean metric; returns (re-checked, not re-checkable)."""
    if "metrics" not in loaded:
        return 0, 0
    total = con.execute("SELECT count(*) FROM metrics").fetchone()[0]
    if "samples" not in loaded:
        return 0, total
    rows = con.execute(
        """SELECT m.run_id, m.task, m.metric, m.value, s.n, s.mean
        FROM metrics m JOIN (
            SELECT run_id, task, count(*) AS n, avg(correct) AS mean FROM samples
            GROUP BY run_id, task
            HAVING count(correct) = count(*) AND bool_and(isfinite(correct))
        ) s USING (run_id, task)
        WHERE m.is_primary AND m.aggregation = 'mean'
        ORDER BY m.run_id, m.task, m.metric"""
    ).fetchall()
    for run_id, task, metric, value, n, mean in rows:
        if value is None or not math.isclose(value, mean, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            problems.append(
                Problem(
                    "metrics.parquet",
                    "metric",
                    f"{task}/{metric} is {value!r} but the mean of its {n} samples is {mean!r}",
                    run_id,
                )
            )
    return len(rows), total - len(rows)


def _check_complete(
    con: duckdb.DuckDBPyConnection,
    methods: tuple[str, ...],
    seeds: tuple[int, ...],
    loaded: set[str],
    problems: list[Problem],
) -> None:
    if "runs" not in loaded:
        return
    have = set(
        con.execute(
            "SELECT DISTINCT method, seed FROM runs WHERE status = 'ok' AND role = 'student' "
            "AND quant IS NULL"
        ).fetchall()
    )
    methods = methods or tuple(sorted({m for m, _ in have}))  # empty: every registered method
    for method in methods:
        missing = [s for s in seeds if (method, s) not in have]
        if missing:
            problems.append(
                Problem(
                    "runs.parquet",
                    "complete",
                    f"closed division: no ok run of method {method} with seed "
                    f"{', '.join(map(str, missing))}",
                )
            )


def _summary(
    con: duckdb.DuckDBPyConnection,
    manifest: Manifest,
    loaded: set[str],
    shipped: str | None,
    checked: tuple[int, int],
) -> Summary:
    by_method: Counter[str] = Counter()
    failed = 0
    seeds: set[int] = set()
    if "runs" in loaded:
        for method, status, seed, quant in con.execute(
            "SELECT method, status, seed, quant FROM runs"
        ).fetchall():
            if status == "ok":
                by_method[f"{method} ({quant})" if quant else str(method)] += 1
            else:
                failed += 1
            if seed is not None and method != "teacher":
                seeds.add(int(seed))
    who = manifest.submitter
    submitter = who.name + (f" ({who.organisation})" if who.organisation else "")
    return Summary(
        suite_hash=manifest.suite.suite_hash,
        suite_name=manifest.suite.name,
        division="closed" if shipped else "open",
        shipped=shipped,
        submitter=submitter,
        runs_by_method=dict(by_method),
        failed_runs=failed,
        seeds=tuple(sorted(seeds)),
        metrics_checked=checked[0],
        metrics_unchecked=checked[1],
    )


def verify_bundle(bundle: str | Path) -> Report:
    """Check ``bundle`` against every rule of the module docstring; never raises for a bad
    bundle (each problem is in the report)."""
    bundle = Path(bundle)
    problems: list[Problem] = []
    if not bundle.is_dir():
        why = "is not a folder" if bundle.exists() else "no such folder"
        return Report(
            bundle, (Problem("", "bundle", f"{why}; give a folder `kdbench export` wrote"),)
        )
    manifest = _read_manifest(bundle, problems)
    if manifest is None:
        return Report(bundle, tuple(problems))
    _check_files(bundle, manifest, problems)
    con = duckdb.connect(":memory:")
    try:
        loaded = _load_tables(con, bundle, problems)
        _check_keys(con, loaded, problems)
        config = _check_suite(con, manifest, loaded, problems)
        if config is not None:
            _check_budget(con, config, loaded, problems)
        checked = _check_metrics(con, loaded, problems)
        match = shipped_suites().get(manifest.suite.suite_hash)
        if match is not None and config is not None:
            _check_complete(con, match[1], match[2], loaded, problems)
        summary = _summary(con, manifest, loaded, division(manifest.suite.suite_hash)[1], checked)
    finally:
        con.close()
    return Report(bundle, tuple(problems), manifest, summary)
