"""``hidden_cosine``: cosine embedding loss on hidden states, DistilBERT's ``L_cos`` (Sanh, Debut,
Chaumond & Wolf 2019, "DistilBERT, a distilled version of BERT: smaller, faster, cheaper and
lighter", arXiv:1910.01108).

    L = ce_weight * CE(y, p_S)
        + weight * mean_{(s, t) in pairs} masked_mean_tokens( 1 - cos( P_st h_S^(s), h_T^(t) ) )

Layers are numbered as the Hugging Face ``hidden_states`` tuple (0 = embeddings, ``l`` = output
of decoder layer ``l``; the last entry is after the final norm). ``layers = "last"`` (default,
DistilBERT: the last hidden states) pairs the two last layers; ``"uniform"`` pairs every student
layer with a depth-matched teacher layer (:mod:`kdbench.layers`); or give explicit ``[[s, t], ...]``.

Loss card:
- tensors: student and teacher hidden states at the chosen pairs; the teacher's are targets;
- projection: DistilBERT's student has the teacher's width (768), so ``P`` is the identity and no
  module is created. When the widths differ, ``P_st`` is a learned ``nn.Linear(H_S, H_T)`` per
  pair (created by the ``modules`` hook, trained with the student, dropped afterwards): cosine
  needs vectors of one size, and projecting the student keeps the teacher's geometry as target;
- reduction: ``1 - cos`` per token (float32, ``eps = 1e-8``), averaged over the real tokens
  (``attention_mask == 1``, prompt included: padding is masked), then over the pairs; this is
  ``nn.CosineEmbeddingLoss`` with target +1 and mean reduction, as in DistilBERT's code;
- no temperature, no divergence;
- weights: DistilBERT trains on ``5.0 * L_ce(soft targets) + 2.0 * L_mlm + 1.0 * L_cos``; the
  soft-target term is the ``kd`` method's, so this method keeps the ground-truth and cosine terms
  in the paper's 2 : 1 ratio: ``ce_weight = 2``, ``weight = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench import Method, hookimpl
from kdbench.helpers import check_weights
from kdbench.layers import check_layers, module_key, pair_projections, paired_states, project
from kdbench.losses import aux_with_ce, masked_mean

PREFIX = "hidden_cosine"


@dataclass
class HiddenCosineConfig:
    layers: str | list[list[int]] = "last"  # "last", "uniform" or [[s, t], ...]
    weight: float = 1.0  # weight of the cosine term (DistilBERT alpha_cos), >= 0
    ce_weight: float = 2.0  # weight of the ground-truth CE (DistilBERT alpha_mlm), >= 0

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        check_weights(weight=self.weight, ce_weight=self.ce_weight)


def cosine_distance(
    student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``1 - cos`` per token, averaged over the tokens where ``mask`` is set."""
    cos = F.cosine_similarity(student_h.float(), teacher_h.float(), dim=-1, eps=1e-8)  # (B, T)
    return masked_mean(1.0 - cos, mask.bool())


def hidden_cosine_modules(
    student_config, teacher_config, cfg: HiddenCosineConfig
) -> dict[str, torch.nn.Module]:
    """A linear projection per pair when the widths differ; none when they are equal."""
    if student_config.hidden_size == teacher_config.hidden_size:
        return {}
    return pair_projections(PREFIX, cfg.layers, student_config, teacher_config)


def hidden_cosine_term(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: HiddenCosineConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    """The cosine term alone, averaged over the layer pairs."""
    terms = []
    for s, t, h, h_t in paired_states(cfg.layers, student_hidden, teacher_hidden):
        key = module_key(PREFIX, s, t)
        if key in modules:
            h = project(modules[key], h)
        elif h.size(-1) != h_t.size(-1):
            raise ValueError(
                f"hidden_cosine: student width {h.size(-1)} != teacher width "
                f"{h_t.size(-1)} and no projection {key!r} was created"
            )
        terms.append(cosine_distance(h, h_t, mask))
    return torch.stack(terms).mean()


def hidden_cosine_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: HiddenCosineConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    term = hidden_cosine_term(
        student.hidden_states, teacher["hidden_states"], batch["attention_mask"], cfg, modules
    )
    return aux_with_ce(term, cfg.weight, cfg.ce_weight, student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="hidden_cosine",
            family="feature",
            config=HiddenCosineConfig,
            loss=hidden_cosine_loss,
            signals=frozenset({"hidden_states"}),
            modules=hidden_cosine_modules,
            paper="Sanh et al. 2019",
            description="DistilBERT cosine loss 1 - cos(h_S, h_T) on the last hidden states "
            "(learned projection when widths differ), plus the task loss",
        )
    ]
