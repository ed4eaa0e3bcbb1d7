"""Result bundles: one suite's results as files anyone can check and merge.

A bundle is a folder written by ``kdbench export``:

- one Parquet file per results table (:data:`TABLES`: ``suites``, ``runs``, ``metrics``,
  ``costs``, ``samples``), holding only that suite's rows, written by DuckDB's own ``COPY``;
- ``manifest.json`` (:class:`Manifest`): the bundle format and store schema versions, the
  kdbench and key package versions, the submitter, the hardware, the suite (its hash, its TOML
  text when the stored path is still readable, and always the stored config JSON), the SHA-256
  of every other file and, with ``--weights-hash``, of each run's saved weight files. Its
  ``digest`` is the SHA-256 of the rest of the manifest, so an edited manifest is caught; it
  is an integrity check, not a signature: whoever edits a bundle can recompute every hash.

``kdbench verify`` (:mod:`kdbench.verify`) checks a bundle; ``kdbench import``
(:func:`import_bundle`) verifies it, then merges it into a results database in one DuckDB
transaction, recording who submitted each new run in the ``provenance`` table. Importing the
same bundle twice changes nothing; a run id already there from another submitter, or with
different content, refuses the whole import.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from kdbench import __version__, snapshots, store
from kdbench.leaderboard import refresh_snapshots, snapshot_rows

BUNDLE_FORMAT = 1
"""The version of the bundle layout this kdbench writes and reads."""
TABLES: tuple[str, ...] = ("suites", "runs", "metrics", "costs", "samples")
"""The results tables a bundle carries, one ``<table>.parquet`` each."""
MANIFEST = "manifest.json"
PACKAGES: dict[str, str] = {  # the manifest's name -> the distribution importlib finds
    "torch": "torch",
    "transformers": "transformers",
    "lm-eval": "lm_eval",
    "deepspeed": "deepspeed",
    "ray": "ray",
    "duckdb": "duckdb",
}


class BundleError(Exception):
    """A bundle problem with a one-line message meant for the user (exit 2)."""


class BundleRejected(BundleError):
    """``kdbench import`` of a bundle that fails :func:`kdbench.verify.verify_bundle`: the
    report's lines say why."""

    def __init__(self, report: Any) -> None:
        self.report = report
        lines = report.lines()
        super().__init__(lines[0] if lines else "bundle failed verification")


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Submitter:
    """Who submits a bundle."""

    name: str
    organisation: str | None = None
    contact: str | None = None


SUBMITTER_FIELDS: tuple[str, ...] = ("name", "organisation", "contact")
"""The keys of a submitter file (``kdbench export --submitter-file``)."""


def load_submitter(path: str | Path) -> dict[str, str]:
    """The submitter fields of a TOML file: ``name``, ``organisation``, ``contact`` (each
    optional, non-empty text), in a ``[submitter]`` table or at the top level, so a group keeps
    them in one file instead of typing them for each export. Raises :class:`BundleError` with
    one line naming the file and the field."""
    import tomllib

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"--submitter-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"--submitter-file {path}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{path}: not valid TOML: {exc}") from None
    table, prefix = (raw["submitter"], "submitter.") if "submitter" in raw else (raw, "")
    if not isinstance(table, dict):
        raise BundleError(f"{path}: submitter: must be a table of {', '.join(SUBMITTER_FIELDS)}")
    unknown = sorted(set(table) - set(SUBMITTER_FIELDS))
    if unknown:
        raise BundleError(
            f"{path}: {prefix}{unknown[0]}: unknown key; allowed: {', '.join(SUBMITTER_FIELDS)}"
        )
    out = {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            raise BundleError(
                f"{path}: {prefix}{key}: must be non-empty text on one line, got {value!r}"
            )
        out[key] = value.strip()
    return out


@dataclass(frozen=True)
class Hardware:
    """The machine that exported the bundle."""

    platform: str
    cpu_count: int | None
    gpu: str | None = None


@dataclass(frozen=True)
class SuiteRecord:
    """The bundle's suite: as stored (hash, name, path, config) and its TOML text when the
    stored path could still be read at export time."""

    suite_hash: str
    name: str | None
    path: str | None
    config: dict[str, Any]
    toml: str | None = None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``. ``files`` maps each bundle file (not the manifest) to its SHA-256;
    ``weights`` maps run ids to their weight files' SHA-256 (None: not asked for);
    ``digest`` is :func:`manifest_digest` of everything else."""

    bundle_format: int
    schema_version: int
    kdbench_version: str
    packages: dict[str, str | None]
    submitter: Submitter
    hardware: Hardware
    suite: SuiteRecord
    files: dict[str, str]
    created_at: str
    weights: dict[str, dict[str, str]] | None = None
    digest: str = ""

    def body(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, without its digest."""
        data = asdict(self)
        del data["digest"]
        return data

    def sealed(self) -> Manifest:
        """This manifest with its digest computed."""
        return replace(self, digest=manifest_digest(self.body()))

    def to_json(self) -> str:
        """The text of ``manifest.json``."""
        return json.dumps({**self.body(), "digest": self.digest}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse ``manifest.json``; raises :class:`BundleError` naming the bad field."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BundleError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BundleError("not a JSON object")
        try:
            return cls(
                bundle_format=_field(raw, "bundle_format", int),
                schema_version=_field(raw, "schema_version", int),
                kdbench_version=_field(raw, "kdbench_version", str),
                packages=_str_map(raw, "packages", optional_values=True),
                submitter=Submitter(
                    name=_field(_obj(raw, "submitter"), "submitter.name", str, key="name"),
                    organisation=_field(
                        _obj(raw, "submitter"), "submitter.organisation", str, True, "organisation"
                    ),
                    contact=_field(
                        _obj(raw, "submitter"), "submitter.contact", str, True, "contact"
                    ),
                ),
                hardware=Hardware(
                    platform=_field(
                        _obj(raw, "hardware"), "hardware.platform", str, key="platform"
                    ),
                    cpu_count=_field(
                        _obj(raw, "hardware"), "hardware.cpu_count", int, True, "cpu_count"
                    ),
                    gpu=_field(_obj(raw, "hardware"), "hardware.gpu", str, True, "gpu"),
                ),
                suite=SuiteRecord(
                    suite_hash=_field(
                        _obj(raw, "suite"), "suite.suite_hash", str, key="suite_hash"
                    ),
                    name=_field(_obj(raw, "suite"), "suite.name", str, True, "name"),
                    path=_field(_obj(raw, "suite"), "suite.path", str, True, "path"),
                    config=_field(_obj(raw, "suite"), "suite.config", dict, key="config"),
                    toml=_field(_obj(raw, "suite"), "suite.toml", str, True, "toml"),
                ),
                files=_str_map(raw, "files"),
                created_at=_field(raw, "created_at", str),
                weights=_weights(raw),
                digest=_field(raw, "digest", str),
            )
        except KeyError as exc:
            raise BundleError(f"missing field {exc.args[0]}") from None


def manifest_digest(body: dict[str, Any]) -> str:
    """SHA-256 of a manifest's body as canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _obj(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"field {key} must be an object, got {value!r:.60}")
    return value


def _field(
    raw: dict[str, Any], name: str, kind: type, optional: bool = False, key: str | None = None
) -> Any:
    key = key or name
    if key not in raw:
        if optional:
            return None
        raise KeyError(name)
    value = raw[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"field {name} must be {kind.__name__}, got {value!r:.60}")
    return value


def _str_map(raw: dict[str, Any], key: str, optional_values: bool = False) -> dict[str, Any]:
    value = _obj(raw, key)
    for k, v in value.items():
        if not (isinstance(v, str) or (optional_values and v is None)):
            raise BundleError(f"field {key}.{k} must be a string, got {v!r:.60}")
    return dict(value)


def _weights(raw: dict[str, Any]) -> dict[str, dict[str, str]] | None:
    if raw.get("weights") is None:
        return None
    return {run: _str_map(_obj(raw, "weights"), run) for run in _obj(raw, "weights")}


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None when not installed)."""
    out: dict[str, str | None] = {}
    for name, dist in PACKAGES.items():
        try:
            out[name] = md.version(dist)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def this_hardware() -> Hardware:
    """Platform, CPU count and, when torch sees a CUDA device, the GPU's name."""
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return Hardware(platform=platform.platform(), cpu_count=os.cpu_count(), gpu=gpu)


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_bundle` wrote: the folder, its manifest, rows per table."""

    path: Path
    manifest: Manifest
    rows: dict[str, int] = field(default_factory=dict)


def _literal(text: str) -> str:
    """A SQL string literal (COPY takes no prepared parameters)."""
    return "'" + text.replace("'", "''") + "'"


def pick_suite(stored: list[tuple[str, str | None]], wanted: str | None) -> str:
    """The suite hash ``--suite`` names among ``stored`` (hash, name) pairs: an exact hash, a
    unique hash prefix or a unique name; without ``--suite``, the only stored suite. Raises
    :class:`BundleError` listing the choices otherwise."""
    choices = ", ".join(f"{name or '?'} ({h})" for h, name in stored) or "none"
    if not stored:
        raise BundleError("the database holds no suite yet: nothing to export")
    if wanted is None:
        if len(stored) == 1:
            return stored[0][0]
        raise BundleError(
            f"the database holds several suites; pick one with --suite NAME_OR_HASH: {choices}"
        )
    for h, _ in stored:
        if h == wanted:
            return h
    matches = sorted({h for h, name in stored if name == wanted or h.startswith(wanted)})
    if len(matches) == 1:
        return matches[0]
    why = "matches several suites" if matches else "no such suite"
    raise BundleError(f"--suite {wanted!r}: {why}; stored: {choices}")


def _weight_hashes(runs_dir: Path, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per run whose folder ``runs_dir/<run_id>`` still exists: its weight files' SHA-256."""
    from kdbench.models import WEIGHT_SUFFIXES  # what is hashed (never copied); loads torch

    out: dict[str, dict[str, str]] = {}
    for run_id in run_ids:
        folder = runs_dir / run_id
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if files:
            out[run_id] = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    return out


def _check_out(out: Path) -> None:
    """``--out`` must be a new (or empty) folder in an existing one."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BundleError(f"--out {out}: exists and is not an empty folder; give a new folder")
    if not out.parent.is_dir():
        raise BundleError(f"--out {out}: its folder {out.parent} does not exist")


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into, moved to ``out`` when the block ends
    and removed when it fails: a failed export leaves nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty, checked by _check_out
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_bundle(
    db: str | Path,
    out: str | Path,
    submitter: Submitter,
    *,
    suite: str | None = None,
    weights: bool = False,
) -> ExportResult:
    """Write the bundle of one suite of ``db`` to the new folder ``out`` (see the module
    docstring). The files are written to a temporary folder beside ``out`` and moved into
    place at the end: a failed export leaves nothing. Raises :class:`BundleError` (or
    :class:`kdbench.store.StoreError`) with one line for bad input."""
    db, out = Path(db), Path(out)
    if not submitter.name.strip():
        raise BundleError("--submitter: must not be empty")
    _check_out(out)
    con = store.connect(db, read_only=True)
    try:
        stored = con.execute("SELECT suite_hash, name FROM suites ORDER BY suite_hash").fetchall()
        suite_hash = pick_suite(stored, suite)
        name, path, config = con.execute(
            "SELECT name, path, CAST(config AS VARCHAR) FROM suites WHERE suite_hash = ?",
            [suite_hash],
        ).fetchone()
        run_ids = [
            r[0]
            for r in con.execute(
                "SELECT run_id FROM runs WHERE suite_hash = ? ORDER BY run_id", [suite_hash]
            ).fetchall()
        ]
        h = _literal(suite_hash)
        of_suite = f"run_id IN (SELECT run_id FROM runs WHERE suite_hash = {h})"
        queries = {
            "suites": f"SELECT * FROM suites WHERE suite_hash = {h}",
            "runs": f"SELECT * FROM runs WHERE suite_hash = {h} ORDER BY run_id",
            "metrics": f"SELECT * FROM metrics WHERE {of_suite} ORDER BY run_id, task, metric",
            "costs": f"SELECT * FROM costs WHERE {of_suite} ORDER BY run_id",
            "samples": f"SELECT * FROM samples WHERE {of_suite} ORDER BY run_id, task, doc_id",
        }
        with _staged(out) as tmp:
            rows: dict[str, int] = {}
            for table, sql in queries.items():
                target = tmp / f"{table}.parquet"
                con.execute(f"COPY ({sql}) TO {_literal(str(target))} (FORMAT parquet)")
                rows[table] = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
            toml = None
            if path:
                try:
                    toml = Path(path).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    toml = None
            manifest = Manifest(
                bundle_format=BUNDLE_FORMAT,
                schema_version=store.SCHEMA_VERSION,
                kdbench_version=__version__,
                packages=package_versions(),
                submitter=submitter,
                hardware=this_hardware(),
                suite=SuiteRecord(suite_hash, name, path, json.loads(config or "{}"), toml),
                files={f"{t}.parquet": sha256_file(tmp / f"{t}.parquet") for t in TABLES},
                created_at=datetime.now(store._UTC).replace(microsecond=0).isoformat(),
                weights=(
                    _weight_hashes(db.resolve().parent / "runs", run_ids) if weights else None
                ),
            ).sealed()
            (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    except duckdb.Error as exc:
        raise BundleError(f"could not export from {db}: {exc}") from exc
    finally:
        con.close()
    return ExportResult(out, manifest, rows)


def export_all(db: str | Path, out: str | Path) -> dict[str, int]:
    """Write every table of ``db`` (:data:`kdbench.store.ALL_TABLES`, every suite, with the
    ``provenance`` and ``bundles`` of what was imported) to the new folder ``out``, one
    ``<table>.parquet`` each: the folder ``kdbench app --parquet`` serves. Written to a
    temporary folder beside ``out`` and moved into place at the end. Returns rows per table."""
    db, out = Path(db), Path(out)
    _check_out(out)
    con = store.connect(db, read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM suites").fetchone()[0]:
            raise BundleError(f"{db} holds no suite yet: nothing to export")
        with _staged(out) as tmp:
            rows: dict[str, int] = {}
            hashes = [r[0] for r in con.execute("SELECT suite_hash FROM suites").fetchall()]
            # every suite's board snapshot, computed now whatever the database holds
            fresh = snapshot_rows(con, sorted(hashes))
            con.register("kdbench_fresh_snapshots", fresh)
            for table in store.ALL_TABLES:
                target = _literal(str(tmp / f"{table}.parquet"))
                source = "kdbench_fresh_snapshots" if table == snapshots.TABLE else table
                con.execute(
                    f"COPY (SELECT * FROM {source} ORDER BY ALL) TO {target} (FORMAT parquet)"
                )
                rows[table] = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    except duckdb.Error as exc:
        raise BundleError(f"could not export from {db}: {exc}") from exc
    finally:
        con.close()
    return rows


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_bundle` did: the run ids added and those skipped (already there
    with identical content), and whether the suite row was new."""

    added: tuple[str, ...]
    skipped: tuple[str, ...]
    suite_added: bool


_KEYS: dict[str, tuple[str, ...]] = {  # each results table's primary key in the store
    "runs": ("run_id",),
    "metrics": ("run_id", "task", "metric"),
    "costs": ("run_id",),
    "samples": ("run_id", "task", "doc_id"),
}


def _differing_runs(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The run ids of ``b_present`` whose rows of ``table`` differ between the bundle
    (``b_<table>``) and the database, compared on the bundle's columns: a row on one side
    only, or a column that differs (``IS DISTINCT FROM``: NULL equals NULL, NaN equals NaN).
    One join on the table's primary key for every run already there, not a query per run
    (the bundle has no duplicate key, :mod:`kdbench.verify` checks it; the store has none)."""
    columns = [r[0] for r in con.execute(f"DESCRIBE b_{table}").fetchall()]
    keys = _KEYS[table]
    on = " AND ".join(f'b."{k}" = d."{k}"' for k in keys)
    distinct = " OR ".join(f'b."{c}" IS DISTINCT FROM d."{c}"' for c in columns if c not in keys)
    cols = ", ".join(f'"{c}"' for c in columns)
    mine = "run_id IN (SELECT run_id FROM b_present)"
    sql = f"""SELECT DISTINCT coalesce(b.run_id, d.run_id) FROM
        (SELECT {cols}, true AS here FROM b_{table} WHERE {mine}) b
        FULL OUTER JOIN (SELECT {cols}, true AS here FROM {table} WHERE {mine}) d ON {on}
        WHERE b.here IS NULL OR d.here IS NULL{f" OR {distinct}" if distinct else ""}"""
    return {r[0] for r in con.execute(sql).fetchall()}


def checker_text(report: Any) -> str:
    """What ``kdbench import`` stores of a passing :class:`kdbench.verify.Report` in the
    ``bundles`` table: the verdict, then the summary lines ``kdbench verify`` prints."""
    summary = report.summary.text() if report.summary is not None else ""
    return f"verify: ok ({len(report.problems)} problems)\n{summary}".rstrip("\n")


def import_bundle(bundle: str | Path, db: str | Path) -> ImportResult:
    """Verify ``bundle`` (:func:`kdbench.verify.verify_bundle`; a failing one raises
    :class:`BundleRejected`), then merge it into ``db`` in one transaction: the suite row if
    new, and each run not there yet with its metrics, costs, samples and a ``provenance`` row,
    and the bundle's ``bundles`` row (its submitter, manifest and :func:`checker_text`).
    A run already there with identical content (on the bundle's columns) is skipped; one there
    from another submitter, or with different content, refuses the whole import
    (:class:`BundleError`, nothing written). The suite's teacher run is the exception: it is
    shared by every submitter of the suite, so one already there is kept (the bundle's skipped)
    when its scores are the same, and refuses the import only when they differ (another
    teacher)."""
    from kdbench.verify import verify_bundle

    bundle = Path(bundle)
    report = verify_bundle(bundle)
    if not report.ok:
        raise BundleRejected(report)
    manifest = report.manifest
    assert manifest is not None
    bundle_sha = sha256_file(bundle / MANIFEST)
    who = manifest.submitter
    con = store.connect(db)
    try:
        with store.transaction(
            con, lambda exc: BundleError(f"{bundle}: import failed, nothing written: {exc}")
        ):
            for table in TABLES:
                target = _literal(str(bundle / f"{table}.parquet"))
                con.execute(f"CREATE TEMP TABLE b_{table} AS SELECT * FROM read_parquet({target})")
            run_ids = [
                r[0] for r in con.execute("SELECT run_id FROM b_runs ORDER BY run_id").fetchall()
            ]
            present = {
                r[0]: r[1]
                for r in con.execute(
                    "SELECT r.run_id, p.submitter FROM runs r LEFT JOIN provenance p USING (run_id)"
                    " WHERE r.run_id IN (SELECT run_id FROM b_runs)"
                ).fetchall()
            }
            teachers = {
                r[0]
                for r in con.execute("SELECT run_id FROM b_runs WHERE role = 'teacher'").fetchall()
            }
            # the runs already there, compared table by table in SQL (not run by run)
            con.execute(
                "CREATE TEMP TABLE b_present AS SELECT r.run_id FROM runs r "
                "WHERE r.run_id IN (SELECT run_id FROM b_runs)"
            )
            differing = {t: _differing_runs(con, t) for t in TABLES[1:]} if present else {}
            conflicts: list[str] = []
            for run_id in run_ids:
                if run_id not in present:
                    continue
                if run_id in teachers and present[run_id] != who.name:
                    # a suite's teacher run is every submitter's: shared when it scored the same
                    if run_id in differing["metrics"]:
                        conflicts.append(
                            f"teacher run {run_id} is already in {db} with other scores "
                            f"(from {present[run_id] or 'this database'}): the submissions "
                            "used different teachers for one suite"
                        )
                    continue
                if present[run_id] is not None and present[run_id] != who.name:
                    conflicts.append(
                        f"run {run_id} is already in {db} from submitter {present[run_id]!r}"
                    )
                    continue
                differ = [t for t in TABLES[1:] if run_id in differing[t]]
                if differ:
                    conflicts.append(
                        f"run {run_id} is already in {db} with different content "
                        f"({', '.join(differ)})"
                    )
            if conflicts:
                more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
                raise BundleError(
                    f"{bundle}: import refused, nothing written: {'; '.join(conflicts[:3])}{more}"
                )
            added = [r for r in run_ids if r not in present]
            suite_hashes = [r[0] for r in con.execute("SELECT suite_hash FROM b_suites").fetchall()]
            suite_added = not con.execute(
                "SELECT count(*) FROM suites WHERE suite_hash IN (SELECT suite_hash FROM b_suites)"
            ).fetchone()[0]
            if suite_added:
                con.execute("INSERT INTO suites BY NAME SELECT * FROM b_suites")
            if added:
                # bulk, in SQL: executemany costs about a millisecond a row (10,000-run bundles)
                con.execute(
                    "CREATE TEMP TABLE b_new AS SELECT run_id FROM b_runs "
                    "WHERE run_id NOT IN (SELECT run_id FROM b_present)"
                )
                for table in TABLES[1:]:
                    con.execute(
                        f"INSERT INTO {table} BY NAME SELECT * FROM b_{table}"
                        " WHERE run_id IN (SELECT run_id FROM b_new)"
                    )
                now = datetime.now(store._UTC).replace(tzinfo=None)
                # the suite's board snapshot no longer holds (rebuilt below, kdbench.snapshots)
                snapshots.drop(con, suite_hashes)
                con.execute(
                    "INSERT INTO provenance (run_id, submitter, organisation, bundle_sha256,"
                    " imported_at) SELECT run_id, ?, ?, ?, ? FROM b_new ORDER BY run_id",
                    [who.name, who.organisation, bundle_sha, now],
                )
            # the bundle itself, once: its manifest and what the checker said of it
            con.execute(
                "INSERT INTO bundles VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    bundle_sha,
                    who.name,
                    who.organisation,
                    who.contact,
                    datetime.now(store._UTC).replace(tzinfo=None),
                    manifest.to_json(),
                    checker_text(report),
                ],
            )
    finally:
        con.close()
    if added:
        refresh_snapshots(db, suite_hashes)
    return ImportResult(tuple(added), tuple(r for r in run_ids if r in present), suite_added)
