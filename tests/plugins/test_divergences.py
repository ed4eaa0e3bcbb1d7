"""Golden tests of the adaptive divergences: AKL (Wu et al. 2025) and TAID (Shing et al. 2025),
hand-computed values and the limits that reduce them to known losses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from kdbench_plugins.akl import AKLConfig, adaptive_kl, head_tail_weights
from kdbench_plugins.taid import TAIDConfig, TAIDState, interpolated, taid_loss

from kdbench.losses import kl, topk_signals
from kdbench.methods import registry


def _log(*probs: float) -> torch.Tensor:
    return torch.tensor(probs).log()


def test_akl_weights_by_hand():
    # teacher 0.6 / 0.3 / 0.1: head = {0.6} (0.6 > mu alone, first token always head)
    p, q = _log(0.6, 0.3, 0.1), _log(0.2, 0.5, 0.3)
    g_head, g_tail = head_tail_weights(p, q, 0.5)
    # gaps: |0.6 - 0.2| = 0.4 head; |0.3 - 0.5| + |0.1 - 0.3| = 0.4 tail
    assert float(g_head) == pytest.approx(0.5) and float(g_tail) == pytest.approx(0.5)
    want = 0.5 * float(kl(p, q)) + 0.5 * float(kl(q, p))
    assert float(adaptive_kl(p, q, 0.5)) == pytest.approx(want, rel=1e-6)


def test_akl_head_grows_with_mu():
    p, q = _log(0.4, 0.35, 0.25), _log(0.1, 0.1, 0.8)
    # mu = 0.8: head {0.4, 0.35} (cumulative 0.75 <= 0.8); gaps 0.3 + 0.25 = 0.55, tail 0.55
    g_head, g_tail = head_tail_weights(p, q, 0.8)
    assert float(g_head) == pytest.approx(0.5)
    g_head, _ = head_tail_weights(p, q, 0.3)  # head {0.4} only: 0.3 / 1.1
    assert float(g_head) == pytest.approx(0.3 / 1.1)


def test_akl_limits_and_gradients():
    p = _log(0.7, 0.2, 0.1)
    assert float(adaptive_kl(p, p, 0.5)) == pytest.approx(0.0, abs=1e-7)  # student = teacher
    # all the gap on the head: pure forward KL
    q = _log(0.5, 0.3, 0.2)  # gaps 0.2 | 0.1, 0.1 -> 0.5 / 0.5; move the tail onto the head:
    q2 = _log(0.7 - 0.3, 0.2 + 0.3, 0.1)  # head gap 0.3, tail gap 0.3: still split
    for student in (q, q2):
        g_head, g_tail = head_tail_weights(p, student, 0.5)
        assert float(g_head + g_tail) == pytest.approx(1.0)
    z = torch.randn(2, 3, 5, requires_grad=True)
    t = torch.randn(2, 3, 5)
    out = adaptive_kl(t.log_softmax(-1), z.log_softmax(-1), 0.5).sum()
    out.backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="mu"):
        AKLConfig(mu=1.0)


def _batch(b: int = 2, length: int = 5, vocab: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(vocab, (b, length), generator=g)
    labels[:, :2] = -100
    student = SimpleNamespace(logits=torch.randn(b, length, vocab, generator=g))
    teacher = {"logits": torch.randn(b, length, vocab, generator=g) * 3}
    return student, teacher, {"labels": labels}


def test_taid_at_t_one_is_forward_kl():
    student, teacher, batch = _batch()
    state = {"taid": TAIDState(1.0)}
    cfg = TAIDConfig(t_start=0.5)
    fkl = registry()["fkl"]
    want = fkl.loss(student, teacher, batch, fkl.make_config(), {})
    assert torch.equal(taid_loss(student, teacher, batch, cfg, state), want)


def test_taid_interpolation_by_hand():
    p, q = _log(0.8, 0.2), _log(0.5, 0.5)
    t = 0.25
    # softmax(0.75 log q + 0.25 log p) ∝ (q^0.75 p^0.25)
    w = torch.tensor([0.5**0.75 * 0.8**0.25, 0.5**0.75 * 0.2**0.25])
    assert torch.allclose(interpolated(p, q, t).exp(), w / w.sum())
    # the target is the student's own distribution at t = 0: no loss
    assert float(kl(interpolated(p, q, 0.0), q)) == pytest.approx(0.0, abs=1e-7)
    # the gradient flows only through the student's distribution, not the target
    z = torch.zeros(2, requires_grad=True)
    kl(interpolated(p, z.log_softmax(-1), t), z.log_softmax(-1)).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_taid_top_k_with_k_equal_v_matches_full_logits():
    student, teacher, batch = _batch()
    full = taid_loss(student, teacher, batch, TAIDConfig(), {"taid": TAIDState(0.4)})
    top = topk_signals(teacher["logits"], 7)
    got = taid_loss(student, top, batch, TAIDConfig(), {"taid": TAIDState(0.4)})
    assert float(got) == pytest.approx(float(full), rel=1e-5)


def test_taid_schedule_follows_the_reference_update():
    cfg = TAIDConfig()
    state = TAIDState(cfg.t_start)
    state.update(2.0, 0, 100, cfg)  # first loss: remembered, t unchanged
    assert float(state.t) == pytest.approx(0.4) and float(state.prev_loss) == 2.0
    state.update(1.0, 1, 100, cfg)  # the loss halved: delta = 0.5, m = 0.005
    m = 0.01 * 0.5
    step_up = 5e-4 / (1 + math.exp(-m)) * (1 - 0.4)
    linear = 0.4 + 0.6 * 1 / 100
    assert float(state.momentum) == pytest.approx(m)
    assert float(state.t) == pytest.approx(max(linear, 0.4 + step_up))
    state.update(1.0, 100, 100, cfg)  # the end of training: t_end
    assert float(state.t) == pytest.approx(1.0)
    off = TAIDState(0.4)
    off.update(2.0, 0, 10, TAIDConfig(adaptive=False))
    off.update(1.0, 5, 10, TAIDConfig(adaptive=False))
    assert float(off.t) == pytest.approx(0.7)  # linear only


def test_taid_moves_t_in_training_only(tmp_path):
    from kdbench.config import Budget, DataSpec
    from kdbench.models import build_llama, default_tokenizer
    from kdbench.train import train
    from kdbench.transfer import transfer_batch

    student, teacher, batch = _batch()
    state = {"taid": TAIDState(0.4)}
    taid_loss(student, teacher, batch, TAIDConfig(), state)  # no step: outside training
    assert torch.isinf(state["taid"].prev_loss)
    tok = default_tokenizer()
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    model, live = build_llama(arch, tok, seed=0), build_llama(arch, tok, seed=1)
    method = registry()["taid"]
    captured = {}
    wrapped = method.modules

    def keep(*args):
        captured.update(wrapped(*args))
        return captured

    method = type(method)(**{**method.__dict__, "modules": keep})
    data = transfer_batch(DataSpec(n_per_task=16, max_length=48), tok)
    stats = train(model, method, method.make_config(), data, Budget(steps=8, batch_size=4),
                  8, seed=0, teacher=live)  # fmt: skip
    assert math.isfinite(stats["final_loss"])
    assert float(captured["taid"].t) >= 0.4 + 0.6 * 7 / 8 - 1e-6  # at least the linear schedule
