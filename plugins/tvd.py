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

from kdbench.hookspecs import hookimpl
from kdbench.losses import distributions, masked_mean, with_task_loss
from kdbench.methods import Method


@dataclass
class TVDConfig:
    temperature: float = 1.0  # T > 0; Wen et al. use T = 1
    alpha: float = 1.0  # weight of the divergence against the ground-truth CE, in [0, 1]

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def total_variation(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``1/2 sum_v |p(v) - q(v)|`` per position from two log-distributions."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def tvd_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: TVDConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    labels = batch["labels"]
    log_p, log_q, mask = distributions(student.logits, teacher, labels, cfg.temperature)
    distill = cfg.temperature * masked_mean(total_variation(log_p, log_q), mask)
    return with_task_loss(distill, student.logits, labels, cfg.alpha)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="tvd",
            family="logit",
            config=TVDConfig,
            loss=tvd_loss,
            signals=frozenset({"logits"}),
            paper="Wen et al. 2023",
            description="token-level total variation 1/2 sum |p_T - p_S|, pure divergence",
        )
    ]
