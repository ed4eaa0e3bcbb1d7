"""The conformance checks catch what they promise: each is run on a deliberately broken
plugin and must fail on it (and the built-in ``kd`` passes them all)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kdbench.losses import distributions, kl, masked_mean, shift, token_ce, token_mask
from kdbench.methods import Method
from kdbench.testing import CHECKS, run_checks


@dataclass
class Cfg:
    temperature: float = 1.0


def _kl_terms(student, teacher, batch, cfg):
    log_p, log_q, mask = distributions(student.logits, teacher, batch["labels"], cfg.temperature)
    return kl(log_p, log_q), mask


def good(student, teacher, batch, cfg, modules):
    per_token, mask = _kl_terms(student, teacher, batch, cfg)
    return masked_mean(per_token, mask)


def non_scalar(student, teacher, batch, cfg, modules):
    per_token, mask = _kl_terms(student, teacher, batch, cfg)
    return (per_token * mask).sum(1)  # one value per sequence


def wrong_shape(student, teacher, batch, cfg, modules):
    return good(student, teacher, batch, cfg, modules).reshape(1)


def nan_loss(student, teacher, batch, cfg, modules):
    return good(student, teacher, batch, cfg, modules) * float("nan")


def ignores_mask(student, teacher, batch, cfg, modules):
    per_token, _ = _kl_terms(student, teacher, batch, cfg)
    return per_token.mean()  # padding and prompt positions count too


def nan_on_empty(student, teacher, batch, cfg, modules):
    per_token, mask = _kl_terms(student, teacher, batch, cfg)
    return (per_token * mask).sum() / mask.sum()  # 0 / 0 when no token counts


def reads_undeclared(student, teacher, batch, cfg, modules):
    teacher["hidden_states"]  # declared: logits only
    return good(student, teacher, batch, cfg, modules)


def declares_unread(student, teacher, batch, cfg, modules):
    return good(student, teacher, batch, cfg, modules)  # never reads the hidden states


def full_logits_only(student, teacher, batch, cfg, modules):
    s, labels = shift(student.logits, batch["labels"])
    t, _ = shift(teacher["logits"], batch["labels"])  # None/absent with a top-k teacher
    log_p, log_q = t.float().log_softmax(-1), s.float().log_softmax(-1)
    return masked_mean(kl(log_p, log_q), token_mask(batch["labels"]))


def topk_positions_as_ids(student, teacher, batch, cfg, modules):
    """Compares the teacher's top-k with the student's first k logits (ids ignored)."""
    if teacher.get("logits") is not None:
        return good(student, teacher, batch, cfg, modules)
    k = teacher["topk_logits"].shape[-1]
    t = (teacher["topk_logits"] - teacher["logsumexp"].unsqueeze(-1))[:, :-1]
    s = student.logits.float().log_softmax(-1)[:, :-1, :k]
    return masked_mean((t.exp() * (t - s)).sum(-1), token_mask(batch["labels"]))


def topk_first_is_argmax(student, teacher, batch, cfg, modules):
    """Adds a CE to the teacher's argmax, taken as the first top-k entry (assumes an order)."""
    if teacher.get("logits") is not None:
        hard = teacher["logits"].argmax(-1)
    else:
        hard = teacher["topk_indices"][..., 0]
    labels = torch.where(batch["labels"] == -100, -100, hard)
    return good(student, teacher, batch, cfg, modules) + token_ce(student.logits, labels)


def topk_no_rest(student, teacher, batch, cfg, modules):
    """Renormalises the teacher's top-k alone (its rest mass, rest_logprob, is dropped)."""
    if teacher.get("logits") is not None:
        return good(student, teacher, batch, cfg, modules)
    idx = teacher["topk_indices"][:, :-1]
    log_p = teacher["topk_logits"][:, :-1].float().log_softmax(-1)
    log_q = student.logits[:, :-1].float().log_softmax(-1).gather(-1, idx)
    return masked_mean(kl(log_p, log_q), token_mask(batch["labels"])) + 0 * token_ce(
        student.logits, batch["labels"]
    )


def feature_good(student, teacher, batch, cfg, modules):
    mask = batch["attention_mask"]
    h = modules["proj"](student.hidden_states[-1].float())
    per_token = (h - teacher["hidden_states"][-1].float()).pow(2).mean(-1)
    return masked_mean(per_token, mask) + token_ce(student.logits, batch["labels"])


def teacher_padding_counts(student, teacher, batch, cfg, modules):
    """The teacher's hidden states are averaged over every position, padding included (the
    live teacher has values there, the cache zeros)."""
    return (
        feature_good(student, teacher, batch, cfg, modules)
        + teacher["hidden_states"][-1].float().abs().mean()
    )


def trains_the_projection_only(student, teacher, batch, cfg, modules):
    """The student's features are detached: only the projection learns."""
    h = modules["proj"](student.hidden_states[-1].detach().float())
    per_token = (h - teacher["hidden_states"][-1].float()).pow(2).mean(-1)
    return masked_mean(per_token, batch["attention_mask"])


def projection(student_config, teacher_config, cfg):
    return {"proj": torch.nn.Linear(student_config.hidden_size, teacher_config.hidden_size)}


def projection_mutating_the_config(student_config, teacher_config, cfg):
    student_config.vocab_size = 7  # the saved student's config no longer fits its weights
    return projection(student_config, teacher_config, cfg)


@dataclass
class NoDefaultCfg:
    temperature: float


def method(loss, signals=("logits",), modules=None, config=Cfg) -> Method:
    return Method(
        name=f"broken_{loss.__name__}",
        family="feature" if modules else "logit",
        config=config,
        loss=loss,
        signals=frozenset(signals),
        modules=modules,
    )


def failed(results) -> dict[str, str]:
    return {check: message for check, ok, message in results if not ok}


def test_a_correct_top_k_aware_loss_passes_every_check(tmp_path) -> None:
    results = run_checks(method(good), tmp_path)
    assert [r[0] for r in results] == list(CHECKS)
    assert failed(results) == {}


@pytest.mark.parametrize(
    ("loss", "signals", "check", "says"),
    [
        (non_scalar, ("logits",), "loss_is_scalar", "0-dim scalar"),
        (wrong_shape, ("logits",), "loss_is_scalar", "shape (1,)"),
        (nan_loss, ("logits",), "loss_finite_and_differentiable", "not finite"),
        (ignores_mask, ("logits",), "respects_mask", "padding"),
        (nan_on_empty, ("logits",), "empty_batch_finite", "no counted tokens"),
        (reads_undeclared, ("logits",), "declared_signals", "teacher['hidden_states']"),
        (declares_unread, ("logits", "hidden_states"), "declared_signals", "never reads"),
        (full_logits_only, ("logits",), "loss_is_scalar", "top-5 logits"),
        (topk_positions_as_ids, ("logits",), "topk_teacher", "k = V"),
        (topk_first_is_argmax, ("logits",), "topk_teacher", "order of the top-k"),
        (topk_no_rest, ("logits",), "topk_teacher", "rest_logprob"),
    ],
)
def test_each_check_catches_its_broken_plugin(tmp_path, loss, signals, check, says) -> None:
    failures = failed(run_checks(method(loss, signals), tmp_path))
    assert check in failures, failures
    assert says in failures[check]


HIDDEN = ("hidden_states",)


@pytest.mark.parametrize(
    ("broken", "check", "says"),
    [
        (method(good, config=NoDefaultCfg), "config_defaults", "without a default"),
        (
            method(teacher_padding_counts, HIDDEN, projection),
            "cached_teacher_matches_live",
            "from the cached teacher",
        ),
        (method(trains_the_projection_only, HIDDEN, projection), "engine_steps", "did not change"),
        (
            method(feature_good, HIDDEN, projection_mutating_the_config),
            "trains_saves_and_scores",
            "does not load and score",
        ),
    ],
    ids=["config", "cache", "engine", "saved"],
)
def test_the_other_checks_catch_theirs(tmp_path, broken, check, says) -> None:
    assert run_checks(method(feature_good, HIDDEN, projection), tmp_path / "ok")[-1][1]
    failures = failed(run_checks(broken, tmp_path / "broken"))
    assert check in failures, failures
    assert says in failures[check]


def test_undeclared_read_is_refused_on_the_cached_path_too(tmp_path) -> None:
    from kdbench.signals import SignalError
    from kdbench.testing import Context

    ctx = Context.build(method(reads_undeclared), tmp_path)
    batch = ctx.batch()
    cached = ctx.signals("cache, top-k logits", batch)
    with pytest.raises(SignalError, match="declares signals \\['logits'\\]"):
        cached["hidden_states"]
    assert "logits" not in cached and cached.is_topk
    with pytest.raises(SignalError, match="top-5 logits"):
        cached["logits"]
    assert torch.equal(ctx.signals("live", batch)["logits"], ctx.signals("live", batch)["logits"])
