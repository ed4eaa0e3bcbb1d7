"""On-policy training (kdbench.rollout): the student's samples replace a batch's completions,
the teacher scores them live, schedules, reproducibility and the reduction of gkd to jsd."""

from __future__ import annotations

import pytest
import torch

from kdbench.config import Budget, DataSpec
from kdbench.generations import stop_token_ids
from kdbench.losses import IGNORE
from kdbench.methods import MethodError, registry
from kdbench.models import build_llama, default_tokenizer
from kdbench.rollout import (
    FIXED,
    GENERATE,
    REPLAY,
    AdaptiveSchedule,
    HFGenerate,
    MixSchedule,
    OnPolicyConfig,
    Rollout,
    prompts_of,
    sequences,
)
from kdbench.train import train
from kdbench.transfer import transfer_batch

ARCH = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
DATA = DataSpec(n_per_task=16, max_length=48)
BUDGET = Budget(steps=6, batch_size=4, lr=1e-2)


def _models():
    tok = default_tokenizer()
    return tok, build_llama(ARCH, tok, seed=0), build_llama(ARCH, tok, seed=1)


def _rollout(cfg, tok, seed=0):
    return Rollout(cfg, HFGenerate(), stop_token_ids(tok), tok.pad_token_id, DATA.max_length, seed)


def test_prompts_and_sequences_round_trip():
    tok = default_tokenizer()
    rows = transfer_batch(DATA, tok).rows(slice(0, 3))
    prompts = prompts_of(rows)
    for p, ids, labels in zip(prompts, rows["input_ids"], rows["labels"], strict=True):
        first = int((labels != IGNORE).nonzero()[0])
        assert p == ids[:first].tolist()
    out = sequences(prompts, [[5, 6], [7], []], tok.pad_token_id, DATA.max_length)
    assert out["labels"][0, len(prompts[0]) : len(prompts[0]) + 2].tolist() == [5, 6]
    assert (out["labels"][2] == IGNORE).all()  # nothing sampled: nothing learnt
    assert out["attention_mask"].sum(1).tolist() == [
        len(p) + n for p, n in zip(prompts, [2, 1, 0], strict=True)
    ]


def test_samples_end_at_the_first_stop_and_are_seeded():
    tok, student, _ = _models()
    rows = transfer_batch(DATA, tok).rows(slice(0, 8))
    stops = stop_token_ids(tok)
    roll = _rollout(OnPolicyConfig(lmbda=1.0), tok)
    a, kind = roll.batch(student, rows, 0, 10)
    b, _ = _rollout(OnPolicyConfig(lmbda=1.0), tok).batch(student, rows, 0, 10)
    assert kind == GENERATE and torch.equal(a["input_ids"], b["input_ids"])
    for ids, labels, mask in zip(a["input_ids"], a["labels"], a["attention_mask"], strict=True):
        sampled = ids[(labels != IGNORE)].tolist()
        assert all(t not in stops for t in sampled[:-1])  # a stop token only at the end
        assert int(mask.sum()) <= DATA.max_length
    assert roll.stats.generated_sequences == 8
    assert roll.stats.generated_tokens == int((a["labels"] != IGNORE).sum())


def test_mix_schedule_frequency_and_regeneration():
    s = MixSchedule(lmbda=0.5, regenerate_every=3)
    draws = [0.1, 0.9, 0.2, 0.3, 0.4, 0.7]
    kinds = [s.choose(i, 10, u, buffered=4) for i, u in enumerate(draws)]
    assert kinds == [GENERATE, FIXED, REPLAY, REPLAY, GENERATE, FIXED]
    assert MixSchedule(lmbda=0.0).choose(0, 10, 0.0, 0) == FIXED


def test_adaptive_schedule_follows_distillm():
    s = AdaptiveSchedule(phi=0.0, capacity=2, loss_eps=0.1)
    assert s.choose(0, 10, 0.0, 0) == FIXED  # phi = 0: off-policy only
    s.observe(1.0)
    s.observe(1.05)  # rose by less than eps
    assert s.phi == 0.0
    s.observe(1.2)
    assert s.phi == pytest.approx(0.1) and s.previous == 1.2
    assert s.choose(0, 10, 0.05, buffered=0) == GENERATE  # below phi (1 - 0/10)
    assert s.choose(5, 10, 0.07, buffered=2) == REPLAY  # above phi (1 - 5/10), below phi
    assert s.choose(5, 10, 0.07, buffered=1) == GENERATE  # buffer not full yet
    assert s.choose(5, 10, 0.5, buffered=2) == FIXED


def test_on_policy_config_checks():
    with pytest.raises(ValueError, match="lmbda"):
        OnPolicyConfig(lmbda=1.5)
    with pytest.raises(ValueError, match="top_p"):
        OnPolicyConfig(top_p=0.0)
    with pytest.raises(MethodError, match="lmbda"):
        registry()["gkd"].make_config({"lmbda": -1.0})


def _train(name, overrides, seed=0, **kw):
    tok, student, teacher = _models()
    method = registry()[name]
    cfg = method.make_config(overrides)
    roll = _rollout(cfg, tok, seed) if method.on_policy else None
    stats = train(
        student,
        method,
        cfg,
        transfer_batch(DATA, tok),
        BUDGET,
        BUDGET.steps,
        seed,
        teacher=teacher,
        rollout=roll,
        **kw,
    )
    return stats, student


def test_gkd_at_lambda_zero_is_jsd():
    """No student batch: the same batches and loss as off-policy jsd, bit for bit."""
    gkd, a = _train("gkd", {"lmbda": 0.0})
    _, b = _train("jsd", {})
    assert gkd["generated_sequences"] == 0 and gkd["rollout_batches"] == {FIXED: BUDGET.steps}
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_on_policy_training_samples_scores_and_counts():
    stats, _ = _train("onpolicy_rkl", {})
    assert stats["rollout_batches"] == {GENERATE: BUDGET.steps}
    assert stats["generated_sequences"] == BUDGET.steps * BUDGET.batch_size
    assert stats["generated_tokens"] > 0 and stats["generation_wall_s"] > 0
    assert stats["teacher_forwards"] == BUDGET.steps * BUDGET.batch_size  # live on samples
    assert stats["sequences"] == BUDGET.steps * BUDGET.batch_size
    again, _ = _train("onpolicy_rkl", {})
    assert again["final_loss"] == stats["final_loss"]  # seeded sampling: reproducible


def test_resumed_on_policy_run_matches_the_uninterrupted_one(tmp_path):
    overrides = {"lmbda": 0.5, "regenerate_every": 2}
    whole, a = _train("gkd", overrides)

    class StopAt:  # the job is killed after its 4th step, one past the checkpoint at step 3
        n = 0

        def update(self, k):
            self.n += k
            if self.n == 4:
                raise KeyboardInterrupt

    kept = {"checkpoint_dir": tmp_path, "checkpoint_every": 3}
    with pytest.raises(KeyboardInterrupt):
        _train("gkd", overrides, progress=StopAt(), **kept)
    resumed, student = _train("gkd", overrides, **kept)  # a fresh job, fresh models
    assert resumed["resumed_from"] == 3
    assert resumed["rollout_batches"] == whole["rollout_batches"]
    for p, q in zip(a.parameters(), student.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_distillm_probes_and_replays():
    stats, _ = _train("distillm", {"lmbda": 0.5, "capacity": 8, "probe_every": 2})
    kinds = stats["rollout_batches"]
    assert sum(kinds.values()) == BUDGET.steps
    assert kinds.get(GENERATE, 0) >= 1


def test_on_policy_method_must_declare_its_config():
    from dataclasses import dataclass

    from kdbench.methods import Method

    @dataclass
    class Plain:
        x: int = 1

    with pytest.raises(MethodError, match="OnPolicyConfig"):
        Method(
            name="bad",
            family="on_policy",
            config=Plain,
            loss=lambda *a: 0,
            signals=frozenset({"logits"}),
            on_policy=True,
        )
