"""The contamination check (kdbench.contamination): transfer prompts found in an evaluation
task's documents, exactly or by a 13-word overlap, and what [eval] contamination does with it
at plan time. Real lm-eval tasks over local JSON files (tests/hf_fixtures.py), offline."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from kdbench.config import SuiteError, load_suite
from kdbench.contamination import check, normalise
from kdbench.plan import check_contamination, check_eval

from .conftest import DELETE

LONG = (
    "In the quiet harbour town the fishing boats returned at dusk carrying silver nets, "
    "and the old keeper lit the lamp"
)


@pytest.fixture
def contaminated_suite(hf_world, write_suite, tmp_path):
    """``make(contamination)``: a suite whose JSONL transfer set holds one of word_math's
    questions (in other case and spacing), one prompt sharing 13 words with a long_read
    document, and clean prompts."""
    shutil.copytree(hf_world.tasks, tmp_path / "tasks", dirs_exist_ok=True)
    docs = tmp_path / "tasks" / "long_read.jsonl"
    docs.write_text(json.dumps({"question": f"Read: {LONG}. Who lit it?", "answer": "k"}) + "\n")
    (tmp_path / "tasks" / "long_read.yaml").write_text(
        (tmp_path / "tasks" / "word_math.yaml")
        .read_text()
        .replace("task: word_math", "task: long_read")
        .replace(str(hf_world.tasks / "word_math.jsonl"), str(docs))
    )
    question = json.loads((hf_world.tasks / "word_math.jsonl").read_text().splitlines()[4])
    rows = [{"prompt": f"What is {100 + i} plus 100? ", "response": "x"} for i in range(6)]
    rows.insert(2, {"prompt": "  " + question["question"].upper() + "\n", "response": "y"})
    rows.append({"prompt": "Story: " + LONG.split(" and ")[0] + " and so on", "response": "z"})
    data = tmp_path / "transfer.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def make(mode: str):
        return load_suite(
            write_suite(
                {
                    "data": {"kind": "jsonl", "path": "transfer.jsonl", "max_length": 64},
                    "teacher.examples_per_task": DELETE,  # a synthetic-data teacher's own set
                    "eval": {
                        "tasks": ["word_math", "long_read", "kd_compare"],
                        "include": ["tasks"],
                        "contamination": mode,
                    },
                }
            )
        )

    return make, question["question"]


def test_normalise_keeps_token_boundaries():
    assert normalise("  What IS 3\n plus 4? ") == " what is 3 plus 4 ? "
    assert normalise("7+28=") not in normalise("347+285=")  # no match inside a number
    assert normalise("47+285=") not in normalise("347+285=")


def test_report_counts_exact_and_ngram_matches(contaminated_suite):
    make, question = contaminated_suite
    suite = make("warn")
    from kdbench.transfer import transfer_examples

    report = check(transfer_examples(suite.data), check_eval(suite))
    by_task = {t.task: t for t in report.tasks}
    assert report.examples == 8
    word = by_task["word_math"]
    assert (word.examples, word.documents, word.how) == (1, 12, "prompt in document")
    assert word.example == normalise(question).strip() and word.document == "word_math doc 4"
    long = by_task["long_read"]
    assert (long.examples, long.how) == (1, "13-gram overlap")
    assert by_task["kd_compare"].examples == 0
    assert [t.task for t in report.contaminated] == ["word_math", "long_read"]


def test_warn_prints_one_line_per_task(contaminated_suite):
    make, _ = contaminated_suite
    suite = make("warn")
    lines: list[str] = []
    check_contamination(suite, check_eval(suite), lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("contamination: task word_math: 1 of 8 transfer examples")
    assert "e.g. 'what is" in lines[0] and "word_math doc 4" in lines[0]
    assert lines[1].startswith("contamination: task long_read: 1 of 8") and "13-gram" in lines[1]


def test_error_refuses_the_suite_and_off_skips(contaminated_suite, capsys):
    from kdbench.plan import plan

    make, _ = contaminated_suite
    with pytest.raises(SuiteError) as err:
        plan(make("error"))
    assert err.value.field == "eval.contamination"
    assert "task word_math: 1 of 8" in str(err.value) and "(and 1 more tasks)" in str(err.value)
    assert "\n" not in str(err.value)
    lines: list[str] = []
    plan(make("off"), lines.append)
    assert lines == []
    plan(make("warn"), lines.append)
    assert len(lines) == 2
