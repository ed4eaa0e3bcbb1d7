"""Score a model on a suite's evaluation tasks with lm-eval, in memory.

Tasks are named as lm-eval names them: kdbench's bundled YAMLs (``leaderboards/tasks``:
``kd_addition``, ``kd_compare``, ..., package data of ``kdbench_leaderboards``), the folders of
``KDBENCH_TASKS_DIR`` and of a suite's ``[eval] include``, all added together, and lm-eval's
built-in tasks, groups and tags (``gsm8k``, ``hellaswag``, ``mmlu``). The local folders are
indexed first; lm-eval's built-in index (~15k entries, 10-17 s) is built once per process, and
only when a name is not local (:func:`resolve_tasks`). :func:`load_tasks` builds the tasks
(their datasets loaded, from the local cache when offline) with their per-task options, once
per process; plan time calls it, so an unknown task, an unloadable dataset or an unknown
ranking metric is one line before anything runs.

A model, whether built from scratch, just trained, or loaded with
``kdbench.models.load_pretrained``, is wrapped in lm-eval's ``HFLM`` as is, so every model is
scored through the same code path as a model from the Hub.

``evaluate`` leaves the model, the tokenizer and the global random state as it found them:
lm-eval switches the model to ``eval()`` and reseeds ``random``/``numpy``/``torch``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import logging
import math
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kdbench_leaderboards
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdbench.config import EvalSpec, TaskOptions

#: kdbench's bundled lm-eval task YAMLs: the ``kdbench_leaderboards/tasks`` package data (the
#: checkout's ``leaderboards/tasks``), a folder on disk. ``KDBENCH_TASKS_DIR`` (folders joined
#: by ``os.pathsep``) and a suite's ``[eval] include`` folders are added to it.
TASKS_DIR = Path(kdbench_leaderboards.path("tasks"))

TaskOrGroup = Any  # lm_eval.api.task.Task | lm_eval.api.group.Group

_LM_EVAL_LOGGERS = ("lm_eval",)
# lm-eval modules that draw tqdm bars (building requests, tokenizing, scoring, bootstrapping)
_TQDM_MODULES = (
    "lm_eval.api.task",
    "lm_eval.api.model",
    "lm_eval.api.metrics",
    "lm_eval.models.huggingface",
)
_SAMPLE_BOOTSTRAP_ITERS = 1000  # only for metrics without a closed-form stderr (mean has one)


class TaskError(ValueError):
    """An evaluation task cannot be used: unknown name, unloadable dataset, unknown metric or
    filter. ``str()`` is one line; ``task`` names it and ``field`` the suite field to blame."""

    def __init__(self, task: str, message: str, field: str = "eval.tasks") -> None:
        self.task, self.field = task, field
        super().__init__(message)


def task_dirs(include: list[str | Path] | tuple[str | Path, ...] = ()) -> list[Path]:
    """The local task folders: the bundled one, ``KDBENCH_TASKS_DIR``'s and ``include``."""
    extra = [p for p in os.environ.get("KDBENCH_TASKS_DIR", "").split(os.pathsep) if p]
    out: list[Path] = []
    for p in [TASKS_DIR, *extra, *include]:
        path = Path(p).resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"task folder not found: {path}")
        if path not in out:
            out.append(path)
    return out


@functools.lru_cache(maxsize=16)
def _local_manager(dirs: tuple[str, ...], suite_dir: str | None = None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=list(dirs),
        include_defaults=False,
        metadata={"suite_dir": suite_dir} if suite_dir else None,
    )


def _task_manager(
    include_path: str | Path | list[str | Path] | None = None, suite_dir: str | None = None
) -> Any:
    """A TaskManager over the local tasks only (cached per process): the bundled folder,
    ``KDBENCH_TASKS_DIR`` and ``include_path`` (one folder or a list). lm-eval's ~15k
    built-ins are indexed apart, only when needed (:func:`_builtin_manager`, ~10-17 s).

    ``suite_dir`` (the suite file's folder) reaches every local task as ``suite_dir`` in its
    metadata, which lm-eval passes to a ``custom_dataset`` function: a task's data files can be
    named relative to the suite (``leaderboards/tasks/instruct_utils.py`` does)."""
    include = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    dirs = tuple(str(p) for p in task_dirs([p for p in include if p]))
    return _local_manager(dirs, suite_dir or None)


_BUILTIN: list[Any] = []  # lm-eval's built-in TaskManager, built at most once per process


def _builtin_manager() -> Any:
    """lm-eval's TaskManager over its built-in tasks, indexed once per process."""
    if not _BUILTIN:
        from lm_eval.tasks import TaskManager

        with _lm_eval_patched(quiet=True):
            _BUILTIN.append(TaskManager(include_defaults=True))
    return _BUILTIN[0]


def task_names(include_path: str | Path | list[str | Path] | None = None) -> list[str]:
    """Names of the local tasks (the bundled folder, ``KDBENCH_TASKS_DIR``, ``include_path``)."""
    return list(_task_manager(include_path).all_subtasks)


def resolve_tasks(
    tasks: list[str] | tuple[str, ...],
    include_path: str | Path | list[str | Path] | None = None,
    suite_dir: str | None = None,
) -> dict[str, Any]:
    """The TaskManager that knows each name: a local one, else lm-eval's built-in index (built
    only when a name is not local). Raises :class:`TaskError` naming an unknown task with the
    closest known names."""
    local = _task_manager(include_path, suite_dir)
    if not tasks:
        raise TaskError("", f"no tasks given; local tasks: {', '.join(local.all_tasks)}")
    out = {}
    for name in tasks:
        if name in local.task_index:
            out[name] = local
            continue
        builtin = _builtin_manager()
        if name in builtin.task_index:
            out[name] = builtin
            continue
        known = sorted(set(local.all_tasks) | set(builtin.all_tasks))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise TaskError(
            name,
            f"unknown task {name!r}; {hint}local tasks: {', '.join(local.all_tasks)}; "
            "or any of lm-eval's built-in tasks and groups (`lm_eval ls tasks`)",
        )
    return out


def _hub_reachable() -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within 3 s (cached): offline,
    ``datasets`` would otherwise retry for a minute before failing."""
    if not _HUB:
        import socket
        from urllib.parse import urlparse

        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=3).close()
            _HUB.append(True)
        except OSError:
            _HUB.append(False)
    return _HUB[0]


_HUB: list[bool] = []


@contextlib.contextmanager
def _offline_unless_reachable() -> Iterator[None]:
    """For the block: ``datasets`` in offline mode (its local cache only) when the Hub cannot
    be reached, so a missing dataset fails at once instead of after a minute of retries."""
    import datasets
    from huggingface_hub import constants

    if datasets.config.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _dataset_hint(manager: Any, name: str) -> str:
    """How to fetch a task's dataset beforehand, from its YAML (``dataset_path``/``_name``)."""
    entry = manager.task_index.get(name)
    cfg: dict[str, Any] = {}
    if entry is not None and entry.yaml_path is not None:
        from lm_eval.tasks._yaml_loader import load_yaml

        with contextlib.suppress(Exception):
            cfg = load_yaml(entry.yaml_path, resolve_func=False, recursive=True)
    if cfg.get("custom_dataset"):  # the task builds its data itself: its own error says how
        return "the task's custom_dataset function failed; see its message"
    path, sub = cfg.get("dataset_path"), cfg.get("dataset_name")
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files:
        return f"check its data files ({files})"
    fetch = f"run `lm_eval --tasks {name} --limit 1` once online"
    if path and entry is not None and entry.kind.name != "GROUP":
        args = repr(path) + (f", {sub!r}" if sub else "")
        fetch += f" or `datasets.load_dataset({args})` into HF_DATASETS_CACHE"
    return fetch + " (the cache is then used offline, HF_DATASETS_OFFLINE=1)"


def _loaded(obj: TaskOrGroup) -> list[Any]:
    """The leaf tasks of a task or group."""
    return list(obj.get_all_tasks()) if hasattr(obj, "get_all_tasks") else [obj]


_LOADED: dict[str, TaskOrGroup] = {}  # per process: json([name, dirs, options]) -> object


def load_tasks(
    tasks: list[str] | tuple[str, ...],
    include_path: str | Path | list[str | Path] | None = None,
    options: Mapping[str, TaskOptions] | None = None,
    suite_dir: str | None = None,
) -> dict[str, TaskOrGroup]:
    """Each named task or group built by lm-eval (its dataset loaded, from the local cache when
    offline), with its ``options`` (``num_fewshot``, ``gen_kwargs``) applied; cached per
    process. Raises :class:`TaskError` in one line for an unknown task, a dataset that cannot
    be loaded (with how to fetch it) or an unknown ranking ``metric``/``filter``."""
    options = options or {}
    managers = resolve_tasks(tasks, include_path, suite_dir)
    dirs = [str(p) for p in _task_manager(include_path, suite_dir).include_path]
    out = {}
    for name in tasks:
        opt = options.get(name, TaskOptions())
        key = json.dumps(
            [name, dirs, suite_dir, dataclasses.asdict(opt)], sort_keys=True, default=str
        )
        if key not in _LOADED:
            manager = managers[name]
            try:
                with _lm_eval_patched(quiet=True), _offline_unless_reachable(), _same_rng():
                    built = manager.load([name])
            except Exception as e:  # noqa: BLE001 - any failure of a dataset load is one line
                reason = " ".join(str(e).split())[:300] or type(e).__name__
                raise TaskError(
                    name,
                    f"task {name!r}: its dataset cannot be loaded ({type(e).__name__}: "
                    f"{reason}); {_dataset_hint(manager, name)}",
                ) from None
            obj = built["groups"].get(name) or built["tasks"].get(name)
            if obj is None:  # a tag: its tasks, ranked one by one, under one name
                from lm_eval.api.group import Group

                obj = Group(name=name)
                for task in built["tasks"].values():
                    obj.add(task)
            for task in _loaded(obj):
                if opt.num_fewshot is not None:
                    task.set_config(key="num_fewshot", value=opt.num_fewshot)
                if opt.gen_kwargs and task.get_config("output_type") == "generate_until":
                    task.set_config(
                        key="generation_kwargs", value=dict(opt.gen_kwargs), update=True
                    )
            check_ranking(name, obj, opt)
            _LOADED[key] = obj
        out[name] = _LOADED[key]
    return out


def _metrics_and_filters(obj: TaskOrGroup) -> tuple[list[str], list[str]]:
    """The metric and filter names a task reports (for a group: what it aggregates, or its
    tasks' when it aggregates nothing)."""
    aggregate = getattr(obj, "aggregate_metric_list", None)
    if aggregate:
        metrics = [a.metric for a in aggregate]
        filters = [f for a in aggregate for f in (a.filter_list or ["none"])]
    elif hasattr(obj, "get_all_tasks"):
        metrics, filters = [], []
        for task in obj.get_all_tasks():
            m, f = _metrics_and_filters(task)
            metrics += [x for x in m if x not in metrics]
            filters += [x for x in f if x not in filters]
    else:
        metrics = list(obj._metric_fn_list)
        filters = [f.name for f in obj._filters]
    return list(dict.fromkeys(metrics)), list(dict.fromkeys(filters))


def check_ranking(name: str, obj: TaskOrGroup, options: TaskOptions) -> None:
    """Raise :class:`TaskError` when ``options.metric`` / ``options.filter`` is not one the
    task reports."""
    metrics, filters = _metrics_and_filters(obj)
    for what, value, known in (
        ("metric", options.metric, metrics),
        ("filter", options.filter, filters),
    ):
        if value is not None and value not in known:
            raise TaskError(
                name,
                f"task {name!r} has no {what} {value!r}; it reports: {', '.join(known)}"
                + _did_you_mean(value, known),
                field=f"eval.options.{name}.{what}",
            )


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
def _same_rng() -> Iterator[None]:
    """Restore the global random states on exit (building a task may draw from them)."""
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


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


Ranking = Mapping[str, tuple[str | None, str | None]]
"""Per task or group: the (metric, filter) that ranks; None parts: what the task declares."""


def _descendants(group: str, subtasks: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for child in subtasks.get(group, []):
        out += [child, *_descendants(child, subtasks)]
    return out


def _metric_rows(
    task: str,
    task_results: dict[str, Any],
    hib: dict[str, Any],
    primary: str | None,
    filters: list[str],
    aggregations: dict[str, str],
    may_rank: bool,
) -> list[dict[str, Any]]:
    """The rows of one task or group from its ``"<metric>,<filter>"`` result keys."""
    pairs = [tuple(k.split(",", 1)) for k in task_results if "," in k]
    metrics = {m for m, _ in pairs}
    pairs = [(m, f) for m, f in pairs if not (m.endswith("_stderr") and m[:-7] in metrics)]
    rank = {f: i for i, f in enumerate(filters)}
    used_filters = sorted({f for _, f in pairs}, key=lambda f: (rank.get(f, len(rank)), f))
    if primary is None or primary not in metrics:
        primary = pairs[0][0] if pairs else None
    rows = []
    for metric, filt in pairs:
        rows.append(
            {
                "task": task,
                "metric": metric if len(used_filters) == 1 else f"{metric}/{filt}",
                "value": _as_float(task_results[f"{metric},{filt}"]),
                "stderr": _as_float(task_results.get(f"{metric}_stderr,{filt}")),
                "higher_is_better": hib.get(metric),
                "is_primary": may_rank and metric == primary and filt == used_filters[0],
                "aggregation": aggregations.get(metric),
            }
        )
    return rows


def _leaf_ranking(
    results: dict[str, Any], ranking: Ranking
) -> tuple[dict[str, tuple[str | None, list[str]]], dict[str, str], list[str]]:
    """Per leaf task: (ranking metric, filters in ranking order); the top-level group that
    owns each leaf; the top-level groups that report metrics."""
    subtasks = results.get("group_subtasks") or {}
    groups = [g for g, r in (results.get("groups") or {}).items() if any("," in k for k in r)]
    covered = {d for g in groups for d in _descendants(g, subtasks)}
    top = [g for g in groups if g not in covered]
    owner = {d: g for g in subtasks if g not in covered for d in _descendants(g, subtasks)}
    out = {}
    for task, config in results.get("configs", {}).items():
        hib = results.get("higher_is_better", {}).get(task, {})
        metric, filt = ranking.get(task) or ranking.get(owner.get(task, ""), (None, None))
        filters = _filter_names(config)
        if filt is not None:
            filters = [filt, *[f for f in filters if f != filt]]
        out[task] = (metric or _primary_metric(config, hib), filters)
    return out, owner, top


def parse_results(results: dict[str, Any], ranking: Ranking | None = None) -> list[dict[str, Any]]:
    """Flatten ``lm_eval.simple_evaluate`` output into one row per (task, metric).

    Metric keys come as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"`` beside them.
    The filter name is dropped when the task has a single filter; with several, the metric is
    reported as ``"<metric>/<filter>"`` so the rows stay distinct. The primary row of a task is
    ``ranking``'s (metric, filter) for it, else the first metric and filter its YAML lists. A
    group that aggregates its tasks (``mmlu``) has rows of its own and its row ranks; its
    tasks' rows are then kept, none primary.
    """
    ranking = ranking or {}
    leaves, owner, top = _leaf_ranking(results, ranking)
    top_with_rows = set(top)
    rows: list[dict[str, Any]] = []
    for task, config in results.get("configs", {}).items():
        metric, filters = leaves[task]
        rows += _metric_rows(
            task,
            results["results"].get(task, {}),
            results.get("higher_is_better", {}).get(task, {}),
            metric,
            filters,
            _aggregations(config),
            may_rank=owner.get(task) not in top_with_rows,
        )
    subtasks = results.get("group_subtasks") or {}
    for group, group_results in (results.get("groups") or {}).items():
        metric, filt = ranking.get(group, (None, None))
        leaf = next((t for t in _descendants(group, subtasks) if t in leaves), None)
        filters = [filt] if filt else (leaves[leaf][1] if leaf else [])
        rows += _metric_rows(
            group,
            group_results,
            results.get("higher_is_better", {}).get(group, {}),
            metric,
            filters,
            {},
            may_rank=group in top_with_rows,
        )
    return rows


def question_samples(
    results: dict[str, Any],
    primary: dict[str, str],
    model: Any,
    tokenizer: Any,
    filters: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per question: ``task``, ``doc_id``, ``correct`` (the primary metric's per-question value
    that lm-eval logged, under the ranking filter: ``filters[task]``, else the task's first)
    and ``confidence``, the model's probability for its own answer:

    - multiple choice: softmax over the choices' log-likelihoods lm-eval computed, the maximum;
    - generation: ``exp`` of the mean log-probability of the generated tokens given the prompt,
      from one forward pass (lm-eval logs no generation scores).

    These feed the routing simulation (send the least confident questions to the teacher).
    """
    out: list[dict[str, Any]] = []
    filters = filters or {}
    for task, samples in (results.get("samples") or {}).items():
        metric = primary.get(task)
        first = filters.get(task) or _filter_names(results.get("configs", {}).get(task, {}))[0]
        for sample in samples:
            if sample.get("filter", first) != first:  # one row per question: one filter
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


CHANCE = "chance"
"""The extra, non-primary metric row of a multiple-choice task (or a group of them): the score
of guessing, ``1 / number of choices`` averaged over the documents scored (stderr 0: exact)."""


def _chance(task: Any) -> tuple[float, int] | None:
    """(chance level, documents) of a scored multiple-choice task, from its requests."""
    if getattr(task, "OUTPUT_TYPE", None) != "multiple_choice" or not task.instances:
        return None
    per_doc: dict[int, int] = {}
    for inst in task.instances:
        per_doc[inst.doc_id] = per_doc.get(inst.doc_id, 0) + 1
    return sum(1 / n for n in per_doc.values()) / len(per_doc), len(per_doc)


def _chance_rows(loaded: dict[str, TaskOrGroup]) -> list[dict[str, Any]]:
    """A :data:`CHANCE` row per multiple-choice task, and per group of them (the doc-weighted
    mean of its tasks')."""
    rows = []
    for name, obj in loaded.items():
        leaves = _loaded(obj)
        levels = {t.config.task: c for t in leaves if (c := _chance(t)) is not None}
        named = dict(levels)
        if levels and len(levels) == len(leaves) and name not in levels:
            n = sum(k for _, k in levels.values())
            named[name] = (sum(c * k for c, k in levels.values()) / n, n)
        for task, (value, _) in named.items():
            rows.append(
                {
                    "task": task,
                    "metric": CHANCE,
                    "value": value,
                    "stderr": 0.0,  # exact over the documents scored: no sampling error
                    "higher_is_better": True,
                    "is_primary": False,
                    "aggregation": "mean",
                }
            )
    return rows


_MERGED = ("results", "groups", "group_subtasks", "configs", "higher_is_better", "samples")


def lm_eval_results(
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
    options: Mapping[str, TaskOptions] | None = None,
    suite_dir: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """lm-eval's own output for ``tasks`` (the arguments of :func:`evaluate`): the
    ``simple_evaluate`` results of every call merged (``results``, ``groups``,
    ``group_subtasks``, ``configs``, ``higher_is_better`` and, with ``samples``, lm-eval's
    logged ``samples`` per task: arguments, responses, targets), and the :data:`CHANCE` rows.
    None on the non-zero ranks of a distributed run. Leaves the model and the random state as
    it found them."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    tasks = list(tasks)
    options = dict(options or {})
    with _lm_eval_patched(quiet):
        loaded = load_tasks(tasks, include_path, options, suite_dir)
        calls: dict[tuple[int | None, bool], list[str]] = {}
        for name in tasks:
            opt = options.get(name, TaskOptions())
            key = (limit if opt.limit is None else opt.limit, bool(opt.chat_template))
            calls.setdefault(key, []).append(name)
        merged: dict[str, Any] = {k: {} for k in _MERGED}
        chance: list[dict[str, Any]] = []
        with _preserved_state(model, device):
            lm = HFLM(
                pretrained=model,
                tokenizer=tokenizer,
                device=device,
                batch_size=batch_size,
                max_length=max_length,
            )
            for (call_limit, chat), names in calls.items():
                results = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=[loaded[n] for n in names],
                    task_manager=_task_manager(include_path, suite_dir),
                    limit=call_limit,
                    log_samples=samples,
                    bootstrap_iters=_SAMPLE_BOOTSTRAP_ITERS,
                    apply_chat_template=chat,
                    fewshot_as_multiturn=chat,
                )
                if results is None:  # only on non-zero ranks of a distributed run
                    return None
                for k in _MERGED:
                    merged[k].update(results.get(k) or {})
                chance += _chance_rows({n: loaded[n] for n in names})
    return merged, chance


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
    options: Mapping[str, TaskOptions] | None = None,
    suite_dir: str | None = None,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score ``model`` on ``tasks`` with lm-eval and return one row per (task, metric).

    Each row is ``{"task", "metric", "value", "stderr", "higher_is_better", "is_primary",
    "aggregation"}``: ``stderr`` is a float or None, ``higher_is_better`` is what the task YAML
    declares and ``is_primary`` marks the metric that ranks (:func:`parse_results`); a
    multiple-choice task also gets a :data:`CHANCE` row. ``tasks`` are local tasks (the bundled
    folder, ``KDBENCH_TASKS_DIR``, ``include_path``: one folder or a list) or lm-eval
    built-ins and groups. ``options`` per task: ``num_fewshot``, ``limit`` (else ``limit``),
    ``gen_kwargs``, ``chat_template`` and the ranking ``metric``/``filter``; tasks with the same
    limit and chat template are scored by one ``simple_evaluate`` call (lm-eval applies both to
    every task of a call). ``device`` is where the model runs (None: where it already is);
    ``max_length`` overrides the context length lm-eval reads from
    ``config.max_position_embeddings``. With ``samples``, returns ``(rows, questions)``, the
    second from :func:`question_samples`. Raises :class:`TaskError` (a ValueError) for an
    unknown task, an unloadable dataset or an unknown ranking metric or filter. ``suite_dir``:
    see :func:`_task_manager`.
    """
    tasks = list(tasks)
    options = dict(options or {})
    out = lm_eval_results(
        model,
        tokenizer,
        tasks,
        include_path,
        limit,
        batch_size,
        device,
        max_length,
        quiet=quiet,
        samples=samples,
        options=options,
        suite_dir=suite_dir,
    )
    if out is None:  # only on non-zero ranks of a distributed run
        return ([], []) if samples else []
    merged, chance = out
    ranking = {n: (o.metric, o.filter) for n, o in options.items()}
    order = {name: i for i, name in enumerate(tasks)}
    rows = sorted(
        parse_results(merged, ranking) + chance,
        key=lambda row: order.get(row["task"], len(order)),
    )
    if not samples:
        return rows
    leaves, _, _ = _leaf_ranking(merged, ranking)
    primary = {t: m for t, (m, _) in leaves.items() if m}
    filters = {t: f[0] for t, (_, f) in leaves.items() if f}
    with _preserved_state(model, device):
        return rows, question_samples(merged, primary, model.eval(), tokenizer, filters)


def suite_arguments(spec: EvalSpec, limit: int | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate` (and :func:`lm_eval_results`) for a suite's
    ``[eval]``: its tasks, include folders, limit (``limit``, when given, replaces the suite's
    default), batch size, per-task options and suite folder."""
    return {
        "tasks": list(spec.tasks),
        "include_path": spec.include_dirs,
        "limit": spec.limit if limit is None else limit,
        "batch_size": spec.batch_size,
        "options": {t: spec.task_options(t) for t in spec.tasks},
        "suite_dir": spec.root or None,
    }


def evaluate_suite(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: EvalSpec,
    device: str | None = "cpu",
    *,
    samples: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`evaluate` on a suite's ``[eval]``: its tasks, include folders, defaults and
    per-task options (``limit``, when given, replaces the suite's default limit)."""
    return evaluate(
        model, tokenizer, device=device, samples=samples, **suite_arguments(spec, limit)
    )
