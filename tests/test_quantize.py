"""Weight-only quantisation with torchao (kdbench.quantize) of the small Llama models kdbench
builds: real bytes on disk, finite scores, a saved model that loads back the same."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kdbench.evaluate import evaluate
from kdbench.models import build_llama, default_tokenizer, model_bytes, n_params, save
from kdbench.quantize import INT4_GROUP, SCHEMES, load_quantized, quantize, save_quantized

from .conftest import tiny_raw

# the tiny suite's teacher: every Linear fits int4's kernels (widths divisible by 32 and 16)
TEACHER = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 384}
# the tiny suite's 0.25M student: width 80, which int4's groups of 32 do not divide
ODD = {"hidden_size": 80, "num_layers": 3, "num_heads": 4, "intermediate_size": 240}


@pytest.fixture(scope="module")
def teacher():
    tok = default_tokenizer()
    return build_llama(TEACHER, tok, 0).eval(), tok


def _linear_weights(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings()
    return sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantised_weights_take_fewer_bytes_and_load_back_the_same(
    teacher, scheme: str, tmp_path: Path
) -> None:
    model, tok = teacher
    full = model_bytes_of(model, tok, tmp_path / "fp32")
    ids = torch.randint(0, len(tok), (2, 24))
    with torch.no_grad():
        ref = model(ids).logits
    done = quantize(model, scheme)
    assert done.model is not model and done.scheme == scheme
    assert done.library.startswith("torchao ")
    # every Linear of the decoder is quantised, the tied head is not (it is the embedding)
    assert done.quantized_params == _linear_weights(model) > 0.9 * n_params(model)
    assert done.model.lm_head.weight is done.model.model.embed_tokens.weight
    with torch.no_grad():
        out = done.model(ids).logits
    assert torch.isfinite(out).all()
    # weight-only quantisation moves the logits a little, not a lot (int4 more than int8)
    err = (out - ref).abs().max().item()
    assert 0 < err < (0.05 if scheme == "int8" else 0.5)
    size = save_quantized(done.model, tok, tmp_path / scheme)
    assert size == (tmp_path / scheme / "model.pt").stat().st_size
    # int8: ~1 byte per quantised weight instead of 4; int4: ~0.5 plus a scale and a zero
    # point per group of 32
    assert size < (0.3 if scheme == "int8" else 0.22) * full
    back = load_quantized(tmp_path / scheme, lambda: build_llama(TEACHER, tok, 1), scheme)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, out)
    with torch.no_grad():  # the full-precision model is untouched
        assert torch.equal(model(ids).logits, ref)


def model_bytes_of(model, tok, path: Path) -> int:
    save(model, tok, path)
    return model_bytes(path)


def test_int4_is_smaller_than_int8(teacher, tmp_path: Path) -> None:
    model, tok = teacher
    sizes = {s: save_quantized(quantize(model, s).model, tok, tmp_path / s) for s in SCHEMES}
    assert sizes["int4"] < sizes["int8"]


def test_int4_refuses_a_model_none_of_whose_layers_fit(tmp_path: Path) -> None:
    tok = default_tokenizer()
    model = build_llama(ODD, tok, 0).eval()
    assert ODD["hidden_size"] % INT4_GROUP
    # no layer reads a multiple of 32 features: 80 (attention, MLP up) or 240 (MLP down)
    with pytest.raises(ValueError, match="int4: no Linear layer of this model fits"):
        quantize(model, "int4")
    int8 = quantize(model, "int8")
    assert int8.quantized_params == _linear_weights(model)
    assert save_quantized(int8.model, tok, tmp_path / "int8") < 0.3 * model_bytes_of(
        model, tok, tmp_path / "fp32"
    )


def test_scores_of_a_quantised_model_are_finite(teacher) -> None:
    model, tok = teacher
    tasks = tiny_raw()["eval"]["tasks"]
    done = quantize(model, "int8")
    rows, questions = evaluate(done.model, tok, tasks, limit=4, batch_size=4, samples=True)
    primary = [r for r in rows if r["is_primary"]]
    assert {r["task"] for r in primary} == set(tasks)
    assert all(math.isfinite(r["value"]) and 0 <= r["value"] <= 1 for r in primary)
    assert len(questions) == 4 * len(tasks)


def test_quantising_in_place_and_unknown_schemes() -> None:
    tok = default_tokenizer()
    model = build_llama(TEACHER, tok, 0)
    done = quantize(model, "int8", copy_model=False)
    assert done.model is model and type(model.model.layers[0].mlp.up_proj.weight).__name__ != (
        "Parameter"
    )
    with pytest.raises(ValueError, match="unknown scheme 'fp8'; known: int8, int4"):
        quantize(model, "fp8")


@pytest.mark.e2e
def test_a_suite_with_quantize_stores_linked_quantised_runs(write_suite, tmp_path: Path) -> None:
    """A shrunken suite with ``[eval] quantize = ["int8", "int4"]`` through Ray, DeepSpeed,
    lm-eval and DuckDB: every scored model gets a quantised run per scheme, linked to its
    full-precision run, with its own scores, samples and smaller weights on disk; the ranked
    board stays the full-precision runs."""
    import numpy as np
    import ray

    from kdbench import store
    from kdbench.config import load_suite
    from kdbench.leaderboard import leaderboard
    from kdbench.pipeline import run_suite
    from kdbench.quant_board import quantized_board

    from .conftest import SHRINK

    edits = {**SHRINK, "methods": ["sft"], "eval.quantize": ["int8", "int4"]}
    edits["students"] = tiny_raw()["students"][:1]  # 0.1M: widths int4's kernels take
    suite = load_suite(write_suite(edits))
    db = tmp_path / "results" / "kdbench.duckdb"
    try:
        summary = run_suite(suite, db, cache=str(tmp_path / "cache"))
    finally:
        ray.shutdown()
    assert (summary.runs, summary.ran, summary.failed) == (1, 1, 0)
    runs = store.read_runs(db, suite.hash).set_index("run_id")
    full = runs[runs["quant"].isna()]
    quant = runs[runs["quant"].notna()]
    assert sorted(full["role"]) == ["student", "teacher"] and (runs["status"] == "ok").all()
    assert sorted(quant.index) == sorted(f"{r}-{s}" for r in full.index for s in ("int8", "int4"))
    assert (quant["parent_run_id"] + "-" + quant["quant"] == quant.index).all()
    parent = full.loc[quant["parent_run_id"]]
    for col in ("role", "method", "student", "seed", "suite_hash"):
        assert (quant[col].to_numpy() == parent[col].to_numpy()).all(), col
    # real bytes on disk, fewer than the full-precision weights; the same parameters
    for run_id, row in quant.iterrows():
        weights = db.parent / "runs" / run_id / "model.pt"
        assert row["bytes"] == weights.stat().st_size
        assert row["bytes"] < 0.5 * full.loc[row["parent_run_id"], "bytes"]
        assert row["params"] == full.loc[row["parent_run_id"], "params"]
        assert 0 < row["quantized_params"] < row["params"]
        assert row["eval_wall_s"] > 0 and row["infer_tokens_per_s"] > 0
    metrics = store.read_metrics(db, suite.hash)
    primary = metrics[metrics["is_primary"]]
    assert primary.groupby("run_id").size().to_dict() == {r: 2 for r in runs.index}
    assert primary["value"].between(0, 1).all()
    samples = store.read_samples(db, suite.hash)
    assert samples.groupby("run_id").size().to_dict() == {r: 2 * 6 for r in runs.index}
    # the ranked board: the full-precision runs; the quantised rows apart
    assert sorted(leaderboard(db, suite.hash)["method"]) == ["sft", "teacher"]
    rows = quantized_board(db, suite.hash)
    assert sorted(zip(rows["method"], rows["quant"], strict=True)) == [
        ("sft", "int4"),
        ("sft", "int8"),
        ("teacher", "int4"),
        ("teacher", "int8"),
    ]
    assert (rows["compression"] > 2).all() and (rows["seeds"] == 1).all()
    # the full-precision retention is the board's (NaN alike: a few-step teacher may score 0)
    board = leaderboard(db, suite.hash).set_index(["method", "student"])
    expected = [board.loc[k, "retention_avg"] for k in zip(rows.method, rows.student, strict=True)]
    np.testing.assert_array_equal(rows["retention_fp"].to_numpy(dtype=float), expected)
