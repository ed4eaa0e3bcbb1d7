"""Result bundles (kdbench.bundle, kdbench.verify): export, the checker, the idempotent merge.

Stores are real DuckDB files written through ``store.write_run``, for real suites: the shipped
``leaderboards/tiny.toml`` (closed division) and a variant of it with other seeds (open
division). Every metric that is a mean of per-question values is stored as the exact mean of
its samples, as lm-eval reports it; tampering is done with DuckDB on the bundle's files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import duckdb
import kdbench_leaderboards
import pandas as pd
import pytest

from kdbench import store
from kdbench.bundle import (
    MANIFEST,
    BundleError,
    BundleRejected,
    Manifest,
    Submitter,
    export_bundle,
    import_bundle,
    sha256_file,
)
from kdbench.cli import main
from kdbench.config import Suite, load_suite, parse_suite
from kdbench.leaderboard import leaderboard
from kdbench.verify import verify_bundle
from tests import appdata

ANN = Submitter("Ann", "Lab A", "ann@example.org")
BOB = Submitter("Bob", "Lab B")
QUESTIONS = 20


def tiny() -> Suite:
    return load_suite(kdbench_leaderboards.path("tiny.toml"))


def open_suite(seeds: list[int]) -> Suite:
    """tiny.toml with other seeds and two methods: a suite that ships nowhere."""
    path = kdbench_leaderboards.path("tiny.toml")
    raw = tomllib.loads(path.read_text())
    raw.update(seeds=seeds, methods=["sft", "kd"], name="tiny-open")
    return parse_suite(raw, path)


def _samples(key: str, task: str) -> list[dict]:
    digest = hashlib.sha256(f"{key}/{task}".encode()).digest()
    return [
        {"task": task, "doc_id": d, "correct": float(digest[d] % 3 != 0), "confidence": 0.7}
        for d in range(QUESTIONS)
    ]


def write_runs(
    db: Path,
    suite: Suite,
    *,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
    teacher: bool = True,
) -> Path:
    """Write ``suite`` and its runs (a teacher, then every method x student x seed) to ``db``:
    per task a primary mean metric equal to the mean of its samples, a fidelity metric
    without samples, and budget costs."""
    store.write_suite(db, suite.hash, suite.name, suite.path, suite.to_dict())
    tasks = suite.eval.tasks
    budget = {
        "steps": suite.budget.steps,
        "sequences": suite.budget.steps * suite.budget.batch_size,
    }
    jobs = [("teacher", suite.teacher.name, 0)] if teacher else []
    seeds = suite.seeds if seeds is None else seeds
    jobs += [
        (m, s.name, seed)
        for m in methods or suite.methods
        for s in suite.students
        for seed in seeds
    ]
    for method, student, seed in jobs:
        run_id = f"{method}-{student}-s{seed}"
        samples = [x for t in tasks for x in _samples(run_id, t)]
        metrics = []
        for task in tasks:
            values = [x["correct"] for x in samples if x["task"] == task]
            metrics.append(
                {"task": task, "metric": "acc", "value": sum(values) / len(values),
                 "stderr": 0.05, "is_primary": True, "aggregation": "mean"}
            )  # fmt: skip
            metrics.append(
                {"task": task, "metric": "fidelity_top1", "value": 0.8, "aggregation": "mean"}
            )
        role = "teacher" if method == "teacher" else "student"
        run = {
            "run_id": run_id, "suite_hash": suite.hash, "role": role, "method": method,
            "family": "teacher" if role == "teacher" else "logit", "student": student,
            "seed": seed, "status": "ok", "method_config": {}, "hardware": {"cpu_count": 2},
            "started_at": "2026-11-23T10:00:00", "finished_at": "2026-11-23T10:01:00",
        }  # fmt: skip
        costs = {"params": 1000, "train_wall_s": 10.0 + seed, "eval_wall_s": 1.0,
                 **({"steps": 600} if role == "teacher" else budget)}  # fmt: skip
        store.write_run(db, run, metrics, costs, samples)
    return db


def tables(db: Path) -> dict[str, pd.DataFrame]:
    """Every kdbench table of ``db``, sorted, to compare databases."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in ("suites", "runs", "metrics", "costs", "samples", "provenance"):
            out[table] = con.execute(f"SELECT * FROM {table} ORDER BY ALL").df()
        return out
    finally:
        con.close()


def assert_same_tables(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_dtype=False, obj=table)


@pytest.fixture(scope="module")
def closed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs(tmp_path_factory.mktemp("closed") / "kdbench.duckdb", tiny())


@pytest.fixture
def closed_bundle(closed_db: Path, tmp_path: Path) -> Path:
    return export_bundle(closed_db, tmp_path / "bundle", ANN).path


def reseal(bundle: Path) -> None:
    """Recompute the manifest's file hashes and digest: a tamperer who covers their tracks."""
    manifest = Manifest.from_json((bundle / MANIFEST).read_text())
    files = {name: sha256_file(bundle / name) for name in manifest.files}
    (bundle / MANIFEST).write_text(replace(manifest, files=files).sealed().to_json())


def rewrite(bundle: Path, table: str, select: str) -> None:
    """Rewrite ``<table>.parquet`` with DuckDB: ``select`` reads the old file as ``t``."""
    path = bundle / f"{table}.parquet"
    tmp = bundle.parent / f"{table}.new.parquet"
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{path}')")
    con.execute(f"COPY ({select}) TO '{tmp}' (FORMAT parquet)")
    con.close()
    tmp.replace(path)


def lines(bundle: Path) -> list[str]:
    return verify_bundle(bundle).lines()


# --------------------------------------------------------------------------- export + verify


def test_export_writes_the_tables_and_a_sealed_manifest(closed_db: Path, closed_bundle: Path):
    suite = tiny()
    names = sorted(p.name for p in closed_bundle.iterdir())
    assert names == sorted([MANIFEST] + [f"{t}.parquet" for t in store._TABLES[1:]])
    manifest = Manifest.from_json((closed_bundle / MANIFEST).read_text())
    assert manifest.suite.suite_hash == suite.hash
    assert manifest.suite.toml == Path(suite.path).read_text()
    assert manifest.suite.config == json.loads(json.dumps(suite.to_dict(), default=str))
    assert manifest.submitter == ANN and manifest.schema_version == store.SCHEMA_VERSION
    assert {"torch", "transformers", "lm-eval", "deepspeed", "ray", "duckdb"} <= set(
        manifest.packages
    )
    assert manifest.hardware.cpu_count and manifest.weights is None
    assert manifest == manifest.sealed()
    for name, digest in manifest.files.items():
        assert sha256_file(closed_bundle / name) == digest
    con = duckdb.connect()
    runs = con.execute(f"SELECT * FROM '{closed_bundle}/runs.parquet'").df()
    assert len(runs) == 1 + len(suite.methods) * len(suite.students) * len(suite.seeds)
    pd.testing.assert_frame_equal(
        con.execute(f"SELECT * FROM '{closed_bundle}/samples.parquet' ORDER BY ALL").df(),
        store.read_samples(closed_db).sort_values(["run_id", "task", "doc_id"], ignore_index=True),
        check_dtype=False,
    )


def test_a_clean_bundle_verifies_in_the_closed_division(closed_bundle: Path, capsys):
    report = verify_bundle(closed_bundle)
    assert report.ok, report.lines()
    summary = report.summary
    assert summary.division == "closed" and summary.shipped == "leaderboards/tiny.toml"
    assert summary.seeds == (0, 1, 2) and summary.runs_by_method["kd"] == 6
    assert summary.runs_by_method["teacher"] == 1
    n_runs = 1 + 15 * 2 * 3
    assert (summary.metrics_checked, summary.metrics_unchecked) == (2 * n_runs, 2 * n_runs)
    assert main(["verify", str(closed_bundle)]) == 0
    out = capsys.readouterr().out
    assert "closed division (matches leaderboards/tiny.toml)" in out
    assert "submitter: Ann (Lab A)" in out and "seeds: 0, 1, 2" in out


def test_an_incomplete_closed_bundle_is_refused(closed_db: Path, tmp_path: Path):
    db = tmp_path / "db.duckdb"
    shutil.copy(closed_db, db)
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM runs WHERE method = 'kd' AND seed = 2")
    con.close()
    bundle = export_bundle(db, tmp_path / "b", ANN).path
    assert lines(bundle) == [
        f"{bundle}/runs.parquet: complete: closed division: no ok run of method kd with seed 2"
    ]


def test_an_open_division_bundle_is_reported_not_refused(tmp_path: Path):
    db = write_runs(tmp_path / "db.duckdb", open_suite([5, 6]))
    report = verify_bundle(export_bundle(db, tmp_path / "b", BOB).path)
    assert report.ok and report.summary.division == "open" and report.summary.seeds == (5, 6)


def test_export_picks_the_suite_and_hashes_weights(tmp_path: Path, capsys):
    db = appdata.build(tmp_path / "results" / "kdbench.duckdb")
    weights = tmp_path / "results" / "runs" / "kd-0.1M-s0"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"weights")
    (weights / "config.json").write_text("{}")
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "x"), "--submitter", "A"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "several suites" in err
    assert "tiny (5a17e000aaaa1111)" in err and "tiny-300 (0bbe7000bbbb2222)" in err
    argv = ["export", "--db", str(db), "--out", str(tmp_path / "x"), "--submitter", "A"]
    assert main([*argv, "--suite", "nope"]) == 2
    assert "--suite 'nope': no such suite; stored: " in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main([*argv, "--suite", "tiny-300", "--contact", "a@b.c", "--weights-hash"]) == 0
    manifest = Manifest.from_json((tmp_path / "x" / MANIFEST).read_text())
    assert manifest.suite.suite_hash == appdata.OTHER and manifest.weights == {}
    result = export_bundle(db, tmp_path / "y", ANN, suite=appdata.SUITE[:6], weights=True)
    sha = hashlib.sha256(b"weights").hexdigest()
    assert result.manifest.weights == {"kd-0.1M-s0": {"model.safetensors": sha}}
    assert not list((tmp_path / "y").rglob("*.safetensors"))  # hashed, never copied
    with pytest.raises(BundleError, match="exists and is not an empty folder"):
        export_bundle(db, tmp_path / "y", ANN, suite="tiny")
    empty = tmp_path / "empty.duckdb"
    store.connect(empty).close()
    with pytest.raises(BundleError, match="holds no suite yet: nothing to export"):
        export_bundle(empty, tmp_path / "z", ANN)
    assert not (tmp_path / "z").exists()


def test_the_submitter_can_come_from_a_file(tmp_path: Path, capsys):
    db = write_runs(tmp_path / "db.duckdb", open_suite([5]))
    who = tmp_path / "submitter.toml"
    who.write_text('[submitter]\nname = "Ann"\norganisation = "Lab A"\ncontact = "ann@a.org"\n')
    argv = ["export", "--db", str(db), "--submitter-file", str(who)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    manifest = Manifest.from_json((tmp_path / "a" / MANIFEST).read_text())
    assert manifest.submitter == Submitter("Ann", "Lab A", "ann@a.org")
    # the command line's options override the file's
    assert main([*argv, "--out", str(tmp_path / "b"), "--organisation", "Lab B"]) == 0
    manifest = Manifest.from_json((tmp_path / "b" / MANIFEST).read_text())
    assert manifest.submitter == Submitter("Ann", "Lab B", "ann@a.org")
    capsys.readouterr()
    for text, expected in (
        ('name = "Ann"\nteam = "x"\n', f"{who}: team: unknown key; allowed: name, organisation"),
        ("[submitter]\nname = 3\n", f"{who}: submitter.name: must be non-empty text"),
        ('submitter = "Ann"\n', f"{who}: submitter: must be a table of name"),
        ("name = \n", f"{who}: not valid TOML"),
        ('organisation = "Lab"\n', "--submitter NAME (or a name in --submitter-file) is required"),
    ):
        who.write_text(text)
        assert main([*argv, "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "c").exists()
    missing = ["--submitter-file", str(tmp_path / "nope.toml")]
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "c"), *missing]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- tampering


def test_an_edited_metric_is_caught_by_hash_and_by_recomputation(closed_bundle: Path):
    run = "kd-student-0.1M-s1"
    rewrite(
        closed_bundle,
        "metrics",
        f"SELECT * REPLACE (CASE WHEN run_id = '{run}' AND metric = 'acc' "
        "AND task = 'kd_add2' THEN value + 0.05 ELSE value END AS value) FROM t",
    )
    found = lines(closed_bundle)
    assert len(found) == 2
    assert found[0].startswith(f"{closed_bundle}/metrics.parquet: hash: SHA-256 ")
    assert found[1].startswith(
        f"{closed_bundle}/metrics.parquet: run {run}: metric: kd_add2/acc is "
    )
    reseal(closed_bundle)  # the hashes fixed: the samples still give it away
    assert [x.split(" is ")[0] for x in lines(closed_bundle)] == [
        f"{closed_bundle}/metrics.parquet: run {run}: metric: kd_add2/acc"
    ]


def test_an_edited_manifest_is_caught(closed_bundle: Path, tmp_path: Path):
    raw = json.loads((closed_bundle / MANIFEST).read_text())
    raw["submitter"]["name"] = "Mallory"
    (closed_bundle / MANIFEST).write_text(json.dumps(raw))
    found = lines(closed_bundle)
    assert len(found) == 1
    assert found[0].startswith(f"{closed_bundle}/manifest.json: manifest: edited: its content")
    with pytest.raises(BundleRejected):
        import_bundle(closed_bundle, tmp_path / "db.duckdb")
    assert not (tmp_path / "db.duckdb").exists()


def test_a_truncated_parquet_file_is_reported_in_one_line(closed_bundle: Path):
    path = closed_bundle / "samples.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = lines(closed_bundle)
    assert [x.split(": ")[1] for x in found] == ["hash", "parquet"]
    assert found[1].startswith(
        f"{closed_bundle}/samples.parquet: parquet: not a readable Parquet file"
    )
    assert all("\n" not in x for x in found)


def test_missing_and_extra_files_are_reported(closed_bundle: Path):
    (closed_bundle / "costs.parquet").unlink()
    (closed_bundle / "notes.txt").write_text("hi")
    assert lines(closed_bundle) == [
        f"{closed_bundle}/costs.parquet: files: listed in the manifest but missing",
        f"{closed_bundle}/notes.txt: files: not listed in the manifest",
    ]


def test_a_run_off_the_budget_is_refused(closed_db: Path, tmp_path: Path):
    db = tmp_path / "db.duckdb"
    shutil.copy(closed_db, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE costs SET steps = 150 WHERE run_id = 'fkl-student-0.25M-s0'")
    con.close()
    bundle = export_bundle(db, tmp_path / "b", ANN).path
    assert lines(bundle) == [
        f"{bundle}/costs.parquet: run fkl-student-0.25M-s0: budget: trained on 150 steps, "
        "not 220 (the suite's [budget])"
    ]


def test_a_foreign_suite_hash_and_a_duplicate_run_are_refused(closed_bundle: Path, capsys):
    rewrite(
        closed_bundle,
        "runs",
        "SELECT * REPLACE (CASE WHEN run_id = 'sft-student-0.1M-s0' THEN 'ffff0000ffff0000' "
        "ELSE suite_hash END AS suite_hash) FROM t UNION ALL "
        "SELECT * FROM t WHERE run_id = 'jsd-student-0.1M-s2'",
    )
    reseal(closed_bundle)
    assert lines(closed_bundle) == [
        f"{closed_bundle}/runs.parquet: run jsd-student-0.1M-s2: duplicate: run id appears 2 times",
        f"{closed_bundle}/runs.parquet: run sft-student-0.1M-s0: suite_hash: of suite "
        f"ffff0000ffff0000, not the bundle's {tiny().hash}",
    ]
    assert main(["verify", str(closed_bundle)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 2


def test_a_newer_schema_version_is_refused(closed_bundle: Path):
    manifest = Manifest.from_json((closed_bundle / MANIFEST).read_text())
    newer = replace(manifest, schema_version=store.SCHEMA_VERSION + 1).sealed()
    (closed_bundle / MANIFEST).write_text(newer.to_json())
    assert lines(closed_bundle) == [
        f"{closed_bundle}/manifest.json: schema: store schema version "
        f"{store.SCHEMA_VERSION + 1} is unknown (this kdbench understands 1 to "
        f"{store.SCHEMA_VERSION}): upgrade kdbench"
    ]


def test_the_cli_prints_failures_without_a_traceback(closed_bundle: Path, tmp_path: Path):
    path = closed_bundle / "runs.parquet"
    path.write_bytes(path.read_bytes()[:100])
    for argv in (["verify", str(closed_bundle)], ["import", str(closed_bundle), "--db", "x.db"]):
        done = subprocess.run(
            [sys.executable, "-m", "kdbench.cli", *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"{closed_bundle}/runs.parquet: parquet: not a readable Parquet" in done.stderr
    assert not (tmp_path / "x.db").exists()


# --------------------------------------------------------------------------- import


def test_import_twice_changes_nothing(closed_bundle: Path, closed_db: Path, tmp_path: Path):
    db = tmp_path / "third.duckdb"
    first = import_bundle(closed_bundle, db)
    assert len(first.added) == 91 and first.skipped == () and first.suite_added
    after = tables(db)
    assert len(after["provenance"]) == 91
    assert set(after["provenance"]["submitter"]) == {"Ann"}
    assert set(after["provenance"]["organisation"]) == {"Lab A"}
    assert set(after["provenance"]["bundle_sha256"]) == {sha256_file(closed_bundle / MANIFEST)}
    source = tables(closed_db)
    for table in ("suites", "runs", "metrics", "costs", "samples"):
        pd.testing.assert_frame_equal(after[table], source[table], check_dtype=False)
    second = import_bundle(closed_bundle, db)
    assert second.added == () and len(second.skipped) == 91 and not second.suite_added
    assert_same_tables(tables(db), after)


def test_two_submitters_merge_into_the_board_of_one_database(tmp_path: Path, capsys):
    suite = open_suite([0, 1])
    a = write_runs(tmp_path / "a.duckdb", suite, seeds=(0,))
    b = write_runs(tmp_path / "b.duckdb", suite, seeds=(1,))  # the same teacher run: shared
    both = write_runs(tmp_path / "both.duckdb", suite)
    export_bundle(a, tmp_path / "ba", ANN)
    assert (
        main(["export", "--db", str(b), "--out", str(tmp_path / "bb"), "--submitter", "Bob"]) == 0
    )
    merged = tmp_path / "merged.duckdb"
    assert main(["import", str(tmp_path / "ba"), "--db", str(merged)]) == 0
    assert main(["import", str(tmp_path / "bb"), "--db", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "5 runs added, 0 already there" in out and "4 runs added, 1 already there" in out
    pd.testing.assert_frame_equal(leaderboard(merged, suite.hash), leaderboard(both, suite.hash))
    provenance = tables(merged)["provenance"]
    assert dict(provenance.groupby("submitter").size()) == {"Ann": 5, "Bob": 4}
    # the terminal's board, split by submitter as the app shows it
    assert main(["leaderboard", "--db", str(merged), "--by-submitter"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head[:5] == ["rank", "method", "family", "student", "submitter"]
    rows = [line.split() for line in lines[2:] if line.strip()]
    shown = {(r[1], r[4]) for r in rows if len(r) > 4 and r[1] in ("kd", "sft")}
    assert {("kd", "Ann"), ("kd", "Bob"), ("sft", "Ann"), ("sft", "Bob")} <= shown


def test_a_teacher_run_with_other_scores_refuses_the_import(tmp_path: Path, capsys):
    """The suite's teacher run is shared between submitters only when it scored the same."""
    suite = open_suite([0, 1])
    a = write_runs(tmp_path / "a.duckdb", suite, seeds=(0,))
    b = write_runs(tmp_path / "b.duckdb", suite, seeds=(1,))
    con = duckdb.connect(str(b))
    con.execute(
        "UPDATE metrics SET value = 0.5 WHERE run_id LIKE 'teacher-%' AND metric = 'fidelity_top1'"
    )
    con.close()
    merged = tmp_path / "merged.duckdb"
    import_bundle(export_bundle(a, tmp_path / "ba", ANN).path, merged)
    before = tables(merged)
    export_bundle(b, tmp_path / "bb", BOB)
    assert main(["import", str(tmp_path / "bb"), "--db", str(merged)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "used different teachers for one suite" in err
    assert_same_tables(tables(merged), before)


def test_another_submitters_run_or_changed_content_refuses_the_import(tmp_path: Path, capsys):
    suite = open_suite([0])
    db = write_runs(tmp_path / "a.duckdb", suite)
    merged = tmp_path / "merged.duckdb"
    import_bundle(export_bundle(db, tmp_path / "ann", ANN).path, merged)
    before = tables(merged)
    export_bundle(db, tmp_path / "bob", BOB)
    assert main(["import", str(tmp_path / "bob"), "--db", str(merged)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "import refused, nothing written" in err
    assert "already in" in err and "from submitter 'Ann'" in err
    # Ann again, with one run's cost changed and one new run: refused whole
    con = duckdb.connect(str(db))
    con.execute("UPDATE costs SET train_wall_s = 99 WHERE run_id = 'kd-student-0.1M-s0'")
    con.close()
    write_runs(db, open_suite([0]), methods=("sft",), seeds=(0,), teacher=False)
    store.write_run(
        db,
        {"run_id": "new-run", "suite_hash": suite.hash, "role": "teacher", "status": "ok"},
        [],
        {},
    )
    bundle = export_bundle(db, tmp_path / "ann2", ANN).path
    with pytest.raises(BundleError, match=r"kd-student-0.1M-s0 .* different content \(costs\)"):
        import_bundle(bundle, merged)
    assert_same_tables(tables(merged), before)


def test_import_of_a_bad_bundle_writes_nothing(closed_bundle: Path, tmp_path: Path, capsys):
    db = write_runs(tmp_path / "db.duckdb", open_suite([3]))
    before = tables(db)
    (closed_bundle / MANIFEST).write_text("{")
    assert main(["import", str(closed_bundle), "--db", str(db)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{closed_bundle}/manifest.json: manifest: not JSON")
    assert err[-1] == f"kdbench: error: {closed_bundle}: fails verification; not imported"
    assert_same_tables(tables(db), before)
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'nowhere'}: bundle: no such folder; give a folder `kdbench export` wrote"
    )


def test_a_changed_sample_or_a_missing_metric_row_refuses_the_reimport(tmp_path: Path):
    suite = open_suite([0])
    db = write_runs(tmp_path / "a.duckdb", suite)
    merged = tmp_path / "merged.duckdb"
    import_bundle(export_bundle(db, tmp_path / "first", ANN).path, merged)
    before = tables(merged)
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE samples SET confidence = 0.9 WHERE run_id = 'kd-student-0.1M-s0' AND doc_id = 3"
    )
    con.execute(
        "DELETE FROM metrics WHERE run_id = 'sft-student-0.25M-s0' AND metric = 'fidelity_top1'"
    )
    con.close()
    bundle = export_bundle(db, tmp_path / "second", ANN).path
    with pytest.raises(BundleError) as caught:
        import_bundle(bundle, merged)
    message = str(caught.value)
    assert "run kd-student-0.1M-s0 is already in" in message and "content (samples)" in message
    assert "run sft-student-0.25M-s0 is already in" in message and "content (metrics)" in message
    assert_same_tables(tables(merged), before)
