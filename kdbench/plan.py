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
from kdbench.config import ModelSpec, Suite, SuiteError, TaskOptions, key_text
from kdbench.contamination import ContaminationReport
from kdbench.data_sources import DataError, load_examples
from kdbench.evaluate import TaskError, TaskOrGroup, load_tasks, resolve_tasks
from kdbench.methods import Method, MethodError, registry, resolve
from kdbench.models import (
    default_tokenizer,
    load_tokenizer,
    named_tokenizer,
    vocabulary_mismatch,
)
from kdbench.records import Job
from kdbench.transfer import check_chat_template, transfer_examples


def run_key(suite: Suite, method: str, config: dict, student: str, seed: int) -> str:
    """A run's identity: suite, method and its config, student, seed and code version."""
    blob = json.dumps([suite.hash, method, config, student, seed, __version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def quant_run_id(parent_run_id: str, scheme: str) -> str:
    """The run id of a quantised evaluation (``[eval] quantize``): its full-precision run's id
    and the scheme, e.g. ``3d2791c9decb0d7f-int8``."""
    return f"{parent_run_id}-{scheme}"


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
    configs = check_method_configs(suite, known, methods)
    if not fetch:
        try:
            resolve_tasks(suite.eval.tasks, suite.eval.include_dirs, suite.eval.root or None)
        except TaskError as err:
            raise SuiteError(suite.path, err.field, str(err)) from None
    check_gate(suite, fetch)
    if suite.deepspeed:
        check_deepspeed(suite)
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
    check_vocabularies(suite, methods)
    if fetch and suite.eval.contamination != "off":
        check_contamination(suite, tasks, echo)
    jobs = []
    for method in methods:
        cfg = dataclasses.asdict(configs[method.name])
        for student in suite.students:
            if not trains(student, method):
                continue
            for seed in suite.seeds:
                run_id = run_key(suite, method.name, cfg, student.name, seed)
                jobs.append(Job(run_id, method.name, student.name, seed, cfg))
    return methods, jobs


def check_method_configs(
    suite: Suite, known: dict[str, Method], methods: list[Method]
) -> dict[str, Any]:
    """The config of each selected method and of each ``[method_config.<name>]`` table,
    validated against its method's config dataclass (a table of a method not selected too: a
    misspelt key is an error even where it does nothing yet). Raises a one-line
    :class:`SuiteError` naming ``method_config.<name>.<field>``."""
    for name in suite.method_config:
        if name not in known:
            raise SuiteError(
                suite.path,
                f"method_config.{key_text(name)}",
                str(MethodError(f"unknown method {name!r}")) + _suggest(name, list(known)),
            )
    out = {}
    for name in dict.fromkeys([m.name for m in methods] + list(suite.method_config)):
        method = known[name]
        try:
            out[name] = method.make_config(suite.method_config.get(name))
        except MethodError as e:
            raise SuiteError(suite.path, e.field or f"method_config.{name}", e.detail) from None
    return out


def check_gate(suite: Suite, fetch: bool = True) -> None:
    """The teacher's gate task is one the evaluation can resolve (a bundled or ``include``
    task, or one of lm-eval's) and, with ``fetch`` for a teacher that is built (``arch``: the
    gate is checked as it trains), the task reports the gate's metric; else a one-line
    :class:`SuiteError` naming ``teacher.gate.task`` or ``teacher.gate.metric``."""
    t = suite.teacher
    if t.gate_task is None:
        return
    e = suite.eval
    try:
        resolve_tasks([t.gate_task], e.include_dirs, e.root or None)
        if fetch and t.arch is not None:
            options = {t.gate_task: TaskOptions(metric=t.gate_metric)}
            load_tasks([t.gate_task], e.include_dirs, options, e.root or None)
    except TaskError as err:
        field = "teacher.gate.metric" if err.field.endswith(".metric") else "teacher.gate.task"
        raise SuiteError(suite.path, field, str(err)) from None
    except FileNotFoundError as err:  # a KDBENCH_TASKS_DIR or include folder gone
        raise SuiteError(suite.path, "eval.include", str(err)) from None


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
        name = getattr(spec, "tokenizer", None)  # a student's own (a teacher has none)
        return named_tokenizer(name) if name else default_tokenizer()
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


def trains(student: ModelSpec, method: Method) -> bool:
    """Whether ``method`` trains ``student`` (its ``methods`` list, or every method)."""
    return student.methods is None or method.name in student.methods


def check_vocabularies(suite: Suite, methods: list[Method]) -> None:
    """Methods that compare teacher and student token by token refuse a student whose
    vocabulary (token -> id map, not only its size) differs from the teacher's, before anything
    trains, unless they declare ``cross_tokenizer``. A student built from ``arch`` without a
    ``tokenizer`` gets the teacher's, so it always passes. A cross-tokenizer student pairs its
    rows with the teacher's encoding of the same examples, one for one, so it refuses packed
    rows and ``truncation = "drop"`` (which may drop other examples for each tokenizer)."""
    teacher = tokenizer_of(suite.teacher)
    if teacher is None:
        return
    for i, student in enumerate(suite.students):
        if student.source is None and student.tokenizer is None:
            continue  # built with the teacher's own tokenizer
        runs = [m for m in methods if trains(student, m)]
        theirs = tokenizer_of(student)
        mismatch = vocabulary_mismatch(teacher, theirs) if theirs is not None else None
        if not mismatch:
            continue
        refused = [m.name for m in runs if m.needs_teacher and not m.cross_tokenizer]
        sampled = [m.name for m in runs if m.cross_tokenizer and m.on_policy]
        if sampled:  # the student's samples would need re-tokenizing for the teacher
            raise SuiteError(
                suite.path,
                f"students[{i}]",
                f"{', '.join(sampled)}: on-policy sampling is not supported for a student with "
                f"another vocabulary than the teacher's (student {student.name}); give that "
                "student other methods with its `methods` list",
            )
        if refused:
            able = sorted(m.name for m in registry().values() if m.cross_tokenizer)
            raise SuiteError(
                suite.path,
                f"students[{i}]",
                f"{', '.join(refused)} need a vocabulary shared with the teacher: {mismatch} "
                f"(teacher {suite.teacher.name}, student {student.name}); use the teacher's "
                "tokenizer, or only methods without per-batch teacher signals or cross-tokenizer "
                f"ones ({', '.join(able) or 'none registered'}), e.g. with the student's `methods`",
            )
        if any(m.cross_tokenizer and m.needs_teacher for m in runs):
            for field, bad in (
                ("data.packing", suite.data.packing),
                ("data.truncation", suite.data.truncation == "drop"),
            ):
                if bad:
                    raise SuiteError(
                        suite.path,
                        field,
                        f"cross-tokenizer distillation of {student.name} pairs each of its rows "
                        "with the teacher's row of the same example: set packing = false and "
                        'truncation = "right"',
                    )


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- the [deepspeed] table ------------------------------------------------------------------

# optimizer / scheduler tables whose ``params`` go to a class's constructor: checked against its
# signature, not key by key
_FREE_FORM = {("optimizer", "params"), ("scheduler", "params")}


class _Reads(dict):
    """A config dict that records which keys DeepSpeed reads (and the defaults it reads them
    with), so that a key it never reads is known to be one it does not accept."""

    def __init__(self, data: dict, where: tuple[str, ...], log: dict) -> None:
        super().__init__(
            {k: _Reads(v, (*where, k), log) if isinstance(v, dict) else v for k, v in data.items()}
        )
        self.where, self.log = where, log
        log.setdefault(where, {})

    def _read(self, key: Any, default: Any = None, given: bool = False) -> None:
        defaults = self.log[self.where].setdefault(key, [])
        if given:
            defaults.append(default)

    def get(self, key: Any, default: Any = None) -> Any:
        self._read(key, default, given=True)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._read(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self._read(key)
        return super().__contains__(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._read(key)
        return super().pop(key, *default)

    def __copy__(self) -> _Reads:
        out = _Reads({}, self.where, self.log)
        dict.update(out, self)
        return out


def _ds_error(e: BaseException) -> tuple[str, str]:
    """A DeepSpeed config error as (the path inside the table, one line)."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError) and e.errors():
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif "input" in err:
            msg += f", got {err['input']!r}"
        return loc, msg
    text = str(e).strip().splitlines()
    return "", f"{type(e).__name__}: {text[0] if text else 'invalid'}"


def _run_deepspeed_config(cfg: dict) -> tuple[dict, BaseException | None]:
    """DeepSpeed's own ``DeepSpeedConfig`` of ``cfg`` (quietly): the keys it read and the
    error it raised (None: accepted)."""
    import logging

    from deepspeed.runtime.config import DeepSpeedConfig

    log: dict = {}
    ds_logger = logging.getLogger("DeepSpeed")
    level = ds_logger.level
    ds_logger.setLevel(logging.CRITICAL)
    try:
        DeepSpeedConfig(_Reads(cfg, (), log))
    except Exception as e:  # DeepSpeed raises asserts, ValueErrors, pydantic errors, ...
        return log, e
    finally:
        ds_logger.setLevel(level)
    return log, None


def _number_like(default: Any, value: Any) -> bool:
    """Whether ``value`` has the type DeepSpeed's ``default`` for its key implies."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_deepspeed(suite: Suite) -> dict[str, Any]:
    """The ``[deepspeed]`` table merged into kdbench's engine config
    (:func:`kdbench.train.deepspeed_config`) and validated by DeepSpeed's own config classes
    (``DeepSpeedConfig`` and its pydantic models, which refuse unknown fields of their
    sections). DeepSpeed itself ignores keys it does not read and takes any value for many
    scalars, so a key it never reads is refused as unknown, a value whose type differs from
    DeepSpeed's default for that key is refused, and the optimizer's and scheduler's ``type``
    and ``params`` are checked against the classes DeepSpeed would build. Returns the merged
    config; raises a one-line :class:`SuiteError` naming ``deepspeed.<key>``."""
    import torch

    from kdbench.train import deepspeed_config

    table = suite.deepspeed
    base = deepspeed_config(
        suite.budget, suite.budget.steps, {}, suite.resources.zero_stage, torch.float32
    )
    merged = deepspeed_config(
        suite.budget, suite.budget.steps, table, suite.resources.zero_stage, torch.float32
    )
    path = suite.path
    for key in table:
        if key in ("optimizer", "scheduler") and not isinstance(table[key], dict):
            raise SuiteError(
                path,
                f"deepspeed.{key}",
                f"must be a table like {{ type = ..., params = {{ }} }}, got {table[key]!r}",
            )
    for key, value in table.items():
        log, error = _run_deepspeed_config({**base, key: merged[key]})
        strict = isinstance(value, dict) and _strict_section(base, key, merged[key])
        if isinstance(value, dict) and not strict:
            # a better message than the error's; after an error, the keys read so far only
            _check_section(path, (key,), value, log, unknown=error is None)
        if error is not None:
            where, msg = _ds_error(error)
            raise SuiteError(path, f"deepspeed.{key}" + (f".{where}" if where else ""), msg)
        read = log.get((), {})
        if key not in read:
            raise SuiteError(
                path,
                f"deepspeed.{key}",
                "DeepSpeed does not read this key (see https://www.deepspeed.ai/docs/config-json/)"
                + _suggest(key, [k for k in read if isinstance(k, str)]),
            )
        _check_type(path, f"deepspeed.{key}", read[key], value)
    _check_optimizer(path, merged, table)
    log, error = _run_deepspeed_config(merged)
    if error is not None:
        where, msg = _ds_error(error)
        raise SuiteError(path, "deepspeed" + (f".{where}" if where else ""), msg)
    return merged


_PROBE = "__kdbench_probe__"


def _strict_section(base: dict, key: str, value: dict) -> bool:
    """Whether DeepSpeed validates the section ``key`` with a pydantic model that refuses
    unknown fields (then its own error is the one to give)."""
    from pydantic import ValidationError

    _, error = _run_deepspeed_config({**base, key: {**value, _PROBE: 1}})
    return isinstance(error, ValidationError) and any(
        err.get("type") == "extra_forbidden" and _PROBE in err.get("loc", ())
        for err in error.errors()
    )


def _check_type(path: str, field: str, defaults: list, value: Any) -> None:
    """``value`` has the type of the defaults DeepSpeed reads its key with (when it gives
    any): a boolean, a number (booleans are not numbers) or a string."""
    given = [d for d in defaults if isinstance(d, bool | int | float | str)]
    if given and not all(_number_like(d, value) for d in given):
        d = given[0]
        kind = (
            "true or false"
            if isinstance(d, bool)
            else "a string"
            if isinstance(d, str)
            else "a number"
        )
        raise SuiteError(path, field, f"must be {kind} (DeepSpeed's default: {d!r}), got {value!r}")


def _check_section(
    path: str, where: tuple[str, ...], table: dict, log: dict, unknown: bool = True
) -> None:
    """The keys of a sub-table that DeepSpeed reads key by key: those it never read are
    unknown (with ``unknown``); a value whose type differs from the default it read it with
    is refused."""
    if where in _FREE_FORM:
        return
    read = log.get(where)
    if not read:  # read as a whole (or not at all): its own class validated it
        return
    name = "deepspeed." + ".".join(where)
    for key, value in table.items():
        if key not in read:
            if not unknown:
                continue
            raise SuiteError(
                path,
                f"{name}.{key}",
                "unknown field; DeepSpeed reads: "
                + ", ".join(sorted(str(k) for k in read))
                + _suggest(key, [str(k) for k in read]),
            )
        _check_type(path, f"{name}.{key}", read[key], value)
        if isinstance(value, dict):
            _check_section(path, (*where, key), value, log, unknown)


def _check_params(
    path: str, table: dict, section: str, name: str, params: dict, allowed: set[str]
) -> None:
    """Every key of the merged ``[deepspeed.<section>.params]`` is one ``name`` takes; a key the
    suite did not set came from kdbench's defaults (it merges one level deep)."""
    for key in params:
        if key not in allowed:
            given = (
                ""
                if key in table.get(section, {}).get("params", {})
                else f" (a kdbench default: set the {section}'s params in full)"
            )
            raise SuiteError(
                path,
                f"deepspeed.{section}.params.{key}",
                f"{name} takes no {key!r}{given}; it takes: {', '.join(sorted(allowed))}",
            )


def _signature_keys(cls: Any, skip: int) -> set[str] | None:
    """The keyword parameters of ``cls`` after its first ``skip`` (None: it takes any)."""
    import inspect

    try:
        params = list(inspect.signature(cls).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _check_optimizer(path: str, merged: dict, table: dict) -> None:
    """The optimizer's and scheduler's ``type`` name a class DeepSpeed can build, and their
    ``params`` (kdbench's defaults merged with the table's) are keywords it takes."""
    import torch
    from deepspeed.runtime import lr_schedules
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    opt = merged.get("optimizer")
    if isinstance(opt, dict):
        name = opt.get("type")
        torch_names = {
            n.lower(): n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
        }
        if not isinstance(name, str) or not (
            name.lower() in DEEPSPEED_OPTIMIZERS or hasattr(torch.optim, name)
        ):
            raise SuiteError(
                path,
                "deepspeed.optimizer.type",
                f"unknown optimizer {name!r}; DeepSpeed's: {', '.join(DEEPSPEED_OPTIMIZERS)}, or "
                "a torch.optim class (e.g. SGD)",
            )
        params = opt.get("params", {})
        if not isinstance(params, dict):
            raise SuiteError(path, "deepspeed.optimizer.params", f"must be a table, got {params!r}")
        cls_name = name if hasattr(torch.optim, name) else torch_names.get(name.lower())
        allowed = _signature_keys(getattr(torch.optim, cls_name), 1) if cls_name else None
        if allowed is not None:
            if name.lower() in ("adam", "adamw"):
                allowed |= {"torch_adam", "adam_w_mode"}
            _check_params(path, table, "optimizer", name, params, allowed)
    sched = merged.get("scheduler")
    if isinstance(sched, dict):
        name = sched.get("type")
        cls = None
        if isinstance(name, str):
            cls = getattr(lr_schedules, name, None) or getattr(torch.optim.lr_scheduler, name, None)
        if not isinstance(cls, type):
            raise SuiteError(
                path,
                "deepspeed.scheduler.type",
                f"unknown scheduler {name!r}; DeepSpeed's: {', '.join(lr_schedules.VALID_LR_SCHEDULES)}, "
                "or a torch.optim.lr_scheduler class",
            )
        params = sched.get("params", {})
        if not isinstance(params, dict):
            raise SuiteError(path, "deepspeed.scheduler.params", f"must be a table, got {params!r}")
        allowed = _signature_keys(cls, 1)
        if allowed is not None:
            _check_params(path, table, "scheduler", name, params, allowed)
