"""The training job: DeepSpeed engine steps, and resuming from a checkpoint after the job's
process is killed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from kdbench.config import Budget, DataSpec
from kdbench.methods import registry
from kdbench.models import build_llama, default_tokenizer
from kdbench.train import train
from kdbench.transfer import transfer_batch

ARCH = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
DATA = DataSpec(n_per_task=16, max_length=48)
BUDGET = Budget(steps=10, batch_size=4, lr=1e-2)

# A job that checkpoints every 3 steps and whose process is SIGKILLed during step 8.
KILLED_JOB = textwrap.dedent(
    """
    import os, signal, sys
    from kdbench.config import Budget, DataSpec
    from kdbench.methods import registry
    from kdbench.models import build_llama, default_tokenizer
    from kdbench.train import train
    from kdbench.transfer import transfer_batch

    class KillAt:
        n = 0
        def update(self, k):
            self.n += k
            if self.n == 8:
                os.kill(os.getpid(), signal.SIGKILL)

    tok = default_tokenizer()
    sft = registry()["sft"]
    model = build_llama({arch}, tok, seed=0)
    train(model, sft, sft.make_config(), transfer_batch(DataSpec(n_per_task=16, max_length=48),
          tok), Budget(steps=10, batch_size=4, lr=1e-2), 10, seed=0, progress=KillAt(),
          checkpoint_dir=sys.argv[1], checkpoint_every=3)
    """
).format(arch=ARCH)


def _run(checkpoint_dir: Path | None) -> tuple[dict, torch.nn.Module]:
    tok = default_tokenizer()
    sft = registry()["sft"]
    model = build_llama(ARCH, tok, seed=0)
    stats = train(
        model,
        sft,
        sft.make_config(),
        transfer_batch(DATA, tok),
        BUDGET,
        10,
        seed=0,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=3,
    )
    return stats, model


def test_killed_job_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    killed = subprocess.run([sys.executable, "-c", KILLED_JOB, str(ckpt)], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (ckpt / "latest").read_text().strip() == "step6"
    assert sorted(p.name for p in ckpt.glob("step*")) == ["step6"]  # older ones pruned

    resumed, model = _run(ckpt)
    assert resumed["resumed_from"] == 6 and resumed["steps"] == 10

    straight, reference = _run(None)
    assert straight["resumed_from"] == 0
    assert resumed["tokens"] == straight["tokens"]
    # the budget audit: steps x batch size sequences, counted across the resume too
    assert resumed["sequences"] == straight["sequences"] == 10 * BUDGET.batch_size
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_engine_precision_follows_the_dtype() -> None:
    from kdbench.train import deepspeed_config

    cfg = deepspeed_config(BUDGET, 10, {}, dtype=torch.bfloat16)
    assert cfg["bf16"] == {"enabled": True} and "fp16" not in cfg
    assert deepspeed_config(BUDGET, 10, {}, dtype=torch.float16)["fp16"]["enabled"]
    plain = deepspeed_config(BUDGET, 10, {}, dtype=torch.float32)
    assert "bf16" not in plain and "fp16" not in plain
    assert "bf16" not in deepspeed_config(BUDGET, 10, {})  # a CPU: float32 by default


def test_zero3_gathers_the_full_weights_back_into_the_model() -> None:
    """ZeRO-3 partitions the weights over the workers; after training they are gathered into
    the model (here a group of one, gloo on the CPU), equal to what ZeRO-0 trains."""
    tok = default_tokenizer()
    sft = registry()["sft"]
    data = transfer_batch(DATA, tok)
    budget = Budget(steps=3, batch_size=4, lr=1e-2)
    models = {}
    for stage in (0, 3):
        models[stage] = build_llama(ARCH, tok, seed=0)
        train(models[stage], sft, sft.make_config(), data, budget, 3, seed=0, zero_stage=stage)
    zero, three = models[0].state_dict(), models[3].state_dict()
    start = build_llama(ARCH, tok, seed=0).state_dict()
    for name, value in three.items():
        assert value.shape == start[name].shape, name
        assert torch.allclose(value, zero[name], atol=1e-6), name
    assert not torch.equal(three["model.norm.weight"], start["model.norm.weight"])
