"""``onpolicy_rkl``: per-token reverse KL on the student's own samples, MiniLLM's objective in
its simple form (Gu, Dong, Wei & Huang 2024, "MiniLLM: Knowledge Distillation of Large Language
Models", ICLR 2024, arXiv:2306.08543), as used for the on-policy distillation of recent
reasoning models (e.g. Qwen3's and Thinking Machines' "on-policy distillation", 2025).

    L(theta) = E_{y ~ p_S(.|x)} mean_t KL( p_S(. | y_<t, x) || p_T(. | y_<t, x) )

Every batch (``lmbda = 1``) is the student's samples for the batch's prompts, scored by the
teacher live; the loss is the full-vocabulary reverse KL at each sampled prefix
(:func:`kdbench.losses.reverse_kl`). MiniLLM optimises the *sequence-level* reverse KL by
policy gradient; its single-step term, summed over the vocabulary at the student's own
prefixes, is this loss (what the reasoning-model recipes use: no reward model, no value
function, no importance weights). Not done here: MiniLLM's long-term (policy-gradient) term,
teacher-mixed sampling and its pre-training LM loss.

Loss card:
- divergence: ``KL(p_S || p_T)``, student first (mode-seeking), summed over the vocabulary, mean
  over the sampled completion tokens, float32; 0 when the student matches the teacher;
- data: ``lmbda = 1`` (always on-policy), the student samples at ``sample_temperature = 1``
  (MiniLLM samples at T = 1), top-p 1, top-k off, up to what fits in ``[data] max_length``;
- temperature ``T = 1`` and ``alpha = 1`` (pure divergence), as ``rkl``;
- the teacher: live on every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench import Method, hookimpl
from kdbench.helpers import logit_loss
from kdbench.losses import reverse_kl
from kdbench.rollout import OnPolicyConfig


@dataclass
class OnPolicyRKLConfig(OnPolicyConfig):
    """Always on-policy, sampling at temperature 1 (MiniLLM)."""

    lmbda: float = 1.0
    sample_temperature: float = 1.0


onpolicy_rkl_loss = logit_loss(reverse_kl)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="onpolicy_rkl",
            family="on_policy",
            config=OnPolicyRKLConfig,
            loss=onpolicy_rkl_loss,
            signals=frozenset({"logits"}),
            on_policy=True,
            paper="Gu et al. 2024 (MiniLLM); on-policy distillation of reasoning models",
            description="per-token reverse KL(p_S || p_T) on the student's own samples",
        )
    ]
