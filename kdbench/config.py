"""Suite files: TOML, validated into typed objects.

A suite fixes everything that must be equal for a fair comparison: teacher, students, transfer
set, evaluation tasks, training budget and seeds. Every problem is reported as a
:class:`SuiteError` naming the file, the field and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kdbench import synthetic


class SuiteError(ValueError):
    """A suite file is wrong. ``str()`` is a one-line message: file, field, what is allowed."""

    def __init__(self, path: str | Path, field: str, message: str) -> None:
        self.path, self.field, self.message = str(path), field, message
        super().__init__(one_line(f"{path}: {field}: {message}"))


def one_line(text: str) -> str:
    """``text`` with every control character (newline, tab, NUL, ...) escaped as Python does
    in a string's ``repr``: what a message quotes from a hostile file stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def key_text(key: Any) -> str:
    """A table key as a field name: itself when printable and free of spaces, else its
    ``repr`` (quotes and escapes show what the file holds)."""
    text = str(key)
    return text if text and text.isprintable() and " " not in text else repr(text)


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA student (Hu et al. 2021, through ``peft``): only rank-``r`` adapters on the
    ``target_modules`` train (scaled by ``alpha / r``, with ``dropout``); they are merged into
    the base weights before the student is saved, so evaluation and the size axis see a plain
    model of the base's size."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class ModelSpec:
    """A model: ``source`` (Hugging Face id or local folder), ``arch`` (built from scratch) or,
    for a student, ``from_teacher_layers`` (a copy of the teacher keeping those decoder layers,
    DistilBERT's initialisation). ``dtype``: the weights' and compute dtype in its jobs
    (``auto``: bfloat16 on a CUDA device that supports it, else float32; always float32 on a
    CPU). Students may train with ``gradient_checkpointing`` and as ``lora`` adapters.

    A student built from ``arch`` has the teacher's tokenizer unless ``tokenizer`` names another:
    a built-in one of :data:`kdbench.tokenizer.BUILTIN_TOKENIZERS` (``"chunk"``: the same text
    in other token boundaries) or a local folder holding a saved tokenizer; a student with
    another vocabulary than the teacher's is a cross-tokenizer student, trained only by the
    methods that declare ``cross_tokenizer`` (and those that read no per-batch teacher signal).
    ``methods``: the suite's methods that train this student (None: all of them)."""

    name: str
    source: str | None = None
    arch: dict[str, int] | None = None
    dtype: str = "auto"
    from_teacher_layers: tuple[int, ...] | None = None
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None
    tokenizer: str | None = None  # a built student's tokenizer (None: the teacher's)
    methods: tuple[str, ...] | None = None  # the suite's methods that train it (None: all)


@dataclass(frozen=True)
class TeacherSpec(ModelSpec):
    """The teacher. Built from ``arch``, it is trained on the transfer set until ``gate_metric``
    of ``gate_task`` reaches ``gate_value`` (checked every ``train_steps``, up to ``max_steps``)
    and cached on disk by the hash of this recipe. ``examples_per_task`` (synthetic data only)
    gives the built teacher its own, larger training set (:func:`kdbench.synthetic.teacher_set`:
    that many examples per task, disjoint from the transfer set and the evaluation split), as a
    real teacher is trained on far more data than the transfer set it is distilled on; None:
    the teacher trains on the transfer set."""

    train_steps: int = 600
    max_steps: int = 1800
    lr: float = 3e-3
    batch_size: int = 64
    gate_task: str | None = None
    gate_metric: str = "exact_match"
    gate_value: float = 0.0
    examples_per_task: int | None = None


DATA_KINDS = ("synthetic", "jsonl", "parquet", "csv", "hf")
FILE_KINDS = ("jsonl", "parquet", "csv")


@dataclass(frozen=True)
class DataSpec:
    """The transfer set: what every student (and a built teacher) trains on.

    ``kind = "synthetic"`` generates kdbench's task family (``tasks``, ``n_per_task``,
    ``rationales``). ``jsonl`` / ``parquet`` / ``csv`` read a local file (``path``, relative to
    the suite file), ``hf`` a Hub dataset (``name``, ``revision``, ``split``, through
    ``datasets`` and its local cache) or a ``save_to_disk`` folder (``path``); each record's
    ``prompt_field`` and ``response_field`` (or its chat ``messages_field``: the last turn, an
    assistant's, is the response) become the example's prompt and target
    (:mod:`kdbench.data_sources`), shuffled by ``seed`` and cut to ``max_examples``.

    Tokenisation (:mod:`kdbench.transfer`): ``chat_template`` renders every example with the
    teacher tokenizer's chat template; ``add_eos`` (None: true for a file or dataset, false for
    the synthetic set, whose targets end with ``"\\n"``) appends the EOS token to every target;
    ``truncation`` is ``"right"`` (cut at ``max_length``) or ``"drop"`` (leave out examples
    longer than ``max_length``); ``packing`` concatenates examples, EOS-separated, into rows of
    ``max_length`` (only for methods that allow it).
    """

    kind: str = "synthetic"
    tasks: tuple[str, ...] = synthetic.DEFAULT_TASKS
    n_per_task: int = 8000
    max_length: int = 64
    rationales: bool = True
    path: str | None = None  # file kinds, or an hf save_to_disk folder: resolved, absolute
    name: str | None = None  # hf: a Hub dataset id
    revision: str | None = None  # hf: a Hub revision (commit, tag or branch)
    config: str | None = None  # hf: the dataset's configuration (e.g. "main" of openai/gsm8k)
    split: str = "train"  # hf: the split
    prompt_field: str = "prompt"
    response_field: str = "response"
    max_examples: int | None = None  # keep the first N after the shuffle
    seed: int = 0  # the shuffle of a file or dataset (the synthetic set has its own)
    messages_field: str | None = None  # chat form: a list of {role, content} per record
    chat_template: bool = False  # render with the tokenizer's chat template
    add_eos: bool | None = None  # None: true for a file or dataset, false for synthetic
    truncation: str = "right"  # "right": cut at max_length; "drop": leave the example out
    packing: bool = False  # concatenate examples (EOS-separated) into rows of max_length
    path_as_written: str | None = None  # ``path`` as the suite gives it: the identity's

    @property
    def eos(self) -> bool:
        """Whether every target ends with the tokenizer's EOS token (``add_eos`` resolved)."""
        return self.kind != "synthetic" if self.add_eos is None else self.add_eos


TRUNCATIONS = ("right", "drop")
# [data] fields added after suites were stored, at the value that keeps the old behaviour:
# left out of the identity there, so the suites that predate them keep their hash
_DATA_ADDED = {
    "config": None,
    "messages_field": None,
    "chat_template": False,
    "add_eos": None,
    "truncation": "right",
    "packing": False,
}


def data_identity(data: dict[str, Any]) -> dict[str, Any]:
    """The identity of a ``[data]`` table (:meth:`Suite.to_dict`'s ``data``): ``path`` as the
    suite wrote it (relative to the suite file), not where the checkout is; fields added later
    are left out at their old behaviour (synthetic data without EOS: ``add_eos`` False)."""
    out = dict(data)
    written = out.pop("path_as_written", None)
    if written is not None:
        out["path"] = written
    for key, old in _DATA_ADDED.items():
        if key in out and out[key] == old:
            del out[key]
    if out.get("kind") == "synthetic" and out.get("add_eos") is False:
        del out["add_eos"]  # the synthetic set's own default
    return out


@dataclass(frozen=True)
class GenerationSpec:
    """The teacher's generations (``[generation]``, :mod:`kdbench.generations`): what
    ``seqkd``, ``step_by_step`` and later on-policy methods train on.

    ``max_new_tokens`` 0: what fits in ``data.max_length`` after the prompt; ``stop`` None:
    ``["\\n"]`` for the synthetic set (the end of its targets), none otherwise (the EOS token
    and a chat template's end-of-turn token always stop); ``do_sample`` false: greedy, else
    sampling with ``temperature`` and ``top_p`` (seeded, so reproducible).
    """

    max_new_tokens: int = 0
    stop: tuple[str, ...] | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def stops(self, data: DataSpec) -> tuple[str, ...]:
        """The stop strings for ``data`` (``stop`` resolved)."""
        if self.stop is not None:
            return self.stop
        return (synthetic.EOS,) if data.kind == "synthetic" else ()


@dataclass(frozen=True)
class Budget:
    """The same optimisation budget for every method: ``steps`` x ``batch_size`` sequences."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    warmup: float = 0.05


CONTAMINATION = ("warn", "error", "off")
QUANTIZE_SCHEMES = ("int8", "int4")
"""What ``[eval] quantize`` may list: weight-only schemes of :mod:`kdbench.quantize`."""


@dataclass(frozen=True)
class TaskOptions:
    """``[eval.options.<task>]``: how one task (or group) named in ``eval.tasks`` is scored.
    None: the ``[eval]`` default, else what the task's YAML declares."""

    num_fewshot: int | None = None
    limit: int | None = None
    metric: str | None = None  # the metric that ranks (default: the task's first metric)
    filter: str | None = None  # the filter whose value ranks (default: the task's first)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # merged into generation_kwargs
    chat_template: bool | None = None


@dataclass(frozen=True)
class EvalSpec:
    """The evaluation: lm-eval ``tasks`` (built-ins, groups, or tasks of kdbench's bundled
    folder and of the ``include`` folders, relative to the suite file as written; ``root`` is
    that file's folder, outside the suite's identity), scored with ``limit`` documents per
    task, ``num_fewshot`` shots and the chat template if asked, per-task ``options``; the
    ``contamination`` check of the transfer set against the tasks' documents."""

    tasks: tuple[str, ...] = ("kd_addition", "kd_compare")
    limit: int | None = None
    batch_size: int = 64
    include: tuple[str, ...] = ()
    num_fewshot: int | None = None
    chat_template: bool = False
    contamination: str = "warn"
    options: dict[str, TaskOptions] = field(default_factory=dict)
    quantize: tuple[str, ...] = ()
    root: str = ""  # the suite file's folder (absolute): ``include`` is resolved against it

    @property
    def include_dirs(self) -> list[str]:
        """The ``include`` folders as absolute paths."""
        return [str((Path(self.root) / p).resolve()) for p in self.include]

    def task_options(self, task: str) -> TaskOptions:
        """The options of ``task`` with the ``[eval]`` defaults filled in."""
        o = self.options.get(task, TaskOptions())
        return TaskOptions(
            num_fewshot=self.num_fewshot if o.num_fewshot is None else o.num_fewshot,
            limit=self.limit if o.limit is None else o.limit,
            metric=o.metric,
            filter=o.filter,
            gen_kwargs=dict(o.gen_kwargs),
            chat_template=self.chat_template if o.chat_template is None else o.chat_template,
        )


@dataclass(frozen=True)
class Resources:
    """What one training or evaluation job asks Ray for."""

    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    checkpoint_every: int = 50  # steps; a killed training job resumes from its last checkpoint
    workers_per_job: int = 1  # > 1: one job spans several workers (Ray Train TorchTrainer)
    zero_stage: int = 0  # DeepSpeed ZeRO stage of every training engine (0-3)
    # how an on-policy method samples the student (kdbench.rollout.BACKENDS): "hf" (transformers'
    # generate, everywhere) or "vllm" (the optional extra, on a GPU)
    generation_backend: str = "hf"


CACHEABLE = ("logits", "hidden_states", "attentions", "qkv")


@dataclass(frozen=True)
class CacheSpec:
    """The teacher-signal cache (:mod:`kdbench.signal_cache`): which teacher signals are
    computed once per suite and read from disk by every method's jobs, and in what form."""

    signals: tuple[str, ...] | None = None  # None: every cacheable signal the methods read
    topk: int = 16  # logits kept per token (top-k plus the rest mass); 0: the full distribution


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    teacher: TeacherSpec
    students: tuple[ModelSpec, ...]
    data: DataSpec
    budget: Budget
    eval: EvalSpec
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ()  # empty: every registered method
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: Resources = Resources()
    deepspeed: dict[str, Any] = field(default_factory=dict)
    cache: CacheSpec = CacheSpec()
    generation: GenerationSpec = GenerationSpec()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What makes two suites the same, and so their runs rankable together: the fields of
        :data:`IDENTITY`. Not the name, the file's path or comments, nor ``resources`` (where
        and how wide the jobs run does not change what is compared)."""
        return identity(self.to_dict())

    @property
    def hash(self) -> str:
        """The content hash of :meth:`identity`: a suite's leaderboard and its runs' keys."""
        return identity_hash(self.to_dict())


# The sections of a suite that determine its results; everything else (name, path, resources)
# may change without starting a new leaderboard.
IDENTITY = (
    "teacher",
    "students",
    "data",
    "budget",
    "eval",
    "seeds",
    "methods",
    "method_config",
    "deepspeed",
    "cache",
    "generation",
)


# Fields added to a section after suites were first stored: left out of the identity while at
# their old default (so a suite that does not set them keeps its hash; :data:`_DATA_ADDED` for
# ``[data]``), and fields that never change results (where the suite file lives, what a check
# does on a finding).
_MODEL_ADDED = {
    "dtype": "auto",
    "from_teacher_layers": None,
    "gradient_checkpointing": False,
    "lora": None,
    "tokenizer": None,
    "methods": None,
}
_IDENTITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "eval": {
        "include": [],
        "num_fewshot": None,
        "chat_template": False,
        "options": {},
        "quantize": [],
    },
    "teacher": {**_MODEL_ADDED, "examples_per_task": None},
}
_NOT_IDENTITY: dict[str, tuple[str, ...]] = {"eval": ("root", "contamination")}


def _without_added(table: Any, added: dict[str, Any], never: tuple[str, ...] = ()) -> Any:
    """``table`` (a dict) without the keys of ``added`` that hold their old default (compared
    as JSON values: stored configs are JSON) and without the keys in ``never``."""
    if not isinstance(table, dict):
        return table
    return {
        k: v
        for k, v in table.items()
        if k not in never
        and not (k in added and json.loads(json.dumps(v, default=str)) == added[k])
    }


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The identity sections of a suite config (:meth:`Suite.to_dict`, or a stored one); the
    data section through :func:`data_identity`, ``generation`` only when not the default, and
    the fields of :data:`_IDENTITY_DEFAULTS` only when not at their old defaults."""
    out = {k: config.get(k) for k in IDENTITY}
    if isinstance(out["data"], dict):
        out["data"] = data_identity(out["data"])
    if out["generation"] is None or out["generation"] == asdict(GenerationSpec()):
        del out["generation"]  # suites from before [generation] keep their hash
    for section in set(_IDENTITY_DEFAULTS) | set(_NOT_IDENTITY):
        out[section] = _without_added(
            out.get(section), _IDENTITY_DEFAULTS.get(section, {}), _NOT_IDENTITY.get(section, ())
        )
    if isinstance(out["students"], list | tuple):
        out["students"] = [_without_added(s, _MODEL_ADDED) for s in out["students"]]
    return out


def identity_hash(config: dict[str, Any]) -> str:
    """The suite hash of a suite config (:meth:`Suite.to_dict`, or a stored one): the content
    hash of its :func:`identity`."""
    blob = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The identity sections in which two suite configs differ, in :data:`IDENTITY` order.
    Stored configs are JSON, so both sides are compared as JSON values."""
    ja, jb = (json.loads(json.dumps(identity(c), default=str)) for c in (a, b))
    return [k for k in IDENTITY if ja.get(k) != jb.get(k)]


# --- validation helpers ---------------------------------------------------------------------


_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _take(
    path: Path,
    table: dict[str, Any],
    prefix: str,
    key: str,
    typ: type,
    default: Any,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    required: bool = False,
) -> Any:
    name = f"{prefix}{key}"
    if key not in table:
        if required:
            raise SuiteError(path, name, f"is required ({_TYPES.get(typ, typ.__name__)})")
        return default
    value = table[key]
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise SuiteError(path, name, f"must be {_TYPES.get(typ, typ.__name__)}, got {value!r}")
    if typ is float and not math.isfinite(value):
        raise SuiteError(path, name, f"must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise SuiteError(path, name, f"must be >= {minimum}, got {value!r}")
    if choices is not None and value not in choices:
        raise SuiteError(
            path,
            name,
            f"must be one of {', '.join(choices)}; got {value!r}" + _did_you_mean(value, choices),
        )
    return value


def _table(path: Path, raw: dict[str, Any], key: str, known: set[str]) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SuiteError(path, key, f"must be a table ([{key}]), got {value!r}")
    _no_unknown(path, value, f"{key}.", known)
    return value


def _no_unknown(path: Path, table: dict[str, Any], prefix: str, known: set[str]) -> None:
    for k in table:
        if k not in known:
            raise SuiteError(
                path,
                f"{prefix}{key_text(k)}",
                "unknown field; allowed: " + ", ".join(sorted(known)) + _did_you_mean(k, known),
            )


NAME_MAX = 64
_NAME_FORBIDDEN = '/\\<>:"|?*'
_NAME_RULE = (
    f"a name is used in paths and on the board: 1 to {NAME_MAX} printable characters, none of "
    + " ".join(_NAME_FORBIDDEN)
    + ", not starting with a dot or a space"
)


def shown(value: str, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a message stays readable)."""
    return repr(value) if len(value) <= limit else repr(value[: limit - 3]) + "..."


def check_name(path: Path, field: str, value: str) -> str:
    """``value`` if it is a safe name for paths and display (:data:`_NAME_RULE`), else a
    :class:`SuiteError` naming ``field``."""
    problem = None
    if not value:
        problem = "must not be empty"
    elif len(value) > NAME_MAX:
        problem = f"is {len(value)} characters long"
    elif not value.isprintable():
        problem = "contains a control character (newline, tab, NUL, ...)"
    elif value != value.strip():
        problem = "starts or ends with a space"
    elif value.startswith("."):
        problem = "starts with a dot"
    elif any(c in _NAME_FORBIDDEN for c in value):
        problem = f"contains {next(c for c in value if c in _NAME_FORBIDDEN)!r}"
    if problem:
        raise SuiteError(path, field, f"{problem} ({shown(value)}); {_NAME_RULE}")
    return value


def check_source(path: Path, field: str, source: str) -> str:
    """``source`` if it is a local model folder holding ``config.json`` or, when no such path
    exists, a Hugging Face id of the form ``owner/name``; else a :class:`SuiteError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    either = "give a model folder (with config.json) or a Hugging Face id of the form owner/name"
    folder = Path(source).expanduser()
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except (OSError, ValueError):  # a name too long for the file system
        exists = is_dir = False
    if source and exists:
        if not is_dir:
            raise SuiteError(path, field, f"{shown(source, 200)} is a file; {either}")
        if not (folder / "config.json").is_file():
            raise SuiteError(
                path,
                field,
                f"{shown(source, 200)} is a folder without config.json (not a saved model); {either}",
            )
        return source
    local = source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
    if source and local:
        raise SuiteError(path, field, f"{shown(source, 200)}: no such folder; {either}")
    try:
        if source.count("/") != 1:
            raise HFValidationError("not owner/name")
        validate_repo_id(source)
    except HFValidationError:
        raise SuiteError(
            path,
            field,
            f"{shown(source, 200)} is neither a local model folder nor a Hugging Face id of the form "
            "owner/name (letters, digits, '-', '_', '.'; at most 96 characters)",
        ) from None
    return source


def _check_tree(path: Path, node: Any, prefix: str) -> None:
    """Refuse, anywhere in a parsed suite, a key that is not printable text (a newline, a
    control character), a number that is not finite (``inf``, ``nan``) and a string holding
    a NUL character (no path, name or text of a suite may)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not (isinstance(key, str) and key and key.isprintable()):
                raise SuiteError(
                    path,
                    f"{prefix}{key_text(key)}",
                    "a key must be non-empty printable text (no newline or control character)",
                )
            _check_tree(path, value, f"{prefix}{key}.")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _check_tree(path, value, f"{prefix.rstrip('.')}[{i}].")
    elif isinstance(node, float) and not math.isfinite(node):
        raise SuiteError(path, prefix.rstrip("."), f"must be a finite number, got {node!r}")
    elif isinstance(node, str) and "\x00" in node:
        raise SuiteError(
            path, prefix.rstrip("."), f"must not contain a NUL character, got {node!r}"
        )


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_ARCH_KEYS = {"hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length"}


_LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
_STUDENT_KEYS = {
    "name",
    "source",
    "arch",
    "dtype",
    "from_teacher_layers",
    "gradient_checkpointing",
    "lora",
    "tokenizer",
    "methods",
}


def _model(path: Path, raw: Any, prefix: str, student: bool = False) -> dict[str, Any]:
    """The fields of a model table (teacher or student, ``student``) as ModelSpec keywords."""
    if not isinstance(raw, dict):
        raise SuiteError(path, prefix.rstrip("."), f"must be a table, got {raw!r}")
    name = check_name(
        path, f"{prefix}name", _take(path, raw, prefix, "name", str, None, required=True)
    )
    source = _take(path, raw, prefix, "source", str, None)
    arch = raw.get("arch")
    dtype = _take(path, raw, prefix, "dtype", str, "auto", choices=DTYPES)
    extra: dict[str, Any] = {"dtype": dtype} if dtype != "auto" else {}
    layers = raw.get("from_teacher_layers") if student else None
    if layers is not None:
        if not (
            isinstance(layers, list)
            and layers
            and all(type(i) is int and i >= 0 for i in layers)
            and layers == sorted(set(layers))
        ):
            raise SuiteError(
                path,
                f"{prefix}from_teacher_layers",
                f"must be a non-empty increasing list of teacher layer indices (>= 0), "
                f"got {layers!r}",
            )
        extra["from_teacher_layers"] = tuple(layers)
    if student:
        if _take(path, raw, prefix, "gradient_checkpointing", bool, False):
            extra["gradient_checkpointing"] = True
        if "lora" in raw:
            extra["lora"] = _lora(path, raw["lora"], f"{prefix}lora.")
        tokenizer = _take(path, raw, prefix, "tokenizer", str, None)
        if tokenizer is not None:
            extra["tokenizer"] = _student_tokenizer(path, f"{prefix}tokenizer", tokenizer, arch)
    given = [
        k
        for k, v in (("source", source), ("arch", arch), ("layers", layers))
        if v or (k == "source" and v is not None)
    ]
    if len(given) != 1:
        raise SuiteError(
            path,
            f"{prefix}source",
            "give exactly one of `source` (a Hugging Face id or local folder), `arch` (a table "
            "of sizes to build)"
            + (" and `from_teacher_layers` (teacher layers to copy)" if student else ""),
        )
    if layers is not None:
        return {"name": name, "source": None, "arch": None, **extra}
    if arch is not None:
        if not isinstance(arch, dict):
            raise SuiteError(path, f"{prefix}arch", f"must be a table, got {arch!r}")
        _no_unknown(path, arch, f"{prefix}arch.", _ARCH_KEYS)
        for k in ("hidden_size", "num_layers", "num_heads"):
            _take(path, arch, f"{prefix}arch.", k, int, None, minimum=1, required=True)
        for k in ("intermediate_size", "max_length"):
            _take(path, arch, f"{prefix}arch.", k, int, None, minimum=1)
        if arch["hidden_size"] % arch["num_heads"]:
            raise SuiteError(
                path, f"{prefix}arch.num_heads", f"must divide hidden_size ({arch['hidden_size']})"
            )
    else:
        check_source(path, f"{prefix}source", source)
    return {"name": name, "source": source, "arch": dict(arch) if arch else None, **extra}


def _student_tokenizer(path: Path, field: str, value: str, arch: Any) -> str:
    """A built student's ``tokenizer``: a built-in name or a folder with a saved tokenizer."""
    from kdbench.tokenizer import BUILTIN_TOKENIZERS

    allowed = f"a built-in tokenizer ({', '.join(BUILTIN_TOKENIZERS)}) or a folder holding a saved tokenizer"
    if arch is None:
        raise SuiteError(
            path,
            field,
            "only a student built from `arch` takes a tokenizer (a loaded or copied "
            "student has its own); remove it or build the student from `arch`",
        )
    if value in BUILTIN_TOKENIZERS:
        return value
    folder = Path(value).expanduser()
    if not folder.is_absolute():
        folder = path.parent / folder
    if not (folder / "tokenizer_config.json").is_file():
        raise SuiteError(path, field, f"{shown(value, 200)} is not {allowed}")
    return str(folder)


def _student_methods(
    path: Path, field: str, raw: dict[str, Any], methods: list[str]
) -> tuple[str, ...]:
    """A student's ``methods``: a non-empty list of the suite's methods, each once (an empty
    suite list means every registered method, so any name is left to the plan to check)."""
    value = raw["methods"]
    if not (isinstance(value, list) and value and all(isinstance(m, str) for m in value)):
        raise SuiteError(path, field, f"must be a non-empty list of method names, got {value!r}")
    if len(set(value)) != len(value):
        raise SuiteError(path, field, f"must not repeat a method, got {value!r}")
    unknown = [m for m in value if methods and m not in methods]
    if unknown:
        raise SuiteError(
            path, field, f"{', '.join(unknown)} not in the suite's methods ({', '.join(methods)})"
        )
    return tuple(value)


def _lora(path: Path, raw: Any, prefix: str) -> LoraSpec:
    if not isinstance(raw, dict):
        raise SuiteError(
            path, prefix.rstrip("."), f"must be a table like {{ r = 16 }}, got {raw!r}"
        )
    _no_unknown(path, raw, prefix, _LORA_KEYS)
    modules = raw.get("target_modules", list(LoraSpec.target_modules))
    if not (isinstance(modules, list) and modules and all(isinstance(m, str) for m in modules)):
        raise SuiteError(
            path,
            f"{prefix}target_modules",
            f"must be a non-empty list of module names (e.g. q_proj, v_proj; c_attn for GPT-2), "
            f"got {modules!r}",
        )
    dropout = _take(path, raw, prefix, "dropout", float, 0.05, minimum=0)
    if dropout >= 1:
        raise SuiteError(path, f"{prefix}dropout", f"must be in [0, 1), got {dropout}")
    return LoraSpec(
        r=_take(path, raw, prefix, "r", int, 16, minimum=1),
        alpha=_take(path, raw, prefix, "alpha", float, 32.0, minimum=0),
        dropout=dropout,
        target_modules=tuple(modules),
    )


def teacher_layer_count(teacher: ModelSpec) -> int | None:
    """The teacher's number of decoder layers, without loading weights: its ``arch``, or the
    ``config.json`` of a local folder; None when it cannot be read here (a Hub id: the training
    job checks then)."""
    if teacher.arch is not None:
        return teacher.arch["num_layers"]
    config = Path(teacher.source or "") / "config.json"
    if not config.is_file():
        return None
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


_DATA_KEYS = {
    "kind",
    "tasks",
    "n_per_task",
    "max_length",
    "rationales",
    "path",
    "name",
    "revision",
    "split",
    "prompt_field",
    "response_field",
    "max_examples",
    "seed",
    "messages_field",
    "chat_template",
    "config",
    "add_eos",
    "truncation",
    "packing",
}


SEED_MAX = 2**32 - 1  # what every seeded library (numpy's legacy seeding too) takes


def _seed(path: Path, value: int) -> int:
    if value > SEED_MAX:
        raise SuiteError(path, "data.seed", f"must be from 0 to 2**32 - 1, got {value}")
    return value


def _data(path: Path, raw: dict[str, Any]) -> DataSpec:
    d = _table(path, raw, "data", _DATA_KEYS)
    kind = _take(path, d, "data.", "kind", str, "synthetic", choices=DATA_KINDS)
    data_tasks = d.get("tasks", list(synthetic.DEFAULT_TASKS))
    if not (isinstance(data_tasks, list) and data_tasks):
        raise SuiteError(path, "data.tasks", f"must be a non-empty list, got {data_tasks!r}")
    for task in data_tasks:
        if task not in synthetic.TASKS:
            raise SuiteError(
                path,
                "data.tasks",
                f"unknown task {task!r}; allowed: "
                + ", ".join(synthetic.TASKS)
                + _did_you_mean(task, synthetic.TASKS),
            )
    source = _take(path, d, "data.", "path", str, None)
    name = _take(path, d, "data.", "name", str, None)
    written = source  # as the suite gives it: the identity's (``source`` is resolved below)
    if kind == "synthetic":
        extra = [
            k
            for k in (
                "path",
                "name",
                "revision",
                "config",
                "prompt_field",
                "response_field",
                "messages_field",
                "chat_template",
            )
            if k in d
        ]
        if extra:
            raise SuiteError(
                path, f"data.{extra[0]}", 'only for a file or dataset (kind = "jsonl", ...)'
            )
    elif kind in FILE_KINDS or (kind == "hf" and source is not None):
        if source is None:
            raise SuiteError(path, "data.path", f'is required with kind = "{kind}"')
        # resolved here, checked at plan time (kdbench.data_sources.check_source): a suite
        # shipped before its data is fetched still parses
        source = str((path.parent / source).resolve())
        try:
            Path(source).exists()
        except (OSError, ValueError) as e:
            raise SuiteError(
                path, "data.path", f"the file system refuses this path ({type(e).__name__})"
            ) from None
        if kind == "hf" and name is not None:
            raise SuiteError(path, "data.name", "give `name` (a Hub id) or `path`, not both")
    elif name is None:
        raise SuiteError(
            path, "data.name", 'is required with kind = "hf" (a Hub dataset id), or give `path`'
        )
    messages = _take(path, d, "data.", "messages_field", str, None)
    chat = _take(path, d, "data.", "chat_template", bool, False)
    if messages is not None:
        both = [k for k in ("prompt_field", "response_field") if k in d]
        if both:
            raise SuiteError(
                path,
                f"data.{both[0]}",
                "give `messages_field` (chat records) or `prompt_field` / `response_field`, "
                "not both",
            )
        if not chat:
            raise SuiteError(
                path,
                "data.messages_field",
                "chat messages are rendered with the tokenizer's chat template: set "
                "chat_template = true",
            )
    return DataSpec(
        kind=kind,
        tasks=tuple(data_tasks),
        n_per_task=_take(path, d, "data.", "n_per_task", int, 8000, minimum=1),
        max_length=_take(path, d, "data.", "max_length", int, 64, minimum=8),
        rationales=_take(path, d, "data.", "rationales", bool, True),
        path=source,
        name=name,
        revision=_take(path, d, "data.", "revision", str, None),
        config=_take(path, d, "data.", "config", str, None),
        split=_take(path, d, "data.", "split", str, "train"),
        prompt_field=_take(path, d, "data.", "prompt_field", str, "prompt"),
        response_field=_take(path, d, "data.", "response_field", str, "response"),
        max_examples=_take(path, d, "data.", "max_examples", int, None, minimum=1),
        seed=_seed(path, _take(path, d, "data.", "seed", int, 0, minimum=0)),
        messages_field=messages,
        chat_template=chat,
        add_eos=_take(path, d, "data.", "add_eos", bool, kind != "synthetic"),
        truncation=_take(path, d, "data.", "truncation", str, "right", choices=TRUNCATIONS),
        packing=_take(path, d, "data.", "packing", bool, False),
        path_as_written=written,
    )


_EVAL_KEYS = {
    "tasks",
    "limit",
    "batch_size",
    "include",
    "num_fewshot",
    "chat_template",
    "contamination",
    "options",
    "quantize",
}
_OPTION_KEYS = {"num_fewshot", "limit", "metric", "filter", "gen_kwargs", "chat_template"}


def _str_list(path: Path, value: Any, name: str, what: str, empty: bool = False) -> list[str]:
    if not (
        isinstance(value, list)
        and (value or empty)
        and all(isinstance(x, str) and x for x in value)
    ):
        raise SuiteError(
            path, name, f"must be a {'' if empty else 'non-empty '}list of {what}, got {value!r}"
        )
    return value


def _is_dir(folder: Path) -> bool:
    """``folder.is_dir()``, False for a name the file system refuses (too long)."""
    try:
        return folder.is_dir()
    except (OSError, ValueError):
        return False


def _eval(path: Path, raw: dict[str, Any]) -> EvalSpec:
    e = _table(path, raw, "eval", _EVAL_KEYS)
    tasks = _str_list(
        path, e.get("tasks", list(EvalSpec.tasks)), "eval.tasks", "lm-eval task or group names"
    )
    if len(set(tasks)) != len(tasks):
        raise SuiteError(path, "eval.tasks", f"must not repeat a task, got {tasks!r}")
    include = _str_list(path, e.get("include", []), "eval.include", "folders", empty=True)
    root = path.parent.resolve()
    for folder in include:
        if not _is_dir(root / folder):
            raise SuiteError(
                path,
                "eval.include",
                f"{(root / folder).resolve()}: not a folder; give folders of lm-eval task "
                "YAMLs, relative to the suite file",
            )
    opts = e.get("options", {})
    if not (isinstance(opts, dict) and all(isinstance(v, dict) for v in opts.values())):
        raise SuiteError(path, "eval.options", "must be tables like [eval.options.gsm8k]")
    options = {}
    for task, o in opts.items():
        prefix = f"eval.options.{task}."
        if task not in tasks:
            raise SuiteError(
                path,
                f"eval.options.{task}",
                f"{task!r} is not in eval.tasks ({', '.join(tasks)})" + _did_you_mean(task, tasks),
            )
        _no_unknown(path, o, prefix, _OPTION_KEYS)
        gen = o.get("gen_kwargs", {})
        if not isinstance(gen, dict):
            raise SuiteError(
                path,
                f"{prefix}gen_kwargs",
                f"must be a table like {{ max_gen_toks = 256 }}, got {gen!r}",
            )
        options[task] = TaskOptions(
            num_fewshot=_take(path, o, prefix, "num_fewshot", int, None, minimum=0),
            limit=_take(path, o, prefix, "limit", int, None, minimum=1),
            metric=_take(path, o, prefix, "metric", str, None),
            filter=_take(path, o, prefix, "filter", str, None),
            gen_kwargs=dict(gen),
            chat_template=_take(path, o, prefix, "chat_template", bool, None),
        )
    return EvalSpec(
        tasks=tuple(tasks),
        limit=_take(path, e, "eval.", "limit", int, None, minimum=1),
        batch_size=_take(path, e, "eval.", "batch_size", int, 64, minimum=1),
        include=tuple(include),
        num_fewshot=_take(path, e, "eval.", "num_fewshot", int, None, minimum=0),
        chat_template=_take(path, e, "eval.", "chat_template", bool, False),
        contamination=_take(path, e, "eval.", "contamination", str, "warn", choices=CONTAMINATION),
        options=options,
        quantize=_quantize(path, e),
        root=str(root),
    )


def _quantize(path: Path, e: dict[str, Any]) -> tuple[str, ...]:
    """``[eval] quantize``: a list of distinct schemes of :data:`QUANTIZE_SCHEMES` (may be
    empty)."""
    value = e.get("quantize", [])
    allowed = ", ".join(f'"{s}"' for s in QUANTIZE_SCHEMES)
    if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        raise SuiteError(
            path, "eval.quantize", f"must be a list of schemes ({allowed}), got {value!r}"
        )
    for scheme in value:
        if scheme not in QUANTIZE_SCHEMES:
            raise SuiteError(
                path,
                "eval.quantize",
                f"unknown scheme {scheme!r}; allowed: {allowed}"
                + _did_you_mean(scheme, list(QUANTIZE_SCHEMES)),
            )
    if len(set(value)) != len(value):
        raise SuiteError(path, "eval.quantize", f"must not repeat a scheme, got {value!r}")
    return tuple(value)


def _generation(path: Path, raw: dict[str, Any]) -> GenerationSpec:
    g = _table(
        path, raw, "generation", {"max_new_tokens", "stop", "do_sample", "temperature", "top_p"}
    )
    stop = g.get("stop")
    if stop is not None and not (
        isinstance(stop, list) and all(isinstance(x, str) and x for x in stop)
    ):
        raise SuiteError(
            path,
            "generation.stop",
            f'must be a list of non-empty strings (e.g. ["\\n\\n"]; [] for the EOS token only),'
            f" got {stop!r}",
        )
    spec = GenerationSpec(
        max_new_tokens=_take(path, g, "generation.", "max_new_tokens", int, 0, minimum=0),
        stop=None if stop is None else tuple(stop),
        do_sample=_take(path, g, "generation.", "do_sample", bool, False),
        temperature=_take(path, g, "generation.", "temperature", float, 1.0, minimum=0),
        top_p=_take(path, g, "generation.", "top_p", float, 1.0, minimum=0),
    )
    if spec.top_p > 1:
        raise SuiteError(path, "generation.top_p", f"must be in (0, 1], got {spec.top_p}")
    if spec.do_sample and (spec.temperature == 0 or spec.top_p == 0):
        raise SuiteError(
            path,
            "generation.temperature" if spec.temperature == 0 else "generation.top_p",
            "must be > 0 with do_sample = true (do_sample = false decodes greedily)",
        )
    return spec


# --- the loader -----------------------------------------------------------------------------


_TOP = {
    "name",
    "seeds",
    "methods",
    "teacher",
    "students",
    "data",
    "budget",
    "eval",
    "resources",
    "deepspeed",
    "method_config",
    "cache",
    "generation",
}


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file. Raises :class:`SuiteError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(
            path,
            "(file)",
            "no such file; suites live in leaderboards/, e.g. leaderboards/tiny.toml",
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(path, "(syntax)", f"not valid TOML: {e}") from None
    return parse_suite(raw, path)


def parse_suite(raw: dict[str, Any], path: str | Path = "<suite>") -> Suite:
    """Validate a suite given as a dict (a parsed TOML file); ``path`` names it in errors and
    resolves relative paths. Raises :class:`SuiteError` on any problem."""
    path = Path(path)
    _check_tree(path, raw, "")
    _no_unknown(path, raw, "", _TOP)

    name = check_name(path, "name", _take(path, raw, "", "name", str, path.stem))
    seeds = raw.get("seeds", [0])
    if not (
        isinstance(seeds, list)
        and seeds
        and all(type(s) is int and 0 <= s <= SEED_MAX for s in seeds)
    ):
        raise SuiteError(
            path,
            "seeds",
            f"must be a non-empty list of integers from 0 to 2**32 - 1, got {seeds!r}",
        )
    if len(set(seeds)) != len(seeds):
        raise SuiteError(path, "seeds", f"must not repeat a seed, got {seeds!r}")
    methods = raw.get("methods", [])
    if not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
        raise SuiteError(path, "methods", f"must be a list of method names, got {methods!r}")
    if len(set(methods)) != len(methods):
        raise SuiteError(path, "methods", f"must not repeat a method, got {methods!r}")

    t = raw.get("teacher")
    if t is None:
        raise SuiteError(path, "teacher", "is required: a [teacher] table")
    t_known = {
        "name",
        "source",
        "arch",
        "dtype",
        "train_steps",
        "max_steps",
        "lr",
        "batch_size",
        "gate",
        "examples_per_task",
    }
    if isinstance(t, dict):
        _no_unknown(path, t, "teacher.", t_known)
    teacher_model = _model(path, t, "teacher.")
    gate = t.get("gate", {})
    if not isinstance(gate, dict):
        raise SuiteError(path, "teacher.gate", f"must be a table, got {gate!r}")
    _no_unknown(path, gate, "teacher.gate.", {"task", "metric", "value"})
    teacher = TeacherSpec(
        **teacher_model,
        train_steps=_take(path, t, "teacher.", "train_steps", int, 600, minimum=1),
        max_steps=_take(path, t, "teacher.", "max_steps", int, 1800, minimum=1),
        lr=_take(path, t, "teacher.", "lr", float, 3e-3, minimum=0),
        batch_size=_take(path, t, "teacher.", "batch_size", int, 64, minimum=1),
        gate_task=_take(path, gate, "teacher.gate.", "task", str, None),
        gate_metric=_take(path, gate, "teacher.gate.", "metric", str, "exact_match"),
        gate_value=_take(path, gate, "teacher.gate.", "value", float, 0.0, minimum=0),
        examples_per_task=_take(path, t, "teacher.", "examples_per_task", int, None, minimum=1),
    )
    if teacher.max_steps < teacher.train_steps:
        raise SuiteError(
            path,
            "teacher.max_steps",
            f"must be >= teacher.train_steps ({teacher.train_steps}), got {teacher.max_steps}",
        )

    students_raw = raw.get("students")
    if not (isinstance(students_raw, list) and students_raw):
        raise SuiteError(path, "students", "is required: one or more [[students]] tables")
    students = []
    n_teacher_layers = teacher_layer_count(teacher)
    for i, s in enumerate(students_raw):
        if isinstance(s, dict):
            _no_unknown(path, s, f"students[{i}].", _STUDENT_KEYS)
        student = ModelSpec(**_model(path, s, f"students[{i}].", student=True))
        if isinstance(s, dict) and "methods" in s:
            student = replace(
                student, methods=_student_methods(path, f"students[{i}].methods", s, methods)
            )
        kept = student.from_teacher_layers
        if kept and n_teacher_layers is not None and kept[-1] >= n_teacher_layers:
            raise SuiteError(
                path,
                f"students[{i}].from_teacher_layers",
                f"layer {kept[-1]} is out of range: the teacher has {n_teacher_layers} layers "
                f"(0 to {n_teacher_layers - 1})",
            )
        students.append(student)
    names = [s.name for s in students]
    if len(set(names)) != len(names):
        raise SuiteError(path, "students", f"names must be unique, got {names!r}")

    data = _data(path, raw)
    # a teacher given by source is never trained: its recipe fields are not read
    if teacher.examples_per_task is not None and not teacher.source and data.kind != "synthetic":
        raise SuiteError(
            path,
            "teacher.examples_per_task",
            'is only for a teacher built on synthetic data ([data] kind = "synthetic"); a '
            "teacher built on a file or dataset trains on the transfer set",
        )
    generation = _generation(path, raw)

    b = _table(path, raw, "budget", {"steps", "batch_size", "lr", "warmup"})
    budget = Budget(
        steps=_take(path, b, "budget.", "steps", int, 300, minimum=1),
        batch_size=_take(path, b, "budget.", "batch_size", int, 64, minimum=1),
        lr=_take(path, b, "budget.", "lr", float, 3e-3, minimum=0),
        warmup=_take(path, b, "budget.", "warmup", float, 0.05, minimum=0),
    )
    if budget.warmup >= 1:
        raise SuiteError(
            path, "budget.warmup", f"is a fraction of the steps, in [0, 1); got {budget.warmup}"
        )

    evals = _eval(path, raw)

    r = _table(
        path,
        raw,
        "resources",
        {
            "cpus_per_job",
            "gpus_per_job",
            "checkpoint_every",
            "workers_per_job",
            "zero_stage",
            "generation_backend",
        },
    )
    resources = Resources(
        cpus_per_job=_take(path, r, "resources.", "cpus_per_job", float, 1.0, minimum=0.01),
        gpus_per_job=_take(path, r, "resources.", "gpus_per_job", float, 0.0, minimum=0),
        checkpoint_every=_take(path, r, "resources.", "checkpoint_every", int, 50, minimum=0),
        workers_per_job=_take(path, r, "resources.", "workers_per_job", int, 1, minimum=1),
        zero_stage=_take(path, r, "resources.", "zero_stage", int, 0, minimum=0),
        generation_backend=_take(
            path, r, "resources.", "generation_backend", str, "hf", choices=("hf", "vllm")
        ),
    )
    if resources.gpus_per_job > 1 and not resources.gpus_per_job.is_integer():
        raise SuiteError(
            path,
            "resources.gpus_per_job",
            f"must be a fraction below 1 (jobs share a GPU) or a whole number, got "
            f"{resources.gpus_per_job}",
        )
    if budget.batch_size % resources.workers_per_job:
        raise SuiteError(
            path,
            "resources.workers_per_job",
            f"must divide budget.batch_size ({budget.batch_size}): every worker takes an equal "
            f"share of each batch; got {resources.workers_per_job}",
        )
    if resources.zero_stage > 3:
        raise SuiteError(
            path, "resources.zero_stage", f"must be 0, 1, 2 or 3, got {resources.zero_stage}"
        )
    c = _table(path, raw, "cache", {"signals", "topk"})
    cache_signals = c.get("signals")
    if cache_signals is not None and not (
        isinstance(cache_signals, list) and all(x in CACHEABLE for x in cache_signals)
    ):
        raise SuiteError(
            path,
            "cache.signals",
            f"must be a list of {', '.join(CACHEABLE)} (empty: no cache, the teacher runs live"
            f" in every job), got {cache_signals!r}",
        )
    cache = CacheSpec(
        signals=None if cache_signals is None else tuple(sorted(set(cache_signals))),
        topk=_take(path, c, "cache.", "topk", int, 16, minimum=0),
    )
    ds = raw.get("deepspeed", {})
    if not isinstance(ds, dict):
        raise SuiteError(path, "deepspeed", f"must be a table of DeepSpeed config keys, got {ds!r}")
    mc = raw.get("method_config", {})
    if not (isinstance(mc, dict) and all(isinstance(v, dict) for v in mc.values())):
        raise SuiteError(path, "method_config", "must be tables like [method_config.kd]")

    return Suite(
        name=name,
        path=str(path),
        teacher=teacher,
        students=tuple(students),
        data=data,
        budget=budget,
        eval=evals,
        seeds=tuple(seeds),
        methods=tuple(methods),
        method_config={k: dict(v) for k, v in mc.items()},
        resources=resources,
        deepspeed=dict(ds),
        cache=cache,
        generation=generation,
    )


def bundled_suites() -> list[str]:
    """Names of the suites that ship with kdbench (``leaderboards/*.toml``), sorted."""
    from importlib.resources import files

    return sorted(
        f.name.removesuffix(".toml")
        for f in files("kdbench_leaderboards").iterdir()
        if f.is_file() and f.name.endswith(".toml")
    )


def suite_path(name_or_path: str | Path) -> Path:
    """The suite file ``kdbench run`` means: an existing file is itself; a bare name such as
    ``tiny`` (no folder, no ``.toml``) is the bundled ``leaderboards/tiny.toml``. Anything else
    raises :class:`SuiteError` with one line listing the bundled suites.
    """
    import kdbench_leaderboards

    path = Path(name_or_path)
    if path.is_file():
        return path
    names = bundled_suites()
    if str(name_or_path) in names:  # a bare name: no folder, no .toml
        return kdbench_leaderboards.path(f"{name_or_path}.toml")
    raise SuiteError(
        path,
        "(file)",
        "no such file or bundled suite; give a suite TOML file or a bundled suite name: "
        + ", ".join(names)
        + (f" (e.g. kdbench run {names[0]})" if names else ""),
    )
