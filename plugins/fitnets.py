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

The layer-pair helpers here (:func:`default_layer_map`, :func:`layer_pairs`) are shared by the
other feature and attention methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdbench.hookspecs import hookimpl
from kdbench.losses import masked_mean, token_ce
from kdbench.methods import Method

LAYER_MODES = ("uniform", "last")
Pairs = tuple[tuple[int, int], ...]


# --- layer pairs (shared with hidden_cosine and at) -----------------------------------------


def default_layer_map(student_layers: int, teacher_layers: int) -> Pairs:
    """Student layer ``s`` (1-based) -> teacher layer ``round_half_up(s * L_T / L_S)``."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("both models need at least one layer")
    return tuple(
        (s, max(1, math.floor(s * teacher_layers / student_layers + 0.5)))
        for s in range(1, student_layers + 1)
    )


def check_layers(value: str | list | tuple) -> str | Pairs:
    """A config's ``layers`` field: a mode name, or pairs normalised to a tuple of int tuples."""
    if isinstance(value, str):
        if value not in LAYER_MODES:
            raise ValueError(
                f"layers must be one of {LAYER_MODES} or a list of pairs, got {value!r}"
            )
        return value
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"layers must be one of {LAYER_MODES} or a non-empty list of pairs")
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
        ):
            raise ValueError(
                f"layers: each pair must be [student_layer, teacher_layer] of integers >= 0, got {pair!r}"
            )
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"layers: duplicate pairs in {value!r}")
    return tuple(pairs)


def layer_pairs(
    layers: str | Pairs, student_layers: int, teacher_layers: int, first: int = 0
) -> Pairs:
    """The ``(student, teacher)`` layer pairs for models of these depths.

    ``first`` is the lowest valid layer number: 0 for hidden states (0 = embeddings), 1 for
    attention maps.
    """
    if layers == "uniform":
        return default_layer_map(student_layers, teacher_layers)
    if layers == "last":
        return ((student_layers, teacher_layers),)
    for s, t in layers:
        if not (first <= s <= student_layers and first <= t <= teacher_layers):
            raise ValueError(
                f"layer pair ({s}, {t}) out of range: the student has layers {first}..{student_layers},"
                f" the teacher {first}..{teacher_layers}"
            )
    return tuple(layers)


def module_key(prefix: str, s: int, t: int) -> str:
    return f"{prefix}_{s}_{t}"


def project(proj: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``proj(h)`` in the projection's dtype, returned in float32."""
    return proj(h.to(next(proj.parameters()).dtype)).float()


# --- fitnets --------------------------------------------------------------------------------


@dataclass
class FitNetsConfig:
    layers: str | list[list[int]] = "uniform"  # "uniform", "last" or [[s, t], ...]
    weight: float = 1.0  # weight of the hint term, >= 0
    ce_weight: float = 1.0  # weight of the ground-truth cross-entropy, >= 0

    def __post_init__(self) -> None:
        self.layers = check_layers(self.layers)
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if not self.ce_weight >= 0:
            raise ValueError(f"ce_weight must be >= 0, got {self.ce_weight}")
        if self.weight == 0 and self.ce_weight == 0:
            raise ValueError("weight and ce_weight cannot both be 0")


def hint_mse(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over hidden units, then over the tokens where ``mask`` is set."""
    per_token = (student_h.float() - teacher_h.float()).pow(2).mean(-1)  # (B, T)
    return masked_mean(per_token, mask.bool())


def fitnets_modules(
    student_config, teacher_config, cfg: FitNetsConfig
) -> dict[str, torch.nn.Module]:
    """One linear regressor ``H_S -> H_T`` per layer pair."""
    pairs = layer_pairs(
        cfg.layers, student_config.num_hidden_layers, teacher_config.num_hidden_layers
    )
    return {
        module_key("fitnets", s, t): torch.nn.Linear(
            student_config.hidden_size, teacher_config.hidden_size
        )
        for s, t in pairs
    }


def fitnets_hint(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    cfg: FitNetsConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    """The hint term alone, averaged over the layer pairs."""
    pairs = layer_pairs(cfg.layers, len(student_hidden) - 1, len(teacher_hidden) - 1)
    terms = [
        hint_mse(
            project(modules[module_key("fitnets", s, t)], student_hidden[s]),
            teacher_hidden[t],
            mask,
        )
        for s, t in pairs
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
    if cfg.ce_weight == 0:
        return cfg.weight * hint
    return cfg.weight * hint + cfg.ce_weight * token_ce(student.logits, batch["labels"])


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
