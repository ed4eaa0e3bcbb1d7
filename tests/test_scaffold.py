"""``kdbench plugin new`` writes a package that installs, registers and passes the
conformance checks as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.scaffold import new_plugin


def test_bad_names_and_existing_folders_are_refused(tmp_path: Path) -> None:
    for bad in ("My-KD", "1kd", "class", ""):
        with pytest.raises(ValueError, match="plugin name"):
            new_plugin(bad, tmp_path)
    new_plugin("mine", tmp_path)
    with pytest.raises(ValueError, match="already exists"):
        new_plugin("mine", tmp_path)


@pytest.mark.e2e
def test_generated_plugin_installs_registers_and_passes(tmp_path: Path) -> None:
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
    assert "my_kd: 5 passed, 0 failed" in check.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "6 passed" in tests.stdout
