"""``fkl``: token-level forward KL, teacher first (Hinton, Vinyals & Dean 2015, arXiv:1503.02531;
token-level "word-level KD" of Kim & Rush 2016, "Sequence-Level Knowledge Distillation",
EMNLP 2016, arXiv:1606.07947), the forward-KL objective that MiniLLM (Gu et al. 2024), GKD
(Agarwal et al. 2024) and DistiLLM (Ko et al. 2024) compare their divergences against.

    L = alpha * T^2 * mean_t KL( p_T || p_S ) + (1 - alpha) * CE(y, p_S)
    KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v)),   p = softmax(z / T)

Loss card:
- divergence: forward KL ``KL(p_T || p_S)``, teacher first: mass-covering (the student is pushed
  to put mass everywhere the teacher does); it includes the teacher-entropy term, constant in the
  student, so the loss is 0 when the student matches the teacher (DistiLLM's reference code drops
  it and minimises the cross-entropy ``-sum p_T log p_S``: same gradient, value offset by
  ``H(p_T)``);
- temperature: ``T = 1`` by default (GKD, DistiLLM and MiniLLM use none); for ``T != 1`` both
  logits are divided by ``T`` and the term is multiplied by ``T^2`` (Hinton's gradient-scale
  convention, shared by every logit-family method here), which is 1 at the default;
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype;
- ``alpha = 1.0`` by default: the pure divergence, as in the divergence comparisons of GKD and
  DistiLLM (no ground-truth term); Hinton's mix with the cross-entropy is the ``kd`` method;
- top-k teacher: the KL between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions` (temperature applied to the buckets); k = V gives the
  full-vocabulary loss.

``jsd`` with ``beta = 0`` and ``skl`` with ``lam = 0`` return exactly this divergence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import kl


@dataclass
class FKLConfig(LogitConfig):
    """``temperature = 1`` (the papers use none), ``alpha = 1`` (pure divergence)."""


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p_T || p_S)`` per position from teacher and student log-distributions."""
    return kl(log_p, log_q)


fkl_loss = logit_loss(forward_kl)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="fkl",
            family="logit",
            config=FKLConfig,
            loss=fkl_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Hinton et al. 2015; Kim & Rush 2016",
            description="token-level forward KL(p_T || p_S) (mass-covering), pure divergence",
        )
    ]
