"""One training job: a student (or a teacher being built) trained with a method's loss through
a DeepSpeed engine. On CPU it runs with the gloo backend; on GPUs the same code runs unchanged
(bf16 when the device supports it). Nothing here knows about Ray.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdbench import synthetic
from kdbench.config import Budget, DataSpec
from kdbench.losses import IGNORE
from kdbench.methods import Method


@dataclass
class Batch:
    """The whole transfer set, tokenised once: right-padded ids, mask, labels and weights."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # IGNORE on prompt and padding: only completions are learnt
    weight: torch.Tensor | None = None  # (N,) float per-example loss weight; None: all 1.0

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = torch.ones(len(self.input_ids), dtype=torch.float32)


def encode(examples: list[dict[str, Any]], tokenizer, max_length: int, rationales: bool) -> Batch:
    """Tokenise ``prompt + completion``; the loss sees completion tokens only.

    The completion is ``ex["target"]`` when given (a method's ``data``), else the ground truth
    ``synthetic.target_text(ex, rationales)``; ``ex["weight"]`` (default 1.0) is kept per example.
    """
    ids, labels = [], []
    weights = [float(ex.get("weight", 1.0)) for ex in examples]
    for ex in examples:
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        target = ex["target"] if "target" in ex else synthetic.target_text(ex, rationales)
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        seq = (p + t)[:max_length]
        ids.append(seq)
        labels.append(([IGNORE] * len(p) + t)[:max_length])
    width = max(map(len, ids))
    out_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    out_labels = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(ids, labels, strict=True)):
        out_ids[i, : len(seq)] = torch.tensor(seq)
        out_labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(seq)] = 1
    return Batch(out_ids, mask, out_labels, torch.tensor(weights, dtype=torch.float32))


def transfer_batch(data: DataSpec, tokenizer, seed: int) -> Batch:
    examples = synthetic.transfer_set(list(data.tasks), data.n_per_task, seed)
    return encode(examples, tokenizer, data.max_length, data.rationales)


# --- DeepSpeed ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OWN_GROUP = "KDBENCH_SINGLE_PROCESS_GROUP"


def init_distributed() -> None:
    """A one-process group unless a launcher (Ray Train, deepspeed) already set one up."""
    import deepspeed

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
    budget: Budget, steps: int, overrides: dict[str, Any], zero_stage: int = 0
) -> dict[str, Any]:
    """The default engine config for a budget; a suite's ``[deepspeed]`` table overrides keys.
    The global batch is split over the data-parallel workers (``train_batch_size`` stays the
    budget's, so every method sees the same sequences per step whatever the world size)."""
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
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        cfg["bf16"] = {"enabled": True}
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


QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def last_attention(model: torch.nn.Module) -> torch.nn.Module:
    """The last decoder layer's ``self_attn`` of a Hugging Face decoder (Llama and alike)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(base, "layers", None)
    if not layers or not all(hasattr(layers[-1].self_attn, n) for n in QKV_PROJECTIONS):
        raise ValueError(
            f"the 'qkv' signal needs decoder layers with self_attn.{'/'.join(QKV_PROJECTIONS)}"
            f" (HF Llama layout); {type(model).__name__} has none"
        )
    return layers[-1].self_attn


@contextlib.contextmanager
def capture_qkv(model: torch.nn.Module, enabled: bool = True):
    """Forward hooks on the last decoder layer's ``q_proj`` / ``k_proj`` / ``v_proj``.

    Yields a list that, after a forward pass inside the block, holds ``(q, k, v)``, each
    (B, T, width): the projections' outputs, before RoPE and the head split, with their autograd
    graph. The hooks are removed on exit. With ``enabled=False`` nothing is hooked.
    """
    captured: dict[str, torch.Tensor] = {}
    result: list[torch.Tensor] = []
    handles = []
    if enabled:
        attn = last_attention(model)
        for name in QKV_PROJECTIONS:

            def hook(module, inputs, output, name=name):
                captured[name] = output  # a recomputed forward overwrites: the last one wins

            handles.append(getattr(attn, name).register_forward_hook(hook))
    try:
        yield result
        if enabled:
            result[:] = [captured[name] for name in QKV_PROJECTIONS]
    finally:
        for handle in handles:
            handle.remove()


def teacher_signals(
    teacher: torch.nn.Module, signals: frozenset[str], batch: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Run the teacher once on a batch and keep only the signals the method declared."""
    with torch.no_grad(), capture_qkv(teacher, enabled="qkv" in signals) as qkv:
        out = teacher(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states="hidden_states" in signals,
            output_attentions="attentions" in signals,
        )
    keep = {"logits": out.logits}
    if "hidden_states" in signals:
        keep["hidden_states"] = out.hidden_states
    if "attentions" in signals:
        keep["attentions"] = out.attentions
    if "qkv" in signals:
        keep["qkv"] = tuple(qkv)
    return keep


def prepare_models(method: Method, *models: torch.nn.Module | None) -> None:
    """Attention maps exist only with eager attention: a model loaded with the default (sdpa)
    kernel returns none, so switch the models over for a method that reads them."""
    if "attentions" in method.signals:
        for model in models:
            if model is not None and model.config._attn_implementation != "eager":
                model.set_attn_implementation("eager")


def method_loss(
    method: Method,
    cfg: Any,
    student: Any,
    teacher: torch.nn.Module | None,
    batch: dict[str, torch.Tensor],
    modules: dict[str, torch.nn.Module],
    guard: Any = None,
    cached: dict[str, Any] | None = None,
) -> torch.Tensor:
    """One forward of the student (and, for per-batch signals, the teacher) and the method's
    loss. ``student`` is the model or the DeepSpeed engine around it; ``guard`` may wrap the
    teacher dict (the conformance checks use it to refuse undeclared signals); ``cached`` is the
    teacher dict read from the signal cache (then the teacher does not run)."""
    if cached is not None:
        signals = cached
    else:
        signals = teacher_signals(teacher, method.signals, batch) if teacher is not None else None
    if signals is not None and guard is not None:
        signals = guard(signals)
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
    data: Batch,
    budget: Budget,
    steps: int,
    seed: int,
    teacher: torch.nn.Module | None = None,
    ds_overrides: dict[str, Any] | None = None,
    progress: Any = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    cache: Any = None,
    teacher_config: Any = None,
    zero_stage: int = 0,
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
    Returns statistics: wall time, tokens seen (non-padding, all workers), final loss, the step
    resumed from, and the sequences the teacher ran on (``teacher_forwards``, all workers).
    """
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    init_distributed()
    torch.manual_seed(seed)
    prepare_models(method, model, teacher)
    if teacher_config is None:
        teacher_config = getattr(teacher, "config", None)
    modules = method.modules(model.config, teacher_config, cfg) if method.modules else {}
    trainable = Trainable(model, modules)
    engine, _, _, _ = deepspeed.initialize(
        model=trainable,
        model_parameters=[p for p in trainable.parameters() if p.requires_grad],
        config=deepspeed_config(budget, steps, ds_overrides or {}, zero_stage),
    )
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = engine.device
    if teacher is not None:
        teacher.to(device).eval()

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.input_ids), generator=gen)
    cursor, tokens, loss_value, first, forwards = 0, 0, float("nan"), 0, 0
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "latest").is_file():
        # "latest" is written after a checkpoint's files: a save cut short is never loaded
        _, state = engine.load_checkpoint(str(checkpoint_dir))
        first, cursor, tokens = state["step"], state["cursor"], state["tokens"]
        forwards = state.get("teacher_forwards", 0)
        order = state["order"]
        gen.set_state(state["generator"])
        if progress is not None:
            progress.update(first)
    start = time.perf_counter()
    engine.train()
    for step in range(first, steps):
        if cursor + budget.batch_size > len(order):  # next epoch, reshuffled
            order, cursor = torch.randperm(len(data.input_ids), generator=gen), 0
        global_idx = order[cursor : cursor + budget.batch_size]
        cursor += budget.batch_size
        idx = global_idx[rank::world]  # this worker's share of the global batch
        width = int(data.attention_mask[idx].sum(1).max())  # trim padding columns
        batch = {
            "input_ids": data.input_ids[idx, :width].to(device),
            "attention_mask": data.attention_mask[idx, :width].to(device),
            "labels": data.labels[idx, :width].to(device),
            "weight": data.weight[idx].to(device),
        }
        cached = None
        if cache is not None:
            cached = {
                k: (v.to(device) if isinstance(v, torch.Tensor) else _to(v, device))
                for k, v in cache.batch(idx, width, method.signals).items()
            }
        elif teacher is not None:
            forwards += len(global_idx)
        loss = method_loss(
            method, cfg, engine, teacher, batch, dict(trainable.extra), cached=cached
        )
        engine.backward(loss)
        engine.step()
        tokens += int(data.attention_mask[global_idx].sum())
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
            }
            engine.save_checkpoint(str(checkpoint_dir), tag=f"step{done}", client_state=state)
            for old in Path(checkpoint_dir).glob("step*"):  # keep only the newest
                if rank == 0 and old.name != f"step{done}":
                    shutil.rmtree(old, ignore_errors=True)
    return {
        "train_wall_s": time.perf_counter() - start,
        "tokens": tokens,
        "steps": steps,
        "final_loss": loss_value,
        "resumed_from": first,
        "teacher_forwards": forwards,
    }


def _to(value: Any, device: Any) -> Any:
    """Move a tuple of tensors (hidden states, attention maps, qkv) or None to ``device``."""
    if isinstance(value, tuple):
        return tuple(v.to(device) for v in value)
    return value


def method_batch(
    method: Method, cfg: Any, data: DataSpec, tokenizer, teacher_path=None, cache=None
) -> Batch:
    """The encoded training set a method sees (see :func:`kdbench.generations.method_batch`)."""
    from kdbench.generations import method_batch as build

    return build(method, cfg, data, tokenizer, teacher_path, cache)
