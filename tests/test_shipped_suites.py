"""The suites kdbench ships, validated offline as CI must: every one plans without the network
(methods, configs, task names against lm-eval's index); the literature suites, once their data
is laid out, plan completely; without their data they fail in one line saying how to fetch it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdbench.config import SuiteError, load_suite
from kdbench.plan import plan

from .conftest import ROOT

SUITES = {
    "tiny": 15 * 2 * 3,
    "tiny-new": (11 + 3) * 3,  # 11 methods on one student, 3 on the chunk-tokenizer one
    "dolly-gpt2": 5 * 3 * 5,
    "qwen-gsm8k": 4 * 1 * 3,
}


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_shipped_suite_plans_without_the_network(name: str) -> None:
    suite = load_suite(ROOT / "leaderboards" / f"{name}.toml")
    methods, jobs = plan(suite, fetch=False)
    assert len(jobs) == SUITES[name] and len({j.run_id for j in jobs}) == len(jobs)


def test_tiny_new_shares_the_tiny_suites_teacher_and_setting() -> None:
    """The second embedded suite reuses the first's cached teacher (same recipe) and ranks its
    methods on the same tasks, data and budget."""
    tiny, new = (load_suite(ROOT / "leaderboards" / f"{n}.toml") for n in ("tiny", "tiny-new"))
    assert new.teacher == tiny.teacher
    assert new.students[0] == tiny.students[1]  # the same 0.25M student
    assert (new.data, new.budget, new.eval.tasks) == (tiny.data, tiny.budget, tiny.eval.tasks)
    assert not set(new.methods) - {"sft", "fkl", "jsd"} & set(tiny.methods)


def _lay_out_dolly(folder: Path) -> Path:
    """What leaderboards/dolly/prepare.py writes, in miniature, beside a copy of the suite."""
    shutil.copy(ROOT / "leaderboards" / "dolly-gpt2.toml", folder / "dolly-gpt2.toml")
    root = folder / "data" / "minillm"
    train = [
        {"prompt": f"### Instruction:\nSay {i}.\n\n### Response:\n", "response": str(i)}
        for i in range(20)
    ]
    (root / "dolly").mkdir(parents=True)
    (root / "dolly" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    for name in ("dolly", "self_inst", "vicuna", "sinst", "uinst"):
        (root / name).mkdir(parents=True, exist_ok=True)
        rows = [{"prompt": f"{name} question {i}?", "output": f"answer {i}"} for i in range(3)]
        rows.append({"prompt": train[0]["prompt"], "output": "0"})  # a leaked transfer prompt
        (root / name / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "dolly-gpt2.toml"


def test_dolly_plans_with_its_data_and_reports_contamination(tmp_path: Path) -> None:
    suite = load_suite(_lay_out_dolly(tmp_path))
    lines: list[str] = []
    _, jobs = plan(suite, echo=lines.append)
    assert len(jobs) == 75
    # the leaked prompt is found in each of the five evaluation sets
    assert len(lines) == 5 and all("1 of 20" in line for line in lines), lines


def test_dolly_without_its_data_says_how_to_fetch_it(tmp_path: Path) -> None:
    shutil.copy(ROOT / "leaderboards" / "dolly-gpt2.toml", tmp_path / "dolly-gpt2.toml")
    with pytest.raises(SuiteError) as err:
        plan(load_suite(tmp_path / "dolly-gpt2.toml"))
    assert "prepare.py" in str(err.value) and "\n" not in str(err.value)


def test_a_builtin_task_without_its_dataset_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SuiteError) as err:
        plan(load_suite(ROOT / "leaderboards" / "qwen-gsm8k.toml"))
    message = str(err.value)
    assert err.value.field == "eval.tasks" and "\n" not in message
    assert "gsm8k" in message and "datasets.load_dataset('openai/gsm8k', 'main')" in message
