"""Transfer data from files and datasets (``[data] kind = jsonl | parquet | csv | hf``): the
same examples from every format, a deterministic shuffle, one-line errors naming the field, and
a training job on a JSONL transfer set with Hugging Face-format models."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from kdbench.config import SuiteError, parse_suite
from kdbench.data_sources import load_examples
from kdbench.losses import IGNORE
from kdbench.plan import plan
from kdbench.records import TrainTask
from kdbench.train_job import train_worker
from kdbench.transfer import transfer_batch, transfer_examples

from .conftest import SHRINK, edit_suite, tiny_raw
from .test_train_job import _text, bpe_tokenizer, save_model

RECORDS = [{"question": f"{a}+{a}=", "answer": f"{2 * a}\n", "id": a} for a in range(30)]


def suite_for(tmp_path: Path, data: dict, **edits) -> object:
    raw = edit_suite(tiny_raw(), {**SHRINK, "data": data, "methods": ["sft"], **edits})
    return parse_suite(raw, tmp_path / "suite.toml")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    jsonl = tmp_path / "data" / "transfer.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    table = datasets.Dataset.from_list(RECORDS)
    table.to_parquet(str(tmp_path / "data" / "transfer.parquet"))
    table.to_csv(str(tmp_path / "data" / "transfer.csv"), index=False)
    table.save_to_disk(str(tmp_path / "data" / "saved"))
    return {"jsonl": jsonl}


FIELDS = {"prompt_field": "question", "response_field": "answer"}


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("jsonl", "data/transfer.jsonl"),
        ("parquet", "data/transfer.parquet"),
        ("csv", "data/transfer.csv"),
        ("hf", "data/saved"),
    ],
)
def test_every_format_gives_the_same_shuffled_examples(tmp_path, files, kind, path) -> None:
    suite = suite_for(tmp_path, {"kind": kind, "path": path, **FIELDS, "max_length": 64})
    assert Path(suite.data.path).is_absolute()  # relative to the suite file
    got = transfer_examples(suite.data)
    reference = transfer_examples(
        suite_for(tmp_path, {"kind": "jsonl", "path": "data/transfer.jsonl", **FIELDS}).data
    )
    assert got == reference and len(got) == len(RECORDS)
    assert {e["prompt"] for e in got} == {r["question"] for r in RECORDS}
    assert got[0] == {"prompt": got[0]["prompt"], "target": got[0]["target"]}
    assert [e["prompt"] for e in got] != [r["question"] for r in RECORDS]  # shuffled


def test_seed_and_max_examples(tmp_path, files) -> None:
    base = {"kind": "jsonl", "path": "data/transfer.jsonl", **FIELDS}
    a = load_examples(suite_for(tmp_path, {**base, "seed": 1}).data)
    b = load_examples(suite_for(tmp_path, {**base, "seed": 1}).data)
    c = load_examples(suite_for(tmp_path, {**base, "seed": 2}).data)
    assert a == b and a != c
    cut = load_examples(suite_for(tmp_path, {**base, "seed": 1, "max_examples": 5}).data)
    assert cut == a[:5]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"kind": "jsonl"}, "data.path", "is required"),
        ({"kind": "jsonl", "path": "data/nope.jsonl"}, "data.path", "not found"),
        ({"kind": "hf"}, "data.name", "is required"),
        ({"kind": "parquets"}, "data.kind", "did you mean 'parquet'"),
        ({"kind": "synthetic", "prompt_field": "q"}, "data.prompt_field", "only for a file"),
        (
            {"kind": "jsonl", "path": "data/transfer.jsonl", "max_examples": 0},
            "data.max_examples",
            ">= 1",
        ),
    ],
)
def test_bad_data_tables_name_the_field(tmp_path, files, data, field, words) -> None:
    with pytest.raises(SuiteError) as err:
        suite_for(tmp_path, data)
    assert err.value.field == field and words in str(err.value) and "\n" not in str(err.value)


def test_a_missing_column_is_refused_at_plan_time(tmp_path, files) -> None:
    suite = suite_for(tmp_path, {"kind": "jsonl", "path": "data/transfer.jsonl"})
    with pytest.raises(SuiteError) as err:
        plan(suite)
    assert err.value.field == "data.prompt_field"
    assert "'prompt' is not a column; columns: question, answer, id" in str(err.value)


def test_a_job_trains_on_a_jsonl_transfer_set(tmp_path, files) -> None:
    """HF-format teacher and student (one BPE tokenizer), a JSONL transfer set: only response
    tokens carry loss, and the student trains."""
    tok = bpe_tokenizer(_text(0), 300)
    teacher = save_model(tmp_path / "teacher", tok, 32, 2)
    student = save_model(tmp_path / "student", tok, 16, 1)
    suite = suite_for(
        tmp_path,
        {"kind": "jsonl", "path": "data/transfer.jsonl", **FIELDS, "max_length": 64},
        teacher={"name": "t", "source": str(teacher)},
        students=[{"name": "s", "source": str(student)}],
        methods=["kd"],
        **{"budget.steps": 2},
    )
    batch = transfer_batch(suite.data, tok)
    answers = [e["target"] for e in transfer_examples(suite.data)]
    counted = int((batch.labels != IGNORE).sum())  # each answer and its EOS token
    assert counted == sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
    _, jobs = plan(suite)
    result = train_worker(TrainTask(suite, jobs[0], str(teacher), str(tmp_path / "runs"), 1.0))
    assert result.steps == 2 and result.teacher_forwards > 0 and result.bytes > 0


def test_a_seqkd_job_trains_on_chat_data_with_the_teacher_generations(hf_world, tmp_path) -> None:
    """The teacher stage's call (``generation=suite.generation``) then a training job that reads
    the file: chat records rendered with the template, generations stopped at end-of-turn."""
    from kdbench.generations import cached_generations, load_generations

    data = {
        "kind": "jsonl",
        "path": str(hf_world.chat),
        "messages_field": "messages",
        "chat_template": True,
        "max_length": 96,
        "max_examples": 8,
    }
    suite = suite_for(
        tmp_path,
        data,
        teacher={"name": "t", "source": str(hf_world.teacher)},
        students=[{"name": "s", "source": str(hf_world.student)}],
        methods=["seqkd"],
        generation={"max_new_tokens": 6},
        **{"budget.steps": 2},
    )
    path = cached_generations(
        hf_world.teacher, suite.data, tmp_path / "cache", generation=suite.generation
    )
    records = load_generations(path)
    assert len(records) == 8 and all(r["tokens"] <= 6 and r["messages"] for r in records)
    _, jobs = plan(suite)
    task = TrainTask(suite, jobs[0], str(hf_world.teacher), str(tmp_path / "runs"), 1.0, str(path))
    result = train_worker(task)
    assert result.steps == 2 and result.teacher_forwards == 0 and result.bytes > 0
