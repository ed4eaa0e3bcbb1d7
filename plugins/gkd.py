"""``gkd``: Generalized Knowledge Distillation (Agarwal, Vieillard, Zhou, Stanczyk, Ramos Garea,
Geist & Bachem 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", ICLR 2024, arXiv:2306.13649, Algorithm 1), as TRL's ``GKDTrainer`` runs it.

    L(theta) = E_{x} [ (1 - lmbda) E_{y ~ D_fixed(x)} D(y | x) + lmbda E_{y ~ p_S(.|x)} D(y | x) ]
    D(y | x) = mean_t JSD_beta( p_T(. | y_<t, x) || p_S(. | y_<t, x) )
    JSD_beta(p_T || p_S) = beta KL(p_T || m) + (1 - beta) KL(p_S || m),  m = beta p_T + (1-beta) p_S

Each step, with probability ``lmbda`` the batch's completions are replaced by the student's own
samples for its prompts (temperature ``sample_temperature``, top-p ``top_p``; no gradient flows
through the sampling), scored by the teacher live; otherwise the batch is the fixed data: the
ground truth, or with ``seq_kd = true`` the teacher's own generations (sequence-level KD, the
paper's "supervised + teacher-generated" mix). ``lmbda = 0`` with ``seq_kd = false`` is exactly
off-policy ``jsd`` (the same batches, the same loss, bit for bit); ``lmbda = 1`` is purely
on-policy. The divergence and its limits are :func:`kdbench.losses.generalized_jsd` (``beta =
0`` forward KL, ``beta = 1`` reverse KL).

Loss card:
- divergence: JSD_beta with ``beta = 0.5`` (TRL's default; the paper sweeps 0.1 / 0.5 / 0.9),
  summed over the vocabulary, mean over the completion tokens (labels != -100), float32;
- data: ``lmbda = 0.5`` (TRL's default; the paper's best settings use lmbda = 1 or 0.5), the
  student sampling at ``sample_temperature = 0.9`` (TRL's ``temperature``), top-k off,
  ``max_new_tokens`` 0 = what fits in ``[data] max_length``; the student's samples end at its
  first stop token (kdbench.rollout);
- ``seq_kd``: TRL samples the teacher per batch; here the teacher's generations are those of
  the teacher stage (``[generation]``, greedy by default, made once per suite and cached);
- temperature ``T = 1`` and ``alpha = 1`` (pure divergence) as in ``jsd``;
- the teacher: always live (its signals on a sample cannot be cached); the fixed batches read
  the signal cache when the suite has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbench import Method, hookimpl
from kdbench.generations import as_target, prompt_of
from kdbench.helpers import logit_loss
from kdbench.losses import generalized_jsd
from kdbench.rollout import OnPolicyConfig


@dataclass
class GKDConfig(OnPolicyConfig):
    """TRL's ``GKDConfig`` defaults: ``lmbda = 0.5``, ``beta = 0.5``, ``seq_kd = false``."""

    beta: float = 0.5  # JSD_beta's teacher weight in [0, 1]: 0 forward KL, 1 reverse KL
    seq_kd: bool = False  # fixed batches on the teacher's generations instead of the ground truth

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")


def gkd_data(
    examples: list[dict[str, Any]], generations: list[dict[str, Any]], cfg: GKDConfig
) -> list[dict[str, Any]]:
    """The fixed data: the ground truth, or (``seq_kd``) the teacher's generation per prompt."""
    if not cfg.seq_kd:
        return examples
    return [
        {**prompt_of(ex), "target": as_target(gen)}
        for ex, gen in zip(examples, generations, strict=True)
    ]


gkd_loss = logit_loss(generalized_jsd, "beta")


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="gkd",
            family="on_policy",
            config=GKDConfig,
            loss=gkd_loss,
            signals=frozenset({"logits", "generations"}),
            data=gkd_data,
            on_policy=True,
            paper="Agarwal et al. 2024 (GKD)",
            description="JSD_beta on the student's own samples (probability lmbda) "
            "or the fixed data",
        )
    ]
