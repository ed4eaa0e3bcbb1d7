"""The training stage: one Ray task per (method, student, seed), returning a
:class:`kdbench.records.TrainResult`.

The task (:func:`train_job`) runs :func:`train_worker` in its own process, or, with
``resources.workers_per_job`` > 1, drives a Ray Train group whose workers each run it
(:mod:`kdbench.distributed`). The worker loads the student and (only when the method's signals
are not all in the signal cache) the teacher, builds the method's training data, trains with
the suite's budget through DeepSpeed and, on rank 0, saves the student.

A student is loaded (``source``), built (``arch``) or copied from the teacher's layers
(``from_teacher_layers``), in its ``dtype``; it may train with gradient checkpointing, and as
LoRA adapters (``lora``), which are merged into the base weights before saving: the saved
student, its ``params`` and its bytes are the merged, plain model. ``kdbench_student.json``
beside the weights records how it was made and how many parameters trained.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from kdbench import distributed
from kdbench.config import ModelSpec, Suite
from kdbench.cross_tokenizer import PairedBatch, paired_batch
from kdbench.generations import end_of_turn_ids, stop_token_ids, training_examples
from kdbench.methods import Method, registry
from kdbench.models import (
    build_llama,
    enable_gradient_checkpointing,
    from_teacher_layers,
    load_pretrained,
    load_tokenizer,
    merged,
    n_params,
    n_trainable,
    named_tokenizer,
    resolve_dtype,
    save,
    vocabulary_mismatch,
    with_lora,
)
from kdbench.records import Job, TrainResult, TrainTask, train_result
from kdbench.rollout import Rollout, backend
from kdbench.signal_cache import SignalCache, open_cache
from kdbench.speed import PeakMemory
from kdbench.train import init_distributed, train
from kdbench.transfer import Batch, encode_examples, transfer_examples
from kdbench.workers import worker_setup

STUDENT_INFO = "kdbench_student.json"  # how the saved student was made; not a weight file


def train_job(task: TrainTask) -> TrainResult:
    """Ray task: train one student with one method; saves it and returns its folder and costs.

    ``task.generations``: the teacher stage's generations file, read (never made) here for a
    method with ``data``; ``task.cache_path``: the teacher-signal cache entry, read instead of
    running the teacher when it holds every signal the method reads.
    """
    started = time.time()
    worker_setup(task.cpus)
    if task.suite.resources.workers_per_job > 1:
        result = distributed.fit(train_worker, task)
    else:
        result = train_worker(task)
    return dataclasses.replace(result, job_started=started, job_ended=time.time())


def _cache_for(method: Method, cache_path: str | None) -> SignalCache | None:
    """The signal-cache entry when it covers every per-batch signal of ``method``."""
    if cache_path is None:
        return None
    cache = open_cache(cache_path)
    return cache if cache.covers(method) else None


def _student(
    spec: ModelSpec,
    job: Job,
    suite: Suite,
    teacher_tokenizer: PreTrainedTokenizerBase,
    teacher_path: str,
    teacher: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The student and its tokenizer, in the spec's dtype: loaded from its ``source``, built
    from its ``arch`` or copied from the teacher's layers ``from_teacher_layers``, with the
    teacher's tokenizer in both latter cases (so it shares the teacher's vocabulary by
    construction) unless a built student names its own ``tokenizer``. ``teacher``: the teacher already loaded (copied from when its dtype is the
    student's, instead of loading it again)."""
    if spec.source is not None:
        return load_pretrained(spec.source, spec.dtype)
    if spec.from_teacher_layers is not None:
        if teacher is None or teacher.dtype != resolve_dtype(spec.dtype):
            teacher, _ = load_pretrained(teacher_path, spec.dtype)
        try:
            model = from_teacher_layers(teacher, spec.from_teacher_layers)
        except ValueError as e:
            raise ValueError(f"student {spec.name}: {e}") from None
        return model, teacher_tokenizer
    tokenizer = named_tokenizer(spec.tokenizer) if spec.tokenizer else teacher_tokenizer
    model = build_llama(
        {**spec.arch, "max_length": suite.data.max_length}, tokenizer, seed=job.seed
    )
    return model.to(resolve_dtype(spec.dtype)), tokenizer


def on_policy_rollout(
    method: Method, cfg: object, suite: Suite, tokenizer: PreTrainedTokenizerBase, seed: int
) -> Rollout | None:
    """The student sampler of an on-policy method (None for any other): the suite's backend,
    stopping where a target ends (the ``[generation]`` stop strings, EOS, a chat template's
    end-of-turn token), within ``[data] max_length``."""
    if not method.on_policy:
        return None
    stops = stop_token_ids(tokenizer, suite.generation.stops(suite.data))
    if suite.data.chat_template:
        stops += end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Rollout(
        cfg,  # an OnPolicyConfig (checked when the method registered)
        backend(suite.resources.generation_backend),
        stops,
        pad,
        suite.data.max_length,
        seed,
    )


def prepare_student(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module:
    """Gradient checkpointing and LoRA adapters as the spec asks (the model itself otherwise)."""
    if spec.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if spec.lora is not None:
        model = with_lora(model, spec.lora)
    return model


def train_worker(task: TrainTask) -> TrainResult:
    """The training job itself, in one process of a group of one (a Ray task) or several (Ray
    Train workers, which share each global batch); rank 0 saves the student."""
    from ray.experimental.tqdm_ray import tqdm

    suite, job, teacher_path = task.suite, task.job, task.teacher_path
    worker_setup(task.cpus)
    init_distributed()
    rank = torch.distributed.get_rank()
    method = registry()[job.method]
    cfg = method.make_config(job.config)
    spec = next(s for s in suite.students if s.name == job.student)
    cache = _cache_for(method, task.cache_path)
    # an on-policy method's samples are new sequences: the teacher scores them live
    live = method.needs_teacher and (cache is None or method.on_policy)
    # the teacher's weights only when it runs live; its tokenizer and config always
    teacher_config = AutoConfig.from_pretrained(teacher_path)
    if live:
        teacher, teacher_tok = load_pretrained(teacher_path, suite.teacher.dtype)
    else:
        teacher, teacher_tok = None, load_tokenizer(teacher_path)
    base, tokenizer = _student(spec, job, suite, teacher_tok, teacher_path, teacher)
    params = n_params(base)  # the saved (merged) model's, before any adapter or partition
    student = prepare_student(base, spec)
    trainable = n_trainable(student)
    mismatch = vocabulary_mismatch(teacher_tok, tokenizer) if method.needs_teacher else None
    if mismatch and not method.cross_tokenizer:
        raise ValueError(
            f"{job.method} needs a vocabulary shared with the teacher: {mismatch} "
            f"(student {spec.name})"
        )
    if method.data is not None:
        examples = training_examples(method, cfg, suite.data, task.generations)
    else:
        examples = transfer_examples(suite.data)
    if mismatch:  # a cross-tokenizer method: the teacher's rows of the same examples beside
        data: Batch | PairedBatch = paired_batch(examples, tokenizer, teacher_tok, suite.data)
    else:
        data = encode_examples(examples, tokenizer, suite.data)
    bar = (
        tqdm(total=suite.budget.steps, desc=f"{job.method} -> {job.student} seed {job.seed}")
        if rank == 0
        else None
    )
    folder = Path(task.out_dir) / job.run_id
    sampler = on_policy_rollout(method, cfg, suite, tokenizer, job.seed)
    with PeakMemory() as memory:
        stats = train(
            student,
            method,
            cfg,
            data,
            suite.budget,
            suite.budget.steps,
            job.seed,
            teacher=teacher,
            ds_overrides=suite.deepspeed,
            progress=bar,
            checkpoint_dir=folder / "checkpoints",
            checkpoint_every=suite.resources.checkpoint_every,
            cache=cache,
            teacher_config=teacher_config,
            zero_stage=suite.resources.zero_stage,
            dtype=spec.dtype,
            rollout=sampler,
        )
    if bar is not None:
        bar.close()
    size = None
    if rank == 0:
        plain = merged(student.cpu())
        if spec.gradient_checkpointing:
            plain.config.use_cache = True  # for evaluation and generation
        size = save(plain, tokenizer, folder)
        (folder / STUDENT_INFO).write_text(
            json.dumps(
                {
                    "params": params,
                    "trainable_params": trainable,
                    "dtype": str(next(plain.parameters()).dtype).removeprefix("torch."),
                    "from_teacher_layers": spec.from_teacher_layers,
                    "gradient_checkpointing": spec.gradient_checkpointing,
                    "lora": dataclasses.asdict(spec.lora) if spec.lora else None,
                },
                indent=1,
            )
        )
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # saved: no resume needed
    return train_result(
        stats,
        path=str(folder),
        params=params,
        bytes=size,
        peak_rss_mb=memory.peak_mb,
        peak_private_mb=memory.peak_private_mb,
        signal_cache=cache is not None,
        world_size=torch.distributed.get_world_size(),
    )
