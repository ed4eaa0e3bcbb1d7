"""``akl``: Adaptive Kullback-Leibler divergence (Wu, Tao, Zhou, Liu, Liu & Li 2025, "Rethinking
Kullback-Leibler Divergence in Knowledge Distillation for Large Language Models", COLING 2025,
arXiv:2404.02657, sec. 4; reference code ``AKL.py`` of github.com/wutaiqiang/LLM_KD_AKL).

    L = alpha * T^2 * mean_t [ g_head KL(p_T || p_S) + g_tail KL(p_S || p_T) ] + (1-alpha) CE
    g_head = G_head / (G_head + G_tail),   g_tail = G_tail / (G_head + G_tail)
    G_head = sum_{v in H} |p_T(v) - p_S(v)|,  G_tail = sum_{v not in H} |p_T(v) - p_S(v)|
    H = the teacher's most likely tokens whose cumulative probability is <= mu (its top token
        always included), mu = 0.5

The paper shows that, early in training, forward KL fits the teacher's head and reverse KL its
tail; AKL weighs each by how far the student is from the teacher on that part, per position.

Loss card:
- weights: from the gaps at the current student, without gradient (the reference detaches the
  student's probabilities), per position; the head is the sorted teacher distribution's prefix
  with cumulative mass <= mu, the first token always in it (the reference's ``mask[..., 0] =
  False``); ``mu = 0.5`` (the reference default);
- divergences: the true KLs (0 when the student matches the teacher; the reference's forward
  term drops the teacher entropy, a constant), summed over the vocabulary, mean over the
  completion tokens (labels != -100), float32;
- temperature ``T = 1`` and ``alpha = 1`` (pure divergence) by default, as the other logit
  methods (T^2 scaling for T != 1);
- top-k teacher: the same on the k + 1 bucket distributions, the rest bucket (all the mass
  outside the teacher's top k) always in the tail, whatever its mass: it sorts after the k
  tokens and its mass is not in the head's cumulative sum, as its tokens would be on the full
  vocabulary (each of them is below every top-k token); k = V gives the full-vocabulary loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, divergence_loss
from kdbench.losses import kl


@dataclass
class AKLConfig(LogitConfig):
    """``mu = 0.5``: the teacher mass that makes the head (the reference default)."""

    mu: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mu < 1.0:
            raise ValueError(f"mu must be in (0, 1), got {self.mu}")


def head_tail_weights(
    log_p: torch.Tensor, log_q: torch.Tensor, mu: float, rest: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_head, g_tail)`` per position (no gradient): the shares of the total absolute gap
    ``|p_T - p_S|`` on the teacher's head (cumulative mass <= ``mu``, top token included) and
    on its tail. ``rest``: the last entry is a top-k teacher's rest bucket, always tail (it
    sorts last and its mass is not in the cumulative sum)."""
    with torch.no_grad():
        p, q = log_p.exp(), log_q.exp()
        key = p
        if rest:  # below every probability: the rest bucket sorts last
            key = torch.cat([p[..., :-1], torch.full_like(p[..., -1:], -1.0)], -1)
        order = key.sort(dim=-1, descending=True).indices
        sorted_p = p.gather(-1, order)
        gap = (sorted_p - q.gather(-1, order)).abs()
        head = sorted_p.cumsum(-1) <= mu
        head[..., 0] = True
        if rest:
            head[..., -1] = False
        g_head = torch.where(head, gap, 0.0).sum(-1)
        g_tail = torch.where(head, 0.0, gap).sum(-1)
        total = (g_head + g_tail).clamp_min(torch.finfo(torch.float32).tiny)
        return g_head / total, g_tail / total


def adaptive_kl(
    log_p: torch.Tensor, log_q: torch.Tensor, mu: float, rest: bool = False
) -> torch.Tensor:
    """``g_head KL(p_T || p_S) + g_tail KL(p_S || p_T)`` per position (teacher ``log_p``,
    student ``log_q``; ``rest``: the last entry is a top-k teacher's rest bucket)."""
    g_head, g_tail = head_tail_weights(log_p, log_q, mu, rest)
    return g_head * kl(log_p, log_q) + g_tail * kl(log_q, log_p)


def has_rest_bucket(student_logits: torch.Tensor, teacher: Any) -> bool:
    """Whether :func:`kdbench.losses.distributions` gives a rest bucket: a top-k teacher (no
    full ``logits``) with k below the vocabulary size."""
    if teacher.get("logits") is not None:
        return False
    return teacher["topk_indices"].size(-1) < student_logits.size(-1)


def akl_loss(
    student: Any,
    teacher: Any,
    batch: dict[str, torch.Tensor],
    cfg: AKLConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    rest = has_rest_bucket(student.logits, teacher)
    return divergence_loss(student, teacher, batch, cfg, adaptive_kl, cfg.mu, rest)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="akl",
            family="logit",
            config=AKLConfig,
            loss=akl_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Wu et al. 2025 (AKL, COLING)",
            description="forward and reverse KL weighted per token by the head / tail gap",
        )
    ]
