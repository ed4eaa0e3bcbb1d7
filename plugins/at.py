"""``at``: attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention:
Improving the Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017,
arXiv:1612.03928), adapted to transformers.

Paper (eq. 2), for CNN activations ``A in R^{C x H x W}`` at layer pairs ``j``:

    L = CE + beta/2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p,   p = 2,

with ``Q = vec(F(A))`` the flattened *activation-based spatial attention map*
``F(A) = sum_c |A_c|^2`` (channels collapsed, one value per spatial position).

Adaptation: a transformer computes its attention maps explicitly, so the spatial map is the
layer's self-attention, ``a = mean over heads of softmax(QK^T / sqrt(d))`` (shape T x T; heads
play the part of channels, and averaging them lets the two models have different head counts),
flattened and L2-normalised per sequence. Padding query rows and key columns are zeroed before
normalising, so a map only spans the ``n x n`` real tokens of its sequence. Per sequence ``b``:

    D_b = mean_{(s, t) in pairs} || a_S^s / ||a_S^s|| - a_T^t / ||a_T^t|| ||_2          (in [0, 2])
    L   = ce_weight * CE(y, p_S) + mean_b( beta / (2 * n_b^2) * D_b )

Layer pairs use decoder layers ``1..L`` (attention map ``l`` = HF ``attentions[l - 1]``):
``"uniform"`` (default: every student layer with its depth-matched teacher layer, as the paper
transfers at the end of every group; see :mod:`kdbench.layers`), ``"last"``, or ``[[s, t], ...]``.

Loss card:
- tensors: the student's and teacher's attention probabilities (eager attention, causal, with
  padding masked) at the chosen layer pairs; the teacher's are targets;
- distance: the L2 norm (not squared, ``p = 2``) of the difference of unit-normalised maps,
  symmetric (not a divergence), computed in float32;
- reduction: averaged over layer pairs, then over the batch;
- weight: the paper sets ``beta = 10^3`` divided by the number of elements of the attention map
  and the batch size, per layer; here a sequence's map has ``n_b^2`` elements (its real tokens)
  and the batch mean gives the ``1 / batch``, hence ``beta / (2 n_b^2)`` with ``beta = 1000``
  (0.35 to 2.6 for the tiny suite's 14- to 38-token sequences; the paper's maps gave "about
  0.1"). Counting each sequence's own tokens keeps the loss independent of batch padding;
- ground truth: the paper adds the attention term to the task cross-entropy (``ce_weight = 1``);
- no temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench import Method, hookimpl
from kdbench.helpers import check_weights
from kdbench.layers import check_layers, paired_states
from kdbench.losses import aux_with_ce


@dataclass
class ATConfig:
    layers: str | list[list[int]] = "uniform"  # "uniform", "last" or [[s, t], ...] (1-based)
    beta: float = 1000.0  # paper's beta; divided by 2 * (elements of each map), >= 0
    ce_weight: float = 1.0  # weight of the ground-truth cross-entropy, >= 0

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        check_weights(beta=self.beta, ce_weight=self.ce_weight)


def attention_map(attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) probabilities -> (B, T*T): head mean, padding rows/cols zeroed, L2-normed."""
    m = mask.float()
    a = attn.float().mean(1) * m[:, :, None] * m[:, None, :]
    return F.normalize(a.flatten(1), p=2, dim=1, eps=1e-12)


def at_distance(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    layers: str | tuple = "uniform",
) -> torch.Tensor:
    """Per sequence (B,): ``||a_S/||a_S|| - a_T/||a_T||||_2`` averaged over the layer pairs."""
    dists = [
        (attention_map(a_s, mask) - attention_map(a_t, mask)).norm(p=2, dim=1)
        for _, _, a_s, a_t in paired_states(layers, student_attn, teacher_attn, first=1)
    ]
    return torch.stack(dists).mean(0)


def at_term(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: ATConfig,
) -> torch.Tensor:
    """``mean_b beta / (2 n_b^2) * D_b``: the attention term with the paper's scaling."""
    dist = at_distance(student_attn, teacher_attn, mask, cfg.layers)
    n_elements = mask.float().sum(1).pow(2).clamp_min(1.0)
    return (cfg.beta / 2 * dist / n_elements).mean()


def at_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: ATConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    term = at_term(student.attentions, teacher["attentions"], batch["attention_mask"], cfg)
    # beta is inside the term (scaled per sequence), so the term's own weight is 1
    return aux_with_ce(term, 1.0, cfg.ce_weight, student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="at",
            family="attention",
            config=ATConfig,
            loss=at_loss,
            signals=frozenset({"attentions"}),
            paper="Zagoruyko & Komodakis 2017",
            description="attention transfer: L2 distance of normalised head-averaged attention "
            "maps at depth-matched layers, plus the task loss",
        )
    ]
