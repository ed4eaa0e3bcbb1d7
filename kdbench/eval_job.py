"""The evaluation stage: one Ray task per trained student (and one for the teacher), returning
a :class:`kdbench.records.EvalResult`: lm-eval's metrics and per-question samples on the suite's
tasks, fidelity to the teacher and calibration (:mod:`kdbench.fidelity`), and the model's
inference speed. It runs on the job's GPU when it has one."""

from __future__ import annotations

import time

import torch

from kdbench.config import EvalSpec
from kdbench.evaluate import evaluate_suite
from kdbench.fidelity import evaluation_rows
from kdbench.models import load_pretrained, n_params
from kdbench.records import EvalResult, TeacherArtifacts, TrainResult
from kdbench.speed import inference_speed
from kdbench.workers import worker_setup


def eval_device() -> str:
    """Where an evaluation runs: the job's GPU when Ray gave it one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def eval_job(
    model: TrainResult | TeacherArtifacts,
    spec: EvalSpec,
    cpus: float,
    prompts: list[str] | None = None,
    dtype: str = "auto",
    reference: str | None = None,
) -> EvalResult:
    """Ray task: score a saved model with lm-eval on the suite's ``[eval]`` (loaded the way a
    Hub model is loaded, on :func:`eval_device`), keep its per-question results, and time its
    inference on ``prompts``.

    ``dtype`` is the model's ``[teacher]`` / ``[[students]]`` dtype
    (:func:`kdbench.models.resolve_dtype`; ``auto``: bf16 on a CUDA device that supports it,
    float32 on a CPU). ``reference`` is the teacher's fidelity reference file
    (:attr:`kdbench.records.TeacherArtifacts.fidelity`): the model's agreement with the
    teacher and KL from it are measured against it (not without one); the expected
    calibration error is measured either way.
    """
    started = time.time()
    worker_setup(cpus)
    device = eval_device()
    hf_model, tokenizer = load_pretrained(model.path, dtype)
    hf_model.to(device)
    start = time.perf_counter()
    metrics, samples = evaluate_suite(hf_model, tokenizer, spec, device=device, samples=True)
    extra, notes = evaluation_rows(hf_model, tokenizer, spec, samples, reference, device)
    wall = time.perf_counter() - start
    speed = inference_speed(hf_model, tokenizer, prompts) if prompts else {}
    return EvalResult(
        model=model,
        metrics=metrics + extra,
        samples=samples,
        eval_wall_s=wall,
        params=model.params or n_params(hf_model),
        infer_tokens_per_s=speed.get("infer_tokens_per_s"),
        infer_latency_ms=speed.get("infer_latency_ms"),
        eval_started=started,
        eval_ended=time.time(),
        notes=tuple(notes),
    )
