"""``abkd``: alpha-beta divergence distillation (Wang, Yang, Wang, Wang, Xu & Huang 2025, "ABKD:
Pursuing a Proper Allocation of the Probability Mass in Knowledge Distillation via
alpha-beta-Divergence", ICML 2025, arXiv:2505.04560; the divergence is Cichocki, Cruces & Amari
2011, "Generalized Alpha-Beta Divergences and Their Application to Robust Nonnegative Matrix
Factorization", Entropy 13(1), eq. 19-20; reference code ``ab_div`` in
``distillation_llm/distillm/losses.py`` of github.com/ghwang-s/abkd).

    L = alpha * T^2 * mean_t D_AB^(a,b)(p_T || p_S) + (1 - alpha) * CE(y, p_S),  p = softmax(z / T)
    D_AB^(a,b)(p || q) = -1 / (a b) sum_v [ p^a q^b - a / (a + b) p^(a+b) - b / (a + b) q^(a+b) ]

(``a``, ``b`` are the paper's alpha and beta, the config's ``ab_alpha`` and ``ab_beta``:
``alpha`` is the CE mix of every logit-family method). ``a`` moves the focus on the teacher's
large probabilities ("hardness concentration"), ``b`` the spread of the student's mass
("confidence concentration"); forward KL is ``(a, b) = (1, 0)``, reverse KL ``(0, 1)``.

The formula is singular where ``a``, ``b`` or ``a + b`` is 0; there the divergence is its limit
(Cichocki et al. 2011, eq. 20, continuous in ``(a, b)``):

    b = 0, a != 0:   1 / a^2 sum_v [ p^a log(p^a / q^a) - p^a + q^a ]      (a = 1: KL(p || q))
    a = 0, b != 0:   1 / b^2 sum_v [ q^b log(q^b / p^b) - q^b + p^b ]      (b = 1: KL(q || p))
    a = -b != 0:     1 / a^2 sum_v [ log(q^a / p^a) + p^a / q^a - 1 ]
    a = b = 0:       1 / 2 sum_v (log p - log q)^2

so ``(1, 0)`` is ``fkl`` and ``(0, 1)`` is ``rkl``, the same values bit for bit (the terms
``sum q - sum p`` of the first two limits are exactly 0 for normalised distributions and are not
computed there). Deviation from the reference code: its ``b = 0``, ``a = 0`` and ``a = -b``
branches divide by ``a`` (``b``) instead of ``a^2`` (``b^2``), which is not the limit of its own
general branch except at ``a = 1`` (``b = 1``); here the limits are the continuous ones. Near a
singular value (``|a|``, ``|b|`` or ``|a + b|`` below ~1e-3) the general formula is computed as
it stands and loses float32 relative precision (about 1e-7 / |a|): set the value to 0 instead.

Loss card:
- divergence: ``D_AB^(a,b)(p_T || p_S)``, teacher first, all terms kept (0 when the student
  matches the teacher, >= 0 otherwise); a bucket with no mass on both sides adds nothing; the
  gradient flows through the student's distribution only;
- defaults ``ab_alpha = 0.2``, ``ab_beta = 0.7``: the reference's GPT-2 scripts
  (``scripts/gpt2/ab/train_*.sh``: alpha + beta = 0.9, alpha = 0.2; its ``arguments.py``
  defaults are 0.5 / 0.5, its OpenLLaMA script uses 0.1 / 0.8);
- temperature: ``T = 1`` by default (the reference's ``--temperature 1.0``); for ``T != 1`` both
  logits are divided by ``T`` and the term is multiplied by ``T^2`` (Hinton's gradient-scale
  convention, shared by every logit-family method here), 1 at the default;
- ``alpha = 1.0`` by default: pure divergence (the reference trains with ``--kd-ratio 1.0``);
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype, as the reference does;
- top-k teacher: the divergence between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions`; k = V gives the full-vocabulary loss. A negative
  ``ab_alpha`` (``ab_beta``) with a teacher (student) bucket of zero mass gives +inf, as the
  formula does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import kl


@dataclass
class ABKDConfig(LogitConfig):
    """``ab_alpha``, ``ab_beta``: the paper's alpha and beta (the reference's GPT-2 setting);
    ``temperature = 1``, ``alpha = 1`` (pure divergence)."""

    ab_alpha: float = 0.2  # the teacher's exponent; (1, 0) is forward KL
    ab_beta: float = 0.7  # the student's exponent; (0, 1) is reverse KL

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ab_alpha", "ab_beta"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")


def _entries(log_p: torch.Tensor, log_q: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The per-entry terms of ``D_AB^(a,b)(p || q)`` (each >= 0), with the limits at the
    singular values; the entries with no mass on either side are left to the caller."""
    s = a + b
    if a == 0.0 and b == 0.0:
        return 0.5 * (log_p - log_q) ** 2
    if s == 0.0:
        y = a * (log_p - log_q)  # log(p^a / q^a): the term is expm1(y) - y
        return torch.where(y == math.inf, math.inf, torch.expm1(y) - y) / a**2
    if b == 0.0 or a == 0.0:
        if a == 0.0:  # D^(0,b)(p || q) = D^(b,0)(q || p)
            log_p, log_q, a = log_q, log_p, b
        # 1/a^2 [p^a log(p^a / q^a) - p^a + q^a], 0 log 0 = 0 where p^a is 0
        pa, qa = (a * log_p).exp(), (a * log_q).exp()
        live = pa > 0
        diff = torch.where(live, log_p, 0.0) - torch.where(live, log_q, 0.0)
        return pa * diff / a + (qa - pa) / a**2
    # p^a q^b - a/(a+b) p^(a+b) - b/(a+b) q^(a+b), times -1/(a b)
    cross = (a * log_p + b * log_q).exp()
    return (cross - (a / s) * (s * log_p).exp() - (b / s) * (s * log_q).exp()) / -(a * b)


def ab_divergence(log_p: torch.Tensor, log_q: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``D_AB^(a,b)(p_T || p_S)`` per position (teacher ``log_p``, student ``log_q``), with its
    limits where ``a``, ``b`` or ``a + b`` is 0 (see the module docstring); exactly
    ``KL(p_T || p_S)`` at ``(1, 0)`` and ``KL(p_S || p_T)`` at ``(0, 1)``."""
    if (a, b) == (1.0, 0.0):
        return kl(log_p, log_q)
    if (a, b) == (0.0, 1.0):
        return kl(log_q, log_p)
    # an entry with no mass on either side adds nothing (its -infs would make NaNs, in the
    # value and the gradient: they are replaced before the terms are computed); an entry with
    # no mass on one side only is 0 or +inf, and inf - inf (NaN) there is +inf, since every
    # term of the divergence is >= 0
    dead = (log_p == -math.inf) & (log_q == -math.inf)
    lp, lq = torch.where(dead, 0.0, log_p), torch.where(dead, 0.0, log_q)
    term = _entries(lp, lq, a, b)
    one_side = (log_p == -math.inf) | (log_q == -math.inf)
    term = torch.where(one_side & term.isnan(), math.inf, term)
    return torch.where(dead, 0.0, term).sum(-1)


abkd_loss = logit_loss(ab_divergence, "ab_alpha", "ab_beta")


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="abkd",
            family="logit",
            config=ABKDConfig,
            loss=abkd_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Wang et al. 2025 (ABKD, ICML)",
            description="alpha-beta divergence D_AB(p_T || p_S), alpha = 0.2, beta = 0.7: "
            "(1, 0) forward KL, (0, 1) reverse KL",
        )
    ]
