"""``jsd``: generalized Jensen-Shannon divergence with coefficient beta, as in GKD (Agarwal,
Vieillard, Zhou, Stanczyk, Ramos Garea, Geist & Bachem 2024, "On-Policy Distillation of Language
Models: Learning from Self-Generated Mistakes", ICLR 2024, arXiv:2306.13649, eq. 1; the
divergence is Huszar 2015, "How (not) to Train your Generative Model", arXiv:1511.05101).

    L = alpha * T^2 * mean_t JSD_beta(p_T || p_S) + (1 - alpha) * CE(y, p_S)
    JSD_beta(p_T || p_S) = beta KL(p_T || m) + (1 - beta) KL(p_S || m),
    m = beta p_T + (1 - beta) p_S,   p = softmax(z / T)

The beta convention (GKD's, and TRL's ``GKDTrainer.generalized_jsd_loss``): ``beta`` weighs the
*teacher* in the mixture and the teacher's KL term. JSD_beta tends to 0 at both ends, but
rescaled it tends to the two KLs (Huszar 2015, quoted by GKD):

    JSD_beta / beta        -> KL(p_T || p_S)  (forward KL)  as beta -> 0
    JSD_beta / (1 - beta)  -> KL(p_S || p_T)  (reverse KL)  as beta -> 1

so small beta behaves like forward KL and beta near 1 like reverse KL. Like TRL, the end points
return those limits exactly: ``beta = 0`` is ``fkl`` and ``beta = 1`` is ``rkl`` (same values,
bit for bit), while every ``0 < beta < 1`` returns JSD_beta itself, not rescaled (bounded by the
binary entropy ``-beta log beta - (1 - beta) log(1 - beta)``, ``ln 2`` at ``beta = 0.5``). The
loss is therefore discontinuous at the ends (``beta = 1e-3`` gives about ``1e-3`` times the
forward KL, ``beta = 0`` gives the forward KL). At ``beta = 0.5`` it is the symmetric JSD.

GKD's on-policy part (a fraction lambda of student-generated sequences) is not done here: this
is the divergence on the transfer set, GKD with lambda = 0 ("supervised" GKD).

Loss card:
- divergence: both KL terms point at the mixture ``m``, teacher term weighted beta, student term
  1 - beta; both entropy terms are included (the student's is part of the gradient, and the
  student enters ``m``); 0 when the student matches the teacher;
- temperature: ``T = 1`` by default (GKD's loss is at T = 1; TRL's ``GKDConfig.temperature``
  is the on-policy sampling temperature); for ``T != 1`` both logits are divided by ``T`` and the
  term is multiplied by ``T^2`` (Hinton's gradient-scale convention, shared by every
  logit-family method here; TRL has no T^2), 1 at the default;
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype;
- ``beta = 0.5`` by default (TRL's ``GKDConfig.beta``; the paper sweeps 0.1, 0.5, 0.9 per task);
- ``alpha = 1.0`` by default: pure divergence (GKD's objective has no ground-truth CE term);
- top-k teacher: JSD_beta between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions`; k = V gives the full-vocabulary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import generalized_jsd


@dataclass
class JSDConfig(LogitConfig):
    """``temperature = 1`` (GKD uses none), ``alpha = 1`` (pure divergence)."""

    beta: float = 0.5  # teacher weight in [0, 1]: 0 = forward KL, 1 = reverse KL (end limits)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")


jsd_loss = logit_loss(generalized_jsd, "beta")


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="jsd",
            family="logit",
            config=JSDConfig,
            loss=jsd_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Agarwal et al. 2024 (GKD)",
            description="generalized JSD_beta(p_T || p_S): beta=0 forward KL, beta=1 reverse KL",
        )
    ]
