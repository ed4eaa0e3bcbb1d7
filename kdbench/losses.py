"""Loss pieces shared by method plugins. Everything is computed in float32 and averaged over
the tokens that count (``labels != -100``: completion tokens, never prompt or padding).

Teacher distributions: full logits or top-k
-------------------------------------------

A teacher reaches a logit-family loss in one of two forms:

- full:  ``{"logits": (B, T, V)}``;
- top-k: ``{"topk_logits": (B, T, k) float, "topk_indices": (B, T, k) long,
  "logsumexp": (B, T), "rest_logprob": (B, T)}``, the teacher's k largest logits, their
  vocabulary ids, the log-normaliser of its full softmax at temperature 1, and the log of the
  probability it puts outside its top k (what a logit cache stores, see :func:`topk_signals`).

:func:`distributions` turns either into a pair of log-distributions over the same support,
so that every divergence is a pure function of ``(log_p_teacher, log_q_student)``:

- full teacher: both full softmaxes at temperature T, ``log_softmax(z / T)``;
- top-k teacher (k < V): both distributions *coarse-grained* to k + 1 buckets, the teacher's
  k tokens plus one "rest of the vocabulary" bucket holding the missing mass:
      teacher  p_i = exp(z_i - logsumexp),   p_rest = exp(rest_logprob)
      student  q_i = softmax(s)_i at the teacher's ids,  q_rest = sum of the student's
               probabilities on every other id
  Both rests are logsumexps over the complement of the top k (``rest_logprob`` is
  ``logsumexp_{v not in top k} z_v - logsumexp``, computed from the full logits when the
  signal is made): exact to float32's relative precision however small the rest is, with no
  cancellation (``1 - sum_i p_i`` in float32 cannot resolve a rest below ~1e-7 of the mass,
  which a confident teacher's is) and no floor. A rest that holds no mass at all (logits
  ``-inf`` outside the top k) is ``-inf``: its terms follow ``0 log 0 = 0`` (see :func:`kl`), so
  the forward KL, JSD, skew KLs and TV stay finite, and the reverse KL is ``+inf``, as with
  the full logits. The buckets are renormalised (a no-op up to the float32 rounding of
  ``logsumexp``).
  A divergence between the bucketed distributions is the divergence of the coarse-grained
  distributions: at T = 1, for every f-divergence (KL both ways, JSD, skew KL, TV), it is
  <= the full one and grows to it as k grows (data processing inequality); a student that
  matches the teacher's top-k probabilities but spreads its tail mass differently over the
  vocabulary is at zero loss (the tail's total mass still counts, its shape does not).
  Layout of the buckets on the last dimension: entries ``0..k-1`` are the teacher's top-k
  tokens in the order of ``topk_indices``, entry ``k`` (the last) is the rest bucket.
- top-k with k = V: there is no rest; the buckets are the full vocabulary and the result is
  the full-teacher result (up to float rounding).

Temperature with a top-k teacher: the teacher's normaliser is known only at T = 1, so the
temperature is applied to the bucketed distribution, ``p_i^(1/T) / sum_j p_j^(1/T)`` over the
k + 1 buckets (student alike). On the full vocabulary this is exactly ``softmax(z / T)``
(hence k = V gives the full result at any T); for k < V the rest bucket is tempered as one
token, which for T > 1 gives it less mass than the tempered tail tokens would have together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align next-token predictions with their targets: position t predicts token t+1."""
    return logits[:, :-1, :], labels[:, 1:]


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the tokens that count; 0 when nothing counts (the
    mean over no token, NaN in ``F.cross_entropy``), still attached to the graph."""
    logits, labels = shift(logits, labels)
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE
    )
    # a select, not a branch: no host sync, and the value is ``ce`` itself when a token counts
    return torch.where((labels != IGNORE).any(), ce, 0.0)


def token_mask(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask, aligned with shifted logits, of the positions whose target counts."""
    return labels[:, 1:] != IGNORE


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, T) over ``mask`` (B, T, bool or 0/1); 0 when nothing counts.

    Masked positions are selected out, not multiplied by 0, so a NaN or inf there (e.g. a
    divergence on a padding position) does not reach the value. Its gradient does not either,
    unless the NaN comes from the backward of what computed ``values``: guard that op itself.
    """
    keep = mask.bool()
    return torch.where(keep, values, 0.0).sum() / keep.to(values.dtype).sum().clamp_min(1.0)


def with_task_loss(
    distill: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``alpha * distill + (1 - alpha) * CE(y, p_S)``; just ``distill`` when ``alpha == 1``."""
    if alpha == 1.0:
        return distill
    return alpha * distill + (1 - alpha) * token_ce(student_logits, labels)


def aux_with_ce(
    term: torch.Tensor,
    weight: float,
    ce_weight: float,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """``weight * term + ce_weight * CE(y, p_S)``: an auxiliary term (feature, attention...)
    added to the ground-truth cross-entropy; just ``weight * term`` when ``ce_weight == 0``
    (the CE is then not computed). Check the weights with :func:`kdbench.helpers.check_weights`.
    In a loss: ``aux_with_ce(hint, cfg.weight, cfg.ce_weight, student.logits, batch["labels"])``.
    """
    if ce_weight == 0:
        return weight * term
    return weight * term + ce_weight * token_ce(student_logits, labels)


# --- teacher distributions: full logits or top-k (see the module docstring) ---------------

TOPK_KEYS = ("topk_logits", "topk_indices", "logsumexp", "rest_logprob")


def topk_signals(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The top-k form of teacher logits ``(..., V)``: ``topk_logits`` (the k largest logits,
    descending, in the logits' dtype), ``topk_indices`` (their ids, long), ``logsumexp`` (the
    full log-normaliser at temperature 1, float32) and ``rest_logprob`` (float32, the log of the
    softmax mass outside the top k: ``logsumexp`` over the other ids minus ``logsumexp``, exact
    even for a rest of 1e-30; ``-inf`` when k = V or the other logits are all ``-inf``)."""
    vocab = logits.size(-1)
    if not 1 <= k <= vocab:
        raise ValueError(f"k must be in [1, {vocab}] (the vocabulary size), got {k}")
    values, indices = logits.topk(k, dim=-1)
    z = logits.float()
    lse = z.logsumexp(-1)
    rest = z.scatter(-1, indices, -math.inf).logsumexp(-1) - lse
    return {"topk_logits": values, "topk_indices": indices, "logsumexp": lse, "rest_logprob": rest}


def log_distributions(
    student_logits: torch.Tensor, teacher: dict[str, torch.Tensor], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_p_teacher, log_q_student)`` at temperature T, float32, position by position (no
    shift, no mask): over the vocabulary for a full teacher, over k + 1 buckets (k when k = V)
    for a top-k teacher. A teacher dict with ``logits`` uses them even if top-k keys are there.
    """
    s = student_logits.float()
    if teacher.get("logits") is not None:
        t = teacher["logits"]
        if t.shape != s.shape:
            raise ValueError(
                f"teacher logits {tuple(t.shape)} and student logits {tuple(s.shape)} differ"
            )
        return F.log_softmax(t.float() / temperature, -1), F.log_softmax(s / temperature, -1)
    missing = [key for key in TOPK_KEYS if teacher.get(key) is None]
    if missing:
        raise KeyError(
            f"teacher needs 'logits' or all of {list(TOPK_KEYS)}; missing {missing}, "
            f"got {sorted(teacher)}"
        )
    idx = teacher["topk_indices"].long()  # a cache may store int32 ids
    k, vocab = idx.size(-1), s.size(-1)
    if (
        teacher["topk_logits"].shape != idx.shape
        or idx.shape[:-1] != s.shape[:-1]
        or teacher["logsumexp"].shape != idx.shape[:-1]
        or teacher["rest_logprob"].shape != idx.shape[:-1]
        or k > vocab
    ):
        raise ValueError(
            f"top-k teacher shapes: topk_logits {tuple(teacher['topk_logits'].shape)}, "
            f"topk_indices {tuple(idx.shape)}, logsumexp {tuple(teacher['logsumexp'].shape)}, "
            f"rest_logprob {tuple(teacher['rest_logprob'].shape)} "
            f"do not fit student logits {tuple(s.shape)}"
        )
    lse_s = s.logsumexp(-1, keepdim=True)
    log_q = s.gather(-1, idx) - lse_s
    log_p = teacher["topk_logits"].float() - teacher["logsumexp"].float().unsqueeze(-1)
    if k < vocab:
        rest_p = teacher["rest_logprob"].float().unsqueeze(-1)
        # scatter's backward zeroes the masked entries: no gradient flows through the -inf
        rest_q = s.scatter(-1, idx, -math.inf).logsumexp(-1, keepdim=True) - lse_s
        log_p = torch.cat([log_p, rest_p], -1)
        log_q = torch.cat([log_q, rest_q], -1)
    # renormalise (float32 rounding of logsumexp) and temper: p_i^(1/T) / sum_j p_j^(1/T)
    return F.log_softmax(log_p / temperature, -1), F.log_softmax(log_q / temperature, -1)


def distributions(
    student_logits: torch.Tensor,
    teacher: dict[str, torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher and student next-token log-distributions at temperature T, shifted like
    :func:`shift` (position t predicts token t+1), and the mask of the positions that count.

    Returns ``(log_p_teacher, log_q_student, mask)``: ``(B, T-1, V)`` twice for a full teacher
    (``(B, T-1, k+1)`` for a top-k teacher, see the module docstring), float32, and ``(B, T-1)`` bool.
    """
    keys = ("logits", *TOPK_KEYS)
    shifted = {key: teacher[key][:, :-1] for key in keys if teacher.get(key) is not None}
    log_p, log_q = log_distributions(student_logits[:, :-1], shifted, temperature)
    return log_p, log_q, token_mask(labels)


# --- divergences between log-distributions (last dim), per position -------------------------


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """``KL(a || b) = sum_v a_v (log a_v - log b_v)`` over the last dim, with ``0 log 0 = 0``:
    entries where ``a`` is 0 add nothing and pass no NaN to the gradient."""
    a = log_a.exp()
    live = a > 0
    diff = torch.where(live, log_a, 0.0) - torch.where(live, log_b, 0.0)
    return (a * diff).sum(-1)


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """``log(w a + (1 - w) b)``; exactly ``log_b`` at ``w = 0`` and ``log_a`` at ``w = 1``."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"mixture weight must be in [0, 1], got {w}")
    if w == 0.0:
        return log_b
    if w == 1.0:
        return log_a
    # clamp -inf to the float32 minimum so a token with no mass on either side stays finite
    low = torch.finfo(torch.float32).min
    return torch.logaddexp(
        log_a.clamp_min(low) + math.log(w), log_b.clamp_min(low) + math.log1p(-w)
    )


def generalized_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD's generalized JSD (Agarwal et al. 2024, eq. 1), teacher ``log_p``, student ``log_q``:
    ``beta KL(p_T || m) + (1 - beta) KL(p_S || m)``, ``m = beta p_T + (1 - beta) p_S``; exactly
    ``KL(p_T || p_S)`` at ``beta = 0`` and ``KL(p_S || p_T)`` at ``beta = 1`` (the limits of
    the rescaled divergence, as TRL returns them). Shared by ``jsd`` and ``gkd``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return kl(log_p, log_q)
    if beta == 1.0:
        return kl(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)
    return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p_S || p_T)`` per position (teacher ``log_p``, student ``log_q``)."""
    return kl(log_q, log_p)


def skew_kl(log_p: torch.Tensor, log_q: torch.Tensor, lam: float) -> torch.Tensor:
    """DistiLLM's skew KL ``KL(p_T || lam p_T + (1 - lam) p_S)`` per position (teacher
    ``log_p``, student ``log_q``); exactly ``KL(p_T || p_S)`` at ``lam = 0``."""
    return kl(log_p, log_mixture(log_p, log_q, lam))


def skew_reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, lam: float) -> torch.Tensor:
    """DistiLLM's skew reverse KL ``KL(p_S || lam p_S + (1 - lam) p_T)`` per position (teacher
    ``log_p``, student ``log_q``); exactly ``KL(p_S || p_T)`` at ``lam = 0``."""
    return kl(log_q, log_mixture(log_q, log_p, lam))


# --- per-example weights (``batch["weight"]``, from a method's ``data``) ---------------------


def weighted_token_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    per_example: bool = False,
) -> torch.Tensor:
    """Next-token cross-entropy over the tokens that count, example ``i`` weighted by
    ``weight[i]`` (B,) (None: all 1).

    - ``per_example=False``: weighted mean over tokens,
      ``sum_i w_i sum_t ce_it / sum_i w_i n_i`` (``n_i`` tokens that count in example i);
      equals :func:`token_ce` when all weights are equal;
    - ``per_example=True``: weighted mean over examples of each example's mean token CE,
      ``sum_i w_i ce_i / sum_i w_i`` (examples with no token that counts are left out), so a
      long target does not outweigh a short one.

    0 when nothing counts or every weight is 0.
    """
    logits, labels = shift(logits, labels)
    b = labels.size(0)
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(b, -1)
    mask = (labels != IGNORE).float()
    w = torch.ones(b, device=ce.device) if weight is None else weight.to(ce.device).float()
    tiny = torch.finfo(torch.float32).tiny
    if per_example:
        n = mask.sum(1)
        w = w * (n > 0)
        per = (ce * mask).sum(1) / n.clamp_min(1.0)
        return (w * per).sum() / w.sum().clamp_min(tiny)
    wm = mask * w[:, None]
    return (ce * wm).sum() / wm.sum().clamp_min(tiny)
