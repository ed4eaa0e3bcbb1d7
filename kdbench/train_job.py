"""The training stage: one Ray task per (method, student, seed), returning a
:class:`kdbench.records.TrainResult`.

The task (:func:`train_job`) runs :func:`train_worker` in its own process, or, with
``resources.workers_per_job`` > 1, drives a Ray Train group whose workers each run it
(:mod:`kdbench.distributed`). The worker loads the student and (only when the method's signals
are not all in the signal cache) the teacher, builds the method's training data, trains with
the suite's budget through DeepSpeed and, on rank 0, saves the student.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedTokenizerBase

from kdbench import distributed
from kdbench.config import ModelSpec, Suite
from kdbench.generations import training_examples
from kdbench.methods import Method, registry
from kdbench.models import (
    build_llama,
    load_pretrained,
    load_tokenizer,
    n_params,
    save,
    vocabulary_mismatch,
)
from kdbench.records import Job, TrainResult, TrainTask, train_result
from kdbench.signal_cache import SignalCache, open_cache
from kdbench.speed import PeakMemory
from kdbench.train import init_distributed, train
from kdbench.transfer import encode_examples, transfer_batch
from kdbench.workers import worker_setup


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
    spec: ModelSpec, job: Job, suite: Suite, teacher_tokenizer: PreTrainedTokenizerBase
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The student and its tokenizer: loaded from its ``source``, or built from its ``arch``
    with the teacher's tokenizer (so it shares the teacher's vocabulary by construction)."""
    if spec.source is not None:
        return load_pretrained(spec.source)
    model = build_llama(
        {**spec.arch, "max_length": suite.data.max_length}, teacher_tokenizer, seed=job.seed
    )
    return model, teacher_tokenizer


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
    live = method.needs_teacher and cache is None
    # the teacher's weights only when it runs live; its tokenizer and config always
    teacher_config = AutoConfig.from_pretrained(teacher_path)
    if live:
        teacher, teacher_tok = load_pretrained(teacher_path)
    else:
        teacher, teacher_tok = None, load_tokenizer(teacher_path)
    student, tokenizer = _student(spec, job, suite, teacher_tok)
    if method.needs_teacher:
        mismatch = vocabulary_mismatch(teacher_tok, tokenizer)
        if mismatch:
            raise ValueError(
                f"{job.method} needs a vocabulary shared with the teacher: {mismatch} "
                f"(student {spec.name})"
            )
    if method.data is not None:
        examples = training_examples(method, cfg, suite.data, task.generations)
        data = encode_examples(examples, tokenizer, suite.data)
    else:
        data = transfer_batch(suite.data, tokenizer)
    bar = (
        tqdm(total=suite.budget.steps, desc=f"{job.method} -> {job.student} seed {job.seed}")
        if rank == 0
        else None
    )
    folder = Path(task.out_dir) / job.run_id
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
        )
    if bar is not None:
        bar.close()
    size = None
    if rank == 0:
        size = save(student.cpu(), tokenizer, folder)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # saved: no resume needed
    return train_result(
        stats,
        path=str(folder),
        params=n_params(student),
        bytes=size,
        peak_rss_mb=memory.peak_mb,
        peak_private_mb=memory.peak_private_mb,
        signal_cache=cache is not None,
        world_size=torch.distributed.get_world_size(),
    )
