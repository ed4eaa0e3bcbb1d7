"""The plugin building blocks (kdbench.helpers): logit config and loss, weight checks."""

import dataclasses
import pickle
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace

import pytest
import torch

from kdbench.helpers import (
    LogitConfig,
    LogitLoss,
    check_weights,
    divergence_loss,
    logit_loss,
    temperature_scale,
)
from kdbench.losses import distributions, kl, log_mixture, token_ce, topk_signals


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def skew(log_p: torch.Tensor, log_q: torch.Tensor, lam: float) -> torch.Tensor:
    return kl(log_p, log_mixture(log_p, log_q, lam))


def tv(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


@dataclass
class SkewCfg(LogitConfig):
    lam: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.lam < 1.0:
            raise ValueError(f"lam must be in [0, 1), got {self.lam}")


# --- LogitConfig ----------------------------------------------------------------------------


def test_logit_config_defaults_and_ranges() -> None:
    assert dataclasses.asdict(LogitConfig()) == {"temperature": 1.0, "alpha": 1.0}
    for bad, match in (
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": float("nan")}, "temperature must be > 0"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            LogitConfig(**bad)


def test_logit_config_subclass_adds_fields_and_keeps_the_checks() -> None:
    @dataclass
    class Hinton(LogitConfig):
        temperature: float = 2.0
        alpha: float = 0.5

    assert [f.name for f in dataclasses.fields(Hinton)] == ["temperature", "alpha"]
    assert (Hinton().temperature, Hinton().alpha) == (2.0, 0.5)
    assert [f.name for f in dataclasses.fields(SkewCfg)] == ["temperature", "alpha", "lam"]
    assert SkewCfg(lam=0.2) == SkewCfg(1.0, 1.0, 0.2)
    with pytest.raises(ValueError, match="lam must be"):
        SkewCfg(lam=1.0)
    with pytest.raises(ValueError, match="temperature must be"):
        SkewCfg(temperature=-1.0)


# --- check_weights --------------------------------------------------------------------------


def test_check_weights_names_the_fields() -> None:
    check_weights(weight=1.0, ce_weight=0.0)
    check_weights(beta=0.0, ce_weight=2.0)
    with pytest.raises(ValueError, match="^beta must be >= 0, got -1.0$"):
        check_weights(beta=-1.0, ce_weight=1.0)
    with pytest.raises(ValueError, match="^ce_weight must be >= 0, got nan$"):
        check_weights(weight=1.0, ce_weight=float("nan"))
    with pytest.raises(ValueError, match="^weight and ce_weight cannot both be 0$"):
        check_weights(weight=0.0, ce_weight=0.0)
    with pytest.raises(ValueError, match="^a, b and c cannot all be 0$"):
        check_weights(a=0, b=0, c=0)


# --- logit_loss -----------------------------------------------------------------------------


def _old_loss(s, teacher, labels, cfg, divergence, factor):
    """What every logit plugin computed before the helpers, op for op."""
    log_p, log_q, mask = distributions(s, teacher, labels, cfg.temperature)
    m = mask.to(torch.float32)
    distill = factor * ((divergence(log_p, log_q) * m).sum() / m.sum().clamp_min(1.0))
    if cfg.alpha == 1.0:
        return distill
    return cfg.alpha * distill + (1 - cfg.alpha) * token_ce(s, labels)


TEACHERS = {
    "full": lambda t: {"logits": t},
    "topk": lambda t: topk_signals(t, 4),
    "read-only": lambda t: MappingProxyType({"logits": t}),  # a Mapping, not a dict
}


@pytest.mark.parametrize("teacher_kind", sorted(TEACHERS))
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0])
def test_logit_loss_is_the_old_body_bit_for_bit(teacher_kind, temperature, alpha) -> None:
    s, t = _randn(2, 6, 9, seed=1, scale=2), _randn(2, 6, 9, seed=2, scale=2)
    labels = torch.tensor([[-100, -100, 3, 1, 4, -100], [-100, 2, 0, 5, -100, -100]])
    teacher = TEACHERS[teacher_kind](t)
    cfg = SkewCfg(temperature=temperature, alpha=alpha, lam=0.2)
    batch = {"labels": labels}
    for loss, div, factor in (
        (logit_loss(kl), kl, temperature**2),
        (logit_loss(skew, "lam"), lambda p, q: skew(p, q, 0.2), temperature**2),
        (logit_loss(tv, scale="T"), tv, temperature),
        (logit_loss(tv, scale="1"), tv, 1.0),
    ):
        sg = s.clone().requires_grad_()
        ref = s.clone().requires_grad_()
        got = loss(SimpleNamespace(logits=sg), teacher, batch, cfg, {})
        want = _old_loss(ref, teacher, labels, cfg, div, factor)
        assert torch.equal(got, want), (loss, got.item(), want.item())
        got.backward()
        want.backward()
        assert torch.equal(sg.grad, ref.grad)


def test_divergence_loss_reads_the_config_and_passes_params() -> None:
    s, t = _randn(1, 4, 5, seed=3), _randn(1, 4, 5, seed=4)
    student, batch = SimpleNamespace(logits=s), {"labels": torch.tensor([[-100, 1, 2, 3]])}
    cfg = SkewCfg(temperature=2.0, lam=0.3)
    got = divergence_loss(student, {"logits": t}, batch, cfg, skew, 0.3, scale="T")
    assert torch.equal(
        got, logit_loss(skew, "lam", scale="T")(student, {"logits": t}, batch, cfg, {})
    )
    log_p, log_q, mask = distributions(s, {"logits": t}, batch["labels"], 2.0)
    assert got.item() == pytest.approx(2.0 * skew(log_p, log_q, 0.3)[mask].mean().item())
    # masked positions never reach the loss, even when the divergence is NaN there
    nan_there = lambda p, q: torch.where(mask, kl(p, q), float("nan"))  # noqa: E731
    assert torch.isfinite(divergence_loss(student, {"logits": t}, batch, cfg, nan_there))


def test_logit_loss_object() -> None:
    loss = logit_loss(skew, "lam", scale="T")
    assert loss == LogitLoss(skew, ("lam",), "T")
    assert pickle.loads(pickle.dumps(loss)) == loss
    with pytest.raises(ValueError, match="scale must be one of"):
        logit_loss(kl, scale="T^3")
    with pytest.raises(ValueError, match="scale must be one of"):
        temperature_scale(torch.tensor(1.0), 2.0, "t")
    assert temperature_scale(torch.tensor(3.0), 2.0, "T^2").item() == 12.0
    assert temperature_scale(torch.tensor(3.0), 2.0, "T").item() == 6.0
    x = torch.tensor(3.0)
    assert temperature_scale(x, 2.0, "1") is x
