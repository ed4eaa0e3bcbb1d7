"""The layer-pair mapping shared by the feature and attention methods (kdbench.layers)."""

import doctest
from types import SimpleNamespace

import pytest
import torch

from kdbench import layers
from kdbench.layers import (
    check_layers,
    default_layer_map,
    layer_pairs,
    module_key,
    pair_projections,
    paired_states,
    project,
)


def _model_config(hidden: int, depth: int) -> SimpleNamespace:
    return SimpleNamespace(hidden_size=hidden, num_hidden_layers=depth)


def test_docstring_examples() -> None:
    failed, tried = doctest.testmod(layers)
    assert tried > 0 and failed == 0


def test_default_layer_map_for_the_suite_depths() -> None:
    assert default_layer_map(2, 4) == ((1, 2), (2, 4))
    assert default_layer_map(3, 4) == ((1, 1), (2, 3), (3, 4))
    assert default_layer_map(4, 4) == ((1, 1), (2, 2), (3, 3), (4, 4))
    assert default_layer_map(1, 2) == ((1, 2),)
    assert default_layer_map(2, 5) == ((1, 3), (2, 5))  # 2.5 rounds half up
    for s, t in ((2, 4), (3, 4), (4, 4), (4, 2), (5, 3)):
        assert default_layer_map(s, t)[-1] == (s, t)  # last maps to last
    with pytest.raises(ValueError, match="at least one layer"):
        default_layer_map(0, 4)


def test_layer_modes_and_explicit_pairs() -> None:
    assert layer_pairs("last", 3, 4) == ((3, 4),)
    assert layer_pairs("uniform", 3, 4) == default_layer_map(3, 4)
    pairs = check_layers([[0, 0], [2, 4]])  # TOML gives lists
    assert pairs == ((0, 0), (2, 4))
    assert layer_pairs(pairs, 2, 4) == ((0, 0), (2, 4))
    with pytest.raises(ValueError, match="out of range"):
        layer_pairs(((3, 4),), 2, 4)
    with pytest.raises(ValueError, match="out of range"):
        layer_pairs(((0, 1),), 2, 4, first=1)  # attention maps have no layer 0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("every", "layers must be one of"),
        ([], "non-empty list of pairs"),
        (3, "non-empty list of pairs"),
        ([[1, 2, 3]], "each pair must be"),
        ([[1, -1]], "each pair must be"),
        ([[True, 1]], "each pair must be"),
        ([[1.0, 2]], "each pair must be"),
        ([[1, 2], (1, 2)], "duplicate pairs"),
    ],
)
def test_check_layers_refuses(value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_layers(value)


def test_check_layers_keeps_modes() -> None:
    assert check_layers("uniform") == "uniform" and check_layers("last") == "last"
    assert check_layers(((1, 2),)) == ((1, 2),)


def test_paired_states_indexes_hidden_states_and_attentions() -> None:
    # hidden states: embeddings + one per layer; attentions: one per layer (map l at l - 1)
    hidden_s, hidden_t = ("s0", "s1", "s2"), ("t0", "t1", "t2", "t3", "t4")
    assert paired_states("uniform", hidden_s, hidden_t) == [(1, 2, "s1", "t2"), (2, 4, "s2", "t4")]
    assert paired_states(((0, 0),), hidden_s, hidden_t) == [(0, 0, "s0", "t0")]
    attn_s, attn_t = ("a1", "a2"), ("b1", "b2", "b3", "b4")
    assert paired_states("uniform", attn_s, attn_t, first=1) == [
        (1, 2, "a1", "b2"),
        (2, 4, "a2", "b4"),
    ]
    assert paired_states("last", attn_s, attn_t, first=1) == [(2, 4, "a2", "b4")]
    with pytest.raises(ValueError, match="out of range"):
        paired_states(((0, 1),), attn_s, attn_t, first=1)
    with pytest.raises(ValueError, match="out of range"):
        paired_states(((3, 1),), hidden_s, hidden_t)


def test_pair_projections_one_linear_per_pair() -> None:
    student, teacher = _model_config(64, 2), _model_config(128, 4)
    mods = pair_projections("fitnets", "uniform", student, teacher)
    assert list(mods) == [module_key("fitnets", 1, 2), module_key("fitnets", 2, 4)]
    assert list(mods) == ["fitnets_1_2", "fitnets_2_4"]
    assert all(
        isinstance(m, torch.nn.Linear) and (m.in_features, m.out_features) == (64, 128)
        for m in mods.values()
    )
    assert list(pair_projections("x", "last", student, teacher)) == ["x_2_4"]
    assert list(pair_projections("x", ((0, 0), (1, 3)), student, teacher)) == ["x_0_0", "x_1_3"]
    with pytest.raises(ValueError, match="out of range"):
        pair_projections("x", ((3, 4),), student, teacher)


def test_pair_projections_draw_like_linears_in_pair_order() -> None:
    # the same random initialisation as building the Linears by hand, pair by pair
    student, teacher = _model_config(4, 3), _model_config(6, 3)
    torch.manual_seed(0)
    mods = pair_projections("p", "uniform", student, teacher)
    torch.manual_seed(0)
    by_hand = [torch.nn.Linear(4, 6) for _ in range(3)]
    for got, want in zip(mods.values(), by_hand, strict=True):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)


def test_project_casts_to_the_projection_dtype_and_returns_float32() -> None:
    proj = torch.nn.Linear(3, 2).to(torch.bfloat16)
    h = torch.randn(1, 4, 3)
    out = project(proj, h)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 2)
    assert torch.equal(out, proj(h.to(torch.bfloat16)).float())
    proj32 = torch.nn.Linear(3, 2)
    assert torch.equal(project(proj32, h.to(torch.bfloat16)), proj32(h.to(torch.bfloat16).float()))
