"""The Hinton KD loss, checked against its formula."""

import math
from types import SimpleNamespace

import pytest
import torch
from kdbench_plugins.kd import KDConfig, kd_divergence, kd_loss


def _batch(labels):
    return {"labels": torch.tensor(labels)}


def test_zero_when_student_equals_teacher() -> None:
    logits = torch.randn(2, 5, 7)
    mask = torch.ones(2, 5, dtype=torch.bool)
    for t in (0.5, 1.0, 4.0):
        assert kd_divergence(logits, logits.clone(), mask, t).item() == pytest.approx(0, abs=1e-6)


def test_golden_value_by_hand() -> None:
    s = torch.tensor([[[0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0]]])
    temp = 2.0
    p = [math.exp(0.5) / (1 + math.exp(0.5)), 1 / (1 + math.exp(0.5))]  # softmax(t/T)
    q = [p[1], p[0]]  # softmax(s/T)
    expected = temp**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=False))
    got = kd_divergence(s, t, torch.ones(1, 1, dtype=torch.bool), temp)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_t_squared_keeps_gradient_scale_at_high_temperature() -> None:
    # d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T (softmax(s/T) - softmax(t/T)), which for
    # large T tends to ((s - mean s) - (t - mean t)) / V (Hinton et al. 2015, sec. 2.1): with
    # the T^2 factor the gradient keeps its scale as T grows instead of shrinking as 1/T^2.
    t = torch.randn(1, 1, 6, generator=torch.Generator().manual_seed(0))
    s0 = torch.randn(1, 1, 6, generator=torch.Generator().manual_seed(1))
    limit = ((s0 - s0.mean()) - (t - t.mean())) / 6
    norms = []
    for temp in (50.0, 100.0):
        s = s0.clone().requires_grad_()
        kd_divergence(s, t, torch.ones(1, 1, dtype=torch.bool), temp).backward()
        assert torch.allclose(s.grad, limit, atol=5e-3)
        norms.append(s.grad.norm().item())
    assert norms[1] / norms[0] == pytest.approx(1.0, rel=0.02)


def test_masked_tokens_change_nothing() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(1, 4, 5), torch.randn(1, 4, 5)
    mask = torch.tensor([[True, True, False, False]])
    base = kd_divergence(s, t, mask, 2.0)
    s2 = s.clone()
    s2[:, 2:] = 100 * torch.randn(1, 2, 5)
    assert kd_divergence(s2, t, mask, 2.0).item() == pytest.approx(base.item())


def test_alpha_mixes_distillation_and_task_loss() -> None:
    torch.manual_seed(0)
    student = SimpleNamespace(logits=torch.randn(1, 4, 5))
    teacher = {"logits": torch.randn(1, 4, 5)}
    batch = _batch([[-100, 1, 2, 3]])
    only_kd = kd_loss(student, teacher, batch, KDConfig(alpha=1.0), {})
    only_ce = kd_loss(student, teacher, batch, KDConfig(alpha=0.0), {})
    half = kd_loss(student, teacher, batch, KDConfig(alpha=0.5), {})
    assert half.item() == pytest.approx(0.5 * only_kd.item() + 0.5 * only_ce.item(), rel=1e-6)


def test_finite_gradients_from_bfloat16() -> None:
    s = torch.randn(2, 3, 9).to(torch.bfloat16).requires_grad_()
    t = torch.randn(2, 3, 9).to(torch.bfloat16)
    loss = kd_loss(
        SimpleNamespace(logits=s), {"logits": t}, _batch([[-100, 1, 2]] * 2), KDConfig(), {}
    )
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(s.grad.float()).all()


def test_config_ranges() -> None:
    with pytest.raises(ValueError):
        KDConfig(temperature=0)
    with pytest.raises(ValueError):
        KDConfig(alpha=-0.1)
