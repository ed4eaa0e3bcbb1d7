"""The evaluation stage: one Ray task per trained student (and one for the teacher), returning
a :class:`kdbench.records.EvalResult`: lm-eval's metrics and per-question samples on the suite's
tasks, and the model's inference speed."""

from __future__ import annotations

import time

from kdbench.evaluate import evaluate
from kdbench.models import load_pretrained, n_params
from kdbench.records import EvalResult, TeacherArtifacts, TrainResult
from kdbench.speed import inference_speed
from kdbench.workers import worker_setup


def eval_job(
    model: TrainResult | TeacherArtifacts,
    tasks: list[str],
    limit: int | None,
    batch_size: int,
    cpus: float,
    prompts: list[str] | None = None,
) -> EvalResult:
    """Ray task: score a saved model with lm-eval (loaded the way a Hub model is loaded), keep
    its per-question results, and time its inference on ``prompts``."""
    started = time.time()
    worker_setup(cpus)
    hf_model, tokenizer = load_pretrained(model.path)
    start = time.perf_counter()
    metrics, samples = evaluate(
        hf_model, tokenizer, tasks, limit=limit, batch_size=batch_size, samples=True
    )
    wall = time.perf_counter() - start
    speed = inference_speed(hf_model, tokenizer, prompts) if prompts else {}
    return EvalResult(
        model=model,
        metrics=metrics,
        samples=samples,
        eval_wall_s=wall,
        params=model.params or n_params(hf_model),
        infer_tokens_per_s=speed.get("infer_tokens_per_s"),
        infer_latency_ms=speed.get("infer_latency_ms"),
        eval_started=started,
        eval_ended=time.time(),
    )
