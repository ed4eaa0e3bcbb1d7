"""Layer pairs for methods that match intermediate layers (feature and attention families).

A method that distils layer by layer pairs a student layer ``s`` with a teacher layer ``t``.
Layers are numbered as the Hugging Face outputs are indexed:

- hidden states (``hidden_states``, a tuple of ``L + 1`` tensors (B, T, H)): ``0`` is the
  embedding output, ``l`` the output of decoder layer ``l`` (``1..L``); valid layers ``0..L``;
- attention maps (``attentions``, a tuple of ``L`` tensors (B, heads, T, T)): map ``l`` is
  ``attentions[l - 1]``; valid layers ``1..L`` (``first=1`` below).

A config's ``layers`` field (checked by :func:`check_layers`) is ``"uniform"`` (every student
layer with its depth-matched teacher layer, :func:`default_layer_map`), ``"last"`` (the two
last layers) or explicit pairs ``[[s, t], ...]`` (a suite file gives lists), checked against
the models' depths by :func:`layer_pairs` when training starts. A method with a learned
projection per pair creates them with :func:`pair_projections` (its ``modules`` hook) and applies
them with :func:`project`; they are found again under :func:`module_key`.

Typical use, for hidden states::

    @dataclass
    class MyConfig:
        layers: str | list[list[int]] = "uniform"

        def __post_init__(self) -> None:
            self.layers = check_layers(self.layers)

    def my_modules(student_config, teacher_config, cfg):
        return pair_projections("mine", cfg.layers, student_config, teacher_config)

    def my_term(student_hidden, teacher_hidden, mask, cfg, modules):
        terms = [
            distance(project(modules[module_key("mine", s, t)], h_s), h_t, mask)
            for s, t, h_s, h_t in paired_states(cfg.layers, student_hidden, teacher_hidden)
        ]
        return torch.stack(terms).mean()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

LAYER_MODES = ("uniform", "last")
Pairs = tuple[tuple[int, int], ...]  # ((student_layer, teacher_layer), ...)


def default_layer_map(student_layers: int, teacher_layers: int) -> Pairs:
    """``default_layer_map(L_S, L_T) -> ((s, t), ...)``: every student layer ``s = 1..L_S``
    paired with teacher layer ``round_half_up(s * L_T / L_S)`` (at least 1), so the last maps to
    the last and the others keep their relative depth.

    >>> default_layer_map(2, 4)
    ((1, 2), (2, 4))
    >>> default_layer_map(3, 4)
    ((1, 1), (2, 3), (3, 4))
    >>> default_layer_map(4, 2)
    ((1, 1), (2, 1), (3, 2), (4, 2))
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("both models need at least one layer")
    return tuple(
        (s, max(1, math.floor(s * teacher_layers / student_layers + 0.5)))
        for s in range(1, student_layers + 1)
    )


def check_layers(value: str | list | tuple) -> str | Pairs:
    """``check_layers(value) -> mode | pairs``: a config's ``layers`` field checked, a mode
    name (:data:`LAYER_MODES`) kept as is, pairs normalised to a tuple of int tuples (so the
    config compares equal after a JSON round trip). Layer numbers are checked against the
    models' depths later, by :func:`layer_pairs`. Raises ``ValueError`` naming the bad value.

    >>> check_layers("last")
    'last'
    >>> check_layers([[0, 0], [2, 4]])
    ((0, 0), (2, 4))
    """
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
    """``layer_pairs(layers, L_S, L_T, first=0) -> ((s, t), ...)``: the pairs a checked
    ``layers`` value (:func:`check_layers`) gives for models of these depths.

    ``first`` is the lowest valid layer number: 0 for hidden states (0 = embeddings), 1 for
    attention maps. Explicit pairs outside ``first..L`` raise ``ValueError``.

    >>> layer_pairs("last", 3, 4)
    ((3, 4),)
    >>> layer_pairs("uniform", 2, 4)
    ((1, 2), (2, 4))
    >>> layer_pairs(((0, 0), (2, 4)), 2, 4)
    ((0, 0), (2, 4))
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


def paired_states(
    layers: str | Pairs,
    student_states: Sequence[torch.Tensor],
    teacher_states: Sequence[torch.Tensor],
    first: int = 0,
) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """``paired_states(layers, student_states, teacher_states, first=0) -> [(s, t, x_s, x_t)]``:
    the layer pairs of two models' per-layer outputs, each with its two tensors.

    The depths are read off the tuples, numbered as in the module docstring: with ``first=0``
    (``hidden_states``, ``L + 1`` entries) layer ``l`` is ``states[l]``; with ``first=1``
    (``attentions``, ``L`` entries) it is ``states[l - 1]``.

    >>> h_s, h_t = tuple(range(3)), tuple(range(5))  # a 2-layer and a 4-layer model
    >>> paired_states("uniform", h_s, h_t)
    [(1, 2, 1, 2), (2, 4, 2, 4)]
    >>> paired_states("last", h_s[1:], h_t[1:], first=1)  # attentions: one entry per layer
    [(2, 4, 2, 4)]
    """
    depth_s, depth_t = len(student_states) - 1 + first, len(teacher_states) - 1 + first
    return [
        (s, t, student_states[s - first], teacher_states[t - first])
        for s, t in layer_pairs(layers, depth_s, depth_t, first)
    ]


def module_key(prefix: str, s: int, t: int) -> str:
    """``module_key(prefix, s, t) -> "prefix_s_t"``: the name of pair ``(s, t)``'s module.

    >>> module_key("fitnets", 2, 4)
    'fitnets_2_4'
    """
    return f"{prefix}_{s}_{t}"


def pair_projections(
    prefix: str, layers: str | Pairs, student_config: Any, teacher_config: Any
) -> dict[str, torch.nn.Module]:
    """``pair_projections(prefix, layers, student_config, teacher_config) -> {key: Linear}``:
    one ``nn.Linear(H_S, H_T)`` per hidden-state layer pair (PyTorch's default initialisation,
    created in pair order), under :func:`module_key`; what a ``modules`` hook returns.

    The configs are the models' (Hugging Face) configs: ``hidden_size`` and
    ``num_hidden_layers`` are read.

    >>> from types import SimpleNamespace as NS
    >>> mods = pair_projections("fitnets", "uniform", NS(hidden_size=64, num_hidden_layers=2),
    ...                         NS(hidden_size=128, num_hidden_layers=4))
    >>> {key: (m.in_features, m.out_features) for key, m in mods.items()}
    {'fitnets_1_2': (64, 128), 'fitnets_2_4': (64, 128)}
    """
    pairs = layer_pairs(layers, student_config.num_hidden_layers, teacher_config.num_hidden_layers)
    return {
        module_key(prefix, s, t): torch.nn.Linear(
            student_config.hidden_size, teacher_config.hidden_size
        )
        for s, t in pairs
    }


def project(proj: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``project(proj, h) -> proj(h)``: ``h`` (B, T, H_S) cast to the projection's dtype (the
    student may run in bfloat16), the result (B, T, H_T) returned in float32."""
    return proj(h.to(next(proj.parameters()).dtype)).float()
