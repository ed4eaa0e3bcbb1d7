"""Golden tests of ABKD's alpha-beta divergence (Wang et al. 2025; Cichocki et al. 2011):
hand-computed values, the limits at the singular values of the formula and the known losses
they reduce to."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from kdbench_plugins.abkd import ABKDConfig, ab_divergence

from kdbench.losses import kl, topk_signals
from kdbench.methods import registry

METHODS = registry()


def _log(*probs: float) -> torch.Tensor:
    return torch.tensor(probs).log()


def _ab_by_hand(p: list[float], q: list[float], a: float, b: float) -> float:
    s = a + b
    return -sum(x**a * y**b - a / s * x**s - b / s * y**s for x, y in zip(p, q, strict=True)) / (
        a * b
    )


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _batch(seed: int = 0, vocab: int = 7):
    s = _randn(2, 5, vocab, seed=seed, scale=2)
    t = _randn(2, 5, vocab, seed=seed + 1, scale=3)
    labels = torch.tensor([[-100, -100, 1, 2, 3], [-100, 4, 5, 6, 0]])
    return s, t, labels


def _loss(name: str, s: torch.Tensor, teacher: dict, labels: torch.Tensor, **cfg) -> torch.Tensor:
    method = METHODS[name]
    config = method.make_config({"alpha": 1.0, **cfg})
    return method.loss(SimpleNamespace(logits=s), teacher, {"labels": labels}, config, {})


P3, Q3 = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]
SINGULAR = [(1.0, 0.0), (0.0, 1.0), (0.3, 0.0), (0.0, 0.3), (0.0, 0.0), (0.5, -0.5)]
AB = [(0.2, 0.7), *SINGULAR]


def test_value_by_hand_on_three_tokens():
    p, q = _log(*P3), _log(*Q3)
    for a, b in ((0.2, 0.7), (0.5, 0.5), (1.5, -0.5), (-0.3, 0.8)):
        want = _ab_by_hand(P3, Q3, a, b)
        assert float(ab_divergence(p, q, a, b)) == pytest.approx(want, rel=1e-5)
    # a = b = 1/2: 2 sum (sqrt p - sqrt q)^2 (four times the squared Hellinger distance)
    hellinger = 2 * sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(P3, Q3, strict=True))
    assert float(ab_divergence(p, q, 0.5, 0.5)) == pytest.approx(hellinger, rel=1e-5)
    # the singular values, by hand (Cichocki et al. 2011, eq. 20)
    a = 0.5
    beta0 = (
        sum(x**a * math.log(x**a / y**a) - x**a + y**a for x, y in zip(P3, Q3, strict=True)) / a**2
    )
    alpha0 = (
        sum(y**a * math.log(y**a / x**a) - y**a + x**a for x, y in zip(P3, Q3, strict=True)) / a**2
    )
    minus = sum(math.log(y**a / x**a) + x**a / y**a - 1 for x, y in zip(P3, Q3, strict=True)) / a**2
    log_sq = 0.5 * sum(math.log(x / y) ** 2 for x, y in zip(P3, Q3, strict=True))
    assert float(ab_divergence(p, q, a, 0.0)) == pytest.approx(beta0, rel=1e-5)
    assert float(ab_divergence(p, q, 0.0, a)) == pytest.approx(alpha0, rel=1e-5)
    assert float(ab_divergence(p, q, a, -a)) == pytest.approx(minus, rel=1e-5)
    assert float(ab_divergence(p, q, 0.0, 0.0)) == pytest.approx(log_sq, rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_registered_loss_by_hand_with_t_squared(temp: float):
    # one counting position carrying logits log P3 / log Q3; the other is shifted away
    s = torch.cat([_log(*Q3).view(1, 1, 3), _randn(1, 1, 3, seed=9, scale=5)], 1)
    t = torch.cat([_log(*P3).view(1, 1, 3), _randn(1, 1, 3, seed=8, scale=5)], 1)
    labels = torch.tensor([[-100, 0]])
    tempered = [[x ** (1 / temp) for x in d] for d in (P3, Q3)]
    p, q = [[x / sum(d) for x in d] for d in tempered]
    want = temp**2 * _ab_by_hand(p, q, 0.2, 0.7)
    got = _loss("abkd", s, {"logits": t}, labels, temperature=temp)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_alpha_one_beta_zero_is_fkl_and_zero_one_is_rkl():
    s, t, labels = _batch()
    for teacher in ({"logits": t}, topk_signals(t, 3)):
        for temp in (1.0, 2.0):
            fkl = _loss("fkl", s, teacher, labels, temperature=temp)
            rkl = _loss("rkl", s, teacher, labels, temperature=temp)
            got_f = _loss("abkd", s, teacher, labels, temperature=temp, ab_alpha=1.0, ab_beta=0.0)
            got_r = _loss("abkd", s, teacher, labels, temperature=temp, ab_alpha=0.0, ab_beta=1.0)
            assert torch.equal(got_f, fkl) and torch.equal(got_r, rkl)


def test_limits_are_continuous():
    # the singular values are the limits of the general formula (Cichocki et al. 2011)
    p, q = _randn(3, 9, seed=3).log_softmax(-1), _randn(3, 9, seed=4).log_softmax(-1)
    eps = 1e-3
    for a, b in ((1.0, 0.0), (0.0, 1.0), (0.7, 0.0), (0.0, 0.4), (0.6, -0.6), (0.0, 0.0)):
        at = ab_divergence(p, q, a, b)
        for da, db in ((eps, 0.0), (0.0, eps), (-eps, eps / 2)):
            near = ab_divergence(p, q, a + da, b + db)
            # first order in eps; at (0, 0) the slope is the larger (cubic in log p - log q)
            rtol = 5e-2 if (a, b) == (0.0, 0.0) else 1e-2
            assert torch.allclose(near, at, rtol=rtol), (a, b, da, db)
    assert torch.allclose(ab_divergence(p, q, 1.0, 0.0), kl(p, q))
    assert torch.allclose(ab_divergence(p, q, 0.0, 1.0), kl(q, p))


@pytest.mark.parametrize("ab", AB)
def test_zero_when_student_equals_teacher(ab):
    logits = _randn(2, 5, 7, seed=5, scale=3)
    labels = torch.tensor([[-100, 1, 2, 3, 4]] * 2)
    a, b = ab
    for teacher in ({"logits": logits.clone()}, topk_signals(logits.clone(), 3)):
        for temp in (0.5, 1.0, 4.0):
            loss = _loss("abkd", logits, teacher, labels, temperature=temp, ab_alpha=a, ab_beta=b)
            assert loss.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("ab", AB)
def test_topk_with_k_equal_vocab_is_the_full_loss(ab):
    s, t, labels = _batch(seed=6)
    a, b = ab
    full = _loss("abkd", s, {"logits": t}, labels, ab_alpha=a, ab_beta=b, temperature=2.0)
    top = _loss("abkd", s, topk_signals(t, 7), labels, ab_alpha=a, ab_beta=b, temperature=2.0)
    assert top.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("ab", SINGULAR)
def test_gradient_finite_at_the_singular_values(ab):
    _, t, labels = _batch(seed=7)
    a, b = ab
    for teacher in ({"logits": t}, topk_signals(t, 3)):
        s = _randn(2, 5, 7, seed=10, scale=2).requires_grad_()
        loss = _loss("abkd", s, teacher, labels, ab_alpha=a, ab_beta=b)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and loss.item() > 0
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # and at the student = teacher point, where the terms are 0
    s = t.clone().requires_grad_()
    (grad,) = torch.autograd.grad(_loss("abkd", s, {"logits": t}, labels, ab_alpha=a, ab_beta=b), s)
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-4


def test_zero_mass_buckets():
    # a teacher with no mass outside its top 2: the rest bucket is exactly 0 (-inf)
    t = torch.tensor([[[1.0, 2.0, -math.inf, -math.inf], [0.5, 1.0, -math.inf, -math.inf]]])
    s = torch.tensor([[[0.3, -0.2, 1.1, 0.4], [0.0, 0.1, 0.2, 0.3]]], requires_grad=True)
    labels = torch.tensor([[-100, 0]])
    for teacher in ({"logits": t}, topk_signals(t, 2)):
        loss = _loss("abkd", s, teacher, labels)  # a, b > 0: finite
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        for a, b in ((0.0, 1.0), (0.0, 0.0), (-0.5, 1.0)):  # the teacher's zeros: +inf, no NaN
            assert _loss("abkd", s, teacher, labels, ab_alpha=a, ab_beta=b).item() == math.inf
    # entries with no mass on either side add nothing, and pass no NaN to the gradient
    p = torch.tensor([0.5, 0.5, 0.0]).log()
    z = torch.tensor([0.0, 1.0, -math.inf], requires_grad=True)
    for a, b in ((0.2, 0.7), (0.5, 0.0), (0.0, 0.5), (0.0, 0.0), (0.4, -0.4), (-0.2, 0.9)):
        value = ab_divergence(p, z.log_softmax(-1), a, b)
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(value) and torch.isfinite(grad[:2]).all()


def test_config_defaults_ranges_and_registration():
    cfg = ABKDConfig()
    assert (cfg.ab_alpha, cfg.ab_beta, cfg.temperature, cfg.alpha) == (0.2, 0.7, 1.0, 1.0)
    for bad in ({"ab_alpha": math.nan}, {"ab_beta": math.inf}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            ABKDConfig(**bad)
    method = METHODS["abkd"]
    assert method.family == "logit" and method.signals == {"logits"} and method.allows_packing
    assert method.plugin == "abkd" and method.paper
