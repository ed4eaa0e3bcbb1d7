"""The shared loss helpers: teacher distributions (full and top-k), KL, mixtures, token CE,
masked means and the task-loss mixes."""

import math

import pytest
import torch

from kdbench.losses import (
    aux_with_ce,
    distributions,
    kl,
    log_distributions,
    log_mixture,
    masked_mean,
    token_ce,
    topk_signals,
    with_task_loss,
)


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(x / t) for x in z]
    return [x / sum(e) for x in e]


def _temper(p: list[float], t: float) -> list[float]:
    w = [x ** (1 / t) for x in p]
    return [x / sum(w) for x in w]


def _randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- topk_signals ---------------------------------------------------------------------------


def test_topk_signals() -> None:
    logits = _randn(2, 3, 7).to(torch.bfloat16)
    sig = topk_signals(logits, 3)
    assert set(sig) == {"topk_logits", "topk_indices", "logsumexp", "rest_logprob"}
    assert sig["topk_logits"].shape == sig["topk_indices"].shape == (2, 3, 3)
    assert sig["topk_indices"].dtype == torch.long and sig["logsumexp"].shape == (2, 3)
    assert sig["logsumexp"].dtype == sig["rest_logprob"].dtype == torch.float32
    assert sig["rest_logprob"].shape == (2, 3)
    # the rest is the softmax mass of the other 4 ids
    probs = logits.double().softmax(-1)
    rest = 1 - probs.gather(-1, sig["topk_indices"]).sum(-1)
    assert torch.allclose(sig["rest_logprob"].double(), rest.log(), atol=1e-6)
    assert (topk_signals(logits, 7)["rest_logprob"] == -math.inf).all()  # k = V: no rest
    assert torch.equal(sig["topk_logits"], logits.gather(-1, sig["topk_indices"]))
    assert (sig["topk_logits"][..., :-1] >= sig["topk_logits"][..., 1:]).all()  # descending
    assert torch.allclose(sig["logsumexp"], logits.float().logsumexp(-1))
    assert (
        topk_signals(logits, 7)["topk_indices"]
        .sort(-1)
        .values.equal(torch.arange(7).expand(2, 3, 7))
    )
    for k in (0, 8):
        with pytest.raises(ValueError, match="k must be in"):
            topk_signals(logits, k)


# --- full teacher ---------------------------------------------------------------------------


def test_full_teacher_is_tempered_softmax_shifted_and_masked() -> None:
    s, t = _randn(2, 4, 5, seed=1), _randn(2, 4, 5, seed=2)
    labels = torch.tensor([[-100, -100, 3, 1], [-100, 2, 0, -100]])
    log_p, log_q, mask = distributions(s, {"logits": t}, labels, 2.0)
    assert log_p.dtype == log_q.dtype == torch.float32 and log_p.shape == (2, 3, 5)
    assert torch.allclose(log_p, torch.log_softmax(t[:, :-1] / 2, -1))
    assert torch.allclose(log_q, torch.log_softmax(s[:, :-1] / 2, -1))
    assert mask.tolist() == [[False, True, True], [True, True, False]]


def test_bad_teacher_is_refused_by_name() -> None:
    s = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="teacher logits"):
        log_distributions(s, {"logits": torch.zeros(1, 2, 5)}, 1.0)
    with pytest.raises(KeyError, match="logsumexp"):
        log_distributions(s, {"topk_logits": s[..., :2], "topk_indices": s[..., :2].long()}, 1.0)
    with pytest.raises(KeyError, match="rest_logprob"):
        sig = topk_signals(torch.zeros(1, 2, 4), 2)
        log_distributions(s, {k: v for k, v in sig.items() if k != "rest_logprob"}, 1.0)
    with pytest.raises(ValueError, match="top-k teacher shapes"):
        sig = topk_signals(torch.zeros(1, 3, 4), 2)
        log_distributions(s, sig, 1.0)


# --- top-k teacher --------------------------------------------------------------------------


def test_topk_buckets_by_hand() -> None:
    # V = 4, k = 2: buckets {1, 0} (teacher's top-2, in that order) and the rest {2, 3}
    t, s = [1.0, 2.0, -0.5, 0.0], [0.3, -0.2, 1.1, 0.4]
    teacher = topk_signals(torch.tensor([[t]]), 2)
    assert teacher["topk_indices"].tolist() == [[[1, 0]]]
    P, Q = _softmax(t), _softmax(s)
    p = [P[1], P[0], P[2] + P[3]]
    q = [Q[1], Q[0], Q[2] + Q[3]]
    for temp in (1.0, 0.5, 3.0):
        log_p, log_q = log_distributions(torch.tensor([[s]]), teacher, temp)
        assert log_p.exp()[0, 0].tolist() == pytest.approx(_temper(p, temp), rel=1e-5)
        assert log_q.exp()[0, 0].tolist() == pytest.approx(_temper(q, temp), rel=1e-5)


def test_topk_with_k_equal_vocab_is_the_full_distribution() -> None:
    s, t = _randn(2, 5, 9, seed=3, scale=3), _randn(2, 5, 9, seed=4, scale=3)
    for temp in (1.0, 0.7, 4.0):
        fp, fq = log_distributions(s, {"logits": t}, temp)
        tp, tq = log_distributions(s, topk_signals(t, 9), temp)
        assert tp.shape == (2, 5, 9)  # no rest bucket
        idx = topk_signals(t, 9)["topk_indices"]
        assert torch.allclose(tp, fp.gather(-1, idx), atol=1e-5)
        assert torch.allclose(tq, fq.gather(-1, idx), atol=1e-5)


def test_topk_student_rest_is_stable_for_a_tiny_tail() -> None:
    # the student puts e^-100 of its mass outside the teacher's top-1: 1 - sum would give 0
    s = torch.tensor([[[50.0, -50.0, -50.0, -50.0]]], requires_grad=True)
    teacher = topk_signals(torch.tensor([[[3.0, 0.0, 0.0, 0.0]]]), 1)
    _, log_q = log_distributions(s, teacher, 1.0)
    assert log_q[0, 0, 1].item() == pytest.approx(math.log(3) - 100, rel=1e-6)
    log_q[0, 0, 1].backward()
    assert torch.isfinite(s.grad).all()


def test_topk_teacher_rest_is_exact_for_a_tiny_tail() -> None:
    # the teacher's top-1 holds all but 3 e^-200 of its mass: 1 - sum(top k) is 0 in float32
    # (and in float64), the rest is still exact in log space; no floor
    teacher = topk_signals(torch.tensor([[[200.0, 0.0, 0.0, 0.0]]]), 1)
    assert teacher["rest_logprob"].item() == pytest.approx(math.log(3) - 200, rel=1e-6)
    s = torch.zeros(1, 1, 4, requires_grad=True)
    log_p, log_q = log_distributions(s, teacher, 1.0)
    assert log_p[0, 0, 1].item() == pytest.approx(math.log(3) - 200, rel=1e-6)
    # reverse KL: q_top log(q_top / p_top) + q_rest log(q_rest / p_rest), q = (1/4, 3/4)
    expected = 0.25 * math.log(0.25) + 0.75 * (math.log(0.75) - math.log(3) + 200)
    reverse = kl(log_q, log_p).sum()
    assert reverse.item() == pytest.approx(expected, rel=1e-6)
    reverse.backward()
    assert torch.isfinite(s.grad).all()


def test_topk_reverse_kl_of_a_confident_teacher_against_float64() -> None:
    # V = 64, k = 5, the teacher's rest ~1e-11 (below float32's 1e-7 resolution of 1 - sum):
    # the bucketed reverse KL equals the float64 one of the bucketed full distributions
    t = _randn(64, seed=11)
    t[:5] += torch.tensor([30.0, 28.0, 27.0, 26.0, 25.0])
    s = _randn(64, seed=12)
    P, Q = t.double().softmax(-1), s.double().softmax(-1)
    top = t.topk(5).indices
    rest = torch.ones(64, dtype=torch.bool)
    rest[top] = False
    p = torch.cat([P[top], P[rest].sum(0, keepdim=True)])
    q = torch.cat([Q[top], Q[rest].sum(0, keepdim=True)])
    assert p[-1] < 1e-10
    expected = (q * (q.log() - p.log())).sum().item()
    log_p, log_q = log_distributions(s[None, None], topk_signals(t[None, None], 5), 1.0)
    assert torch.allclose(log_p[0, 0].double(), p.log(), rtol=1e-6, atol=1e-6)
    assert kl(log_q, log_p).item() == pytest.approx(expected, rel=1e-6)


def test_topk_teacher_with_no_rest_mass() -> None:
    # logits -inf outside the top 2: the rest bucket is exactly 0, not floored
    t = torch.tensor([[[1.0, 2.0, -math.inf, -math.inf]]])
    s = torch.tensor([[[0.3, -0.2, 1.1, 0.4]]], requires_grad=True)
    teacher = topk_signals(t, 2)
    for temp in (1.0, 2.0):
        log_p, log_q = log_distributions(s, teacher, temp)
        assert log_p[0, 0, 2].item() == -math.inf
        assert log_p.exp()[0, 0].tolist() == pytest.approx(
            _temper(_softmax([2.0, 1.0]) + [0], temp)
        )
        # 0 log 0 = 0: the forward KL is finite, with finite gradients; the reverse is +inf
        forward = kl(log_p, log_q).sum()
        (grad,) = torch.autograd.grad(forward, s)
        assert torch.isfinite(forward) and torch.isfinite(grad).all()
        assert kl(log_q, log_p).item() == math.inf


def test_topk_distributions_are_normalised_and_shifted() -> None:
    s, t = _randn(2, 6, 11, seed=5), _randn(2, 6, 11, seed=6)
    labels = torch.full((2, 6), 1)
    log_p, log_q, mask = distributions(s, topk_signals(t, 4), labels, 2.0)
    assert log_p.shape == log_q.shape == (2, 5, 5) and mask.all()
    for x in (log_p, log_q):
        assert torch.allclose(x.logsumexp(-1), torch.zeros(2, 5), atol=1e-6)
    # the same buckets as the unshifted helper on the first T-1 positions
    ref_p, ref_q = log_distributions(s[:, :-1], topk_signals(t[:, :-1], 4), 2.0)
    assert torch.allclose(log_p, ref_p) and torch.allclose(log_q, ref_q)


# --- divergences ----------------------------------------------------------------------------


def test_kl_by_hand_and_zero_mass_convention() -> None:
    p, q = [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    assert kl(torch.tensor(p).log(), torch.tensor(q).log()).item() == pytest.approx(expected)
    # 0 log 0 = 0: a zero-mass entry of the first argument adds nothing, gradients stay finite
    log_a = torch.tensor([0.5, 0.5, 0.0]).log().requires_grad_()
    log_b = torch.tensor([0.25, 0.75, 0.0]).log().requires_grad_()
    value = kl(log_a, log_b)
    value.backward()
    assert value.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert torch.isfinite(log_a.grad).all() and torch.isfinite(log_b.grad).all()


def test_log_mixture() -> None:
    a, b = torch.tensor([0.6, 0.4]).log(), torch.tensor([0.1, 0.9]).log()
    assert log_mixture(a, b, 0.25).exp().tolist() == pytest.approx([0.225, 0.775])
    assert log_mixture(a, b, 0.0) is b and log_mixture(a, b, 1.0) is a
    with pytest.raises(ValueError):
        log_mixture(a, b, 1.5)


def test_with_task_loss() -> None:
    logits = _randn(1, 3, 4, seed=7)
    labels = torch.tensor([[-100, 2, 1]])
    distill = torch.tensor(2.0)
    assert with_task_loss(distill, logits, labels, 1.0) is distill
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    got = with_task_loss(distill, logits, labels, 0.25)
    assert got.item() == pytest.approx(0.25 * 2.0 + 0.75 * ce.item(), rel=1e-6)


# --- token_ce, masked_mean, aux_with_ce -----------------------------------------------------


def test_token_ce_is_the_cross_entropy_bit_for_bit_and_0_when_nothing_counts() -> None:
    logits = _randn(2, 4, 6, seed=8)
    labels = torch.tensor([[-100, 2, 1, -100], [-100, -100, 5, 0]])
    want = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 6), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.equal(token_ce(logits, labels), want)
    # no token counts: 0 (F.cross_entropy gives NaN), still differentiable
    s = logits.clone().requires_grad_()
    none = token_ce(s, torch.full((2, 4), -100))
    assert none.item() == 0.0
    none.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_masked_mean_selects_instead_of_multiplying() -> None:
    values = _randn(2, 5, seed=9)
    mask = torch.tensor([[True, False, True, True, False], [False, True, True, False, True]])
    old = (values * mask.float()).sum() / mask.float().sum().clamp_min(1.0)
    assert torch.equal(masked_mean(values, mask), old)  # same value, bit for bit
    assert torch.equal(masked_mean(values, mask.long()), old)  # an attention_mask works too
    # a NaN or inf at a masked position does not reach the mean (nor its gradient)
    dirty = values.clone()
    dirty[0, 1], dirty[1, 3] = float("nan"), float("inf")
    dirty.requires_grad_()
    got = masked_mean(dirty, mask)
    assert torch.equal(got, old)
    got.backward()
    assert torch.equal(dirty.grad, mask.float() / mask.sum())
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_aux_with_ce() -> None:
    logits = _randn(1, 3, 4, seed=10)
    labels = torch.tensor([[-100, 2, 1]])
    term = torch.tensor(3.0)
    assert aux_with_ce(term, 0.5, 0.0, logits, labels).item() == 1.5
    ce = token_ce(logits, labels)
    assert torch.equal(aux_with_ce(term, 0.5, 2.0, logits, labels), 0.5 * term + 2.0 * ce)
    assert torch.equal(aux_with_ce(term, 1.0, 0.0, logits, labels), term)  # 1.0 * x is exact
