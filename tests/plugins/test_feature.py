"""The feature-family losses (``fitnets``, ``hidden_cosine``) checked against their formulas,
and two real training steps of each through the DeepSpeed trainer."""

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from kdbench_plugins.fitnets import FitNetsConfig, fitnets_hint, fitnets_loss, fitnets_modules
from kdbench_plugins.hidden_cosine import (
    HiddenCosineConfig,
    hidden_cosine_loss,
    hidden_cosine_modules,
    hidden_cosine_term,
)

from kdbench.config import Budget, DataSpec
from kdbench.layers import default_layer_map, layer_pairs
from kdbench.losses import token_ce
from kdbench.methods import MethodError, registry


def _model_config(hidden: int, layers: int) -> SimpleNamespace:
    return SimpleNamespace(hidden_size=hidden, num_hidden_layers=layers)


def _hidden(batch: int, tokens: int, width: int, layers: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, tokens, width, generator=g) for _ in range(layers + 1))


def _identity(width: int) -> torch.nn.Linear:
    proj = torch.nn.Linear(width, width)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(width))
        proj.bias.zero_()
    return proj


# --- layer mapping (the mapping itself: tests/test_layers.py) --------------------------------


def test_config_normalises_explicit_pairs() -> None:
    cfg = FitNetsConfig(layers=[[0, 0], [2, 4]])  # TOML gives lists
    assert cfg.layers == ((0, 0), (2, 4))
    assert layer_pairs(cfg.layers, 2, 4) == ((0, 0), (2, 4))


def test_config_roundtrips_through_asdict() -> None:
    # plan() stores asdict(cfg) as JSON and a job rebuilds the config from it
    cfg = FitNetsConfig(layers=[[1, 2], [2, 4]])
    again = registry()["fitnets"].make_config(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg


# --- fitnets --------------------------------------------------------------------------------


def test_fitnets_modules_one_projection_per_pair() -> None:
    mods = fitnets_modules(_model_config(64, 2), _model_config(128, 4), FitNetsConfig())
    assert sorted(mods) == ["fitnets_1_2", "fitnets_2_4"]
    assert all(m.in_features == 64 and m.out_features == 128 for m in mods.values())
    mods = fitnets_modules(_model_config(80, 3), _model_config(128, 4), FitNetsConfig("last"))
    assert list(mods) == ["fitnets_3_4"]


def test_fitnets_zero_when_student_equals_teacher() -> None:
    hidden = _hidden(2, 5, 8, 3)
    cfg = FitNetsConfig(ce_weight=0.0)
    mods = {f"fitnets_{s}_{t}": _identity(8) for s, t in default_layer_map(3, 3)}
    mask = torch.ones(2, 5, dtype=torch.long)
    assert fitnets_hint(hidden, hidden, mask, cfg, mods).item() == pytest.approx(0.0, abs=1e-12)
    student = SimpleNamespace(hidden_states=hidden, logits=torch.randn(2, 5, 7))
    batch = {"attention_mask": mask, "labels": torch.zeros(2, 5, dtype=torch.long)}
    loss = fitnets_loss(student, {"hidden_states": hidden}, batch, cfg, mods)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def _golden_fitnets_inputs():
    proj = torch.nn.Linear(2, 3)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        proj.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    s = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # -> projected [1, 2, 4] and [0, 0, 1]
    t = torch.tensor([[[0.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])
    return (torch.zeros(1, 2, 2), s), (torch.zeros(1, 2, 3), t), {"fitnets_1_1": proj}


def test_fitnets_golden_value_by_hand() -> None:
    student_h, teacher_h, mods = _golden_fitnets_inputs()
    cfg = FitNetsConfig(layers="last")
    # token 1: ([1,2,4] - [0,2,2])^2 = [1,0,4], mean 5/3; token 2: [0,0,1], mean 1/3
    both = fitnets_hint(student_h, teacher_h, torch.tensor([[1, 1]]), cfg, mods)
    assert both.item() == pytest.approx((5 / 3 + 1 / 3) / 2, rel=1e-6)
    first = fitnets_hint(student_h, teacher_h, torch.tensor([[1, 0]]), cfg, mods)
    assert first.item() == pytest.approx(5 / 3, rel=1e-6)


def test_fitnets_weights_mix_hint_and_task_loss() -> None:
    student_h, teacher_h, mods = _golden_fitnets_inputs()
    logits = torch.randn(1, 2, 5)
    labels = torch.tensor([[-100, 3]])
    batch = {"attention_mask": torch.ones(1, 2, dtype=torch.long), "labels": labels}
    student = SimpleNamespace(hidden_states=student_h, logits=logits)
    cfg = FitNetsConfig(layers="last", weight=0.5, ce_weight=2.0)
    loss = fitnets_loss(student, {"hidden_states": teacher_h}, batch, cfg, mods)
    assert loss.item() == pytest.approx(0.5 * 1.0 + 2.0 * token_ce(logits, labels).item(), rel=1e-6)


def test_fitnets_padding_changes_nothing() -> None:
    student_h = _hidden(2, 6, 4, 2, seed=1)
    teacher_h = _hidden(2, 6, 8, 4, seed=2)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    torch.manual_seed(0)
    mods = fitnets_modules(_model_config(4, 2), _model_config(8, 4), FitNetsConfig())
    base = fitnets_hint(student_h, teacher_h, mask, FitNetsConfig(), mods)
    noisy_s = tuple(h.clone() for h in student_h)
    noisy_t = tuple(h.clone() for h in teacher_h)
    for h in noisy_s + noisy_t:
        h[1, 3:] = 1e3 * torch.randn_like(h[1, 3:])
    again = fitnets_hint(noisy_s, noisy_t, mask, FitNetsConfig(), mods)
    assert again.item() == pytest.approx(base.item(), rel=1e-6)


def test_fitnets_finite_gradients_from_bfloat16() -> None:
    student_h = tuple(h.bfloat16().requires_grad_() for h in _hidden(2, 4, 4, 2, seed=3))
    teacher_h = tuple(h.bfloat16() for h in _hidden(2, 4, 8, 4, seed=4))
    mods = fitnets_modules(_model_config(4, 2), _model_config(8, 4), FitNetsConfig())
    student = SimpleNamespace(
        hidden_states=student_h, logits=torch.randn(2, 4, 9).bfloat16().requires_grad_()
    )
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, 1, 2, 3], [-100, 4, -100, -100]]),
    }
    loss = fitnets_loss(student, {"hidden_states": teacher_h}, batch, FitNetsConfig(), mods)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for h in student_h[1:]:
        assert h.grad is not None and torch.isfinite(h.grad.float()).all()
    assert all(torch.isfinite(p.grad).all() for m in mods.values() for p in m.parameters())


def test_fitnets_config_ranges() -> None:
    for bad in (
        {"weight": -1.0},
        {"ce_weight": -0.1},
        {"weight": 0.0, "ce_weight": 0.0},
        {"layers": "middle"},
        {"layers": []},
        {"layers": [[1]]},
        {"layers": [[-1, 2]]},
        {"layers": [[1, 2.5]]},
        {"layers": [[True, 2]]},
        {"layers": [[1, 2], [1, 2]]},
    ):
        with pytest.raises(ValueError):
            FitNetsConfig(**bad)
    with pytest.raises(MethodError, match="layers must be"):
        registry()["fitnets"].make_config({"layers": "middle"})


# --- hidden_cosine --------------------------------------------------------------------------


def test_hidden_cosine_modules_only_when_widths_differ() -> None:
    cfg = HiddenCosineConfig()
    assert hidden_cosine_modules(_model_config(16, 2), _model_config(16, 4), cfg) == {}
    mods = hidden_cosine_modules(_model_config(64, 2), _model_config(128, 4), cfg)
    assert list(mods) == ["hidden_cosine_2_4"]  # DistilBERT: last layer only
    assert mods["hidden_cosine_2_4"].in_features == 64
    assert mods["hidden_cosine_2_4"].out_features == 128
    mods = hidden_cosine_modules(
        _model_config(80, 3), _model_config(128, 4), HiddenCosineConfig(layers="uniform")
    )
    assert sorted(mods) == ["hidden_cosine_1_1", "hidden_cosine_2_3", "hidden_cosine_3_4"]


def test_hidden_cosine_zero_when_student_equals_teacher() -> None:
    hidden = _hidden(2, 5, 8, 2)
    mask = torch.ones(2, 5, dtype=torch.long)
    for layers in ("last", "uniform"):
        cfg = HiddenCosineConfig(layers=layers)
        assert hidden_cosine_term(hidden, hidden, mask, cfg, {}).item() == pytest.approx(
            0.0, abs=1e-6
        )
    # with an identity projection too
    cfg = HiddenCosineConfig()
    mods = {"hidden_cosine_2_2": _identity(8)}
    assert hidden_cosine_term(hidden, hidden, mask, cfg, mods).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_hidden_cosine_golden_value_by_hand() -> None:
    s = (torch.zeros(1, 3, 2), torch.tensor([[[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]]]))
    t = (torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [0.0, 1.0], [-3.0, 0.0]]]))
    cfg = HiddenCosineConfig()
    # 1 - cos: 1 - 1/sqrt(2), 1 - 0, 1 - (-1) = 2
    got = hidden_cosine_term(s, t, torch.ones(1, 3, dtype=torch.long), cfg, {})
    assert got.item() == pytest.approx((1 - 1 / math.sqrt(2) + 1 + 2) / 3, rel=1e-6)
    got = hidden_cosine_term(s, t, torch.tensor([[1, 1, 0]]), cfg, {})
    assert got.item() == pytest.approx((1 - 1 / math.sqrt(2) + 1) / 2, rel=1e-6)
    # the defaults weigh the task loss 2 : 1 against the cosine term (DistilBERT)
    logits, labels = torch.randn(1, 3, 5), torch.tensor([[-100, 1, 2]])
    batch = {"attention_mask": torch.ones(1, 3, dtype=torch.long), "labels": labels}
    loss = hidden_cosine_loss(
        SimpleNamespace(hidden_states=s, logits=logits), {"hidden_states": t}, batch, cfg, {}
    )
    expected = (1 - 1 / math.sqrt(2) + 3) / 3 + 2.0 * token_ce(logits, labels).item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hidden_cosine_padding_changes_nothing() -> None:
    s, t = _hidden(2, 5, 6, 1, seed=5), _hidden(2, 5, 6, 1, seed=6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    cfg = HiddenCosineConfig()
    base = hidden_cosine_term(s, t, mask, cfg, {})
    s2, t2 = tuple(h.clone() for h in s), tuple(h.clone() for h in t)
    s2[-1][1, 2:] = torch.randn(3, 6) * 100
    t2[-1][1, 2:] = -s2[-1][1, 2:]
    assert hidden_cosine_term(s2, t2, mask, cfg, {}).item() == pytest.approx(base.item(), rel=1e-6)


def test_hidden_cosine_widths_differ_without_projection_is_an_error() -> None:
    s, t = _hidden(1, 2, 4, 1), _hidden(1, 2, 8, 1)
    with pytest.raises(ValueError, match="no projection"):
        hidden_cosine_term(s, t, torch.ones(1, 2), HiddenCosineConfig(), {})


def test_hidden_cosine_finite_gradients_from_bfloat16() -> None:
    s = tuple(h.bfloat16().requires_grad_() for h in _hidden(2, 4, 4, 1, seed=7))
    t = tuple(h.bfloat16() for h in _hidden(2, 4, 8, 2, seed=8))
    mods = hidden_cosine_modules(_model_config(4, 1), _model_config(8, 2), HiddenCosineConfig())
    student = SimpleNamespace(hidden_states=s, logits=torch.randn(2, 4, 9).bfloat16())
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 1, 2, 3], [-100, 4, 5, -100]]),
    }
    loss = hidden_cosine_loss(student, {"hidden_states": t}, batch, HiddenCosineConfig(), mods)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(s[-1].grad.float()).all() and s[-1].grad.abs().sum() > 0


def test_hidden_cosine_config_ranges() -> None:
    for bad in ({"weight": -1.0}, {"ce_weight": -1.0}, {"layers": "first"}, {"layers": [[1, -2]]}):
        with pytest.raises(ValueError):
            HiddenCosineConfig(**bad)
    with pytest.raises(ValueError):
        HiddenCosineConfig(weight=0.0, ce_weight=0.0)


# --- registration and real training ---------------------------------------------------------


def test_feature_methods_are_registered() -> None:
    methods = registry()
    assert methods["fitnets"].family == methods["hidden_cosine"].family == "feature"
    assert methods["fitnets"].signals == methods["hidden_cosine"].signals == {"hidden_states"}
    assert methods["fitnets"].plugin == "fitnets" and methods["fitnets"].modules is not None


# The default WarmupCosineLR schedule gives learning rate 0 on its first two steps: a constant
# rate (as a suite's [deepspeed] table could set) lets two steps move the parameters.
CONSTANT_LR = {
    "scheduler": {
        "type": "WarmupLR",
        "params": {"warmup_min_lr": 1e-2, "warmup_max_lr": 1e-2, "warmup_num_steps": 1},
    }
}


def train_two_steps(name: str) -> tuple[list[float], dict, list, torch.nn.Module]:
    """Two real optimiser steps of ``name`` through ``kdbench.train.train`` (DeepSpeed, gloo).

    Returns the losses, the extra modules and their parameters before training, the student's
    parameters before training and the student.
    """
    from kdbench.models import build_llama, default_tokenizer
    from kdbench.train import train
    from kdbench.transfer import transfer_batch

    tok = default_tokenizer()
    data = transfer_batch(DataSpec(n_per_task=4, max_length=32), tok)
    teacher = build_llama({"hidden_size": 32, "num_layers": 2, "num_heads": 4}, tok, seed=1)
    student = build_llama({"hidden_size": 16, "num_layers": 1, "num_heads": 2}, tok, seed=2)
    method = registry()[name]
    losses: list[float] = []
    created: dict = {}

    def loss(*args):
        value = method.loss(*args)
        losses.append(float(value.detach()))
        return value

    def modules(*args):
        created.update(method.modules(*args) if method.modules else {})
        created["_before"] = {
            k: [p.detach().clone() for p in m.parameters()] for k, m in created.items()
        }
        return {k: v for k, v in created.items() if k != "_before"}

    spy = dataclasses.replace(method, loss=loss, modules=modules)
    before = [p.detach().clone() for p in student.parameters()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only spin on a shared machine
    try:
        train(
            student,
            spy,
            method.make_config(),
            data,
            Budget(steps=2, batch_size=4, lr=1e-2),
            steps=2,
            seed=0,
            teacher=teacher,
            ds_overrides=CONSTANT_LR,
        )
    finally:
        torch.set_num_threads(threads)
    return losses, created, before, student


def _assert_trained(losses, created, before, student, expect_modules: bool) -> None:
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, student.parameters(), strict=True)
    )
    initial = created.pop("_before")
    assert bool(created) == expect_modules
    for key, module in created.items():
        changed = [
            not torch.equal(a, b.detach())
            for a, b in zip(initial[key], module.parameters(), strict=True)
        ]
        assert all(changed), f"projection {key} was not trained"


def test_fitnets_trains_two_steps() -> None:
    losses, created, before, student = train_two_steps("fitnets")
    assert set(created) - {"_before"} == {"fitnets_1_2"}  # 1 -> 2 layers: last to last
    _assert_trained(losses, created, before, student, expect_modules=True)


def test_hidden_cosine_trains_two_steps() -> None:
    losses, created, before, student = train_two_steps("hidden_cosine")
    assert set(created) - {"_before"} == {"hidden_cosine_1_2"}  # widths 16 -> 32
    _assert_trained(losses, created, before, student, expect_modules=True)
