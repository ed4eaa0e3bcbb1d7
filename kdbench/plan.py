"""Planning: a validated suite becomes its jobs, one per (method, student, seed), and every
input error surfaces here, before Ray starts or anything is written: unknown methods and method
configs, unknown evaluation tasks, and students whose vocabulary differs from the teacher's for
methods that compare them token by token."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable
from typing import Any

from transformers import PreTrainedTokenizerBase

from kdbench import __version__, contamination
from kdbench.config import ModelSpec, Suite, SuiteError
from kdbench.contamination import ContaminationReport
from kdbench.data_sources import DataError, load_examples
from kdbench.evaluate import TaskError, TaskOrGroup, load_tasks, resolve_tasks
from kdbench.methods import Method, MethodError, registry, resolve
from kdbench.models import default_tokenizer, load_tokenizer, vocabulary_mismatch
from kdbench.records import Job
from kdbench.transfer import check_chat_template, transfer_examples


def run_key(suite: Suite, method: str, config: dict, student: str, seed: int) -> str:
    """A run's identity: suite, method and its config, student, seed and code version."""
    blob = json.dumps([suite.hash, method, config, student, seed, __version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(
    suite: Suite, echo: Callable[[str], Any] = print, *, fetch: bool = True
) -> tuple[list[Method], list[Job]]:
    """Every (method, student, seed) job. Raises :class:`SuiteError` for a bad method or config,
    evaluation task or data source; ``echo`` prints the contamination check's warnings.

    ``fetch=False`` checks what needs nothing downloaded (methods and their configs, task names
    against lm-eval's index, packing) and skips reading the transfer data, loading the tasks'
    datasets and the contamination check: a shipped suite is validated this way in CI, without
    the network, before its data and models are fetched."""
    known = registry()
    try:
        methods = resolve(suite.methods, known)
    except MethodError as e:
        raise SuiteError(suite.path, "methods", str(e)) from None
    for name in suite.method_config:
        if name not in known:
            raise SuiteError(
                suite.path,
                f"method_config.{name}",
                str(MethodError(f"unknown method {name!r}")) + _suggest(name, list(known)),
            )
    if not fetch:
        try:
            resolve_tasks(suite.eval.tasks, suite.eval.include_dirs, suite.eval.root or None)
        except TaskError as err:
            raise SuiteError(suite.path, err.field, str(err)) from None
    tasks = check_eval(suite) if fetch else {}
    if fetch and suite.data.kind != "synthetic":
        try:
            load_examples(suite.data)  # a missing field or an unreadable source, now
        except DataError as e:
            raise SuiteError(suite.path, f"data.{e.field}", str(e)) from None
    if suite.data.chat_template:  # the teacher's tokenizer renders the transfer set
        tokenizer = tokenizer_of(suite.teacher)
        problem = check_chat_template(tokenizer) if tokenizer is not None else None
        if problem:
            raise SuiteError(suite.path, "data.chat_template", problem)
    check_packing(suite, methods)
    check_vocabularies(suite, [m for m in methods if m.needs_teacher])
    if fetch and suite.eval.contamination != "off":
        check_contamination(suite, tasks, echo)
    jobs = []
    for method in methods:
        try:
            cfg = dataclasses.asdict(method.make_config(suite.method_config.get(method.name)))
        except MethodError as e:
            raise SuiteError(suite.path, str(e).split(":")[0], str(e).split(": ", 1)[-1]) from None
        for student in suite.students:
            for seed in suite.seeds:
                run_id = run_key(suite, method.name, cfg, student.name, seed)
                jobs.append(Job(run_id, method.name, student.name, seed, cfg))
    return methods, jobs


def check_eval(suite: Suite) -> dict[str, TaskOrGroup]:
    """The suite's evaluation tasks built by lm-eval (cached per process), or a one-line
    :class:`SuiteError`: an unknown task (with close names), a dataset that cannot be loaded
    (with how to fetch it beforehand), an unknown ranking metric or filter."""
    e = suite.eval
    chat = [t for t in e.tasks if e.task_options(t).chat_template]
    if chat:
        tokenizer = tokenizer_of(suite.teacher)
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            field = "eval.chat_template" if e.chat_template else f"eval.options.{chat[0]}"
            raise SuiteError(
                suite.path,
                field,
                f"the teacher's tokenizer ({suite.teacher.name}) has no chat template to apply "
                f"to {', '.join(chat)}; set chat_template = false or use an instruct model",
            )
    try:
        options = {t: e.task_options(t) for t in e.tasks}
        return load_tasks(e.tasks, e.include_dirs, options, e.root or None)
    except TaskError as err:
        raise SuiteError(suite.path, err.field, str(err)) from None
    except FileNotFoundError as err:  # a KDBENCH_TASKS_DIR or include folder gone
        raise SuiteError(suite.path, "eval.include", str(err)) from None


def check_contamination(
    suite: Suite, tasks: dict[str, TaskOrGroup], echo: Callable[[str], Any] = print
) -> ContaminationReport:
    """Transfer examples whose prompt appears in an evaluation task's documents
    (:mod:`kdbench.contamination`): with ``[eval] contamination = "warn"`` one line per task
    through ``echo``; with ``"error"`` a :class:`SuiteError` naming the first task."""
    report = contamination.check(transfer_examples(suite.data), tasks)
    lines = report.lines()
    if lines and suite.eval.contamination == "error":
        raise SuiteError(
            suite.path,
            "eval.contamination",
            f"{lines[0]}"
            + (f" (and {len(lines) - 1} more tasks)" if len(lines) > 1 else "")
            + '; remove them from the transfer set, or set contamination = "warn"',
        )
    for line in lines:
        echo(f"contamination: {line}")
    return report


def tokenizer_of(spec: ModelSpec) -> PreTrainedTokenizerBase | None:
    """A model spec's tokenizer without loading weights: the built-in tokenizer for a teacher
    built from ``arch``, the folder's or Hub id's otherwise (None when it cannot be read
    offline: the training job checks again once the model is at hand)."""
    if spec.arch is not None:
        return default_tokenizer()
    try:
        return load_tokenizer(spec.source)
    except (OSError, ValueError):
        return None


def check_packing(suite: Suite, methods: list[Method]) -> None:
    """``[data] packing = true`` puts several examples in one row: refused, in one line, for a
    method that does not declare it allows that (:attr:`Method.allows_packing`)."""
    if not suite.data.packing:
        return
    refused = [m.name for m in methods if not m.allows_packing]
    if refused:
        allowed = [m.name for m in registry().values() if m.allows_packing]
        raise SuiteError(
            suite.path,
            "data.packing",
            f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not allow packed "
            "rows (several examples per row); "
            "set packing = false or select methods that allow it: "
            + (", ".join(allowed) or "none registered"),
        )


def check_vocabularies(suite: Suite, methods: list[Method]) -> None:
    """Methods that compare teacher and student token by token refuse a student whose
    vocabulary (token -> id map, not only its size) differs from the teacher's, before anything
    trains. A student built from ``arch`` gets the teacher's tokenizer, so it always passes."""
    if not methods:
        return
    teacher = tokenizer_of(suite.teacher)
    if teacher is None:
        return
    for i, student in enumerate(suite.students):
        if student.source is None:
            continue  # built with the teacher's own tokenizer
        theirs = tokenizer_of(student)
        mismatch = vocabulary_mismatch(teacher, theirs) if theirs is not None else None
        if mismatch:
            names = ", ".join(m.name for m in methods)
            raise SuiteError(
                suite.path,
                f"students[{i}]",
                f"{names} need a vocabulary shared with the teacher: {mismatch} "
                f"(teacher {suite.teacher.name}, student {student.name}); use the teacher's "
                "tokenizer or only methods without per-batch teacher signals",
            )


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
