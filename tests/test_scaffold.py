"""``kdbench plugin new`` writes a package that installs, registers and passes the
conformance checks as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.scaffold import new_plugin
from kdbench.testing import CHECKS

from .conftest import SHRINK, tiny_raw


def test_bad_names_and_existing_folders_are_refused(tmp_path: Path) -> None:
    for bad in ("My-KD", "1kd", "class", ""):
        with pytest.raises(ValueError, match="plugin name"):
            new_plugin(bad, tmp_path)
    new_plugin("mine", tmp_path)
    with pytest.raises(ValueError, match="already exists"):
        new_plugin("mine", tmp_path)


def test_long_odd_names_and_file_folders_are_refused_writing_nothing(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for bad in ("a" * 300, "a" * 41, "../up", "a/b", "a\nb", "a\x00b", "ä"):
        with pytest.raises(ValueError, match="plugin name") as info:
            new_plugin(bad, tmp_path)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
    for where in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(ValueError, match="is a file, not a folder"):
            new_plugin("mine", where)
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]
    assert new_plugin("a" * 40, tmp_path / "new" / "folder").is_dir()  # created on demand


@pytest.mark.e2e
def test_generated_plugin_installs_registers_passes_and_runs(tmp_path: Path, write_suite) -> None:
    """As generated, the plugin installs, registers, passes every check, passes its own tests
    and runs in a (shrunken) tiny suite with the default top-k signal cache."""
    root = new_plugin("my_kd", tmp_path)
    site = tmp_path / "site"
    # a real pip install, into its own folder so this environment stays untouched
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(root),
        ],
        check=True,
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    listed = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "methods"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "my_kd" in listed
    check = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "plugin", "check", "my_kd"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"my_kd: {len(CHECKS)} passed, 0 failed" in check.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert f"{len(CHECKS) + 2} passed" in tests.stdout  # the checks and the template's own test

    suite = write_suite({**SHRINK, "methods": ["my_kd"], "students": [tiny_raw()["students"][0]]})
    assert "topk = 16" in suite.read_text()  # the default suite's cache: top-k logits
    db = tmp_path / "results.duckdb"
    run = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite), "--db", str(db)]
        + ["--cache", str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    from kdbench import store

    runs = store.read_runs(db)
    mine = runs[runs.method == "my_kd"]
    assert len(mine) == 1 and (mine.status == "ok").all(), runs.error.dropna().tolist()
    assert (mine.teacher_forwards == 0).all()  # it read the cached top-k teacher
