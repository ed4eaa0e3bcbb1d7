"""One training job: a student (or a teacher being built) trained with a method's loss through
a DeepSpeed engine. On CPU it runs with the gloo backend in float32; on GPUs the same code runs
unchanged in the model's ``dtype`` (bf16 by default when the device supports it: DeepSpeed keeps
float32 master weights; losses are computed in float32). ZeRO stages 0-3; after ZeRO-3 the full
weights are gathered back into the model, so it saves as a normal Hugging Face folder. Nothing
here knows about Ray.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import deepspeed
import torch

from kdbench.config import Budget
from kdbench.cross_tokenizer import PairedBatch, teacher_view
from kdbench.methods import Method
from kdbench.models import capture_qkv, prepare_models, resolve_dtype
from kdbench.rollout import FIXED, Rollout
from kdbench.signal_cache import SignalCache
from kdbench.signals import TeacherSignals, live_signals
from kdbench.transfer import Batch

# --- DeepSpeed ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OWN_GROUP = "KDBENCH_SINGLE_PROCESS_GROUP"


def init_distributed() -> None:
    """A one-process group unless a launcher (Ray Train, deepspeed) already set one up."""
    if torch.distributed.is_initialized():
        return
    if "RANK" not in os.environ or os.environ.get(OWN_GROUP) == "1":
        # No launcher set this process up: a group of one on a free port. The marker tells a
        # child process that inherits these variables to pick its own port, not to join ours.
        os.environ.update(
            {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(_free_port()),
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                OWN_GROUP: "1",
            }
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # DeepSpeed prints build messages of its CPU ops on stdout: keep them out of the user's way
    with contextlib.redirect_stdout(io.StringIO()):
        deepspeed.init_distributed(dist_backend=backend, verbose=False)


def deepspeed_config(
    budget: Budget,
    steps: int,
    overrides: dict[str, Any],
    zero_stage: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """The default engine config for a budget; a suite's ``[deepspeed]`` table overrides keys.
    The global batch is split over the data-parallel workers (``train_batch_size`` stays the
    budget's, so every method sees the same sequences per step whatever the world size).
    ``dtype`` (default: :func:`kdbench.models.resolve_dtype` of ``auto`` here) switches on
    DeepSpeed's ``bf16`` or ``fp16`` section; float32 switches on neither."""
    world = (
        torch.distributed.get_world_size()
        if torch.distributed.is_initialized()
        else int(os.environ.get("WORLD_SIZE", "1"))
    )
    if budget.batch_size % world:
        raise ValueError(
            f"budget.batch_size {budget.batch_size} must be divisible by the {world} workers"
        )
    cfg: dict[str, Any] = {
        "train_batch_size": budget.batch_size,
        "train_micro_batch_size_per_gpu": budget.batch_size // world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        # torch's AdamW: no JIT-compiled optimizer op is needed on CPU
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": budget.lr, "weight_decay": 0.0, "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": steps,
                "warmup_num_steps": max(1, int(budget.warmup * steps)),
                "warmup_type": "linear",
                "warmup_min_ratio": 0.1,  # no step at learning rate 0, even in a 2-step smoke test
                "cos_min_ratio": 0.1,
            },
        },
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    dtype = resolve_dtype("auto") if dtype is None else dtype
    if dtype == torch.bfloat16:
        cfg["bf16"] = {"enabled": True}
    elif dtype == torch.float16:
        cfg["fp16"] = {"enabled": True}  # dynamic loss scaling
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


class Trainable(torch.nn.Module):
    """The student plus a method's extra trainable modules, so one engine optimises both."""

    def __init__(self, student: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.extra = torch.nn.ModuleDict(modules)

    def forward(self, **kwargs: Any) -> Any:
        return self.student(**kwargs)


def method_loss(
    method: Method,
    cfg: Any,
    student: Any,
    teacher: torch.nn.Module | TeacherSignals | None,
    batch: dict[str, torch.Tensor],
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    """One forward of the student and the method's loss. ``student`` is the model or the
    DeepSpeed engine around it; ``teacher`` is the teacher model (run live on the batch), the
    :class:`TeacherSignals` of the batch (read from the signal cache), or None for a method
    that reads no per-batch signal. The loss always gets a :class:`TeacherSignals` holding
    exactly the method's declared signals. In a paired batch (a cross-tokenizer student,
    :mod:`kdbench.cross_tokenizer`) the teacher runs on the teacher's rows."""
    if isinstance(teacher, TeacherSignals):
        signals = teacher
    elif teacher is not None:
        signals = live_signals(teacher, method.signals, teacher_view(batch), method.name)
    else:
        signals = TeacherSignals({}, method.signals, method.name, "none")
    want_qkv = "qkv" in method.signals
    inner = getattr(student, "module", student)  # the engine's Trainable, or the model
    inner = getattr(inner, "student", inner)
    with capture_qkv(inner, enabled=want_qkv) as qkv:
        out = student(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states="hidden_states" in method.signals,
            output_attentions="attentions" in method.signals,
        )
    if want_qkv:
        out.qkv = tuple(qkv)  # the student's (q, k, v), as teacher["qkv"]
    return method.loss(out, signals, batch, cfg, modules)


def train(
    model: torch.nn.Module,
    method: Method,
    cfg: Any,
    data: Batch | PairedBatch,
    budget: Budget,
    steps: int,
    seed: int,
    teacher: torch.nn.Module | None = None,
    ds_overrides: dict[str, Any] | None = None,
    progress: Any = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    cache: SignalCache | None = None,
    teacher_config: Any = None,
    zero_stage: int = 0,
    dtype: str = "auto",
    rollout: Rollout | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimiser steps of ``budget.batch_size`` sequences.

    Teacher signals come from ``cache`` (a :class:`kdbench.signal_cache.SignalCache` whose rows
    are ``data``'s examples) when it is given, else from ``teacher`` run on every batch;
    ``teacher_config`` stands in for the teacher's config when only the cache is at hand. In a
    process group of several workers (Ray Train), each worker takes its share of every global
    batch and DeepSpeed averages the gradients.

    With ``checkpoint_dir`` and ``checkpoint_every``, the engine (weights, optimiser, schedule)
    and the data order are checkpointed every ``checkpoint_every`` steps, and a job that finds
    a checkpoint there (its process was killed, Ray retried it) resumes from it.
    ``dtype`` (a suite's ``dtype``, :func:`kdbench.models.resolve_dtype`) sets the engine's
    precision. With ZeRO-3 (``zero_stage`` or the ``[deepspeed]`` table's
    ``zero_optimization.stage``) the trained weights are gathered back into ``model`` on rank 0
    at the end, so it saves like any other.
    With ``rollout`` (an on-policy method, :mod:`kdbench.rollout`), each step's rows go through
    :meth:`Rollout.batch`, which may replace them by the student's samples for their prompts
    (fresh or replayed); the teacher (which must be given) scores those live, while fixed rows
    still read the cache when there is one.
    ``data`` is a :class:`kdbench.cross_tokenizer.PairedBatch` for a cross-tokenizer student:
    the teacher's signals (live or cached) are then those of its own rows of the same examples.

    Returns statistics: wall time, tokens seen (non-padding, all workers), final loss, the step
    resumed from, the sequences the teacher ran on (``teacher_forwards``, all workers), the
    sequences trained on (``sequences``: steps x batch size when the job ran its budget) and,
    for an on-policy method, the seconds spent sampling (``generation_wall_s``, part of the wall
    time), the tokens and sequences sampled (``generated_tokens``, ``generated_sequences``) and
    how many batches were fixed, fresh or replayed (``rollout_batches``).
    """
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    init_distributed()
    torch.manual_seed(seed)
    prepare_models(method.signals, model, teacher)
    if teacher_config is None:
        teacher_config = getattr(teacher, "config", None)
    modules = method.modules(model.config, teacher_config, cfg) if method.modules else {}
    trainable = Trainable(model, modules)
    engine, _, _, _ = deepspeed.initialize(
        model=trainable,
        model_parameters=[p for p in trainable.parameters() if p.requires_grad],
        config=deepspeed_config(
            budget, steps, ds_overrides or {}, zero_stage, resolve_dtype(dtype)
        ),
    )
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = engine.device
    if teacher is not None:
        teacher.to(device).eval()

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.input_ids), generator=gen)
    cursor, tokens, loss_value, first, forwards = 0, 0, float("nan"), 0, 0
    sequences = 0  # sequences trained on, all workers (the budget audit)
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "latest").is_file():
        # "latest" is written after a checkpoint's files: a save cut short is never loaded
        _, state = engine.load_checkpoint(str(checkpoint_dir))
        first, cursor, tokens = state["step"], state["cursor"], state["tokens"]
        forwards = state.get("teacher_forwards", 0)
        sequences = state.get("sequences", first * budget.batch_size)
        order = state["order"]
        gen.set_state(state["generator"])
        if rollout is not None and "rollout" in state:
            rollout.load(state["rollout"])
        if progress is not None:
            progress.update(first)
    # the probe rows: a fixed sample of the transfer set, the same for every seed
    probe = torch.randperm(len(data.input_ids), generator=torch.Generator().manual_seed(0))
    probe = probe[: min(PROBE_ROWS, len(probe))]
    start = time.perf_counter()
    engine.train()
    for step in range(first, steps):
        if cursor + budget.batch_size > len(order):  # next epoch, reshuffled
            order, cursor = torch.randperm(len(data.input_ids), generator=gen), 0
        global_idx = order[cursor : cursor + budget.batch_size]
        cursor += budget.batch_size
        idx = global_idx[rank::world]  # this worker's share of the global batch
        rows = data.rows(idx)  # padding columns trimmed
        kind = FIXED
        if rollout is not None:
            if rollout.schedule.probe_every() and step % rollout.schedule.probe_every() == 0:
                rollout.schedule.observe(
                    probe_loss(
                        method, cfg, engine, trainable, data, probe, teacher, cache, step, steps
                    )
                )
            rows, kind = rollout.batch(trainable.student, rows, step, steps)
        batch = loss_batch(rows, device, step, steps, kind != FIXED)
        source: torch.nn.Module | TeacherSignals | None = teacher
        if cache is not None and kind == FIXED:
            width = teacher_view(rows)["input_ids"].shape[1]
            source = cache.batch(idx, width, method.signals, method.name).to(device)
        elif teacher is not None:
            forwards += len(global_idx)
        loss = method_loss(method, cfg, engine, source, batch, dict(trainable.extra))
        engine.backward(loss)
        engine.step()
        if kind == FIXED:
            tokens += int(data.attention_mask[global_idx].sum())
        else:  # this worker's sampled rows, times the workers (each samples its own share)
            tokens += int(rows["attention_mask"].sum()) * world
        sequences += len(global_idx)
        loss_value = float(loss.detach())
        if progress is not None:
            progress.update(1)
        done = step + 1
        if (
            checkpoint_dir is not None
            and checkpoint_every
            and done % checkpoint_every == 0
            and done < steps
        ):
            state = {
                "step": done,
                "cursor": cursor,
                "tokens": tokens,
                "order": order,
                "generator": gen.get_state(),
                "teacher_forwards": forwards,
                "sequences": sequences,
            }
            if rollout is not None:
                state["rollout"] = rollout.state()
            engine.save_checkpoint(str(checkpoint_dir), tag=f"step{done}", client_state=state)
            for old in Path(checkpoint_dir).glob("step*"):  # keep only the newest
                if rank == 0 and old.name != f"step{done}":
                    shutil.rmtree(old, ignore_errors=True)
    if engine.zero_optimization_partition_weights():
        gather_zero3(engine, trainable)
    sampled = rollout.stats if rollout is not None else None
    return {
        "train_wall_s": time.perf_counter() - start,
        "tokens": tokens,
        "steps": steps,
        "final_loss": loss_value,
        "resumed_from": first,
        "teacher_forwards": forwards,
        "sequences": sequences,
        "generation_wall_s": sampled.generation_wall_s if sampled else 0.0,
        "generated_tokens": sampled.generated_tokens * world if sampled else 0,
        "generated_sequences": sampled.generated_sequences * world if sampled else 0,
        "rollout_batches": dict(sampled.batches) if sampled else {},
    }


def loss_batch(
    rows: dict[str, torch.Tensor], device: Any, step: int, steps: int, on_policy: bool
) -> dict[str, torch.Tensor]:
    """The batch a loss gets: the rows on ``device`` plus ``step``, ``steps`` and
    ``on_policy`` (0-d tensors; see :data:`kdbench.methods.LossFn`)."""
    batch = {k: v.to(device) for k, v in rows.items()}
    batch["step"] = torch.tensor(step, device=device)
    batch["steps"] = torch.tensor(steps, device=device)
    batch["on_policy"] = torch.tensor(on_policy, device=device)
    return batch


PROBE_ROWS = 64  # fixed transfer rows of the probe loss (DistiLLM's dev loss, see below)


def probe_loss(
    method: Method,
    cfg: Any,
    engine: Any,
    trainable: Trainable,
    data: Batch,
    probe: torch.Tensor,
    teacher: torch.nn.Module | None,
    cache: SignalCache | None,
    step: int,
    steps: int,
) -> float:
    """The method's loss, without a gradient, on the fixed ``probe`` rows of the transfer set:
    what DistiLLM's adaptive schedule watches. (DistiLLM measures it on a held-out dev split;
    kdbench has none that every method shares, so the probe is a fixed sample of the training
    rows: a rise still says the student is drifting from the teacher on the fixed data.)"""
    device = engine.device
    rows = data.rows(probe)
    source: Any = teacher
    if cache is not None:
        width = teacher_view(rows)["input_ids"].shape[1]
        source = cache.batch(probe, width, method.signals, method.name)
        source = source.to(device)
    with torch.no_grad():
        batch = loss_batch(rows, device, step, steps, False)
        return float(method_loss(method, cfg, engine, source, batch, dict(trainable.extra)))


def gather_zero3(engine: Any, module: torch.nn.Module) -> None:
    """After ZeRO-3 training: the full weights gathered from every worker's partition
    (DeepSpeed's consolidated state dict, a collective call) and put back into ``module``'s
    parameters on rank 0, with the engine's hooks removed, so the model saves as a normal
    Hugging Face folder. Other ranks keep their (empty) partitions: only rank 0 saves."""
    state = engine._zero3_consolidated_16bit_state_dict()  # full on rank 0, None elsewhere
    engine.destroy()  # removes ZeRO-3's gather/partition hooks from the modules
    if state is None:
        return
    for name, param in module.named_parameters():
        param.data = state[name].to(param.device)
