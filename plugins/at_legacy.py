"""``at_legacy``: kdbench's earlier variant of attention transfer (Zagoruyko & Komodakis 2017,
ICLR 2017, arXiv:1612.03928), kept under its own name for comparison; ``at``
(:mod:`kdbench_plugins.at`) is the paper's form.

It differs from the paper (and from ``at``) in three ways:

- map: the head *mean* of the attention probabilities, ``mean_h A_h`` (exponent ``p = 1``),
  where the paper squares the activations (``sum_h A_h^2``, ``p = 2``);
- distance: the L2 norm of the difference of unit maps, *not squared* (in ``[0, sqrt 2]``);
- reduction: layer pairs *averaged*, with ``beta / 2``, where the paper sums them with ``beta``.

Per sequence ``b`` (``A`` a layer's (heads, T, T) attention probabilities, padding rows and
columns zeroed, ``n_b`` real tokens; maps flattened and L2-normalised):

    D_b = mean_{(s, t) in pairs} || a_S^s / ||a_S^s|| - a_T^t / ||a_T^t|| ||_2,  a = mean_h A_h
    L   = ce_weight * CE(y, p_S) + mean_b( beta / (2 * n_b^2) * D_b )

Loss card: as ``at`` (same tensors, masking, layer pairs, ``beta = 1000``, ``ce_weight = 1``, no
temperature, float32) except for the map, the unsquared distance and the mean over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kdbench_plugins.at import ATConfig, map_differences

from kdbench import Method, hookimpl
from kdbench.losses import aux_with_ce


@dataclass
class ATLegacyConfig(ATConfig):
    """The fields and defaults of :class:`kdbench_plugins.at.ATConfig`."""


def legacy_distance(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    layers: str | tuple = "uniform",
) -> torch.Tensor:
    """Per sequence (B,): ``||a_S/||a_S|| - a_T/||a_T||||_2`` of the head-mean maps, averaged
    over the layer pairs."""
    diffs = map_differences(student_attn, teacher_attn, mask, layers, p=1.0)
    return torch.stack([d.norm(p=2, dim=1) for d in diffs]).mean(0)


def legacy_term(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: ATLegacyConfig,
) -> torch.Tensor:
    """``mean_b beta / (2 n_b^2) * D_b``."""
    dist = legacy_distance(student_attn, teacher_attn, mask, cfg.layers)
    n_elements = mask.float().sum(1).pow(2).clamp_min(1.0)
    return (cfg.beta / 2 * dist / n_elements).mean()


def at_legacy_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: ATLegacyConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    term = legacy_term(student.attentions, teacher["attentions"], batch["attention_mask"], cfg)
    return aux_with_ce(term, 1.0, cfg.ce_weight, student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="at_legacy",
            family="attention",
            config=ATLegacyConfig,
            loss=at_legacy_loss,
            signals=frozenset({"attentions"}),
            paper="Zagoruyko & Komodakis 2017 (variant)",
            description="attention transfer, kdbench's earlier variant: unsquared L2 distance of "
            "normalised head-mean maps, averaged over layer pairs, plus the task loss",
        )
    ]
