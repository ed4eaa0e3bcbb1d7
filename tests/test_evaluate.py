"""lm-eval tasks (leaderboards/tasks) and kdbench.evaluate on tiny models, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import math
import random

import pytest
import torch

from kdbench.evaluate import TASKS_DIR, evaluate, parse_results, task_names
from kdbench.models import build_llama, default_tokenizer, load_pretrained, save
from kdbench.synthetic import eval_set, target_text

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
GEN_KWARGS = {"until": ["\n"], "do_sample": False, "max_gen_toks": 48}


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return build_llama(TINY, tokenizer, seed=0)


@pytest.fixture(scope="module")
def loaded_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    tasks = manager.load(["kd_addition", "kd_compare"])["tasks"]
    for task in tasks.values():
        task.build_all_requests(limit=10)
    return tasks


def test_task_names_lists_local_tasks():
    assert {"kd_addition", "kd_compare"} <= set(task_names())


def test_addition_task_builds_bare_prompt_requests(loaded_tasks):
    task = loaded_tasks["kd_addition"]
    docs = eval_set("addition", 200)
    assert task.OUTPUT_TYPE == "generate_until"
    assert len(task.eval_docs) == 200
    assert task.config.num_fewshot == 0
    assert task.higher_is_better() == {"exact_match": True}
    for inst in task.instances:
        doc = docs[inst.doc_id]
        assert inst.args == (doc["prompt"], GEN_KWARGS)
        assert task.doc_to_target(inst.doc) == doc["answer"]


def test_addition_filter_extracts_answer_after_hash(loaded_tasks):
    task = loaded_tasks["kd_addition"]
    docs = eval_set("addition", 200)
    for inst in task.instances:
        ex = docs[inst.doc_id]
        # what a perfect model generates: lm-eval cuts the text at the stop sequence "\n"
        inst.resps = [target_text(ex).split("\n")[0]]
    task.instances[0].resps = ["1+2=3"]  # no "#": the regex filter falls back
    task.apply_filters()
    filtered = [inst.filtered_resps["extract"] for inst in task.instances]
    assert filtered[0] == "[invalid]"
    assert filtered[1:] == [docs[inst.doc_id]["answer"] for inst in task.instances[1:]]


def test_compare_task_scores_choices_as_training_text(loaded_tasks, tiny, tokenizer):
    from lm_eval.models.huggingface import HFLM

    task = loaded_tasks["kd_compare"]
    docs = eval_set("compare", 200)
    assert task.OUTPUT_TYPE == "multiple_choice"
    assert task.higher_is_better() == {"acc": True}
    lm = HFLM(pretrained=tiny, tokenizer=tokenizer, batch_size=4)
    for inst in task.instances:
        doc = docs[inst.doc_id]
        ctx, cont = inst.args
        assert (ctx, cont) == (doc["prompt"], doc["choices"][inst.idx])
        if inst.idx == doc["label"]:  # prompt + answer: the training text minus its newline
            assert ctx + cont == doc["prompt"] + target_text(doc).rstrip("\n")
        # char-level tokens, no BOS and no separator between context and continuation
        ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
        assert ctx_ids == tokenizer(ctx)["input_ids"]
        assert cont_ids == tokenizer(cont)["input_ids"]
    assert {task.doc_to_target(i.doc) for i in task.instances} <= {0, 1}


def test_batched_generation_matches_model_generate(loaded_tasks, tiny, tokenizer):
    """lm-eval left-pads a batch of prompts; the text must equal one-prompt-at-a-time generate."""
    from lm_eval.models.huggingface import HFLM

    model = build_llama(TINY, tokenizer, seed=3)
    instances = loaded_tasks["kd_addition"].instances
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=len(instances))
    batched = lm.generate_until(instances, disable_tqdm=True)
    for inst, text in zip(instances, batched, strict=True):
        ids = tokenizer(inst.args[0], return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=48, do_sample=False, pad_token_id=0)
        expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert text == expected.split("\n")[0]


def _check_rows(rows):
    # a multiple-choice task also reports its chance level (1 / choices), never primary
    chance = [r for r in rows if r["metric"] == "chance"]
    assert [(r["task"], r["value"], r["is_primary"]) for r in chance] == [
        ("kd_compare", 0.5, False)
    ]
    rows = [r for r in rows if r["metric"] != "chance"]
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("kd_addition", "exact_match"),
        ("kd_compare", "acc"),
    ]
    for row in rows:
        assert set(row) == {
            "task",
            "metric",
            "value",
            "stderr",
            "higher_is_better",
            "is_primary",
            "aggregation",
        }
        assert row["aggregation"] == "mean"  # as the task YAML declares
        assert 0.0 <= row["value"] <= 1.0
        assert isinstance(row["stderr"], float) and not math.isnan(row["stderr"])
        assert row["higher_is_better"] is True
        assert row["is_primary"] is True


def test_evaluate_in_memory_model(tiny, tokenizer):
    tiny.train()
    random.seed(7)
    torch.manual_seed(7)
    expected_next = (random.random(), torch.rand(1).item())
    random.seed(7)
    torch.manual_seed(7)
    rows = evaluate(tiny, tokenizer, ["kd_addition", "kd_compare"], limit=8, batch_size=4)
    _check_rows(rows)
    # lm-eval calls model.eval() and reseeds the global RNGs; evaluate() undoes both
    assert tiny.training
    assert (random.random(), torch.rand(1).item()) == expected_next


def test_saved_and_loaded_model_gives_identical_results(tiny, tokenizer, tmp_path):
    in_memory = evaluate(tiny, tokenizer, ["kd_addition", "kd_compare"], limit=8)
    save(tiny, tokenizer, tmp_path / "tiny")
    model, loaded_tokenizer = load_pretrained(str(tmp_path / "tiny"))
    from_disk = evaluate(model, loaded_tokenizer, ["kd_addition", "kd_compare"], limit=8)
    _check_rows(from_disk)
    assert from_disk == in_memory


def test_unknown_task_suggests_close_name(tiny, tokenizer):
    with pytest.raises(ValueError, match=r"unknown task 'kd_additon'.*did you mean 'kd_addition'"):
        evaluate(tiny, tokenizer, ["kd_additon"])
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        evaluate(tiny, tokenizer, ["kd_compare", "nope"])


def test_parse_results_keeps_filters_apart_and_maps_missing_stderr():
    results = {
        "configs": {
            "gsm": {
                "metric_list": [{"metric": "exact_match"}, {"metric": "f1"}],
                "filter_list": [{"name": "strict"}, {"name": "flexible"}],
            },
            "mc": {},
        },
        "results": {
            "gsm": {
                "alias": "gsm",
                "exact_match,strict": 0.5,
                "exact_match_stderr,strict": 0.1,
                "exact_match,flexible": 0.6,
                "exact_match_stderr,flexible": "N/A",
                "f1,strict": 0.7,
                "f1_stderr,strict": float("nan"),
            },
            "mc": {"alias": "mc", "acc,none": 0.25, "acc_stderr,none": 0.05, "ppl,none": 3.0},
        },
        "higher_is_better": {
            "gsm": {"exact_match": True, "f1": True},
            "mc": {"acc": True, "ppl": False},
        },
    }
    rows = {(r["task"], r["metric"]): r for r in parse_results(results)}
    assert set(rows) == {
        ("gsm", "exact_match/strict"),
        ("gsm", "exact_match/flexible"),
        ("gsm", "f1/strict"),
        ("mc", "acc"),
        ("mc", "ppl"),
    }
    assert [k for k, r in rows.items() if r["is_primary"]] == [
        ("gsm", "exact_match/strict"),
        ("mc", "acc"),
    ]
    assert rows[("gsm", "exact_match/flexible")]["stderr"] is None
    assert rows[("gsm", "f1/strict")]["stderr"] is None
    assert rows[("mc", "ppl")] == {
        "task": "mc",
        "metric": "ppl",
        "value": 3.0,
        "stderr": None,
        "higher_is_better": False,
        "is_primary": False,
        "aggregation": None,
    }


def test_evaluate_logs_each_question_with_a_confidence(tiny, tokenizer):
    """Per-question results agree with the aggregate lm-eval reports, and every question has a
    confidence in (0, 1]: from the choices' likelihoods or the generation's own probability."""
    rows, questions = evaluate(
        tiny, tokenizer, ["kd_addition", "kd_compare"], limit=5, samples=True
    )
    assert len(questions) == 10
    for row in (r for r in rows if r["is_primary"]):
        mine = [q["correct"] for q in questions if q["task"] == row["task"]]
        assert sum(mine) / len(mine) == pytest.approx(row["value"])
    assert all(0.0 < q["confidence"] <= 1.0 for q in questions)
    assert sorted({q["doc_id"] for q in questions}) == [0, 1, 2, 3, 4]
