"""The bad-suite corpus (issue 11): each case is an edit of the tiny suite that must be refused
by ``kdbench run --dry-run`` with exit 2 and one stderr line ``kdbench: error: <file>: <field>:
...`` naming the field, no traceback, and no database written. Resources no node can provide
are refused by a real run start, within seconds and before the suite row is written.

A case's value may hold ``{tmp}``: the test's folder, where ``file.txt`` (a file) and
``no_config/`` (a folder without ``config.json``) exist.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from kdbench.cli import main

from ..conftest import DELETE, SHRINK, edit_suite, tiny_raw

BASE = {**SHRINK, "methods": ["sft", "kd"]}
TEACHER_SOURCE = {"teacher.arch": DELETE, "teacher.gate": DELETE}
NL = "bad\nkey"

# (id, edits, the field the line names, words it must also hold)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # a model source: a folder with config.json, or an owner/name Hub id
    (
        "teacher-missing-abs",
        {**TEACHER_SOURCE, "teacher.source": "/no/such/model"},
        "teacher.source",
        "no such folder",
    ),
    (
        "teacher-file",
        {**TEACHER_SOURCE, "teacher.source": "{tmp}/file.txt"},
        "teacher.source",
        "is a file",
    ),
    (
        "teacher-no-config",
        {**TEACHER_SOURCE, "teacher.source": "{tmp}/no_config"},
        "teacher.source",
        "without config.json",
    ),
    ("teacher-empty", {**TEACHER_SOURCE, "teacher.source": ""}, "teacher.source", "owner/name"),
    (
        "student-missing-abs",
        {"students[0].arch": DELETE, "students[0].source": "/no/model"},
        "students[0].source",
        "no such folder",
    ),
    (
        "student-not-hub-id",
        {"students[0].arch": DELETE, "students[0].source": "not a hub id!!"},
        "students[0].source",
        "owner/name",
    ),
    (
        "student-three-parts",
        {"students[0].arch": DELETE, "students[0].source": "a/b/c"},
        "students[0].source",
        "no such folder",
    ),
    # numbers: finite, never booleans, never strings
    (
        "temperature-inf",
        {"method_config.kd.temperature": float("inf")},
        "method_config.kd.temperature",
        "finite",
    ),
    (
        "temperature-true",
        {"method_config.kd.temperature": True},
        "method_config.kd.temperature",
        "number",
    ),
    (
        "temperature-string",
        {"method_config.kd.temperature": "2"},
        "method_config.kd.temperature",
        "got '2'",
    ),
    ("alpha-true", {"method_config.kd.alpha": True}, "method_config.kd.alpha", "number"),
    ("jsd-beta-string", {"method_config.jsd.beta": "half"}, "method_config.jsd.beta", "number"),
    ("lr-nan", {"budget.lr": float("nan")}, "budget.lr", "finite"),
    ("warmup-nan", {"budget.warmup": float("nan")}, "budget.warmup", "finite"),
    ("steps-float", {"budget.steps": 1.5}, "budget.steps", "an integer"),
    ("teacher-lr-inf", {"teacher.lr": float("inf")}, "teacher.lr", "finite"),
    ("gate-value-nan", {"teacher.gate.value": float("nan")}, "teacher.gate.value", "finite"),
    ("cpus-inf", {"resources.cpus_per_job": float("inf")}, "resources.cpus_per_job", "finite"),
    ("gpus-nan", {"resources.gpus_per_job": float("nan")}, "resources.gpus_per_job", "finite"),
    (
        "gpus-fraction-above-1",
        {"resources.gpus_per_job": 1.5},
        "resources.gpus_per_job",
        "whole number",
    ),
    (
        "workers-not-dividing",
        {"resources.workers_per_job": 3},
        "resources.workers_per_job",
        "divide",
    ),
    (
        "lora-alpha-inf",
        {"students[0].lora": {"alpha": float("inf")}},
        "students[0].lora.alpha",
        "finite",
    ),
    (
        "generation-temperature-inf",
        {"generation.temperature": float("-inf")},
        "generation.temperature",
        "finite",
    ),
    ("max-length-true", {"data.max_length": True}, "data.max_length", "an integer"),
    (
        "gen-kwargs-nan",
        {"eval.options": {"kd_compare": {"gen_kwargs": {"temperature": float("nan")}}}},
        "eval.options.kd_compare.gen_kwargs.temperature",
        "finite",
    ),
    # [deepspeed]: what DeepSpeed accepts
    (
        "deepspeed-garbage-key",
        {"deepspeed": {"garbage": 1}},
        "deepspeed.garbage",
        "DeepSpeed does not read",
    ),
    (
        "deepspeed-garbage-value",
        {"deepspeed": {"gradient_clipping": "lots"}},
        "deepspeed.gradient_clipping",
        "a number",
    ),
    (
        "deepspeed-bool-as-number",
        {"deepspeed": {"gradient_clipping": True}},
        "deepspeed.gradient_clipping",
        "a number",
    ),
    (
        "deepspeed-zero-typo",
        {"deepspeed": {"zero_optimization": {"stge": 2}}},
        "deepspeed.zero_optimization.stge",
        "unknown",
    ),
    (
        "deepspeed-zero-not-table",
        {"deepspeed": {"zero_optimization": 5}},
        "deepspeed.zero_optimization",
        "mapping",
    ),
    (
        "deepspeed-optimizer",
        {"deepspeed": {"optimizer": {"type": "Garbage"}}},
        "deepspeed.optimizer.type",
        "unknown optimizer",
    ),
    (
        "deepspeed-scheduler",
        {"deepspeed": {"scheduler": {"type": "Nope"}}},
        "deepspeed.scheduler.type",
        "unknown scheduler",
    ),
    (
        "deepspeed-section-typo",
        {"deepspeed": {"activation_checkpointing": {"partition": True}}},
        "deepspeed.activation_checkpointing.partition",
        "unknown field",
    ),
    (
        "deepspeed-fp16-and-bf16",
        {"deepspeed": {"fp16": {"enabled": True}, "bf16": {"enabled": True}}},
        "deepspeed",
        "cannot be simultaneously",
    ),
    # plan time: the gate task, every method_config table
    (
        "gate-task-unknown",
        {"teacher.gate.task": "no_such_task"},
        "teacher.gate.task",
        "unknown task",
    ),
    ("gate-metric-unknown", {"teacher.gate.metric": "accuracy"}, "teacher.gate.metric", "accuracy"),
    (
        "misspelt-unselected-method",
        {"methods": ["sft"], "method_config.kd.temprature": 2.0},
        "method_config.kd.temprature",
        "did you mean 'temperature'",
    ),
    (
        "unknown-method-table",
        {"method_config.kdd": {"alpha": 0.5}},
        "method_config.kdd",
        "unknown method",
    ),
    ("methods-repeated", {"methods": ["kd", "kd"]}, "methods", "repeat"),
    # keys with control characters stay on one line, escaped
    ("newline-key-top", {NL: 1}, repr(NL), "printable"),
    ("newline-key-method-config", {f"method_config.kd.{NL}": 1}, "method_config.kd.", "printable"),
    ("tab-key-deepspeed", {"deepspeed": {"a\tb": 1}}, "deepspeed.'a\\tb'", "printable"),
    # names: safe for paths and display
    ("suite-name-slash", {"name": "my/suite"}, "name", "'/'"),
    ("suite-name-dot", {"name": ".hidden"}, "name", "starts with a dot"),
    (
        "student-name-newline",
        {"students[0].name": "evil\nname"},
        "students[0].name",
        "control character",
    ),
    ("student-name-nul", {"students[0].name": "a\x00b"}, "students[0].name", "NUL"),
    ("seed-too-large", {"seeds": [2**40]}, "seeds", "2**32 - 1"),
    (
        "data-path-too-long",
        {"data.kind": "jsonl", "data.path": "x" * 5000, "data.tasks": DELETE},
        "data.path",
        "refuses",
    ),
    ("eval-include-too-long", {"eval.include": ["x" * 5000]}, "eval.include", "not a folder"),
    ("eval-include-nul", {"eval.include": ["tasks\x00"]}, "eval.include[0]", "NUL"),
    # quantisation after evaluation: a list of known schemes, none repeated
    (
        "teacher-examples-zero",
        {"teacher.examples_per_task": 0},
        "teacher.examples_per_task",
        ">= 1",
    ),
    (
        "teacher-examples-string",
        {"teacher.examples_per_task": "many"},
        "teacher.examples_per_task",
        "integer",
    ),
    ("eval-quantize-unknown", {"eval.quantize": ["int3"]}, "eval.quantize", '"int8", "int4"'),
    ("eval-quantize-string", {"eval.quantize": "int8"}, "eval.quantize", "list of schemes"),
    ("eval-quantize-repeated", {"eval.quantize": ["int8", "int8"]}, "eval.quantize", "repeat"),
    (
        "student-source-too-long",
        {"students[0].arch": DELETE, "students[0].source": "/" + "a" * 5000},
        "students[0].source",
        "no such folder",
    ),
    ("teacher-name-long", {"teacher.name": "t" * 300}, "teacher.name", "300 characters"),
    ("student-name-empty", {"students[0].name": ""}, "students[0].name", "empty"),
]


@pytest.fixture
def world(tmp_path: Path) -> Path:
    (tmp_path / "file.txt").write_text("not a model")
    (tmp_path / "no_config").mkdir()
    return tmp_path


def _fill(value: Any, tmp: Path) -> Any:
    return value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value


def write(tmp: Path, edits: dict[str, Any]) -> Path:
    path = tmp / "suite.toml"
    edits = {k: _fill(v, tmp) for k, v in {**BASE, **edits}.items()}
    path.write_text(tomli_w.dumps(edit_suite(tiny_raw(), edits)))
    return path


def assert_one_line(err: str, path: Path, field: str, words: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith(f"kdbench: error: {path}: {field}"), repr(err)
    assert words in err, repr(err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("edits", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_suite_is_one_line_and_exit_2(world: Path, capsys, edits, field, words) -> None:
    path, db = write(world, edits), world / "kdbench.duckdb"
    assert main(["run", str(path), "--dry-run", "--db", str(db)]) == 2
    assert_one_line(capsys.readouterr().err, path, field, words)
    assert not db.exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("edits", "field", "words"),
    [
        ({"resources.cpus_per_job": 1000}, "resources.cpus_per_job", "largest node"),
        # one GPU more than this machine has: "no GPU" here, "has N GPUs" on a GPU machine
        ({"resources.gpus_per_job": "one more"}, "resources.gpus_per_job", "GPU"),
    ],
    ids=["cpus-1000", "gpus-one-more"],
)
def test_resources_no_node_has_are_refused_before_writing(
    world: Path, capsys, edits, field, words
) -> None:
    """A real run start on the local Ray node (no GPU, a few CPUs): refused within seconds of
    Ray starting, and no suite row written (no database at all)."""
    import torch

    from kdbench.pipeline import init_ray

    if edits.get("resources.gpus_per_job") == "one more":
        edits = {"resources.gpus_per_job": torch.cuda.device_count() + 1}
    init_ray(None)  # started once, outside the clock
    path, db = write(world, edits), world / "kdbench.duckdb"
    start = time.perf_counter()
    assert main(["run", str(path), "--db", str(db)]) == 2
    assert time.perf_counter() - start < 60
    assert_one_line(capsys.readouterr().err, path, field, words)
    assert not db.exists()
