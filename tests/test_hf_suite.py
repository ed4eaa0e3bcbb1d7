"""A research group's own suite, end to end and offline: Hugging Face-format teacher and
students (local folders written with ``save_pretrained``: a Llama student, a student made of
the teacher's own layers), JSONL transfer data in chat form with the chat template, and a
local lm-eval task over a JSON file named by ``[eval] include``, run by ``kdbench run``
through the real Ray + DeepSpeed + lm-eval + DuckDB path with the signal cache on."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from kdbench import store
from kdbench.config import load_suite
from kdbench.leaderboard import leaderboard
from kdbench.models import load_tokenizer
from kdbench.transfer import transfer_batch

METHODS = ["sft", "kd", "fkl", "hidden_cosine", "seqkd"]


def _weights_sha(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def own_suite(world, folder: Path) -> Path:
    """The suite a group writes next to its data: relative paths, its own task folder."""
    shutil.copytree(world.tasks, folder / "tasks")
    shutil.copy(world.chat, folder / "chat.jsonl")
    suite = {
        "name": "own-hf",
        "seeds": [0],
        "methods": METHODS,
        "teacher": {"name": "llama-teacher", "source": str(world.teacher)},
        "students": [
            {"name": "llama-student", "source": str(world.student)},
            {"name": "teacher-layers", "from_teacher_layers": [0, 3]},
        ],
        "data": {
            "kind": "jsonl",
            "path": "chat.jsonl",
            "messages_field": "messages",
            "chat_template": True,
            "max_length": 64,
        },
        "generation": {"max_new_tokens": 12},
        "budget": {"steps": 12, "batch_size": 8, "lr": 3e-3, "warmup": 0.0},
        "eval": {
            "tasks": ["word_math"],
            "include": ["tasks"],
            "chat_template": True,  # scored in the form the students learnt
            "limit": 12,
            "batch_size": 12,
        },
        "resources": {"cpus_per_job": 1, "checkpoint_every": 0},
        "cache": {"topk": 8},
    }
    path = folder / "suite.toml"
    path.write_text(tomli_w.dumps(suite))
    return path


@pytest.mark.e2e
def test_own_models_data_and_task_end_to_end(hf_world, tmp_path: Path) -> None:
    path = own_suite(hf_world, tmp_path / "group")
    suite = load_suite(path)
    # prompt tokens (system and user turns, rendered by the chat template) carry no loss;
    # the response ends with the template's end of turn
    tokenizer = load_tokenizer(str(hf_world.teacher))
    batch = transfer_batch(suite.data, tokenizer)
    for row in range(4):
        ids, labels = batch.input_ids[row], batch.labels[row]
        learnt = tokenizer.decode(ids[labels >= 0])
        assert "Answer briefly" not in learnt and "<|im_start|>" not in learnt
        assert learnt.strip().endswith(("<|im_end|>", "</s>"))
        assert int((labels >= 0).sum()) > 0

    before = _weights_sha(hf_world.teacher)
    db = tmp_path / "results" / "kdbench.duckdb"
    env_cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(path), "--db", str(db)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "KDBENCH_CACHE": str(env_cache)},
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _weights_sha(hf_world.teacher) == before  # a given teacher is read, never trained

    runs = store.read_runs(db, suite.hash)
    assert (runs.status == "ok").all(), runs[runs.status != "ok"].error.tolist()
    students = runs[runs.role == "student"]
    assert len(students) == len(METHODS) * 2
    assert (students.tokens > 0).all()
    assert set(students.student) == {"llama-student", "teacher-layers"}
    kd = students[students.method == "kd"]
    assert (kd.teacher_forwards == 0).all()  # read from the signal cache
    metrics = store.read_metrics(db, suite.hash)
    assert set(metrics.task) >= {"word_math"}
    # fidelity on a chat-templated generation task of Hub-format models (kdbench.fidelity)
    top1 = metrics[(metrics.metric == "fidelity_top1") & (metrics.task == "word_math")]
    assert set(top1.run_id) == set(runs.run_id) and top1.value.between(0, 1).all()
    own = metrics[
        (metrics.role == "teacher") & metrics.metric.isin(["fidelity_top1", "fidelity_kl"])
    ]
    assert sorted(own.value) == [0.0, 1.0]  # the teacher against its own reference
    # the teacher scores above zero, so every student has a retention and a rank
    table = leaderboard(db, suite.hash)
    assert set(table.method) == set(METHODS) | {"teacher"}
    teacher = table[table.role == "teacher"]
    assert (teacher.score_word_math > 0).all()
    ranked = table[table.role != "teacher"]
    assert len(ranked) == len(METHODS) * 2
    assert ranked.retention_avg.notna().all() and ranked["rank"].notna().all()


@pytest.mark.e2e
def test_on_policy_and_cross_tokenizer_methods_on_hub_format_students(
    hf_world, tmp_path: Path
) -> None:
    """The same group's suite with the methods of 2024-25 on its Hub-format models, signal
    cache on: gkd samples the Llama student (chat template, the live teacher scoring the
    samples, fixed batches from the cache), and uld and gold train a student with another BPE
    vocabulary from the teacher's cached top-k logits on the teacher's own rows."""
    import tomllib

    path = own_suite(hf_world, tmp_path / "group")
    raw = tomllib.loads(path.read_text())
    raw["methods"] = ["sft", "gkd", "uld", "gold"]
    raw["method_config"] = {"gkd": {"lmbda": 1.0, "max_new_tokens": 8}}
    raw["students"] = [
        {"name": "llama-student", "source": str(hf_world.student), "methods": ["sft", "gkd"]},
        {"name": "other-vocab", "source": str(hf_world.other), "methods": ["sft", "uld", "gold"]},
    ]
    path.write_text(tomli_w.dumps(raw))
    suite = load_suite(path)
    db = tmp_path / "results" / "kdbench.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(path), "--db", str(db)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "KDBENCH_CACHE": str(tmp_path / "cache")},
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = store.read_runs(db, suite.hash)
    assert (runs.status == "ok").all(), runs[runs.status != "ok"].error.tolist()
    students = runs[runs.role == "student"].set_index(["student", "method"])
    assert len(students) == 5
    gkd = students.loc[("llama-student", "gkd")]
    assert gkd.generated_tokens > 0 and gkd.teacher_forwards == suite.budget.steps * 8
    for method in ("uld", "gold"):
        assert students.loc[("other-vocab", method), "teacher_forwards"] == 0  # the cache
    for (student, _), run_id in students.run_id.items():
        theirs = hf_world.other if student == "other-vocab" else hf_world.student
        saved = load_tokenizer(str(db.parent / "runs" / run_id))
        assert saved.get_vocab() == load_tokenizer(str(theirs)).get_vocab()
    table = leaderboard(db, suite.hash)
    ranked = table[table.role != "teacher"]
    assert len(ranked) == 5 and ranked.retention_avg.notna().all()
