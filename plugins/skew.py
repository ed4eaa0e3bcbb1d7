"""``skl`` and ``srkl``: skew KL and skew reverse KL from DistiLLM (Ko, Kim, Chen & Yun 2024,
"DistiLLM: Towards Streamlined Distillation for Large Language Models", ICML 2024,
arXiv:2402.03898, sec. 3.1).

    skl:   L = alpha * T^2 * mean_t KL( p_T || lam p_T + (1 - lam) p_S ) + (1 - alpha) * CE(y, p_S)
    srkl:  L = alpha * T^2 * mean_t KL( p_S || lam p_S + (1 - lam) p_T ) + (1 - alpha) * CE(y, p_S)
    p = softmax(z / T)

The skew ``lam`` (the paper's alpha, renamed here because ``alpha`` is the CE mix of every
logit-family method) mixes a little of the *first* argument's distribution into the second, so
the log of the second argument never blows up where it has no mass: the divergences are
bounded by ``log(1 / lam)`` and their gradients stay stable (DistiLLM, Theorem 1). ``lam = 0``
gives the plain KLs exactly (``skl`` = ``fkl``, ``srkl`` = ``rkl``); ``lam = 1`` makes both
identically 0, so the config refuses it. DistiLLM's adaptive off-policy use of student-generated
sequences is not done here: these are the divergences on the transfer set.

Loss card:
- divergences: ``skl`` is forward KL (teacher first) to the teacher-skewed mixture
  ``lam p_T + (1 - lam) p_S``; ``srkl`` is reverse KL (student first) to the student-skewed
  mixture ``lam p_S + (1 - lam) p_T`` (DistiLLM's reference code: ``mixed = lam * teacher +
  (1 - lam) * student`` for SKL, ``(1 - lam) * teacher + lam * student`` for SRKL); the student
  enters the mixture in both, so the gradient flows through it;
- entropy terms: both are true KLs, 0 when the student matches the teacher. ``skl`` includes the
  teacher-entropy term ``sum p_T log p_T``, constant in the student, which DistiLLM's code drops
  (it minimises ``-sum p_T log m``: same gradient, value offset by ``H(p_T)``); ``srkl`` includes
  the student-entropy term, as DistiLLM's code does;
- temperature: ``T = 1`` by default (DistiLLM uses none); for ``T != 1`` both logits are
  divided by ``T`` and the term is multiplied by ``T^2`` (Hinton's gradient-scale convention,
  shared by every logit-family method here), 1 at the default;
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype, as DistiLLM does;
- ``lam = 0.1`` by default (the paper's skew value, and its code's default);
- ``alpha = 1.0`` by default: pure divergence (DistiLLM's scripts train with
  ``--kd-ratio 1.0``: no ground-truth CE on the distillation data);
- top-k teacher: the skew divergences between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions`; k = V gives the full-vocabulary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, check_interval, logit_loss
from kdbench.losses import skew_kl, skew_reverse_kl


@dataclass
class SkewConfig(LogitConfig):
    """``temperature = 1`` (DistiLLM uses none), ``alpha = 1`` (pure divergence)."""

    lam: float = 0.1  # skew in [0, 1): 0 is the plain KL; DistiLLM uses 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_interval("lam", self.lam, 0.0, 1.0, right=")", note=" (lam = 1 makes the loss 0)")


skl_loss = logit_loss(skew_kl, "lam")
srkl_loss = logit_loss(skew_reverse_kl, "lam")


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="skl",
            family="logit",
            config=SkewConfig,
            loss=skl_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Ko et al. 2024 (DistiLLM)",
            description="skew KL(p_T || lam p_T + (1-lam) p_S), lam = 0.1",
        ),
        Method(
            name="srkl",
            family="logit",
            config=SkewConfig,
            loss=srkl_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Ko et al. 2024 (DistiLLM)",
            description="skew reverse KL(p_S || lam p_S + (1-lam) p_T), lam = 0.1",
        ),
    ]
