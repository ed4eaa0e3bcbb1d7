"""The synthetic task family (kdbench.synthetic): splits, the noisy annotator, the teacher's
own training set."""

from __future__ import annotations

import pytest

from kdbench import synthetic


def test_noisy_compare_training_answers_are_noisy_and_the_evaluation_is_true():
    train = synthetic.transfer_set(["noisy_compare"], 2000, 0)
    wrong = [ex for ex in train if ex["answer"] != ex["true_answer"]]
    # each wrong answer is the smaller number; the rate is the annotator's
    assert all(ex["answer"] == min(ex["choices"], key=int) for ex in wrong)
    assert len(wrong) / len(train) == pytest.approx(synthetic.ANNOTATOR_NOISE, abs=0.03)
    assert all(ex["true_answer"] == max(ex["choices"], key=int) for ex in train)
    evaluation = synthetic.eval_set("noisy_compare")
    assert len(evaluation) == synthetic.eval_docs("noisy_compare")
    assert all(ex["answer"] == max(ex["choices"], key=int) for ex in evaluation)
    assert all(ex["choices"][ex["label"]] == ex["answer"] for ex in evaluation)
    # the same seed gives the same annotations
    assert synthetic.transfer_set(["noisy_compare"], 2000, 0) == train


def test_clean_tasks_are_not_annotated():
    train = synthetic.transfer_set(["compare", "add2"], 100, 0)
    assert not any("true_answer" in ex for ex in train)
    add2 = [ex for ex in train if ex["task"] == "add2"]
    assert all(len(p) == 2 for ex in add2 for p in ex["prompt"][:-1].split("+"))
    ex = add2[0]
    a, b = map(int, ex["prompt"][:-1].split("+"))
    assert synthetic.target_text(ex) == f"{synthetic.addition_rationale(a, b)}#{a + b}\n"


def test_the_teachers_set_is_disjoint_from_the_transfer_set_and_the_evaluation():
    tasks = ["add2", "noisy_compare"]
    transfer = synthetic.transfer_set(tasks, 300, 0)
    teacher = synthetic.teacher_set(tasks, 2000, 300, 0)
    assert len(teacher) == 4000
    for task in tasks:
        seen = {ex["prompt"] for ex in transfer if ex["task"] == task}
        held_out = {ex["prompt"] for ex in synthetic.eval_set(task)}
        own = {ex["prompt"] for ex in teacher if ex["task"] == task}
        assert len(own) == 2000 and not own & seen and not own & held_out


def test_asking_for_more_prompts_than_a_task_has_is_an_error():
    # two 2-digit numbers: 90 x 90 = 8100 prompts, 400 of them held out
    with pytest.raises(ValueError, match="fewer than 8000 distinct prompts"):
        synthetic.transfer_set(["add2"], 8000, 0)
