"""Loss pieces shared by method plugins. Everything is computed in float32 and averaged over
the tokens that count (``labels != -100``: completion tokens, never prompt or padding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align next-token predictions with their targets: position t predicts token t+1."""
    return logits[:, :-1, :], labels[:, 1:]


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the tokens that count."""
    logits, labels = shift(logits, labels)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE
    )


def token_mask(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask, aligned with shifted logits, of the positions whose target counts."""
    return labels[:, 1:] != IGNORE


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B, T) over ``mask`` (B, T); 0 when nothing counts."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
