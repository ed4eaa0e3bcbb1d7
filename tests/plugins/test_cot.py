"""The chain-of-thought family: seqkd and step_by_step build their training data from the
teacher's generations, and train with the weighted cross-entropy."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from kdbench_plugins.seqkd import SeqKDConfig, seqkd_data, seqkd_loss
from kdbench_plugins.step_by_step import (
    StepByStepConfig,
    step_by_step_data,
    step_by_step_loss,
    teacher_label,
)

from kdbench import synthetic
from kdbench.config import Budget, DataSpec, GenerationSpec
from kdbench.generations import cached_generations, method_batch, training_examples
from kdbench.losses import IGNORE, token_ce, weighted_token_ce
from kdbench.methods import registry
from kdbench.models import build_llama, default_tokenizer, save
from kdbench.train import train
from kdbench.transfer import encode, with_prompt_prefix

EX = [
    {
        "task": "addition",
        "prompt": "347+285=",
        "rationale": "7+5=12,4+8+1=13,3+2+1=6",
        "answer": "632",
    },
    {"task": "compare", "prompt": "max(482,428)=", "rationale": "", "answer": "482"},
]
# the teacher: right on the sum (but its own rationale), wrong on compare, cut off once
GEN = [
    {
        "prompt": "347+285=",
        "task": "addition",
        "text": "7+5=12,4+8=13,3+2=6#632\n",
        "stopped": True,
    },
    {"prompt": "max(482,428)=", "task": "compare", "text": "428", "stopped": False},
]


# --- training data -----------------------------------------------------------------------------


def test_seqkd_targets_are_the_teacher_generations() -> None:
    out = seqkd_data(EX, GEN, SeqKDConfig())
    assert out == [
        {"prompt": "347+285=", "target": "7+5=12,4+8=13,3+2=6#632\n", "weight": 1.0},
        {"prompt": "max(482,428)=", "target": "428\n", "weight": 1.0},  # "\n" appended
    ]


def test_seqkd_alpha_mixes_the_ground_truth_back_in() -> None:
    out = seqkd_data(EX, GEN, SeqKDConfig(alpha=0.25))
    assert [(o["prompt"], o.get("target"), o["weight"]) for o in out] == [
        ("347+285=", GEN[0]["text"], 0.25),
        ("347+285=", None, 0.75),  # no target: the suite's ground truth (target_text)
        ("max(482,428)=", "428\n", 0.25),
        ("max(482,428)=", None, 0.75),
    ]
    tok = default_tokenizer()
    batch = encode(out, tok, 64, rationales=True)
    assert tok.decode(batch.labels[1][batch.labels[1] != IGNORE]) == synthetic.target_text(EX[0])
    assert batch.weight.tolist() == [0.25, 0.75, 0.25, 0.75]
    assert all("target" not in o for o in seqkd_data(EX, GEN, SeqKDConfig(alpha=0.0)))


def test_step_by_step_builds_label_and_weighted_rationale_targets() -> None:
    out = step_by_step_data(EX, GEN, StepByStepConfig(rationale_weight=0.5))
    assert out == [
        {"prompt": "347+285=", "target": "#632\n", "weight": 1.0},
        {"prompt": " 347+285=", "target": "7+5=12,4+8=13,3+2=6#632\n", "weight": 0.5},
        {"prompt": "max(482,428)=", "target": "482\n", "weight": 1.0},  # the ground truth
        {"prompt": " max(482,428)=", "target": "428\n", "weight": 0.5},
    ]
    # the prompt the evaluation uses (bare) only ever leads to the label
    bare = {o["target"] for o in out if o["prompt"] in {e["prompt"] for e in EX}}
    assert bare == {"#632\n", "482\n"}


def test_step_by_step_options() -> None:
    only_labels = step_by_step_data(EX, GEN, StepByStepConfig(rationale_weight=0.0))
    assert [o["target"] for o in only_labels] == ["#632\n", "482\n"]
    teacher_labels = step_by_step_data(EX, GEN, StepByStepConfig(labels="teacher"))
    assert [o["target"] for o in teacher_labels[::2]] == ["#632\n", "428\n"]
    shared = step_by_step_data(EX, GEN, StepByStepConfig(rationale_prefix=""))
    assert shared[0]["prompt"] == shared[1]["prompt"] == "347+285="
    assert teacher_label({"text": "1+2=3#3#4\n", "stopped": True}) == "#4\n"


def test_configs_check_ranges() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            SeqKDConfig(alpha=bad)
    with pytest.raises(ValueError, match="rationale_weight"):
        StepByStepConfig(rationale_weight=-1.0)
    with pytest.raises(ValueError, match="rationale_weight"):
        StepByStepConfig(rationale_weight=float("nan"))
    with pytest.raises(ValueError, match="labels"):
        StepByStepConfig(labels="gold")
    with pytest.raises(ValueError, match="newline"):
        StepByStepConfig(rationale_prefix="\n")
    assert StepByStepConfig().rationale_weight == 1.0 and SeqKDConfig().alpha == 1.0


# --- the weighted cross-entropy ----------------------------------------------------------------

LOGITS = torch.tensor(
    [
        [[0.0, 1.0], [2.0, 0.0], [5.0, -5.0]],
        [[0.0, 0.0], [3.0, 1.0], [1.0, 4.0]],
    ]
)
LABELS = torch.tensor([[IGNORE, 0, 1], [IGNORE, 1, IGNORE]])
W = torch.tensor([1.0, 3.0])
# by hand: position t predicts label t + 1; CE = log(sum exp) - logit of the target
C00 = math.log(1 + math.e) - 0.0  # example 0, [0, 1] -> 0
C01 = math.log(math.e**2 + 1) - 0.0  # example 0, [2, 0] -> 1
C10 = math.log(2.0)  # example 1, [0, 0] -> 1


def test_weighted_ce_golden_values_by_hand() -> None:
    tokens = (1 * (C00 + C01) + 3 * C10) / (1 * 2 + 3 * 1)
    examples = (1 * (C00 + C01) / 2 + 3 * C10) / (1 + 3)
    assert weighted_token_ce(LOGITS, LABELS, W).item() == pytest.approx(tokens, rel=1e-6)
    got = weighted_token_ce(LOGITS, LABELS, W, per_example=True)
    assert got.item() == pytest.approx(examples, rel=1e-6)
    # equal weights: the plain token mean, whatever their value
    for w in (None, torch.ones(2), torch.full((2,), 7.0)):
        assert weighted_token_ce(LOGITS, LABELS, w).item() == pytest.approx(
            token_ce(LOGITS, LABELS).item(), rel=1e-6
        )


def test_weighted_ce_masking() -> None:
    changed = LOGITS.clone()
    changed[1, 1:] = torch.tensor([[-9.0, 9.0], [9.0, -9.0]])  # predicts IGNORE / nothing
    changed[0, 2] = torch.tensor([9.0, -9.0])  # the last position predicts nothing
    for per_example in (False, True):
        a = weighted_token_ce(LOGITS, LABELS, W, per_example=per_example)
        assert weighted_token_ce(changed, LABELS, W, per_example=per_example).item() == a.item()
        # a zero weight removes an example; an example with nothing to learn is left out
        only0 = weighted_token_ce(LOGITS, LABELS, torch.tensor([1.0, 0.0]), per_example=per_example)
        assert only0.item() == pytest.approx((C00 + C01) / 2, rel=1e-6)
        empty = LABELS.clone()
        empty[1] = IGNORE
        assert weighted_token_ce(LOGITS, empty, W, per_example=per_example).item() == pytest.approx(
            (C00 + C01) / 2, rel=1e-6
        )
        none = torch.full_like(LABELS, IGNORE)
        assert weighted_token_ce(LOGITS, none, W, per_example=per_example).item() == 0.0


def test_losses_read_the_batch_weights() -> None:
    logits = LOGITS.clone().to(torch.bfloat16).requires_grad_()
    student = type("Out", (), {"logits": logits})()
    batch = {"labels": LABELS, "weight": W}
    loss = seqkd_loss(student, None, batch, SeqKDConfig(), {})
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(weighted_token_ce(LOGITS, LABELS, W).item(), rel=1e-2)
    sbs = step_by_step_loss(student, None, batch, StepByStepConfig(), {})
    assert sbs.item() == pytest.approx(
        weighted_token_ce(LOGITS, LABELS, W, per_example=True).item(), rel=1e-2
    )
    sbs.backward()
    assert torch.isfinite(logits.grad.float()).all()


# --- two real steps through the DeepSpeed engine ---------------------------------------------

DATA = DataSpec(tasks=("addition", "compare"), n_per_task=4, max_length=40)


@pytest.fixture(scope="module")
def generations(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cot")
    tok = default_tokenizer()
    teacher = build_llama(
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_length": 64}, tok, 0
    )
    save(teacher, tok, tmp / "teacher")
    return cached_generations(tmp / "teacher", DATA, tmp / "cache", max_new_tokens=12)


@pytest.mark.parametrize("name", ["seqkd", "step_by_step"])
def test_two_deepspeed_steps(name: str, generations: Path) -> None:
    method = registry()[name]
    assert method.family == "chain_of_thought" and method.signals == {"generations"}
    cfg = method.make_config()
    tok = default_tokenizer()
    examples = training_examples(method, cfg, DATA, generations)
    assert len(examples) == 8 * (2 if name == "step_by_step" else 1)
    data = encode(examples, tok, DATA.max_length, DATA.rationales)
    student = build_llama(
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_length": 40}, tok, 0
    )
    before = [p.detach().clone() for p in student.parameters()]
    # a constant learning rate: the default warm-up gives lr 0 to both steps of a 2-step budget
    constant = {"type": "WarmupLR", "params": {"warmup_min_lr": 1e-2, "warmup_max_lr": 1e-2}}
    budget = Budget(steps=2, batch_size=4, lr=1e-2)
    stats = train(
        student, method, cfg, data, budget, 2, seed=0, ds_overrides={"scheduler": constant}
    )
    assert stats["steps"] == 2 and math.isfinite(stats["final_loss"]) and stats["tokens"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_method_batch_generates_once_then_encodes(tmp_path) -> None:
    tok = default_tokenizer()
    save(
        build_llama({"hidden_size": 32, "num_layers": 1, "num_heads": 2}, tok, 0),
        tok,
        tmp_path / "t",
    )
    seqkd, sft = registry()["seqkd"], registry()["sft"]
    batch = method_batch(seqkd, seqkd.make_config(), DATA, tok, tmp_path / "t", tmp_path / "c")
    path = next((tmp_path / "c" / "generations").glob("*.jsonl"))
    expected = encode(training_examples(seqkd, seqkd.make_config(), DATA, path), tok, 40, True)
    assert torch.equal(batch.labels, expected.labels) and torch.equal(batch.weight, expected.weight)
    plain = method_batch(sft, sft.make_config(), DATA, tok)
    assert plain.weight.tolist() == [1.0] * 8


# --- a file transfer set with a Hugging Face teacher ------------------------------------------


@pytest.mark.parametrize("chat", [False, True])
def test_seqkd_and_step_by_step_on_a_jsonl_transfer_set(hf_world, tmp_path, chat) -> None:
    """seqkd learns the teacher's generations, step_by_step the dataset's responses (label task)
    and the teacher's generations after the prefix (rationale task); every target ends with EOS
    and no prompt token is learnt; with chat data the prompts are the rendered conversations."""
    from kdbench.generations import load_generations
    from kdbench.models import load_tokenizer
    from kdbench.transfer import render, transfer_examples

    n = 96 if chat else 48  # room for the rendered conversation
    data = DataSpec(kind="jsonl", path=str(hf_world.transfer), max_length=n, max_examples=5)
    if chat:
        data = dataclasses.replace(
            data, path=str(hf_world.chat), messages_field="messages", chat_template=True
        )
    tok = load_tokenizer(str(hf_world.teacher))
    examples = transfer_examples(data)
    gen = GenerationSpec(max_new_tokens=8)
    seqkd, sbs = registry()["seqkd"], registry()["step_by_step"]
    a = method_batch(seqkd, seqkd.make_config(), data, tok, hf_world.teacher, tmp_path, gen)
    b = method_batch(sbs, sbs.make_config(), data, tok, hf_world.teacher, tmp_path, gen)
    (path,) = (tmp_path / "generations").glob("*.jsonl")  # made once, read by both
    records = load_generations(path)
    assert [r["prompt"] for r in records] == [ex["prompt"] for ex in examples]

    def learnt(batch, i):
        return batch.labels[i][batch.labels[i] != IGNORE].tolist()

    def expected(ex, target):
        prompt, completion = render(ex, target, tok, chat)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return p, t

    for i, (ex, r) in enumerate(zip(examples, records, strict=True)):
        p, t = expected(ex, r["target"])
        assert learnt(a, i) == t[: n - len(p)]
        assert a.input_ids[i, : len(p)].tolist() == p and (a.labels[i, : len(p)] == IGNORE).all()
        p, t = expected(ex, ex["target"])  # step_by_step's label task: the dataset's response
        assert learnt(b, 2 * i) == t[: n - len(p)]
        p, t = expected(with_prompt_prefix(ex, " "), r["target"])  # its rationale task
        assert b.input_ids[2 * i + 1, : len(p)].tolist() == p  # the prefixed prompt
        assert learnt(b, 2 * i + 1) == t[: n - len(p)]
    assert b.weight.tolist() == [1.0, 1.0] * len(examples)
    assert a.truncation.no_target == 0 and b.truncation.no_target == 0
