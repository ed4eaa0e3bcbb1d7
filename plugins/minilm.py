"""``minilm``: deep self-attention relation distillation (Wang, Wei, Dong, Bao, Yang & Zhou 2020,
"MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained
Transformers", NeurIPS 2020, arXiv:2002.10957; generalised by Wang, Bao, Huang, Dong & Wei 2021,
"MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing Pretrained
Transformers", Findings of ACL 2021, arXiv:2012.15828).

MiniLM transfers the last layer's self-attention distributions (Q-K) and value relation (V-V),
which needs the same number of heads in teacher and student. MiniLMv2 drops that restriction
with *relation heads*: the queries of all attention heads are concatenated (``X = Q``, the
``q_proj`` output, (B, T, d)) and split again into ``R`` relation heads of size ``d_r = d / R``,
whatever the model's own head count; likewise for keys and values. For a relation ``X-X``:

    rel_X = softmax( X_r X_r^T / sqrt(d_r) )          (B, R, T, T), per model with its own d_r
    L     = ce_weight * CE(y, p_S)
            + weight * sum_{X in relations} mean_{b, r, real rows i} KL( rel_X^T[b,r,i] || rel_X^S[b,r,i] )

with ``relations = (Q-Q, K-K, V-V)`` (MiniLMv2). The Q-Q and K-K relations take the place of
MiniLM's Q-K attention distribution, the V-V relation is MiniLM's value relation.

Inputs come from the ``qkv`` signal: the last decoder layer's ``q_proj`` / ``k_proj`` /
``v_proj`` outputs (before RoPE and the head split), ``teacher["qkv"]`` and ``student.qkv``.
Teacher and student may differ in width and head count; only ``R`` must divide every one of
their q/k/v widths. The last layer is MiniLM's choice (MiniLMv2 prefers an upper-middle teacher
layer for large teachers; the small teachers here distil from the last).

Loss card:
- divergence: forward KL, teacher relation first (``KL(rel_T || rel_S)``), per row over the
  key positions, computed in float32;
- masking: padding keys get no probability (masked before the softmax); rows are averaged over
  the real (``attention_mask == 1``) query tokens, prompt included, and over relation heads and
  the batch; the relations are bidirectional as in the paper (no causal mask: the relation is a
  training target only, nothing leaks into the student's predictions);
- reduction: the relation losses are summed (MiniLMv2: ``L_QQ + L_KK + L_VV``);
- temperature: none beyond the ``1 / sqrt(d_r)`` scaling of each model's own ``d_r``;
- relation heads: ``R = 8`` by default. MiniLMv2 uses 48 relation heads for base-size (768-wide)
  and 64 for large-size (1024-wide) teachers, i.e. teacher relation heads of size 16; ``R = 8``
  keeps that size for the tiny suite's 128-wide teacher and divides its students' widths (64, 80);
- ground truth: the papers distil with the relation loss alone and fine-tune afterwards; here it
  is an auxiliary term of one stage, added to the completion-token cross-entropy with
  ``ce_weight = 1`` and ``weight = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench import Method, hookimpl
from kdbench.helpers import check_weights
from kdbench.losses import aux_with_ce, masked_mean

RELATIONS = ("qq", "kk", "vv")


@dataclass
class MiniLMConfig:
    relation_heads: int = 8  # R >= 1; must divide the q/k/v widths of teacher and student
    relations: tuple[str, ...] = RELATIONS  # non-empty subset of ("qq", "kk", "vv")
    weight: float = 1.0  # weight of the relation term, >= 0
    ce_weight: float = 1.0  # weight of the ground-truth cross-entropy, >= 0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.relation_heads, int)
            or isinstance(self.relation_heads, bool)
            or self.relation_heads < 1
        ):
            raise ValueError(f"relation_heads must be an integer >= 1, got {self.relation_heads!r}")
        if isinstance(self.relations, str) or not self.relations:
            raise ValueError(f"relations must be a non-empty list from {RELATIONS}")
        unknown = [r for r in self.relations if r not in RELATIONS]
        if unknown or len(set(self.relations)) != len(self.relations):
            raise ValueError(
                f"relations must be distinct names from {RELATIONS}, got {list(self.relations)}"
            )
        self.relations = tuple(self.relations)
        check_weights(weight=self.weight, ce_weight=self.ce_weight)


def relation_log_probs(x: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """``log softmax(X_r X_r^T / sqrt(d_r))`` (B, R, T, T) from X (B, T, d); padding keys masked."""
    b, t, d = x.shape
    if d % heads:
        raise ValueError(f"minilm: relation_heads={heads} does not divide the width {d}")
    d_r = d // heads
    xr = x.float().reshape(b, t, heads, d_r).transpose(1, 2)  # (B, R, T, d_r)
    scores = xr @ xr.transpose(-1, -2) / math.sqrt(d_r)
    keys = mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(
    student_x: torch.Tensor, teacher_x: torch.Tensor, heads: int, mask: torch.Tensor
) -> torch.Tensor:
    """``KL(rel_T || rel_S)`` per row, averaged over relation heads and real query rows."""
    log_s = relation_log_probs(student_x, heads, mask)
    log_t = relation_log_probs(teacher_x, heads, mask)
    keys = mask.bool()[:, None, None, :]
    kl = torch.where(keys, log_t.exp() * (log_t - log_s), 0.0).sum(-1)  # (B, R, T)
    return masked_mean(kl.mean(1), mask.bool())


def minilm_term(
    student_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    cfg: MiniLMConfig,
) -> torch.Tensor:
    """The summed relation KLs (Q-Q, K-K, V-V by default)."""
    index = {"qq": 0, "kk": 1, "vv": 2}
    return sum(
        relation_kl(student_qkv[index[r]], teacher_qkv[index[r]], cfg.relation_heads, mask)
        for r in cfg.relations
    )


def minilm_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: MiniLMConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    term = minilm_term(student.qkv, teacher["qkv"], batch["attention_mask"], cfg)
    return aux_with_ce(term, cfg.weight, cfg.ce_weight, student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="minilm",
            family="attention",
            config=MiniLMConfig,
            loss=minilm_loss,
            signals=frozenset({"qkv"}),
            paper="Wang et al. 2020, 2021",
            description="MiniLMv2 self-attention relation distillation: KL of Q-Q, K-K, V-V "
            "relations (relation heads) of the last layer, plus the task loss",
        )
    ]
