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


# --- suites: built-in tasks, include folders, per-task options, unloadable datasets ---------


def test_builtin_task_resolves_from_the_index_only():
    """A built-in name resolves through lm-eval's index (built once per process), without
    loading its dataset; local names never need the index."""
    from kdbench.evaluate import _builtin_manager, resolve_tasks

    managers = resolve_tasks(["kd_addition", "gsm8k", "mmlu"])
    assert managers["gsm8k"] is managers["mmlu"] is _builtin_manager()
    assert managers["kd_addition"] is not managers["gsm8k"]
    assert _builtin_manager() is _builtin_manager()
    assert "gsm8k" not in task_names()


def test_kdbench_tasks_dir_adds_to_the_bundled_tasks(hf_world, monkeypatch):
    monkeypatch.setenv("KDBENCH_TASKS_DIR", str(hf_world.tasks))
    assert {"kd_addition", "kd_compare", "word_math"} <= set(task_names())


@pytest.fixture
def eval_suite(hf_world, write_suite, tmp_path):
    """``write_suite(eval_table)``: tiny.toml with this [eval] table, the hf_world task folder
    copied to ``tasks/`` beside it; returns the loaded suite."""
    import shutil

    from kdbench.config import load_suite

    shutil.copytree(hf_world.tasks, tmp_path / "tasks", dirs_exist_ok=True)

    def make(table, teacher=None):
        edits = {"eval": table}
        if teacher is not None:  # a Hugging Face folder instead of the built tiny teacher
            edits["teacher"] = {"name": "hf-teacher", "source": str(teacher)}
        return load_suite(write_suite(edits))

    return make


def test_suite_scores_include_folder_tasks_with_options(eval_suite, hf_world, tmp_path):
    from kdbench.evaluate import evaluate_suite
    from kdbench.plan import check_eval

    suite = eval_suite(
        {
            "tasks": ["kd_compare", "word_math"],
            "include": ["tasks"],
            "limit": 4,
            "options": {
                "word_math": {
                    "num_fewshot": 2,
                    "limit": 3,
                    "gen_kwargs": {"max_gen_toks": 4},
                    "chat_template": True,
                }
            },
        },
        teacher=hf_world.teacher,
    )
    assert suite.eval.include == ("tasks",)  # as written: the hash does not see the checkout
    assert suite.eval.include_dirs == [str(tmp_path / "tasks")]
    loaded = check_eval(suite)
    word = loaded["word_math"]
    assert word.get_config("num_fewshot") == 2
    assert word.get_config("generation_kwargs")["max_gen_toks"] == 4
    assert "</s>" in word.get_config("generation_kwargs")["until"]  # merged: the rest kept
    model, tok = load_pretrained(str(hf_world.teacher))
    rows, questions = evaluate_suite(model, tok, suite.eval, samples=True)
    primary = {r["task"]: r["metric"] for r in rows if r["is_primary"]}
    assert primary == {"kd_compare": "acc", "word_math": "exact_match"}
    counts = {t: sum(q["task"] == t for q in questions) for t in primary}
    assert counts == {"kd_compare": 4, "word_math": 3}  # per-task limit over the default
    # the chat template (ChatML) wrapped word_math's prompts, not kd_compare's
    prompts = [inst.args[0] for inst in word.instances]
    assert prompts and all("<|im_start|>" in p for p in prompts)
    assert all("<|im_start|>" not in i.args[0] for i in loaded["kd_compare"].instances)


def test_unknown_metric_or_filter_is_one_line_at_plan_time(eval_suite):
    from kdbench.config import SuiteError
    from kdbench.plan import check_eval

    for key, value, field in (("metric", "acc_nrom", "metric"), ("filter", "strict", "filter")):
        suite = eval_suite({"tasks": ["kd_compare"], "options": {"kd_compare": {key: value}}})
        with pytest.raises(SuiteError) as err:
            check_eval(suite)
        assert err.value.field == f"eval.options.kd_compare.{field}"
        assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_unknown_task_at_plan_time_names_eval_tasks(eval_suite):
    from kdbench.config import SuiteError
    from kdbench.plan import check_eval

    with pytest.raises(SuiteError, match=r"eval\.tasks: unknown task 'gsm8kk'.*'gsm8k'"):
        check_eval(eval_suite({"tasks": ["gsm8kk"]}))


def test_unloadable_datasets_are_one_line_with_how_to_fetch(eval_suite, tmp_path):
    """A local task over a missing file, and a built-in whose dataset is not in the local
    cache (offline), fail at plan time in one line naming the task and how to fetch it."""
    import time

    from kdbench.config import SuiteError
    from kdbench.plan import check_eval

    (tmp_path / "tasks" / "gone.yaml").write_text(
        (tmp_path / "tasks" / "word_math.yaml")
        .read_text()
        .replace("task: word_math", "task: gone")
        .replace("word_math.jsonl", "missing.jsonl")
    )
    with pytest.raises(SuiteError) as err:
        check_eval(eval_suite({"tasks": ["gone"], "include": ["tasks"]}))
    text = str(err.value)
    assert "\n" not in text and "eval.tasks: task 'gone'" in text and "missing.jsonl" in text
    start = time.perf_counter()
    with pytest.raises(SuiteError) as err:
        check_eval(eval_suite({"tasks": ["gsm8k"]}))
    assert time.perf_counter() - start < 30  # index (once per process) + no network retries
    text = str(err.value)
    assert "\n" not in text and "task 'gsm8k'" in text
    assert "lm_eval --tasks gsm8k --limit 1" in text and "load_dataset('gsm8k'" not in text


def test_parse_results_ranks_the_chosen_metric_and_filter():
    results = {
        "configs": {
            "gsm": {
                "metric_list": [{"metric": "exact_match"}, {"metric": "f1"}],
                "filter_list": [{"name": "strict"}, {"name": "flexible"}],
            }
        },
        "results": {
            "gsm": {
                "exact_match,strict": 0.5,
                "exact_match,flexible": 0.6,
                "f1,strict": 0.7,
                "f1,flexible": 0.8,
            }
        },
        "higher_is_better": {"gsm": {"exact_match": True, "f1": True}},
    }
    rows = parse_results(results, {"gsm": ("f1", "flexible")})
    assert [r["metric"] for r in rows if r["is_primary"]] == ["f1/flexible"]
    rows = parse_results(results, {"gsm": (None, "flexible")})
    assert [r["metric"] for r in rows if r["is_primary"]] == ["exact_match/flexible"]


def test_parse_results_ranks_a_group_not_its_tasks():
    results = {
        "configs": {"a": {}, "b": {}},
        "results": {"a": {"acc,none": 0.2}, "b": {"acc,none": 0.4}},
        "groups": {"ab": {"acc,none": 0.3, "acc_stderr,none": 0.1, "alias": "ab"}},
        "group_subtasks": {"ab": ["a", "b"]},
        "higher_is_better": {"a": {"acc": True}, "b": {"acc": True}, "ab": {"acc": True}},
    }
    rows = {r["task"]: r for r in parse_results(results)}
    assert rows["ab"]["is_primary"] and rows["ab"]["value"] == 0.3
    assert not rows["a"]["is_primary"] and not rows["b"]["is_primary"]


def test_a_group_ranks_as_one_task_and_a_tag_as_its_tasks(eval_suite, hf_world, tmp_path):
    """A group that aggregates its tasks (like ``mmlu``) has the primary row, its tasks get the
    group's options; a tag (like ``ai2_arc``) stands for its tasks, each ranked."""
    from kdbench.evaluate import evaluate_suite

    folder = tmp_path / "tasks"
    text = (folder / "word_math.yaml").read_text()
    (folder / "word_math.yaml").write_text(text + "tag: word_tag\n")
    (folder / "word_math_b.yaml").write_text(
        text.replace("task: word_math", "task: word_math_b") + "tag: word_tag\n"
    )
    (folder / "word_pair.yaml").write_text(
        "group: word_pair\ntask:\n  - word_math\n  - word_math_b\n"
        "aggregate_metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    weight_by_size: true\nmetadata:\n  version: 1.0\n"
    )
    model, tok = load_pretrained(str(hf_world.student))
    table = {"include": ["tasks"], "limit": 2}
    suite = eval_suite(
        {**table, "tasks": ["word_pair"], "options": {"word_pair": {"num_fewshot": 1}}}
    )
    from kdbench.plan import check_eval

    group = check_eval(suite)["word_pair"]
    assert [t.get_config("num_fewshot") for t in group.get_all_tasks()] == [1, 1]
    rows, questions = evaluate_suite(model, tok, suite.eval, samples=True)
    ranked = [(r["task"], r["metric"]) for r in rows if r["is_primary"]]
    assert ranked == [("word_pair", "exact_match")]
    assert {r["task"] for r in rows} == {"word_pair", "word_math", "word_math_b"}
    assert len(questions) == 4
    suite = eval_suite({**table, "tasks": ["word_tag"]})
    rows = evaluate_suite(model, tok, suite.eval)
    assert sorted(r["task"] for r in rows if r["is_primary"]) == ["word_math", "word_math_b"]


def test_chat_template_needs_one_in_the_teachers_tokenizer(eval_suite):
    from kdbench.config import SuiteError
    from kdbench.plan import check_eval

    with pytest.raises(SuiteError) as err:  # the tiny teacher's character tokenizer has none
        check_eval(eval_suite({"tasks": ["kd_compare"], "chat_template": True}))
    assert err.value.field == "eval.chat_template" and "no chat template" in str(err.value)
