"""The memory preflight: parameters counted from configs on the meta device, the parts of a
training job's memory for each ZeRO stage, DeepSpeed's own estimators, and a suite that cannot
fit refused in one line before anything is written (the device budget given as a parameter,
and once against the real local Ray node)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbench.config import LoraSpec, SuiteError, load_suite, parse_suite
from kdbench.models import build_llama, default_tokenizer, n_params
from kdbench.plan import plan
from kdbench.preflight import ModelSize, estimates, model_states, preflight

from .conftest import SHRINK as _SHRINK
from .conftest import TINY, edit_suite, tiny_raw

GIB = 2**30
SHRINK = {**_SHRINK, "methods": ["sft", "kd", "seqkd"]}  # no broken plugin here


def test_params_are_counted_from_the_config_without_weights() -> None:
    suite = load_suite(TINY)
    methods, _ = plan(suite)
    found = estimates(suite, methods)
    assert [e.student for e in found] == [s.name for s in suite.students]
    for e, spec in zip(found, suite.students, strict=True):
        built = build_llama({**spec.arch, "max_length": 64}, default_tokenizer(), seed=0)
        assert e.params == n_params(built) == e.trainable
        assert e.device == "CPU" and e.dtype == "float32" and e.zero_stage == 0
        assert e.weights == 4 * e.params and e.gradients == 4 * e.params
        assert e.optimizer == 8 * e.params and e.activations > 0
        assert "ZeRO-0" in e.describe() and "\n" not in e.describe()


def test_zero_stages_shard_the_states_as_deepspeed_estimates() -> None:
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    size = ModelSize(
        params=10**9, largest_layer=10**8, layers=24, hidden=2048, heads=16, vocab=50_000
    )
    states = {s: sum(model_states(size, 2, s, 4, gpu=True)[1:]) for s in range(4)}
    assert states[0] > states[1] > states[2] > states[3]
    assert states[0] == 20 * 10**9  # bf16 weights and grads, fp32 grads, master and Adam moments
    _, ds = estimate_zero2_model_states_mem_needs(10**9, num_gpus_per_node=4, cpu_offload=False)
    assert states[2] == ds
    lora = ModelSize(**{**size.__dict__, "lora_params": 10**6})
    trainable, weights, grads, optim = model_states(lora, 2, 0, 1, gpu=True)
    assert trainable == 10**6 and weights == 2 * (10**9 + 10**6) and optim == 12 * 10**6


def test_a_suite_that_cannot_fit_is_refused_in_one_line(tmp_path: Path) -> None:
    suite = parse_suite(edit_suite(tiny_raw(), SHRINK), tmp_path / "s.toml")
    methods, _ = plan(suite)
    assert len(preflight(suite, methods, budget=GIB)) == 2  # the tiny suite fits in 1 GiB
    with pytest.raises(SuiteError) as err:
        preflight(suite, methods, budget=2**20)
    msg = str(err.value)
    assert err.value.field == "students[0]" and "\n" not in msg
    for words in ("student-0.1M", "does not fit", "MiB", "a CPU job has 1 MiB", "batch_size"):
        assert words in msg, words


def test_lora_and_checkpointing_shrink_the_estimate(tmp_path: Path) -> None:
    big = {"hidden_size": 512, "num_layers": 8, "num_heads": 8}
    base = {**SHRINK, "students": [{"name": "full", "arch": big}], "budget.batch_size": 32}
    lora = {"name": "lora", "arch": big, "lora": {"r": 4}, "gradient_checkpointing": True}
    suite = parse_suite(
        edit_suite(tiny_raw(), {**base, "students": [base["students"][0], lora]}),
        tmp_path / "s.toml",
    )
    assert suite.students[1].lora == LoraSpec(r=4, alpha=32.0, dropout=0.05)
    full, small = estimates(suite, plan(suite)[0])
    assert small.trainable < full.trainable / 50
    assert small.optimizer < full.optimizer / 50 and small.activations < full.activations


def test_run_suite_refuses_before_writing_anything(tmp_path: Path) -> None:
    """Against the local Ray node's real memory: a ~50B-parameter student cannot train on it;
    the database is never created."""
    from kdbench.pipeline import init_ray, run_suite

    huge = {"hidden_size": 8192, "num_layers": 64, "num_heads": 64}
    suite = parse_suite(
        edit_suite(tiny_raw(), {**SHRINK, "students[1]": {"name": "huge", "arch": huge}}),
        tmp_path / "s.toml",
    )
    init_ray(None)
    db = tmp_path / "kdbench.duckdb"
    with pytest.raises(SuiteError, match=r"students\[1\]: does not fit: huge \("):
        run_suite(suite, db, echo=lambda *_: None)
    assert not db.exists()
    methods, _ = plan(suite)
    small = parse_suite(edit_suite(tiny_raw(), SHRINK), tmp_path / "t.toml")
    assert preflight(small, plan(small)[0])  # the tiny suite fits this machine
    assert methods
