"""Score a model on the leaderboard tasks with lm-eval, in memory.

The tasks are lm-eval YAMLs under ``leaderboards/tasks`` (``kd_addition``, ``kd_compare``, ...),
installed as package data of ``kdbench_leaderboards``.
A model, whether built from scratch, just trained, or loaded with
``kdbench.models.load_pretrained``, is wrapped in lm-eval's ``HFLM`` as is, so every model is
scored through the same code path as a model from the Hub.

``evaluate`` leaves the model, the tokenizer and the global random state as it found them:
lm-eval switches the model to ``eval()`` and reseeds ``random``/``numpy``/``torch``.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kdbench_leaderboards
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Local lm-eval task YAMLs: the bundled ``kdbench_leaderboards/tasks`` package data (the
#: checkout's ``leaderboards/tasks``), a folder on disk; ``KDBENCH_TASKS_DIR`` overrides it.
TASKS_DIR = Path(os.environ.get("KDBENCH_TASKS_DIR") or kdbench_leaderboards.path("tasks"))

_LM_EVAL_LOGGERS = ("lm_eval",)
# lm-eval modules that draw tqdm bars (building requests, tokenizing, scoring, bootstrapping)
_TQDM_MODULES = (
    "lm_eval.api.task",
    "lm_eval.api.model",
    "lm_eval.api.metrics",
    "lm_eval.models.huggingface",
)
_SAMPLE_BOOTSTRAP_ITERS = 1000  # only for metrics without a closed-form stderr (mean has one)


def _task_manager(include_path: str | Path | list[str | Path] | None = None) -> Any:
    """A TaskManager over the local tasks only (indexing lm-eval's ~15k built-ins takes ~17 s)."""
    from lm_eval.tasks import TaskManager

    paths = include_path if isinstance(include_path, (list, tuple)) else [include_path or TASKS_DIR]
    missing = [str(p) for p in paths if not Path(p).is_dir()]
    if missing:
        raise FileNotFoundError(f"task folder(s) not found: {', '.join(missing)}")
    return TaskManager(include_path=[str(p) for p in paths], include_defaults=False)


def task_names(include_path: str | Path | list[str | Path] | None = None) -> list[str]:
    """Names of the tasks defined in ``include_path`` (default: ``TASKS_DIR``), sorted."""
    return list(_task_manager(include_path).all_subtasks)


def _check_tasks(tasks: list[str], known: list[str]) -> None:
    if not tasks:
        raise ValueError(f"no tasks given; known tasks: {', '.join(known)}")
    for name in tasks:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ValueError(f"unknown task {name!r}; {hint}known tasks: {', '.join(known)}")


def _silent_tqdm(tqdm_cls: Any) -> Any:
    """``tqdm_cls`` with ``disable=True`` forced (lm-eval passes its own ``disable=``)."""

    def make(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return tqdm_cls(*args, **kwargs)

    return make


def _no_env_info(storage: dict[str, Any]) -> None:
    """Stand-in for ``lm_eval.evaluator.add_env_info``, which shells out (pip, nvidia-smi, ...)
    for ~0.5 s per call to collect an environment report that ``evaluate`` does not return."""


def _no_git_hash() -> None:
    """Stand-in for ``lm_eval.evaluator.get_git_commit_hash`` (see :func:`_lm_eval_patched`)."""


@contextlib.contextmanager
def _lm_eval_patched(quiet: bool = True) -> Iterator[None]:
    """For the block: skip lm-eval's environment report and git call and, if ``quiet``, silence its
    INFO/WARNING logs and its per-request progress bars. Everything is restored on exit."""
    import importlib

    patches: list[tuple[Any, str, Any]] = []  # (module, attribute, replacement)
    evaluator = importlib.import_module("lm_eval.evaluator")
    if hasattr(evaluator, "add_env_info"):
        patches.append((evaluator, "add_env_info", _no_env_info))
    if hasattr(evaluator, "get_git_commit_hash"):
        # runs `git describe` in the working directory: outside a checkout (kdbench installed
        # from its wheel) git prints "fatal: not a git repository" on every evaluation;
        # kdbench records its own commit in each run's provenance
        patches.append((evaluator, "get_git_commit_hash", _no_git_hash))
    if quiet:
        for name in _TQDM_MODULES:
            module = importlib.import_module(name)
            if hasattr(module, "tqdm"):
                patches.append((module, "tqdm", _silent_tqdm(module.tqdm)))
    originals = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    levels = {logging.getLogger(n): logging.getLogger(n).level for n in _LM_EVAL_LOGGERS}
    for module, attr, replacement in patches:
        setattr(module, attr, replacement)
    if quiet:
        for logger in levels:
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
        for module, attr, original in originals:
            setattr(module, attr, original)


@contextlib.contextmanager
def _preserved_state(model: PreTrainedModel, device: str | None) -> Iterator[None]:
    """Move ``model`` to ``device`` for the block; restore its device, train mode and the RNGs."""
    was_training = model.training
    param = next(model.parameters(), None)
    original_device = param.device if param is not None else None
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    moved = device is not None and param is not None and torch.device(device) != param.device
    if moved:
        model.to(device)
    try:
        yield
    finally:
        if moved:
            model.to(original_device)
        model.train(was_training)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _as_float(value: Any) -> float | None:
    """lm-eval reports a missing stderr as ``"N/A"``; map that (and NaN) to None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _primary_metric(config: dict[str, Any], higher_is_better: dict[str, Any]) -> str | None:
    """The first metric the task config lists (its lm-eval default metric if it lists none)."""
    for entry in config.get("metric_list") or []:
        name = entry.get("metric") if isinstance(entry, dict) else None
        if isinstance(name, str):
            return name
        if callable(name):
            return name.__name__
    return next(iter(higher_is_better), None)


def _aggregations(config: dict[str, Any]) -> dict[str, str]:
    """How the task YAML says each metric is aggregated over questions (``mean``, ...)."""
    out = {}
    for entry in config.get("metric_list") or []:
        if isinstance(entry, dict) and isinstance(entry.get("metric"), str):
            agg = entry.get("aggregation")
            if agg is not None:
                out[entry["metric"]] = agg if isinstance(agg, str) else agg.__name__
    return out


def _filter_names(config: dict[str, Any]) -> list[str]:
    """The task's filter names in the order it lists them (lm-eval's default is ``none``)."""
    names = [f.get("name") for f in config.get("filter_list") or [] if isinstance(f, dict)]
    return [n for n in names if n] or ["none"]


def parse_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten ``lm_eval.simple_evaluate`` output into one row per (task, metric).

    Metric keys come as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"`` beside them.
    The filter name is dropped when the task has a single filter; with several, the metric is
    reported as ``"<metric>/<filter>"`` so the rows stay distinct.
    """
    rows: list[dict[str, Any]] = []
    for task, config in results.get("configs", {}).items():
        task_results = results["results"].get(task, {})
        hib = results.get("higher_is_better", {}).get(task, {})
        primary = _primary_metric(config, hib)
        aggregations = _aggregations(config)
        filters = _filter_names(config)
        keys = [k for k in task_results if "," in k]
        pairs = [tuple(k.split(",", 1)) for k in keys]
        metrics = {m for m, _ in pairs}
        pairs = [(m, f) for m, f in pairs if not (m.endswith("_stderr") and m[:-7] in metrics)]
        rank = {f: i for i, f in enumerate(filters)}
        used_filters = sorted({f for _, f in pairs}, key=lambda f: (rank.get(f, len(rank)), f))
        for metric, filt in pairs:
            first_filter = filt == used_filters[0]
            rows.append(
                {
                    "task": task,
                    "metric": metric if len(used_filters) == 1 else f"{metric}/{filt}",
                    "value": _as_float(task_results[f"{metric},{filt}"]),
                    "stderr": _as_float(task_results.get(f"{metric}_stderr,{filt}")),
                    "higher_is_better": hib.get(metric),
                    "is_primary": metric == primary and first_filter,
                    "aggregation": aggregations.get(metric),
                }
            )
    return rows


def question_samples(
    results: dict[str, Any], primary: dict[str, str], model: Any, tokenizer: Any
) -> list[dict[str, Any]]:
    """Per question: ``task``, ``doc_id``, ``correct`` (the primary metric's per-question value
    that lm-eval logged) and ``confidence``, the model's probability for its own answer:

    - multiple choice: softmax over the choices' log-likelihoods lm-eval computed, the maximum;
    - generation: ``exp`` of the mean log-probability of the generated tokens given the prompt,
      from one forward pass (lm-eval logs no generation scores).

    These feed the routing simulation (send the least confident questions to the teacher).
    """
    out: list[dict[str, Any]] = []
    for task, samples in (results.get("samples") or {}).items():
        metric = primary.get(task)
        first = _filter_names(results.get("configs", {}).get(task, {}))[0]
        for sample in samples:
            if sample.get("filter", first) != first:  # one row per question: the first filter
                continue
            value = _as_float(sample.get(metric)) if metric else None
            resps = sample.get("resps") or []
            confidence = None
            if resps and isinstance(resps[0][0], (tuple, list)):  # log-likelihoods per choice
                lls = torch.tensor([float(r[0][0]) for r in resps])
                confidence = float(torch.softmax(lls, 0).max())
            elif resps and isinstance(resps[0][0], str):
                confidence = _generation_confidence(
                    model, tokenizer, sample["arguments"][0][0], resps[0][0]
                )
            out.append(
                {
                    "task": task,
                    "doc_id": int(sample["doc_id"]),
                    "correct": value,
                    "confidence": confidence,
                }
            )
    return out


@torch.no_grad()
def _generation_confidence(model: Any, tokenizer: Any, prompt: str, answer: str) -> float | None:
    """``exp(mean log p(answer tokens | prompt))`` under ``model`` (None for an empty answer)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not a:
        return None
    ids = torch.tensor([p + a], device=model.device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0, len(p) - 1 : -1].float(), -1)
    return float(logp.gather(-1, ids[0, len(p) :, None]).mean().exp())


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[str],
    include_path: str | Path | list[str | Path] | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: str | None = "cpu",
    max_length: int | None = None,
    *,
    quiet: bool = True,
    samples: bool = False,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score ``model`` on ``tasks`` with lm-eval and return one row per (task, metric).

    Each row is ``{"task", "metric", "value", "stderr", "higher_is_better", "is_primary"}``:
    ``stderr`` is a float or None, ``higher_is_better`` is what the task YAML declares and
    ``is_primary`` marks the first metric it lists. ``device`` is where the model runs for the
    evaluation (None: where it already is); ``max_length`` overrides the context length that
    lm-eval otherwise reads from ``config.max_position_embeddings``; ``limit`` caps the number of
    documents per task (for tests). With ``samples``, returns ``(rows, questions)``, the second
    from :func:`question_samples`. Raises ValueError for an unknown task name.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    tasks = list(tasks)
    with _lm_eval_patched(quiet):
        manager = _task_manager(include_path)
        _check_tasks(tasks, list(manager.all_tasks))
        with _preserved_state(model, device):
            lm = HFLM(
                pretrained=model,
                tokenizer=tokenizer,
                device=device,
                batch_size=batch_size,
                max_length=max_length,
            )
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                task_manager=manager,
                limit=limit,
                log_samples=samples,
                bootstrap_iters=_SAMPLE_BOOTSTRAP_ITERS,
            )
    if results is None:  # only on non-zero ranks of a distributed run
        return ([], []) if samples else []
    order = {name: i for i, name in enumerate(tasks)}
    rows = sorted(parse_results(results), key=lambda row: order.get(row["task"], len(order)))
    if not samples:
        return rows
    primary = {r["task"]: r["metric"].split("/")[0] for r in rows if r["is_primary"]}
    with _preserved_state(model, device):
        return rows, question_samples(results, primary, model.eval(), tokenizer)
