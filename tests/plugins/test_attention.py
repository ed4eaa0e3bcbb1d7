"""The attention-family losses (``at``, ``minilm``) checked against their formulas, the ``qkv``
signal capture, and two real training steps of each through the DeepSpeed trainer."""

import math
import tomllib
from pathlib import Path
from types import SimpleNamespace

import kdbench_plugins.at_legacy as at_legacy_plugin
import pytest
import torch
from kdbench_plugins.at import ATConfig, at_distance, at_loss, at_term
from kdbench_plugins.at_legacy import ATLegacyConfig, at_legacy_loss, legacy_distance, legacy_term
from kdbench_plugins.minilm import MiniLMConfig, minilm_loss, minilm_term, relation_kl

from kdbench.losses import token_ce
from kdbench.methods import SIGNALS, MethodError, registry
from kdbench.models import build_llama, capture_qkv, default_tokenizer
from kdbench.signals import live_outputs as teacher_signals
from kdbench.testing import run_checks
from tests.plugins.test_feature import _assert_trained, train_two_steps


def _maps(batch: int, heads: int, tokens: int, layers: int, seed: int = 0):
    """Causal softmax attention maps, one (B, heads, T, T) tensor per layer."""
    g = torch.Generator().manual_seed(seed)
    causal = torch.ones(tokens, tokens).tril().bool()
    out = []
    for _ in range(layers):
        scores = torch.randn(batch, heads, tokens, tokens, generator=g)
        out.append(scores.masked_fill(~causal, float("-inf")).softmax(-1))
    return tuple(out)


def _qkv(batch: int, tokens: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, tokens, width, generator=g) for _ in range(3))


# --- at: the paper's form ------------------------------------------------------------------


def _unit_sq_distance(u: list[float], v: list[float]) -> float:
    """``||u/||u|| - v/||v||||_2^2`` on plain lists."""
    nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(x * x for x in v))
    return sum((a / nu - b / nv) ** 2 for a, b in zip(u, v, strict=True))


def test_at_zero_when_student_equals_teacher() -> None:
    teacher = _maps(2, 2, 5, 4)
    mask = torch.ones(2, 5)
    assert at_distance(teacher, teacher, mask).abs().max().item() < 1e-6
    # a 2-layer, 4-head student whose heads repeat the teacher's two: sum_h A_h^2 doubles, so the
    # unit map is the same (head counts may differ)
    student = tuple(teacher[t - 1].repeat_interleave(2, dim=1) for t in (2, 4))
    assert at_distance(student, teacher, mask).abs().max().item() < 1e-6
    cfg = ATConfig(ce_weight=0.0)
    assert at_term(student, teacher, mask, cfg).item() == pytest.approx(0.0, abs=1e-6)


def test_at_golden_value_by_hand() -> None:
    # two layer pairs ("uniform": (1, 1), (2, 2)), one sequence of 2 tokens (4 map elements)
    student = (
        torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]]]]),  # 2 heads
        torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]),
    )
    teacher = (
        torch.tensor([[[[1.0, 0.0], [0.25, 0.75]]]]),
        torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]]),
    )
    # F(A) = sum_h A_h^2, flattened: pair 1 [1+1, 0, .25+1, .25+0] vs [1, 0, .0625, .5625]
    d1 = _unit_sq_distance([2.0, 0.0, 1.25, 0.25], [1.0, 0.0, 0.0625, 0.5625])
    # pair 2: [1, 0, 0, 1] / sqrt(2) vs [1, 0, .25, .25] / sqrt(1.125): 2 - 2 * 1.25 / 1.5 = 1/3
    d2 = 1 / 3
    assert _unit_sq_distance([1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.25, 0.25]) == pytest.approx(d2)
    mask = torch.ones(1, 2)
    got = at_distance(student, teacher, mask)
    assert got.shape == (2, 1)
    assert got[:, 0].tolist() == pytest.approx([d1, d2], rel=1e-6)
    # squared distances, each divided by the 4 elements, summed over the pairs, times beta
    term = at_term(student, teacher, mask, ATConfig())
    assert term.item() == pytest.approx(1000 * (d1 + d2) / 4, rel=1e-6)
    # not the earlier form (head mean, unsquared, pairs averaged, beta / 2)
    legacy = legacy_term(student, teacher, mask, ATLegacyConfig())
    assert abs(legacy.item() - term.item()) > 0.1 * term.item()
    logits, labels = torch.randn(1, 2, 5), torch.tensor([[-100, 2]])
    loss = at_loss(
        SimpleNamespace(attentions=student, logits=logits),
        {"attentions": teacher},
        {"attention_mask": mask, "labels": labels},
        ATConfig(beta=8.0, ce_weight=0.5),
        {},
    )
    expected = 8 * (d1 + d2) / 4 + 0.5 * token_ce(logits, labels).item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_at_is_the_reference_codes_loss() -> None:
    # github.com/szagoruyko/attention-transfer, utils.py and cifar.py: with heads as channels,
    # at(x) = F.normalize(x.pow(2).mean(1).view(x.size(0), -1)),
    # at_loss(x, y) = (at(x) - at(y)).pow(2).mean(), loss = CE + beta * sum(at_loss per group)
    def ref_at(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    student, teacher = _maps(3, 2, 6, 2, seed=11), _maps(3, 4, 6, 2, seed=12)
    expected = 1000 * sum(
        (ref_at(x) - ref_at(y)).pow(2).mean() for x, y in zip(student, teacher, strict=True)
    )
    got = at_term(student, teacher, torch.ones(3, 6), ATConfig(layers=[[1, 1], [2, 2]]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_at_padding_changes_nothing() -> None:
    student, teacher = _maps(1, 2, 3, 2, seed=1), _maps(1, 4, 3, 4, seed=2)
    alone = at_term(student, teacher, torch.ones(1, 3), ATConfig())
    # the same sequence right-padded to 5 tokens, next to a full one; padding rows/cols are junk
    other_s, other_t = _maps(1, 2, 5, 2, seed=3), _maps(1, 4, 5, 4, seed=4)
    padded_s, padded_t = _pad(student, other_s), _pad(teacher, other_t)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    full = at_distance(other_s, other_t, torch.ones(1, 5))
    assert at_distance(padded_s, padded_t, mask)[:, 1].tolist() == pytest.approx(
        at_distance(student, teacher, torch.ones(1, 3))[:, 0].tolist(), rel=1e-6
    )
    both = at_term(padded_s, padded_t, mask, ATConfig())
    expected = (alone.item() + 1000 / 25 * full.sum().item()) / 2
    assert both.item() == pytest.approx(expected, rel=1e-6)


def _pad(maps, other):
    """``maps`` (1 sequence of 3 tokens) right-padded to 5 with junk, after ``other``'s one."""
    out = []
    for m, o in zip(maps, other, strict=True):
        junk = torch.rand(1, m.size(1), 5, 5)
        junk[..., :3, :3] = m
        out.append(torch.cat([o, junk]))
    return tuple(out)


def test_at_layer_pairs_are_summed() -> None:
    student, teacher = _maps(1, 2, 4, 2, seed=5), _maps(1, 4, 4, 4, seed=6)
    mask = torch.ones(1, 4)
    per_pair = [
        at_term((student[s - 1],), (teacher[t - 1],), mask, ATConfig(layers="last"))
        for s, t in ((1, 2), (2, 4))
    ]
    uniform = at_term(student, teacher, mask, ATConfig())  # 2 -> 4 layers: (1, 2), (2, 4)
    assert uniform.item() == pytest.approx(sum(p.item() for p in per_pair), rel=1e-6)
    explicit = at_distance(student, teacher, mask, ATConfig(layers=[[1, 3]]).layers)
    assert explicit.item() == pytest.approx(
        at_distance((student[0],), (teacher[2],), mask, "last").item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="out of range"):
        at_distance(student, teacher, mask, ATConfig(layers=[[0, 1]]).layers)


@pytest.mark.parametrize("loss_fn", [at_loss, at_legacy_loss])
def test_at_finite_gradients_from_bfloat16(loss_fn) -> None:
    student = tuple(m.bfloat16().requires_grad_() for m in _maps(2, 2, 4, 2, seed=7))
    teacher = tuple(m.bfloat16() for m in _maps(2, 4, 4, 4, seed=8))
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 1, 2, 3], [-100, 4, 5, -100]]),
    }
    student_out = SimpleNamespace(attentions=student, logits=torch.randn(2, 4, 9).bfloat16())
    cfg = ATConfig() if loss_fn is at_loss else ATLegacyConfig()
    loss = loss_fn(student_out, {"attentions": teacher}, batch, cfg, {})
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for m in student:
        assert torch.isfinite(m.grad.float()).all() and m.grad.abs().sum() > 0


@pytest.mark.parametrize("config", [ATConfig, ATLegacyConfig])
def test_at_config_ranges(config) -> None:
    for bad in (
        {"beta": -1.0},
        {"ce_weight": -1.0},
        {"beta": 0.0, "ce_weight": 0.0},
        {"layers": "every"},
        {"layers": [[1, 2, 3]]},
    ):
        with pytest.raises(ValueError):
            config(**bad)
    assert config() == config(layers="uniform", beta=1000.0, ce_weight=1.0)
    with pytest.raises(MethodError, match="beta must be"):
        registry()["at"].make_config({"beta": -2.0})


# --- at_legacy: kdbench's earlier form, kept as a variant -----------------------------------


def test_at_legacy_golden_value_by_hand() -> None:
    # student: two heads averaging to [[1, 0], [.5, .5]]; teacher: one head, [[1, 0], [0, 1]]
    student = (torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]]),)
    teacher = (torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]),)
    # u = [1, 0, .5, .5] / sqrt(1.5), v = [1, 0, 0, 1] / sqrt(2): u.v = 1.5 / sqrt(3) = sqrt(3)/2
    # ||u - v|| = sqrt(2 - 2 u.v) = sqrt(2 - sqrt(3))
    expected = math.sqrt(2 - math.sqrt(3))
    mask = torch.ones(1, 2)
    assert legacy_distance(student, teacher, mask).item() == pytest.approx(expected, rel=1e-6)
    # beta / (2 * elements of the map) with 2 x 2 = 4 elements
    term = legacy_term(student, teacher, mask, ATLegacyConfig())
    assert term.item() == pytest.approx(1000 / (2 * 4) * expected, rel=1e-6)
    logits, labels = torch.randn(1, 2, 5), torch.tensor([[-100, 2]])
    loss = at_legacy_loss(
        SimpleNamespace(attentions=student, logits=logits),
        {"attentions": teacher},
        {"attention_mask": mask, "labels": labels},
        ATLegacyConfig(beta=8.0, ce_weight=0.5),
        {},
    )
    assert loss.item() == pytest.approx(expected + 0.5 * token_ce(logits, labels).item(), rel=1e-6)


def test_at_legacy_averages_layer_pairs_and_ignores_padding() -> None:
    student, teacher = _maps(1, 2, 3, 2, seed=5), _maps(1, 4, 3, 4, seed=6)
    mask = torch.ones(1, 3)
    per_pair = [
        legacy_distance((student[s - 1],), (teacher[t - 1],), mask, "last")
        for s, t in ((1, 2), (2, 4))
    ]
    uniform = legacy_distance(student, teacher, mask)
    assert uniform.item() == pytest.approx(sum(p.item() for p in per_pair) / 2, rel=1e-6)
    alone = legacy_term(student, teacher, mask, ATLegacyConfig())
    other_s, other_t = _maps(1, 2, 5, 2, seed=3), _maps(1, 4, 5, 4, seed=4)
    both = legacy_term(
        _pad(student, other_s),
        _pad(teacher, other_t),
        torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        ATLegacyConfig(),
    )
    full = legacy_distance(other_s, other_t, torch.ones(1, 5))
    assert both.item() == pytest.approx((alone.item() + 500 / 25 * full.item()) / 2, rel=1e-6)


def test_at_legacy_plugin_conforms_and_is_an_entry_point(tmp_path) -> None:
    # tested from its module: the registry reads the installed entry points, which list it once
    # the package is (re)installed; pyproject.toml must declare it
    (method,) = at_legacy_plugin.kdbench_methods()
    assert (method.name, method.family, method.signals) == (
        "at_legacy",
        "attention",
        frozenset({"attentions"}),
    )
    failures = [f"{c}: {msg}" for c, ok, msg in run_checks(method, tmp_path) if not ok]
    assert not failures, "\n".join(failures)
    root = Path(__file__).resolve().parents[2]
    entry_points = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["kdbench"]["at_legacy"] == "kdbench_plugins.at_legacy"


# --- minilm ---------------------------------------------------------------------------------


def test_minilm_relation_kl_zero_for_identical_qkv() -> None:
    qkv = _qkv(2, 6, 16)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    for heads in (1, 2, 4, 8, 16):
        cfg = MiniLMConfig(relation_heads=heads)
        assert minilm_term(qkv, qkv, mask, cfg).item() == pytest.approx(0.0, abs=1e-6)


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_minilm_golden_value_by_hand() -> None:
    # one relation head of size 1: relation = softmax(x_i x_j), two tokens
    s = torch.tensor([[[1.0], [2.0]]])  # scores [[1, 2], [2, 4]]
    t = torch.tensor([[[1.0], [-1.0]]])  # scores [[1, -1], [-1, 1]]
    rows = [
        _kl(_softmax([1, -1]), _softmax([1, 2])),
        _kl(_softmax([-1, 1]), _softmax([2, 4])),
    ]
    mask = torch.ones(1, 2)
    assert relation_kl(s, t, 1, mask).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    # KL(teacher || student), not the reverse
    reverse = _kl(_softmax([1, 2]), _softmax([1, -1])) + _kl(_softmax([2, 4]), _softmax([-1, 1]))
    assert relation_kl(s, t, 1, mask).item() != pytest.approx(reverse / 2, rel=1e-3)
    # relations are summed: Q-Q + K-K + V-V
    cfg = MiniLMConfig(relation_heads=1)
    assert minilm_term((s, s, s), (t, t, t), mask, cfg).item() == pytest.approx(
        3 * sum(rows) / 2, rel=1e-6
    )
    only_vv = MiniLMConfig(relation_heads=1, relations=["vv"])
    assert minilm_term((s, s, s), (t, t, t), mask, only_vv).item() == pytest.approx(
        sum(rows) / 2, rel=1e-6
    )
    # the 1/sqrt(d_r) scaling: x of width 4 in one relation head is x x^T / 2
    x = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])  # scores [[4, 0], [0, 0]]/2
    z = torch.zeros(1, 2, 4)  # uniform relation
    row0 = _kl([0.5, 0.5], _softmax([2, 0]))
    assert relation_kl(x, z, 1, mask).item() == pytest.approx(row0 / 2, rel=1e-6)


def test_minilm_different_widths_and_relation_heads() -> None:
    student = tuple(x.requires_grad_() for x in _qkv(2, 5, 16, seed=1))  # e.g. 2 heads of 8
    teacher = _qkv(2, 5, 32, seed=2)  # e.g. 4 heads of 8
    mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])
    for heads in (1, 2, 4, 8):
        loss = minilm_term(student, teacher, mask, MiniLMConfig(relation_heads=heads))
        assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in student)
    with pytest.raises(ValueError, match="does not divide"):
        minilm_term(student, _qkv(2, 5, 24), mask, MiniLMConfig(relation_heads=16))


def test_minilm_padding_changes_nothing() -> None:
    student, teacher = _qkv(1, 3, 8, seed=3), _qkv(1, 3, 16, seed=4)
    cfg = MiniLMConfig(relation_heads=4)
    alone = minilm_term(student, teacher, torch.ones(1, 3), cfg)

    def pad(xs):  # right-pad to 5 tokens with junk
        return tuple(torch.cat([x, 100 * torch.randn(1, 2, x.size(-1))], 1) for x in xs)

    padded = minilm_term(pad(student), pad(teacher), torch.tensor([[1, 1, 1, 0, 0]]), cfg)
    assert padded.item() == pytest.approx(alone.item(), rel=1e-5)


def test_minilm_finite_gradients_from_bfloat16() -> None:
    student = tuple(x.bfloat16().requires_grad_() for x in _qkv(2, 4, 16, seed=5))
    teacher = tuple(x.bfloat16() for x in _qkv(2, 4, 32, seed=6))
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, 1, 2, 3], [-100, 4, -100, -100]]),
    }
    out = SimpleNamespace(qkv=student, logits=torch.randn(2, 4, 9).bfloat16())
    loss = minilm_loss(out, {"qkv": teacher}, batch, MiniLMConfig(), {})
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(x.grad.float()).all() for x in student)


def test_minilm_config_ranges() -> None:
    for bad in (
        {"relation_heads": 0},
        {"relation_heads": 2.5},
        {"relation_heads": True},
        {"relations": []},
        {"relations": "qq"},
        {"relations": ["qk"]},
        {"relations": ["qq", "qq"]},
        {"weight": -1.0},
        {"ce_weight": -1.0},
        {"weight": 0.0, "ce_weight": 0.0},
    ):
        with pytest.raises(ValueError):
            MiniLMConfig(**bad)
    assert MiniLMConfig(relations=["kk", "vv"]).relations == ("kk", "vv")
    with pytest.raises(MethodError, match="relation_heads"):
        registry()["minilm"].make_config({"relation_heads": 0})


# --- the qkv signal -------------------------------------------------------------------------


def test_qkv_signal_captures_the_last_layers_projections() -> None:
    assert "qkv" in SIGNALS
    tok = default_tokenizer()
    model = build_llama({"hidden_size": 32, "num_layers": 2, "num_heads": 4}, tok, seed=0)
    batch = {
        "input_ids": torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    }
    keep = teacher_signals(model, frozenset({"qkv", "hidden_states"}), batch)
    q, k, v = keep["qkv"]
    assert q.shape == k.shape == v.shape == (2, 4, 32) and not q.requires_grad
    last = model.model.layers[-1]
    x = last.input_layernorm(keep["hidden_states"][-2])  # the last layer's input
    torch.testing.assert_close(q, last.self_attn.q_proj(x).detach())
    torch.testing.assert_close(v, last.self_attn.v_proj(x).detach())
    attn = last.self_attn
    assert not any(p._forward_hooks for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    assert "qkv" not in teacher_signals(model, frozenset({"logits"}), batch)


def test_minilm_on_real_models_with_different_head_counts() -> None:
    tok = default_tokenizer()
    teacher = build_llama({"hidden_size": 32, "num_layers": 2, "num_heads": 4}, tok, seed=0)
    student = build_llama({"hidden_size": 16, "num_layers": 1, "num_heads": 2}, tok, seed=1)
    batch = {
        "input_ids": torch.tensor([[3, 4, 5, 6, 7], [7, 8, 9, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, -100, 5, 6, 7], [-100, 8, 9, -100, -100]]),
    }
    signals = teacher_signals(teacher, frozenset({"qkv"}), batch)
    with capture_qkv(student) as qkv:
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    out.qkv = tuple(qkv)
    assert [x.shape[-1] for x in out.qkv] == [16, 16, 16]
    loss = minilm_loss(out, signals, batch, MiniLMConfig(relation_heads=4), {})
    loss.backward()
    assert torch.isfinite(loss)
    grad = student.model.layers[-1].self_attn.k_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # the student matched to itself as teacher: the relation term vanishes
    with capture_qkv(student) as own:
        student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    same = minilm_term(
        tuple(own), tuple(x.detach() for x in own), batch["attention_mask"], MiniLMConfig()
    )
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_capture_qkv_refuses_a_model_without_llama_layers() -> None:
    with pytest.raises(ValueError, match="qkv"), capture_qkv(torch.nn.Linear(2, 2)):
        pass


# --- registration and real training ---------------------------------------------------------


def test_attention_methods_are_registered() -> None:
    methods = registry()
    assert methods["at"].family == methods["minilm"].family == "attention"
    assert methods["at"].signals == {"attentions"} and methods["minilm"].signals == {"qkv"}
    assert methods["minilm"].plugin == "minilm"


def test_at_trains_two_steps() -> None:
    losses, created, before, student = train_two_steps("at")
    _assert_trained(losses, created, before, student, expect_modules=False)


def test_minilm_trains_two_steps() -> None:
    # teacher 32 wide / 4 heads, student 16 wide / 2 heads, default 8 relation heads
    losses, created, before, student = train_two_steps("minilm")
    _assert_trained(losses, created, before, student, expect_modules=False)
