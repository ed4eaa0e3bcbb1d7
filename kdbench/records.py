"""The typed records that pass between the pipeline's stages.

``plan`` -> :class:`Job` per (method, student, seed); the teacher stage ->
:class:`TeacherArtifacts`; a training job -> :class:`TrainResult`; an evaluation job ->
:class:`EvalResult` (with a :class:`QuantizedEval` per quantised variant);
:mod:`kdbench.costs` turns them into the stored cost columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """One training run: a method (with its resolved config) on one student with one seed."""

    run_id: str
    method: str
    student: str
    seed: int
    config: dict[str, Any]


@dataclass(frozen=True)
class TrainTask:
    """What a training job is given: the suite, the job, where the teacher and its shared
    artefacts are (the teacher stage's generations file and signal-cache entry, if any), where
    to save the student, and the CPUs it holds."""

    suite: Any  # kdbench.config.Suite
    job: Job
    teacher_path: str
    out_dir: str
    cpus: float
    generations: str | None = None
    cache_path: str | None = None


@dataclass(frozen=True)
class SignalCacheInfo:
    """The teacher-signal cache entry of a suite (:mod:`kdbench.signal_cache`)."""

    path: str
    built: bool  # False: an existing entry was verified
    signals: tuple[str, ...]
    topk: int  # 0: full logits
    bytes: int
    bytes_per_token: float
    teacher_tokens: int  # tokens the teacher ran on to build it


@dataclass(frozen=True)
class TeacherArtifacts:
    """What the teacher stage made, once per suite: the teacher's folder (loaded, trained or
    found in the cache), its generations on the transfer set, the signal-cache entry and its
    reference distributions on the evaluation tokens (:mod:`kdbench.fidelity`)."""

    path: str
    cached: bool  # a built teacher found in the cache
    trained: bool  # built and trained now
    params: int | None = None
    bytes: int | None = None  # the saved weights (None: a teacher given by source)
    tokens: int | None = None  # training tokens of a built teacher
    steps: int | None = None
    train_wall_s: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    generations: str | None = None  # the generations JSONL file
    signal_cache: SignalCacheInfo | None = None
    fidelity: str | None = None  # the teacher's reference file (kdbench.fidelity)
    fidelity_note: str | None = None  # why there is none, when building it failed

    @property
    def how(self) -> str:
        return "loaded from cache" if self.cached else "trained" if self.trained else "loaded"


@dataclass(frozen=True)
class TrainResult:
    """A finished training job: the saved student and what the job measured."""

    path: str
    params: int
    bytes: int | None  # the saved weights; None on ranks other than 0
    tokens: int
    steps: int
    train_wall_s: float
    final_loss: float
    resumed_from: int
    teacher_forwards: int  # sequences the live teacher ran on (0 with the signal cache)
    peak_rss_mb: float | None
    peak_private_mb: float | None
    signal_cache: bool  # the teacher's signals came from the cache
    world_size: int
    job_started: float = 0.0  # epoch seconds, set by the Ray task around the worker(s)
    job_ended: float = 0.0
    sequences: int = 0  # sequences trained on, all workers (steps x batch size)
    generation_wall_s: float = 0.0  # sampling the student (on-policy), part of train_wall_s
    generated_tokens: int = 0  # tokens the student sampled, all workers
    generated_sequences: int = 0


def train_result(stats: dict[str, Any], **fields: Any) -> TrainResult:
    """A :class:`TrainResult` from :func:`kdbench.train.train`'s statistics and the job's own
    fields (``path``, ``params``, ``bytes``, memory, cache use, world size)."""
    keys = (
        "tokens",
        "steps",
        "train_wall_s",
        "final_loss",
        "resumed_from",
        "teacher_forwards",
        "sequences",
    )
    sampled = ("generation_wall_s", "generated_tokens", "generated_sequences")
    return TrainResult(
        **{k: stats[k] for k in keys}, **{k: stats.get(k, 0) for k in sampled}, **fields
    )


@dataclass(frozen=True)
class QuantizedEval:
    """One weight-only quantised variant of a scored model (:mod:`kdbench.quantize`), scored
    in the same evaluation job: where its weights were saved and their bytes, the parameters
    stored quantised, lm-eval's metrics and per-question samples, the seconds it took
    (quantise + save, then score) and its inference speed; or the ``error`` (a traceback) when
    the library could not quantise this model on this device."""

    scheme: str
    path: str
    library: str
    bytes: int | None = None
    params: int | None = None
    quantized_params: int | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    quantize_s: float = 0.0
    eval_wall_s: float = 0.0
    infer_tokens_per_s: float | None = None
    infer_latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class EvalResult:
    """A scored model (a trained student, or the teacher): lm-eval metrics with stderr (and
    the fidelity and calibration rows of :mod:`kdbench.fidelity`), the per-question samples,
    the inference speed and ``notes`` on what was not measured; and its quantised variants, if
    the suite asks for them."""

    model: TrainResult | TeacherArtifacts
    metrics: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    eval_wall_s: float
    params: int
    infer_tokens_per_s: float | None = None
    infer_latency_ms: float | None = None
    eval_started: float = 0.0
    eval_ended: float = 0.0
    quantized: tuple[QuantizedEval, ...] = ()  # the suite's [eval] quantize, in its order
    notes: tuple[str, ...] = ()
