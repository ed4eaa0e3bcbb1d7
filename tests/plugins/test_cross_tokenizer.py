"""Golden tests of the cross-tokenizer methods ``uld`` and ``gold``: values worked by hand on
tiny vocabularies, and the limiting cases that reduce to known losses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from kdbench_plugins.gold import GOLDConfig, gold_loss
from kdbench_plugins.jsd import JSDConfig, jsd_loss
from kdbench_plugins.uld import ULDConfig, uld_loss

from kdbench.losses import IGNORE, token_ce, topk_signals
from kdbench.methods import registry
from kdbench.signals import TeacherSignals


def _signals(logits: torch.Tensor, topk: int = 0) -> TeacherSignals:
    values = topk_signals(logits, topk) if topk else {"logits": logits}
    return TeacherSignals(values, {"logits"}, "x", "cache" if topk else "live")


def _one_position(student_logits, teacher_logits, vocab_map=None):
    """A paired batch of one row whose only completion token is predicted at position 0 on both
    sides, with the same text before it (offsets start at 0)."""
    batch = {
        "labels": torch.tensor([[IGNORE, 1]]),
        "teacher_labels": torch.tensor([[IGNORE, 1]]),
        "offsets": torch.tensor([[[-1, -1], [0, 1]]]),
        "teacher_offsets": torch.tensor([[[-1, -1], [0, 1]]]),
    }
    if vocab_map is not None:
        batch["vocab_map"] = torch.tensor(vocab_map)
    student = SimpleNamespace(logits=torch.tensor([[student_logits, student_logits]]))
    teacher = _signals(torch.tensor([[teacher_logits, teacher_logits]]))
    return student, teacher, batch


def test_methods_declare_cross_tokenizer():
    methods = registry()
    for name in ("uld", "gold"):
        assert methods[name].cross_tokenizer and methods[name].family == "cross_tokenizer"
        assert methods[name].signals == {"logits"}


def test_uld_by_hand():
    # teacher (3 tokens) p = (0.5, 0.3, 0.2); student (2 tokens) q = (0.25, 0.75)
    p = [0.5, 0.3, 0.2]
    q = [0.25, 0.75]
    student, teacher, batch = _one_position([math.log(x) for x in q], [math.log(x) for x in p])
    loss = uld_loss(student, teacher, batch, ULDConfig(ce_weight=0.0), {})
    # sorted: (0.5, 0.3, 0.2) against (0.75, 0.25, 0): 0.25 + 0.05 + 0.2
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    with_ce = uld_loss(student, teacher, batch, ULDConfig(), {})
    ce = token_ce(student.logits, batch["labels"])
    assert with_ce.item() == pytest.approx(0.5 + ce.item(), abs=1e-6)
    assert ce.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_uld_is_zero_for_a_permuted_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    z = torch.randn(2, 6, 9)
    labels = torch.full((2, 6), IGNORE)
    labels[:, 3:] = 1
    batch = {"labels": labels}
    perm = torch.randperm(9)
    cfg = ULDConfig(ce_weight=0.0)
    same = uld_loss(SimpleNamespace(logits=z), _signals(z[..., perm]), batch, cfg, {})
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    other = uld_loss(SimpleNamespace(logits=z), _signals(torch.randn(2, 6, 9)), batch, cfg, {})
    assert other.item() > 0.01


def test_uld_top_k_with_k_equal_v_is_the_full_loss_and_gradients_flow():
    torch.manual_seed(1)
    z_s = torch.randn(2, 5, 7, requires_grad=True)
    z_t = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), IGNORE)
    labels[:, 2:] = 3
    batch = {"labels": labels}
    full = uld_loss(SimpleNamespace(logits=z_s), _signals(z_t), batch, ULDConfig(), {})
    every = uld_loss(SimpleNamespace(logits=z_s), _signals(z_t, 7), batch, ULDConfig(), {})
    assert every.item() == pytest.approx(full.item(), abs=1e-5)
    full.backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0


def test_gold_by_hand_matched_and_unmatched_parts():
    # teacher vocab (a, b, c), student vocab (a, d): a is matched (teacher 0 -> student 0)
    p = [0.5, 0.3, 0.2]
    q = [0.4, 0.6]
    student, teacher, batch = _one_position(
        [math.log(x) for x in q], [math.log(x) for x in p], vocab_map=[0, -1, -1]
    )
    # matched buckets: teacher (0.5, 0.5), student (0.4, 0.6); JSD at beta = 0.5
    a, b = [0.5, 0.5], [0.4, 0.6]
    m = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    jsd = 0.5 * sum(x * math.log(x / y) for x, y in zip(a, m, strict=True)) + 0.5 * sum(
        x * math.log(x / y) for x, y in zip(b, m, strict=True)
    )
    # unmatched: teacher (0.3, 0.2), student (0.6,): sorted L1 = 0.3 + 0.2
    uld = 0.5
    loss = gold_loss(student, teacher, batch, GOLDConfig(), {})
    assert loss.item() == pytest.approx(jsd + uld, abs=1e-6)
    only = gold_loss(student, teacher, batch, GOLDConfig(unmatched_weight=0.0), {})
    assert only.item() == pytest.approx(jsd, abs=1e-6)
    fkl = gold_loss(student, teacher, batch, GOLDConfig(beta=0.0, unmatched_weight=0.0), {})
    expected = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    assert fkl.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_gold_with_one_tokenizer_is_jsd(beta):
    torch.manual_seed(2)
    z_s = torch.randn(2, 6, 8)
    z_t = torch.randn(2, 6, 8)
    labels = torch.full((2, 6), IGNORE)
    labels[:, 2:] = 4
    batch = {"labels": labels}
    student = SimpleNamespace(logits=z_s)
    ours = gold_loss(student, _signals(z_t), batch, GOLDConfig(beta=beta), {})
    theirs = jsd_loss(student, _signals(z_t), batch, JSDConfig(beta=beta), {})
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_gold_nothing_paired_is_zero_and_attached():
    z = torch.randn(1, 3, 5, requires_grad=True)
    batch = {"labels": torch.full((1, 3), IGNORE)}
    loss = gold_loss(SimpleNamespace(logits=z), _signals(z.detach()), batch, GOLDConfig(), {})
    assert loss.item() == 0.0 and loss.requires_grad
    loss = uld_loss(SimpleNamespace(logits=z), _signals(z.detach()), batch, ULDConfig(), {})
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (lambda: GOLDConfig(beta=1.5), "beta"),
        (lambda: GOLDConfig(matched_weight=0, unmatched_weight=0, ce_weight=0), "matched_weight"),
        (lambda: ULDConfig(student_temperature=0), "student_temperature"),
        (lambda: ULDConfig(weight=-1), "weight"),
    ],
)
def test_configs_check_their_ranges(config, field):
    with pytest.raises(ValueError, match=field):
        config()
