"""``gold``: text-span aligned hybrid distillation across tokenizers, after GOLD (TRL's
``GOLDTrainer``, "General Online Logit Distillation", 2025, its hybrid ULD loss; itself built
on ULD, Boizard et al. 2024, arXiv:2402.12030, and GKD's JSD, Agarwal et al. 2024).

At every pair of positions where student and teacher have read the same text (their next tokens
start at the same character of the completion), the two next-token distributions p_T (teacher
vocabulary) and p_S (student vocabulary) are compared in two parts:

    L = w_matched * mean JSD_beta(P_T || P_S) + w_unmatched * mean ULD(p_T|U, p_S|U)
        + ce_weight * CE(y, p_S)
    P_T = (p_T(t_1), ..., p_T(t_m), 1 - sum_j p_T(t_j))      the matched tokens t_j, + the rest
    P_S = (p_S(s_1), ..., p_S(s_m), 1 - sum_j p_S(s_j))      s_j: t_j's twin in the student vocab
    ULD(a, b) = sum_i | sort(a)_i - sort(b)_i |               over the unmatched tokens U

Matched tokens are those with the same text in both vocabularies (special tokens by role):
their probabilities are compared token for token, as GKD's JSD does (kept a distribution by one
bucket for the rest of the mass); the unmatched ones, which have no twin, only by their sorted
probabilities, as ULD does.

Loss card:
- alignment: :func:`kdbench.cross_tokenizer.span_pairs`, positions with the same text before
  them; a student token that spans several teacher tokens pairs with the first (GOLD merges
  the teacher's distributions over the span instead; the teacher's predictions inside a student
  token are not used here); with a character-level teacher every student token pairs;
- JSD_beta as :func:`kdbench.losses.generalized_jsd` (beta weighs the teacher; beta = 0.5, the
  default of TRL's config); ULD as :func:`kdbench.cross_tokenizer.sorted_l1`; both summed over
  their support, averaged over the paired positions, float32;
- weights: ``w_matched = w_unmatched = 1`` (TRL's GOLD example recipe) and ``ce_weight = 0``
  (TRL's ``uld_crossentropy_weight`` default): pure distillation;
- top-k teacher: :func:`kdbench.cross_tokenizer.teacher_probs` (the rest mass spread over the
  ids outside the top k); k = V gives the full-logit loss;
- one tokenizer for both (every token matched): the unmatched part is 0 and the loss is
  exactly ``jsd``'s JSD_beta at ``T = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.cross_tokenizer import sorted_l1, span_pairs, teacher_probs, teacher_vocab_size
from kdbench.helpers import check_weights
from kdbench.losses import generalized_jsd, token_ce


@dataclass
class GOLDConfig:
    """TRL's GOLD defaults (its example recipe's hybrid weights)."""

    beta: float = 0.5  # JSD_beta's teacher weight on the matched tokens: 0 forward KL, 1 reverse
    matched_weight: float = 1.0
    unmatched_weight: float = 1.0
    ce_weight: float = 0.0  # the ground-truth CE on the student's tokens

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        check_weights(
            matched_weight=self.matched_weight,
            unmatched_weight=self.unmatched_weight,
            ce_weight=self.ce_weight,
        )


def _log_buckets(probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of (probs at ``ids``, the rest of the mass), a distribution over len(ids) + 1."""
    kept = probs[:, ids]
    rest = (1.0 - kept.sum(-1, keepdim=True)).clamp_min(0.0)
    return torch.log(torch.cat([kept, rest], -1).clamp_min(1e-30))


def gold_loss(student, teacher, batch, cfg: GOLDConfig, modules):
    logits = student.logits
    pairs = span_pairs(batch)
    loss = logits.sum() * 0.0  # stays in the graph when nothing is paired
    if len(pairs):
        q = logits[pairs.rows, pairs.student].float().softmax(-1)
        p = teacher_probs(teacher, pairs, teacher_vocab_size(teacher, batch, logits), 1.0)
        if "vocab_map" in batch:
            twin = batch["vocab_map"].to(p.device)
        else:  # one tokenizer: every token is its own twin
            twin = torch.arange(p.shape[-1], device=p.device)
        t_ids = (twin >= 0).nonzero().flatten()
        s_ids = twin[t_ids]
        if cfg.matched_weight:
            jsd = generalized_jsd(_log_buckets(p, t_ids), _log_buckets(q, s_ids), cfg.beta)
            loss = loss + cfg.matched_weight * jsd.mean()
        if cfg.unmatched_weight:
            t_rest = torch.ones(p.shape[-1], dtype=torch.bool, device=p.device)
            t_rest[t_ids] = False
            s_rest = torch.ones(q.shape[-1], dtype=torch.bool, device=q.device)
            s_rest[s_ids] = False
            if t_rest.any() or s_rest.any():
                uld = sorted_l1(p[:, t_rest], q[:, s_rest])
                loss = loss + cfg.unmatched_weight * uld.mean()
    if cfg.ce_weight:
        loss = loss + cfg.ce_weight * token_ce(logits, batch["labels"])
    return loss


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="gold",
            family="cross_tokenizer",
            config=GOLDConfig,
            loss=gold_loss,
            signals=frozenset({"logits"}),
            cross_tokenizer=True,
            paper="TRL GOLD (2025), after Boizard et al. 2024 (ULD)",
            description="text-span aligned: JSD on matched tokens + sorted L1 on the others",
        )
    ]
