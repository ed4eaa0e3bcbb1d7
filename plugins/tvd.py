"""``tvd``: token-level total variation distance (Wen, Li, Du & Mou 2023, "f-Divergence
Minimization for Sequence-Level Knowledge Distillation", ACL 2023, arXiv:2307.15190; one of the
divergences DistiLLM, Ko et al. 2024, compares).

    L = alpha * T * mean_t TVD(p_T, p_S) + (1 - alpha) * CE(y, p_S)
    TVD(p_T, p_S) = 1/2 sum_v | p_T(v) - p_S(v) |,   p = softmax(z / T)

Wen et al. minimise the sequence-level TVD through its step-wise upper bound, a sum over steps
of this token-level TVD; here it is computed on the transfer set's prefixes (teacher forcing).

Loss card:
- divergence: symmetric (no direction), in [0, 1], 0 only when the distributions match; no
  entropy terms; its gradient is bounded and ignores how far off a token's probability is;
- temperature: ``T = 1`` by default (Wen et al. use none); for ``T != 1`` both logits are
  divided by ``T`` and the term is multiplied by ``T``, not ``T^2``: ``|.|`` is not locally
  quadratic, so the gradient w.r.t. the logits shrinks as ``1/T`` (the KL family's as
  ``1/T^2``), and ``T`` keeps its scale at high temperature; 1 at the default;
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype;
- ``alpha = 1.0`` by default: pure divergence, as in Wen et al. and DistiLLM's comparison;
- top-k teacher: TVD between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions` (the tail counts by its total mass); k = V gives the
  full-vocabulary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss


@dataclass
class TVDConfig(LogitConfig):
    """``temperature = 1`` (Wen et al. use none), ``alpha = 1`` (pure divergence)."""


def total_variation(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``1/2 sum_v |p(v) - q(v)|`` per position from two log-distributions."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


tvd_loss = logit_loss(total_variation, scale="T")  # T, not T^2: see the loss card


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="tvd",
            family="logit",
            config=TVDConfig,
            loss=tvd_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Wen et al. 2023",
            description="token-level total variation 1/2 sum |p_T - p_S|, pure divergence",
        )
    ]
