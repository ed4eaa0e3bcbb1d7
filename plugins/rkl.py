"""``rkl``: token-level reverse KL, student first, as used in MiniLLM (Gu, Dong, Wei & Huang
2024, "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024, arXiv:2306.08543).

    L = alpha * T^2 * mean_t KL( p_S || p_T ) + (1 - alpha) * CE(y, p_S)
    KL(p_S || p_T) = sum_v p_S(v) (log p_S(v) - log p_T(v)),   p = softmax(z / T)

MiniLLM minimises the *sequence-level* reverse KL ``KL(q_theta(y|x) || p(y|x))`` by policy
gradient on student samples; the per-step term of its gradient (its "single-step
decomposition") is this token-level reverse KL over the vocabulary. Here it is computed on the
transfer set's prefixes (teacher forcing, no student sampling, no pre-training LM term): the
reverse-KL divergence itself, as compared in GKD (the ``beta = 1`` end of JSD_beta) and DistiLLM.

Loss card:
- divergence: reverse KL ``KL(p_S || p_T)``, student first: mode-seeking (the student is
  pushed off tokens the teacher finds unlikely rather than to cover all of the teacher's mass);
  it includes the student-entropy term ``sum p_S log p_S``, which depends on the student and
  is part of the gradient; 0 when the student matches the teacher;
- temperature: ``T = 1`` by default (MiniLLM samples and scores at T = 1); for ``T != 1`` both
  logits are divided by ``T`` and the term is multiplied by ``T^2`` (Hinton's gradient-scale
  convention, shared by every logit-family method here), 1 at the default;
- reduction: summed over the vocabulary, averaged over the completion tokens (labels != -100;
  prompt and padding masked), float32 whatever the training dtype;
- ``alpha = 1.0`` by default: pure divergence, no ground-truth CE (MiniLLM's objective has no
  CE on the distillation data);
- top-k teacher: the reverse KL between the k + 1 bucket distributions of
  :func:`kdbench.losses.distributions`; the teacher's rest bucket is floored at float32 eps so
  a teacher whose top-k holds all its mass does not make the loss infinite; k = V gives the
  full-vocabulary loss.

``jsd`` with ``beta = 1`` and ``srkl`` with ``lam = 0`` return exactly this divergence.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import reverse_kl


@dataclass
class RKLConfig(LogitConfig):
    """``temperature = 1`` (MiniLLM uses none), ``alpha = 1`` (pure divergence)."""


rkl_loss = logit_loss(reverse_kl)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="rkl",
            family="logit",
            config=RKLConfig,
            loss=rkl_loss,
            signals=frozenset({"logits"}),
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Gu et al. 2024 (MiniLLM)",
            description="token-level reverse KL(p_S || p_T) (mode-seeking), pure divergence",
        )
    ]
