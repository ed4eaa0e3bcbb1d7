"""Shared fixtures. Everything runs offline on the CPU.

Suites in tests are built from the bundled ``tiny.toml`` as a dict: :func:`edit_suite` applies
edits such as ``{"budget.steps": 4, "students[0].source": "/x"}`` and :func:`write_suite`'s
fixture writes the result as TOML (for the tests that run the CLI or read a file).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "leaderboards" / "tiny.toml"
DELETE = object()  # an edit's value that removes the key

TINY_ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
# the tiny suite cut to seconds: a tiny teacher with no gate, few examples, steps and questions
SHRINK: dict[str, Any] = {
    "teacher.arch": TINY_ARCH,
    "teacher.train_steps": 6,
    "teacher.max_steps": 12,
    "teacher.gate.value": 0.0,
    "data.n_per_task": 64,
    "budget.steps": 4,
    "budget.batch_size": 8,
    "eval.limit": 6,
    "eval.quantize": [],
    "seeds": [0],
    "teacher.examples_per_task": DELETE,  # the teacher trains on the 64 transfer examples
    "methods": ["sft", "kd", "seqkd", "boom"],
}


def tiny_raw() -> dict[str, Any]:
    """The bundled tiny suite as the dict its TOML parses to."""
    return tomllib.loads(TINY.read_text())


def edit_suite(raw: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted-path edits (``a.b[0].c``; the value :data:`DELETE`
    removes the key or list item)."""
    out = copy.deepcopy(raw)
    for path, value in edits.items():
        keys: list[Any] = []
        for part in path.split("."):
            name, *indices = re.findall(r"[^\[\]]+", part)
            keys += [name, *map(int, indices)]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return out


@pytest.fixture
def write_suite(tmp_path: Path):
    """``write_suite(edits, name="suite.toml")``: tiny.toml with ``edits`` (see
    :func:`edit_suite`) written as TOML under ``tmp_path``; returns its path."""

    def make(edits: dict[str, Any] | None = None, name: str = "suite.toml") -> Path:
        path = tmp_path / name
        path.write_text(tomli_w.dumps(edit_suite(tiny_raw(), edits or {})))
        return path

    return make


@pytest.fixture(scope="session")
def hf_world(tmp_path_factory):
    """Small Hugging Face-format models (Llama teacher and student, GPT-2, Qwen2, one with
    another vocabulary), JSONL transfer data (prompt/response and chat) and a local lm-eval
    task folder, built once per session (:mod:`tests.hf_fixtures`)."""
    from .hf_fixtures import hf_world as build

    return build(tmp_path_factory.mktemp("hf_world"))
