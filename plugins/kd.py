"""``kd``: logit distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
Neural Network", arXiv:1503.02531).

    L = alpha * T^2 * KL( softmax(z_T / T) || softmax(z_S / T) ) + (1 - alpha) * CE(y, softmax(z_S))

Loss card:
- divergence: forward KL, teacher distribution first (``KL(p_T || p_S)``), over the full vocabulary;
  it includes the teacher-entropy term, so it is 0 when the student matches the teacher;
- temperature: both logits divided by ``T``; the KL term is multiplied by ``T^2`` so its
  gradient magnitude does not shrink as ``1/T^2`` when ``T`` grows (Hinton et al., sec. 2);
- reduction: summed over the vocabulary, averaged over the completion tokens (prompt and
  padding masked), computed in float32 whatever the training dtype;
- ``alpha`` weighs the distillation term against the ground-truth cross-entropy;
- top-k teacher (``topk_logits`` / ``topk_indices`` / ``logsumexp`` / ``rest_logprob``): the
  KL between the k + 1 bucket distributions of :func:`kdbench.losses.distributions`
  (temperature applied to the buckets); with k = V it is the full-vocabulary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import kl, log_distributions, masked_mean


@dataclass
class KDConfig(LogitConfig):
    temperature: float = 2.0  # T > 0; Hinton et al. use 1-20, small models prefer low T
    alpha: float = 0.5  # weight of the distillation term, in [0, 1]


def kd_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | dict[str, torch.Tensor],
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per token, averaged over ``mask`` (logits
    already aligned; the teacher as logits or as a teacher mapping, full or top-k)."""
    teacher = {"logits": teacher_logits} if torch.is_tensor(teacher_logits) else teacher_logits
    log_p, log_q = log_distributions(student_logits, teacher, temperature)
    return temperature**2 * masked_mean(kl(log_p, log_q), mask)


kd_loss = logit_loss(kl)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="kd",
            family="logit",
            config=KDConfig,
            loss=kd_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Hinton et al. 2015",
            description="Hinton logit distillation: T^2-scaled KL at temperature T, "
            "mixed with the task loss by alpha",
        )
    ]
