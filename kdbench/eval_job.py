"""The evaluation stage: one Ray task per trained student (and one for the teacher), returning
a :class:`kdbench.records.EvalResult`: lm-eval's metrics and per-question samples on the suite's
tasks, fidelity to the teacher and calibration (:mod:`kdbench.fidelity`), and the model's
inference speed. It runs on the job's GPU when it has one.

With ``[eval] quantize``, the same task then quantises the loaded model to each scheme
(:mod:`kdbench.quantize`), saves it, and scores it again: one :class:`QuantizedEval` each."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

import torch

from kdbench.config import EvalSpec
from kdbench.evaluate import evaluate_suite
from kdbench.fidelity import evaluation_rows
from kdbench.models import load_pretrained, n_params
from kdbench.records import EvalResult, QuantizedEval, TeacherArtifacts, TrainResult
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
    quant_dirs: Mapping[str, str] | None = None,
    reference: str | None = None,
) -> EvalResult:
    """Ray task: score a saved model with lm-eval on the suite's ``[eval]`` (loaded the way a
    Hub model is loaded, on :func:`eval_device`), keep its per-question results, and time its
    inference on ``prompts``; then each scheme of ``spec.quantize`` (:func:`quantized_evals`),
    saved under ``quant_dirs[scheme]``.

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
    ended = time.time()
    params = model.params or n_params(hf_model)
    quantized = quantized_evals(
        hf_model, tokenizer, spec, device, dict(quant_dirs or {}), prompts, params
    )
    return EvalResult(
        model=model,
        metrics=metrics + extra,
        samples=samples,
        eval_wall_s=wall,
        params=params,
        infer_tokens_per_s=speed.get("infer_tokens_per_s"),
        infer_latency_ms=speed.get("infer_latency_ms"),
        eval_started=started,
        eval_ended=ended,
        quantized=quantized,
        notes=tuple(notes),
    )


def quantized_evals(
    model: Any,
    tokenizer: Any,
    spec: EvalSpec,
    device: str,
    dirs: dict[str, str],
    prompts: list[str] | None,
    params: int,
) -> tuple[QuantizedEval, ...]:
    """Each scheme of ``spec.quantize``, in order: ``model`` quantised weight-only, saved under
    ``dirs[scheme]``, scored on the same tasks and timed on the same ``prompts``. The last
    scheme quantises ``model`` itself (it is not scored again), the others a copy. A scheme
    the library cannot apply to this model here is returned with its ``error``, the others go
    on."""
    if not spec.quantize:
        return ()
    from kdbench import quantize as q

    out = []
    for i, scheme in enumerate(spec.quantize):
        path = dirs[scheme]
        start = time.perf_counter()
        try:
            done = q.quantize(model, scheme, copy_model=i < len(spec.quantize) - 1)
            size = q.save_quantized(done.model, tokenizer, path)
            quantize_s = time.perf_counter() - start
            start = time.perf_counter()
            metrics, samples = evaluate_suite(
                done.model, tokenizer, spec, device=device, samples=True
            )
            wall = time.perf_counter() - start
            speed = inference_speed(done.model, tokenizer, prompts) if prompts else {}
        except Exception:  # noqa: BLE001 - one scheme failing fails only its own row
            out.append(QuantizedEval(scheme, path, q.library(), error=traceback.format_exc()))
            continue
        out.append(
            QuantizedEval(
                scheme,
                path,
                done.library,
                bytes=size,
                params=params,
                quantized_params=done.quantized_params,
                metrics=metrics,
                samples=samples,
                quantize_s=quantize_s,
                eval_wall_s=wall,
                infer_tokens_per_s=speed.get("infer_tokens_per_s"),
                infer_latency_ms=speed.get("infer_latency_ms"),
            )
        )
    return tuple(out)
