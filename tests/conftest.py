"""Shared fixtures. Everything runs offline on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "leaderboards" / "tiny.toml"


@pytest.fixture
def suite_text() -> str:
    return TINY.read_text()


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite file made from tiny.toml with textual replacements; returns its path."""

    def make(*replacements: tuple[str, str], name: str = "suite.toml") -> Path:
        text = TINY.read_text()
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new, 1)
        path = tmp_path / name
        path.write_text(text)
        return path

    return make
