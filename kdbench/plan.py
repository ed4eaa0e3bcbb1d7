"""Planning: a validated suite becomes its jobs, one per (method, student, seed), and every
input error surfaces here, before Ray starts or anything is written: unknown methods and method
configs, unknown evaluation tasks, and students whose vocabulary differs from the teacher's for
methods that compare them token by token."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json

from transformers import PreTrainedTokenizerBase

from kdbench import __version__
from kdbench.config import ModelSpec, Suite, SuiteError
from kdbench.data_sources import DataError, load_examples
from kdbench.evaluate import task_names
from kdbench.methods import Method, MethodError, registry, resolve
from kdbench.models import default_tokenizer, load_tokenizer, vocabulary_mismatch
from kdbench.records import Job
from kdbench.transfer import check_chat_template


def run_key(suite: Suite, method: str, config: dict, student: str, seed: int) -> str:
    """A run's identity: suite, method and its config, student, seed and code version."""
    blob = json.dumps([suite.hash, method, config, student, seed, __version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(suite: Suite) -> tuple[list[Method], list[Job]]:
    """Every (method, student, seed) job. Raises :class:`SuiteError` for a bad method or config."""
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
    local_tasks = task_names()
    for task in suite.eval.tasks:
        if task not in local_tasks:
            raise SuiteError(
                suite.path,
                "eval.tasks",
                f"unknown task {task!r}; available: "
                f"{', '.join(local_tasks)}" + _suggest(task, local_tasks),
            )
    if suite.data.kind != "synthetic":
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
            f"{', '.join(refused)} do not allow packed rows (several examples per row); "
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
