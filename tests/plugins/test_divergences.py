"""Golden tests of the adaptive divergences: AKL (Wu et al. 2025) and TAID (Shing et al. 2025),
hand-computed values and the limits that reduce them to known losses."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
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


def _reference_tracked(student, teacher, batch, t: float, temp: float = 1.0) -> float:
    """The reference's tracked loss, by hand: ``forward_kl(teacher_probs=p_t)``, the mean over
    the completion tokens of ``-sum p_t log p_S`` (no T^2), from the logits directly."""
    s, z = student.logits[:, :-1] / temp, teacher["logits"][:, :-1] / temp
    p_t = torch.softmax((1 - t) * s + t * z, -1)
    ce = -(p_t * s.log_softmax(-1)).sum(-1)
    mask = batch["labels"][:, 1:] != -100
    return float(ce[mask].mean())


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_taid_update_reads_the_reference_loss_value(temp: float):
    # the reference tracks its compute_loss output: the cross-entropy to p_t (KL + H(p_t)),
    # not the KL, and not the T^2-scaled value
    student, teacher, batch = _batch()
    cfg = TAIDConfig(temperature=temp)
    state = {"taid": TAIDState(cfg.t_start)}
    loss = taid_loss(student, teacher, {**batch, "step": 0, "steps": 10}, cfg, state)
    want = _reference_tracked(student, teacher, batch, 0.4, temp)
    assert float(state["taid"].prev_loss) == pytest.approx(want, rel=1e-5)
    assert float(loss) != pytest.approx(want, rel=1e-3)  # the KL differs by H(p_t)
    # the second step: delta from the two tracked values, t from eq. 5
    student2, _, _ = _batch(seed=1)
    taid_loss(student2, teacher, {**batch, "step": 1, "steps": 10}, cfg, state)
    want2 = _reference_tracked(student2, teacher, batch, 0.4, temp)
    m = 0.01 * (want - want2) / want
    assert float(state["taid"].prev_loss) == pytest.approx(want2, rel=1e-5)
    assert float(state["taid"].momentum) == pytest.approx(m, rel=1e-4)
    linear = 0.4 + 0.6 * 1 / 10
    step_up = 5e-4 / (1 + math.exp(-m)) * (1 - 0.4)
    assert float(state["taid"].t) == pytest.approx(max(linear, 0.4 + step_up))


def test_taid_empty_batch_moves_nothing():
    student, teacher, batch = _batch()
    empty = {"labels": torch.full_like(batch["labels"], -100), "step": 3, "steps": 10}
    cfg = TAIDConfig()
    state = {"taid": TAIDState(cfg.t_start)}
    s = student.logits.clone().requires_grad_()
    loss = taid_loss(SimpleNamespace(logits=s), teacher, empty, cfg, state)  # the first step
    assert float(loss.detach()) == 0.0 and torch.isinf(state["taid"].prev_loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    taid_loss(student, teacher, {**batch, "step": 0, "steps": 10}, cfg, state)
    taid_loss(_batch(seed=1)[0], teacher, {**batch, "step": 1, "steps": 10}, cfg, state)
    before = {k: v.clone() for k, v in state["taid"].state_dict().items()}
    for mixed in (TAIDConfig(), TAIDConfig(alpha=0.5)):  # with the CE mix too
        loss = taid_loss(student, teacher, empty, mixed, state)
        assert torch.isfinite(loss) and float(loss) == 0.0
        after = state["taid"].state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), after


def _taid_worker(rank: int, path: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{path}", rank=rank, world_size=2
    )
    try:
        student, teacher, batch = _batch(seed=10 + rank, b=1 + rank)  # unequal token counts
        cfg = TAIDConfig()
        state = {"taid": TAIDState(cfg.t_start)}
        taid_loss(student, teacher, {**batch, "step": 0, "steps": 10}, cfg, state)
        first = float(state["taid"].prev_loss)
        if rank == 1:  # worker 1 has no completion token at the second step: 0's alone count
            batch = {"labels": torch.full_like(batch["labels"], -100)}
        student2 = SimpleNamespace(logits=student.logits * 0.5)
        taid_loss(student2, teacher, {**batch, "step": 1, "steps": 10}, cfg, state)
        torch.save({"first": first, **state["taid"].state_dict()}, f"{out}/{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _run_taid_workers(out: str) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(
        _taid_worker,
        args=(f"{out}/pg", out),
        nprocs=2,
        start_method="spawn",  # not fork: the parent's thread pools would deadlock a child
    )


def test_taid_data_parallel_workers_keep_the_same_t(tmp_path):
    # the two workers are spawned from a fresh interpreter: spawn re-runs the parent's
    # __main__ in each child, and under pytest that may be a script an earlier test ran (the
    # app's AppTest makes app.py __main__)
    code = (
        "import sys; from tests.plugins.test_divergences import _run_taid_workers; "
        "_run_taid_workers(sys.argv[1])"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=root, timeout=600)
    got = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    for key in ("t", "momentum", "prev_loss"):
        assert torch.equal(got[0][key], got[1][key]), key
    # the first tracked value: the mean over both workers' completion tokens
    sums, counts, seconds = 0.0, 0, []
    for rank in (0, 1):
        student, teacher, batch = _batch(seed=10 + rank, b=1 + rank)
        n = int((batch["labels"][:, 1:] != -100).sum())
        sums += n * _reference_tracked(student, teacher, batch, 0.4)
        counts += n
        seconds.append(
            _reference_tracked(SimpleNamespace(logits=student.logits * 0.5), teacher, batch, 0.4)
        )
    assert got[0]["first"] == got[1]["first"] == pytest.approx(sums / counts, rel=1e-5)
    assert float(got[0]["prev_loss"]) == pytest.approx(seconds[0], rel=1e-5)  # worker 0 only
    m = 0.01 * (sums / counts - seconds[0]) / (sums / counts)
    assert float(got[0]["momentum"]) == pytest.approx(m, rel=1e-4)


def test_akl_rest_bucket_is_always_tail():
    # vocabulary 6, teacher top 2: 0.3, 0.2 and a rest bucket of 0.5 that sorts first by mass
    probs = [0.3, 0.2, 0.125, 0.125, 0.125, 0.125]
    student_probs = [0.1, 0.4, 0.05, 0.05, 0.2, 0.2]
    t = torch.tensor(probs).log().view(1, 1, 6).expand(1, 2, 6).contiguous()
    s = torch.tensor(student_probs).log().view(1, 1, 6).expand(1, 2, 6).contiguous()
    labels = torch.tensor([[-100, 0]])
    top = topk_signals(t, 2)
    p, q = _log(0.3, 0.2, 0.5), _log(0.1, 0.4, 0.5)  # the buckets (rest last)
    # mu = 0.4: head {0.3} (0.3 + 0.2 > 0.4); the rest bucket is tail, not the first token
    g_head, g_tail = head_tail_weights(p, q, 0.4, rest=True)
    assert float(g_head) == pytest.approx(0.2 / 0.4) and float(g_tail) == pytest.approx(0.2 / 0.4)
    g_head, _ = head_tail_weights(p, q, 0.4)  # without the flag it would be the whole head
    assert float(g_head) == pytest.approx(0.0)
    # mu = 0.6: both tokens head (0.5 <= 0.6); the rest's mass is not in the cumulative sum
    g_head, _ = head_tail_weights(p, q, 0.6, rest=True)
    assert float(g_head) == pytest.approx(1.0)  # gaps 0.2 + 0.2 head, the rest 0 tail
    method = registry()["akl"]
    for mu in (0.4, 0.6):
        cfg = method.make_config({"mu": mu})
        got = method.loss(SimpleNamespace(logits=s), top, {"labels": labels}, cfg, {})
        g_h, g_t = head_tail_weights(p, q, mu, rest=True)
        want = float(g_h * kl(p, q) + g_t * kl(q, p))
        assert float(got) == pytest.approx(want, rel=1e-5)
    # k = V: no rest bucket, the full-vocabulary loss
    cfg = method.make_config()
    full = method.loss(SimpleNamespace(logits=s), {"logits": t}, {"labels": labels}, cfg, {})
    every = method.loss(SimpleNamespace(logits=s), topk_signals(t, 6), {"labels": labels}, cfg, {})
    assert float(every) == pytest.approx(float(full), rel=1e-5)
