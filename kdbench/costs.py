"""What each run cost, computed in one place: the stored cost columns of a run
(:data:`kdbench.store.COST_COLUMNS`) from its :class:`kdbench.records.EvalResult`.

- wall times: training, evaluation, and the run's total from submission to storage;
- FLOPs (:mod:`kdbench.speed`, Kaplan et al. 2020): ``train_flops = 6 N_S D`` for the student's
  ``D`` training tokens plus ``2 N_T`` per token the live teacher ran on, plus, for an
  on-policy method, ``generation_flops = 2 N_S G`` for the ``G`` tokens the student sampled
  (one forward per sampled token with the KV cache); ``generation_s`` is the sampling part of
  ``train_wall_s`` (the teacher's scoring of the samples is in ``live_teacher_flops``);
  ``teacher_flops`` = the run's share of the teacher passes made once per suite: one pass over
  the transfer set for the signal cache, divided among the runs that read it, and one for the
  generations, divided among the runs that train on them. The teacher's own row carries its
  training FLOPs;
- ``device_hours`` = (train + eval wall time) x devices held (GPUs, else CPU cores, times the
  workers of a job): GPU-hours on GPUs, core-hours on CPUs;
- ``queue_s``: from submission to the training task's start;
- the budget audit: ``sequences`` trained on (steps x batch size when the job ran its budget)
  and ``live_teacher_flops``, the teacher forwards of a live teacher during training (part of
  ``train_flops``): the teacher-side compute charged to a run is ``teacher_flops +
  live_teacher_flops``; the leaderboard flags a run whose steps or sequences are not its
  suite's ``[budget]``;
- size (``params``, ``bytes`` of the saved weights), tokens, steps, resume, memory, teacher
  forwards and inference speed, as the jobs measured them.

A quantised variant (``[eval] quantize``) is charged its parent's training and teacher costs
(it is the same trained model, quantised) plus its own quantisation and evaluation
(:func:`quantized_costs`).

Prices are not stored: the leaderboard multiplies ``device_hours`` by a price table at read time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdbench.config import Suite
from kdbench.generations import load_generations
from kdbench.methods import Method
from kdbench.records import EvalResult, Job, QuantizedEval, TeacherArtifacts, TrainResult
from kdbench.speed import forward_flops, train_flops


@dataclass(frozen=True)
class TeacherShares:
    """Each run's share of the teacher passes made once per suite."""

    cache_runs: frozenset[str]  # run ids that read the signal cache
    cache_flops: float  # FLOPs per such run
    generation_runs: frozenset[str]  # run ids that train on the teacher's generations
    generation_flops: float  # FLOPs per such run


def teacher_shares(
    jobs: Sequence[Job], methods: Mapping[str, Method], teacher: TeacherArtifacts
) -> TeacherShares:
    """Split the signal-cache pass among the runs whose per-batch signals it covers, and the
    generation pass among the runs that declare ``generations``."""
    t_params = teacher.params or 0
    entry = teacher.signal_cache
    cache_runs = frozenset(
        j.run_id
        for j in jobs
        if entry is not None
        and methods[j.method].data is None
        and (wanted := set(methods[j.method].signals) - {"generations"})
        and wanted <= set(entry.signals)
    )
    gen_runs = frozenset(j.run_id for j in jobs if "generations" in methods[j.method].signals)
    cache_flops = (
        forward_flops(t_params, entry.teacher_tokens) / len(cache_runs)
        if cache_runs and entry is not None
        else 0.0
    )
    gen_flops = (
        forward_flops(t_params, generation_tokens(teacher.generations)) / len(gen_runs)
        if gen_runs and teacher.generations
        else 0.0
    )
    return TeacherShares(cache_runs, cache_flops, gen_runs, gen_flops)


def generation_tokens(path: str | None) -> int:
    """Characters of prompts and generations in a generations file: with kdbench's character
    tokenizer, its token count (an estimate for other tokenizers)."""
    if not path:
        return 0
    return sum(len(r.get("prompt", "")) + len(r.get("text", "")) for r in load_generations(path))


def devices_per_run(suite: Suite) -> float:
    """Devices a run holds: GPUs per job (else CPU cores) times workers per job."""
    res = suite.resources
    return (res.gpus_per_job or res.cpus_per_job) * res.workers_per_job


def run_costs(
    result: EvalResult,
    suite: Suite,
    total_wall_s: float,
    *,
    job: Job | None = None,
    shares: TeacherShares | None = None,
    teacher_params: int = 0,
    submitted: float | None = None,
) -> dict[str, Any]:
    """The cost columns of one stored run: a student's (``job`` given) or the teacher's."""
    model = result.model
    tokens = model.tokens or 0
    costs: dict[str, Any] = {
        "train_wall_s": model.train_wall_s,
        "eval_wall_s": result.eval_wall_s,
        "total_wall_s": total_wall_s,
        "params": result.params,
        "bytes": model.bytes,
        "tokens": model.tokens,
        "steps": model.steps,
        "infer_tokens_per_s": result.infer_tokens_per_s,
        "infer_latency_ms": result.infer_latency_ms,
    }
    if isinstance(model, TrainResult):
        assert job is not None and shares is not None
        batches = max(1, model.sequences or suite.budget.steps * suite.budget.batch_size)
        live_tokens = tokens * model.teacher_forwards / batches
        live = forward_flops(teacher_params, live_tokens)
        sampling = forward_flops(result.params, model.generated_tokens)
        costs["train_flops"] = train_flops(result.params, tokens) + live + sampling
        costs["live_teacher_flops"] = live
        costs["generation_s"] = model.generation_wall_s
        costs["generated_tokens"] = model.generated_tokens
        costs["generation_flops"] = sampling
        costs["sequences"] = model.sequences
        costs["teacher_flops"] = (
            shares.cache_flops if job.run_id in shares.cache_runs and model.signal_cache else 0.0
        ) + (shares.generation_flops if job.run_id in shares.generation_runs else 0.0)
        costs["resumed_from"] = model.resumed_from
        costs["peak_rss_mb"] = model.peak_rss_mb
        costs["teacher_forwards"] = model.teacher_forwards
        costs["queue_s"] = model.job_started - submitted if submitted is not None else None
    else:  # the teacher: its own training, once per suite
        costs["train_flops"] = train_flops(result.params, tokens) if tokens else None
        costs["teacher_flops"] = costs["train_flops"]
    hours = ((model.train_wall_s or 0) + (result.eval_wall_s or 0)) / 3600
    costs["device_hours"] = hours * devices_per_run(suite)
    return costs


def quantized_costs(parent: Mapping[str, Any], q: QuantizedEval, suite: Suite) -> dict[str, Any]:
    """The cost columns of a quantised variant: its full-precision ``parent``'s (training,
    tokens, FLOPs, memory), with its own size (``bytes`` of the quantised weights file,
    ``quantized_params``), evaluation (``eval_wall_s``: quantise, save and score;
    ``total_wall_s`` the same), inference speed and device-hours (the parent's training plus
    this evaluation)."""
    costs = dict(parent)
    eval_s = q.quantize_s + q.eval_wall_s
    costs.update(
        bytes=q.bytes,
        params=q.params if q.params is not None else parent.get("params"),
        quantized_params=q.quantized_params,
        eval_wall_s=eval_s,
        total_wall_s=eval_s,
        infer_tokens_per_s=q.infer_tokens_per_s,
        infer_latency_ms=q.infer_latency_ms,
        queue_s=None,
    )
    hours = ((parent.get("train_wall_s") or 0) + eval_s) / 3600
    costs["device_hours"] = hours * devices_per_run(suite)
    return costs
