"""Provenance of every stored run: package versions (with each plugin's distribution), the git
commit of the kdbench checkout, and the hardware."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from kdbench.methods import plugin_versions

DISTRIBUTIONS = (
    "kdbench",
    "torch",
    "transformers",
    "deepspeed",
    "ray",
    "lm_eval",
    "duckdb",
    "pluggy",
    "streamlit",
)


def versions() -> dict[str, str]:
    """The installed version of each library kdbench runs on, Python's, and the plugins'."""
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    out["python"] = platform.python_version()
    out["plugins"] = json.dumps(plugin_versions(), sort_keys=True)
    return out


def git_commit() -> str:
    """The commit of the checkout kdbench runs from (``-dirty`` with uncommitted changes to
    tracked files), or ``unknown`` for an installed package."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    """Platform, CPU count and, when there is one, the GPU's name and count."""
    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["gpu_count"] = torch.cuda.device_count()
    return hw


def provenance() -> dict[str, str]:
    """The provenance columns of a stored run (JSON text where the value is structured)."""
    return {
        "versions": json.dumps(versions()),
        "git_commit": git_commit(),
        "hardware": json.dumps(hardware()),
    }
