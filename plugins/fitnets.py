"""``fitnets``: hint-based feature distillation (Romero, Ballas, Kahou, Chassang, Gatta & Bengio
2015, "FitNets: Hints for Thin Deep Nets", ICLR 2015, arXiv:1412.6550).

A learned regressor maps a student ("guided") layer to the width of a teacher ("hint") layer and
the student is pulled towards the teacher's features there:

    L = ce_weight * CE(y, p_S)
        + weight * mean_{(s, t) in pairs} masked_mean_tokens( mean_d ( W_st h_S^(s) + b_st - h_T^(t) )^2 )

Layers are numbered as the Hugging Face ``hidden_states`` tuple: ``0`` is the embedding output,
``l`` the output of decoder layer ``l`` (``1..L``); in HF Llama the last entry is taken after the
final RMSNorm. ``layers`` picks the pairs ``(student_layer, teacher_layer)``:

- ``"uniform"`` (default): every student layer ``s = 1..L_S`` is paired with teacher layer
  ``round_half_up(s * L_T / L_S)``, so the last maps to the last and the rest keep their relative
  depth (2 -> 4 layers: (1,2),(2,4); 3 -> 4: (1,1),(2,3),(3,4); 4 -> 4: identity);
- ``"last"``: only ``(L_S, L_T)``;
- an explicit list of pairs, e.g. ``[[1, 2], [2, 4]]`` in a suite file (checked against the
  models' depths when training starts).

Loss card:
- tensors: the student's and teacher's hidden states (residual stream) at the chosen pairs; the
  student's go through one learned linear regressor per pair (``nn.Linear(H_S, H_T)``, created by
  the ``modules`` hook, PyTorch's default initialisation, trained with the student and dropped
  afterwards); the teacher's are targets (no gradient);
- reduction: squared error averaged over the teacher's hidden units, then over the real
  (non-padding, ``attention_mask == 1``) tokens of the batch, prompt included, then over the
  pairs; computed in float32 whatever the training dtype. The paper's ``1/2 ||.||^2`` sums over
  the hint's units; the mean keeps ``weight`` independent of the teacher's width;
- no temperature, no divergence;
- ground truth: the paper trains in two stages (hints alone to initialise the student up to the
  guided layer, then KD on the whole student); here the hint is an auxiliary term of a single
  stage, added to the completion-token cross-entropy: ``ce_weight = 1``, ``weight = 1`` by
  default (the paper gives no joint weight). The regressor is linear, where the paper's
  convolutional regressor carries the teacher's non-linearity.

The layer pairs are :mod:`kdbench.layers`' (:func:`kdbench.layers.default_layer_map` for
``"uniform"``), shared with the other feature and attention methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import check_weights
from kdbench.layers import check_layers, module_key, pair_projections, paired_states, project
from kdbench.losses import aux_with_ce, masked_mean

PREFIX = "fitnets"


@dataclass
class FitNetsConfig:
    layers: str | list[list[int]] = "uniform"  # "uniform", "last" or [[s, t], ...]
    weight: float = 1.0  # weight of the hint term, >= 0
    ce_weight: float = 1.0  # weight of the ground-truth cross-entropy, >= 0

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        check_weights(weight=self.weight, ce_weight=self.ce_weight)


def hint_mse(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over hidden units, then over the tokens where ``mask`` is set."""
    per_token = (student_h.float() - teacher_h.float()).pow(2).mean(-1)  # (B, T)
    return masked_mean(per_token, mask.bool())


def fitnets_modules(
    student_config, teacher_config, cfg: FitNetsConfig
) -> dict[str, torch.nn.Module]:
    """One linear regressor ``H_S -> H_T`` per layer pair."""
    return pair_projections(PREFIX, cfg.layers, student_config, teacher_config)


def fitnets_hint(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: FitNetsConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    """The hint term alone, averaged over the layer pairs."""
    terms = [
        hint_mse(project(modules[module_key(PREFIX, s, t)], h_s), h_t, mask)
        for s, t, h_s, h_t in paired_states(cfg.layers, student_hidden, teacher_hidden)
    ]
    return torch.stack(terms).mean()


def fitnets_loss(
    student,
    teacher: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: FitNetsConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    hint = fitnets_hint(
        student.hidden_states, teacher["hidden_states"], batch["attention_mask"], cfg, modules
    )
    return aux_with_ce(hint, cfg.weight, cfg.ce_weight, student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="fitnets",
            family="feature",
            config=FitNetsConfig,
            loss=fitnets_loss,
            signals=frozenset({"hidden_states"}),
            modules=fitnets_modules,
            paper="Romero et al. 2015",
            description="FitNets hints: MSE between linearly projected student hidden states "
            "and the teacher's at depth-matched layers, plus the task loss",
        )
    ]
