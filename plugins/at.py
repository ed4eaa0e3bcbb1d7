"""``at``: attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention:
Improving the Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017,
arXiv:1612.03928), the paper's activation-based form, adapted to transformers.

Paper, for CNN activations ``A in R^{C x H x W}`` at layer pairs ``j`` (sec. 3.1, eq. 2):

    F(A) = sum_c |A_c|^p,  p = 2             (channels collapsed: one value per position)
    Q    = vec(F(A))                          (flattened to H * W values)
    L    = CE + beta/2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p,  p = 2

with ``beta = 10^3`` "divided by the number of elements in attention map and batch size for
each layer". The authors' reference code (github.com/szagoruyko/attention-transfer, ``utils.py``
and ``cifar.py``; the README's runs use ``--beta 1e+3``) computes

    at(x)      = F.normalize(x.pow(2).mean(1).view(x.size(0), -1))
    at_loss    = (at(x) - at(y)).pow(2).mean()           # over batch and map elements
    loss       = CE + beta * sum(at_loss per group),  beta = 1e3

Where the two differ kdbench follows the code, which produced the paper's results:

- the distance is the *squared* L2 norm of the difference of unit-normalised maps (``pow(2)``),
  in ``[0, 2]`` here (attention maps are non-negative, so the unit maps' dot product is >= 0);
- it is divided by the map's elements and averaged over the batch (``.mean()``: the paper's
  "divided by the number of elements ... and batch size"), and multiplied by ``beta`` with no
  1/2 (``opt.beta * sum(loss_groups)``); reading the paper's ``beta/2`` literally halves the
  term: set ``beta = 500`` for that;
- the layer pairs are *summed* (the paper's ``sum_j`` and the code's ``sum``), not averaged;
- the code's channel *mean* and the paper's channel *sum* give the same unit map.

Transformer adaptation: ``A`` for layer ``l`` is that layer's self-attention probabilities,
``A_h[i, j] = softmax_j(q_i . k_j / sqrt(d))`` for head ``h``, query token ``i`` and key token
``j`` (HF ``attentions[l - 1]``, shape (heads, T, T), causal, padding keys masked; entries are
>= 0, so ``|A| = A``). Heads play the part of channels, the (query, key) grid the part of the
spatial grid: ``F(A) = sum_h A_h^2`` is a T x T map, and the student and teacher may have
different head counts. Padding query rows and key columns are zeroed before normalising, so a
map spans the ``n_b x n_b`` real tokens of sequence ``b``. Per sequence and layer pair:

    Q_b = vec(sum_h A_h^2) / ||vec(sum_h A_h^2)||_2
    L   = ce_weight * CE(y, p_S) + beta * sum_{(s, t) in pairs} mean_b ||Q_S,b^s - Q_T,b^t||_2^2 / n_b^2

Counting each sequence's own ``n_b^2`` elements keeps the loss independent of batch padding.
Layer pairs use decoder layers ``1..L``: ``"uniform"`` (default: every student layer with its
depth-matched teacher layer, as the paper transfers at the end of every group; see
:mod:`kdbench.layers`), ``"last"``, or ``[[s, t], ...]``.

Loss card:
- tensors: the student's and teacher's attention probabilities (eager attention, causal, with
  padding masked) at the chosen layer pairs; the teacher's are targets;
- map: sum over heads of the squared probabilities (``p = 2``), flattened, L2-normalised per
  sequence, in float32;
- distance: squared L2 of the difference of unit maps, symmetric (not a divergence);
- reduction: divided by the map's elements (``n_b^2``), averaged over the batch, summed over
  layer pairs;
- weight: ``beta = 1000`` (the paper's and the code's); ground truth: the paper adds the
  attention term to the task cross-entropy (``ce_weight = 1``); no temperature.

``at_legacy`` (:mod:`kdbench_plugins.at_legacy`) keeps kdbench's earlier variant (head-mean
map, unsquared distance, layer pairs averaged, ``beta / 2``).
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
    beta: float = 1000.0  # paper's beta; the term is divided by each map's elements, >= 0
    ce_weight: float = 1.0  # weight of the ground-truth cross-entropy, >= 0

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        check_weights(beta=self.beta, ce_weight=self.ce_weight)


def attention_map(attn: torch.Tensor, mask: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(B, heads, T, T) probabilities -> (B, T*T): ``sum_h A_h^p`` with padding rows/cols zeroed,
    flattened and L2-normalised (the paper's ``F_sum^p``, ``p = 2`` by default)."""
    m = mask.float()
    a = attn.float().pow(p).sum(1) * m[:, :, None] * m[:, None, :]
    return F.normalize(a.flatten(1), p=2, dim=1, eps=1e-12)


def map_differences(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    layers: str | tuple = "uniform",
    p: float = 2.0,
) -> list[torch.Tensor]:
    """``Q_S - Q_T`` (B, T*T) per layer pair: the difference of the unit maps of
    :func:`attention_map` with exponent ``p``."""
    return [
        attention_map(a_s, mask, p) - attention_map(a_t, mask, p)
        for _, _, a_s, a_t in paired_states(layers, student_attn, teacher_attn, first=1)
    ]


def at_distance(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    layers: str | tuple = "uniform",
) -> torch.Tensor:
    """Per layer pair and sequence (pairs, B): ``||Q_S - Q_T||_2^2`` of the ``p = 2`` maps."""
    return torch.stack(
        [d.pow(2).sum(1) for d in map_differences(student_attn, teacher_attn, mask, layers)]
    )


def at_term(
    student_attn: tuple[torch.Tensor, ...],
    teacher_attn: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: ATConfig,
) -> torch.Tensor:
    """``beta * sum_pairs mean_b ||Q_S - Q_T||^2 / n_b^2``: the paper's attention term."""
    dist = at_distance(student_attn, teacher_attn, mask, cfg.layers)
    n_elements = mask.float().sum(1).pow(2).clamp_min(1.0)
    return cfg.beta * (dist / n_elements).mean(1).sum()


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
            description="attention transfer: squared L2 distance of normalised maps sum_h A_h^2 "
            "at depth-matched layers, summed over layer pairs, plus the task loss",
        )
    ]
