"""The teacher stage, once per suite: the teacher loaded by id or path, or built and trained
from a recipe and cached on disk under the recipe's hash (so the next run, and every other suite
with the same recipe, reuses it); its generations on the transfer set and its signal-cache
entry when methods need them. Returns :class:`kdbench.records.TeacherArtifacts`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from kdbench import __version__, fidelity, signal_cache, synthetic
from kdbench.config import Budget, Suite, data_identity
from kdbench.data_sources import fingerprint
from kdbench.disk_cache import atomic_entry
from kdbench.evaluate import evaluate
from kdbench.generations import cached_generations
from kdbench.methods import registry
from kdbench.models import build_llama, default_tokenizer, model_bytes, n_params, save
from kdbench.records import TeacherArtifacts
from kdbench.train import train
from kdbench.transfer import TRANSFER_SEED, Batch, encode_examples, transfer_batch
from kdbench.workers import worker_setup

CACHE_ENV = "KDBENCH_CACHE"
# Bump when the training code changes what a recipe produces (schedule, data order, init):
# a teacher cached by older code is then rebuilt instead of silently reused.
TRAINER_VERSION = 3  # 3: the gate scores the gate task's whole split (was its first 100)


class TeacherGateError(RuntimeError):
    """A built teacher did not pass its gate within ``max_steps``: a suite to change (one
    line, exit 2), not an internal error."""


def cache_root(override: str | Path | None = None) -> Path:
    """``--cache``, else ``$KDBENCH_CACHE``, else ``~/.cache/kdbench``."""
    if override:
        return Path(override)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kdbench")


def recipe(suite: Suite) -> dict[str, Any]:
    """Everything that determines the built teacher's weights."""
    t = suite.teacher
    return {
        "arch": t.arch,
        "train_steps": t.train_steps,
        "max_steps": t.max_steps,
        "lr": t.lr,
        "batch_size": t.batch_size,
        "gate": [t.gate_task, t.gate_metric, t.gate_value],
        "data": [
            list(suite.data.tasks),
            suite.data.n_per_task,
            suite.data.max_length,
            suite.data.rationales,
        ],
        # its own training set (older recipes, and their cached teachers, are unchanged)
        **({"examples_per_task": t.examples_per_task} if t.examples_per_task else {}),
        # a file or dataset: the whole spec and the file's content (synthetic recipes, and so
        # their cached teachers, are unchanged)
        **(
            {"source": {**data_identity(dataclasses.asdict(suite.data)), **fingerprint(suite.data)}}
            if suite.data.kind != "synthetic"
            else {}
        ),
        # a dtype asked for (the default, auto, keeps today's recipes and cached teachers)
        **({"dtype": t.dtype} if t.dtype != "auto" else {}),
        "seed": 0,
        "kdbench": __version__.split(".")[0],
        "trainer": TRAINER_VERSION,
    }


def recipe_hash(suite: Suite) -> str:
    return hashlib.sha256(json.dumps(recipe(suite), sort_keys=True).encode()).hexdigest()[:16]


def gate_score(metrics: list[dict[str, Any]], metric: str) -> float | None:
    for m in metrics:
        if m["metric"] == metric:
            return m["value"]
    return None


def teacher_batch(suite: Suite, tokenizer: Any) -> Batch:
    """What a built teacher trains on: its own set with ``[teacher] examples_per_task``
    (:func:`kdbench.synthetic.teacher_set`), else the transfer set."""
    n = suite.teacher.examples_per_task
    if n is None:
        return transfer_batch(suite.data, tokenizer)
    examples = synthetic.teacher_set(
        list(suite.data.tasks), n, suite.data.n_per_task, TRANSFER_SEED
    )
    return encode_examples(examples, tokenizer, suite.data)


def build_teacher(suite: Suite, root: Path, progress_factory: Any = None) -> TeacherArtifacts:
    """The teacher's folder, training it first when the recipe is not cached yet.

    Training goes in rounds of ``train_steps`` (each its own warm-up and cosine schedule)
    until the gate metric reaches its value or ``max_steps`` is spent. A cached folder that is
    partial or damaged (:func:`cached_teacher`) is trained again and replaced, never read.
    """
    t = suite.teacher
    if t.source is not None:  # never trained; a local folder's weights give the size axis
        local = Path(t.source).is_dir()
        return TeacherArtifacts(
            path=t.source,
            cached=False,
            trained=False,
            bytes=model_bytes(t.source) if local else None,
        )
    folder = root / "teachers" / recipe_hash(suite)
    if folder.exists() or folder.is_symlink():
        meta, problem = cached_teacher(folder)
        if meta is not None:
            return _artifacts(meta, folder, cached=True)
        print(f"cached teacher {folder}: {problem}: rebuilding it")  # replaced when built

    tokenizer = default_tokenizer()
    model = build_llama({**t.arch, "max_length": suite.data.max_length}, tokenizer, seed=0)
    data = teacher_batch(suite, tokenizer)
    sft = registry()["sft"]
    budget = Budget(steps=t.train_steps, batch_size=t.batch_size, lr=t.lr)
    steps, tokens, wall, score, rounds = 0, 0, 0.0, None, []
    start = time.perf_counter()
    while steps < t.max_steps:
        n = min(t.train_steps, t.max_steps - steps)
        bar = (
            progress_factory(total=n, desc=f"teacher {t.name}: train {steps}+{n} steps")
            if progress_factory
            else None
        )
        stats = train(
            model,
            sft,
            sft.make_config(),
            data,
            budget,
            n,
            seed=steps,
            ds_overrides=suite.deepspeed,
            progress=bar,
            dtype=t.dtype,
        )
        if bar is not None:
            bar.close()
        steps += n
        tokens += stats["tokens"]
        if t.gate_task is None:
            break
        metrics = evaluate(
            model,
            tokenizer,
            [t.gate_task],
            include_path=suite.eval.include_dirs,
            limit=suite.eval.limit,  # the whole split, as the teacher is scored
            batch_size=suite.eval.batch_size,
            suite_dir=suite.eval.root or None,
        )
        score = gate_score(metrics, t.gate_metric)
        rounds.append({"steps": steps, "score": score})
        if score is not None and score >= t.gate_value:
            break
    wall = time.perf_counter() - start
    if t.gate_task is not None and (score is None or score < t.gate_value):
        raise TeacherGateError(
            f"teacher {t.name} reached {t.gate_metric}={score} on {t.gate_task} "
            f"after {steps} steps, below the gate {t.gate_value}; raise "
            "teacher.max_steps or lower teacher.gate.value"
        )
    with atomic_entry(folder, replace=True) as tmp:
        size = save(model.cpu(), tokenizer, tmp)
        meta = {
            "recipe": recipe(suite),
            "steps": steps,
            "tokens": tokens,
            "train_wall_s": wall,
            "rounds": rounds,
            "params": n_params(model),
            "bytes": size,
            "trained": True,
        }
        (tmp / "kdbench_teacher.json").write_text(json.dumps(meta, indent=1))
    return _artifacts(meta, folder, cached=False)


def cached_teacher(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """A built teacher's metadata (``kdbench_teacher.json``, written last) when ``folder`` holds
    a complete one, else None and what is wrong: a partial build (no metadata), metadata or
    ``config.json`` that is not a JSON object, weights missing, or a ``.safetensors`` file whose
    header does not describe it (truncated, overwritten). A damaged folder is rebuilt, never
    read."""
    if not folder.is_dir():
        return None, "not a folder"
    meta: Any = None
    for name in ("kdbench_teacher.json", "config.json"):
        try:
            parsed = json.loads((folder / name).read_text())
        except FileNotFoundError:
            return None, f"no {name}" + (" (a partial build)" if meta is None else "")
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            return None, f"{name} is unreadable ({type(e).__name__})"
        if not isinstance(parsed, dict):
            return None, f"{name} is not a JSON object"
        meta = parsed if meta is None else meta
    if not model_bytes(folder):
        return None, "no weights"
    for path in sorted(folder.glob("*.safetensors")):
        try:  # reads only the header: it must describe the whole file
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as e:
            return None, f"{path.name} is damaged ({' '.join(str(e).split())})"
    return meta, ""


def _artifacts(meta: dict[str, Any], folder: Path, cached: bool) -> TeacherArtifacts:
    return TeacherArtifacts(
        path=str(folder),
        cached=cached,
        trained=not cached,
        params=meta.get("params"),
        bytes=model_bytes(folder),  # measured again: older code recorded the whole folder
        tokens=meta.get("tokens"),
        steps=meta.get("steps"),
        train_wall_s=meta.get("train_wall_s"),
        recipe=meta.get("recipe", {}),
    )


def teacher_stage(
    suite: Suite,
    cache: str,
    cpus: float,
    generations: bool = False,
    signals: frozenset[str] = frozenset(),
) -> TeacherArtifacts:
    """Ray task: load or build the teacher (cached by recipe hash); with ``generations``, also
    its greedy generations on the transfer set; with ``signals``, the teacher-signal cache entry
    (:mod:`kdbench.signal_cache`), verified or (re)built; and its reference distributions on
    the evaluation tokens, which every evaluation job compares its model with
    (:func:`kdbench.fidelity.cached_reference`). All are cached by content."""
    from ray.experimental.tqdm_ray import tqdm

    worker_setup(cpus)
    teacher = build_teacher(suite, Path(cache), progress_factory=tqdm)
    if generations:
        path = cached_generations(
            teacher.path, suite.data, cache, generation=suite.generation, dtype=suite.teacher.dtype
        )
        teacher = dataclasses.replace(teacher, generations=str(path))
    if signals:
        layers = cached_hidden_layers(suite, teacher.path) if "hidden_states" in signals else None
        entry = signal_cache.ensure(
            teacher.path,
            suite.data,
            signals,
            suite.cache.topk,
            cache,
            progress_factory=tqdm,
            dtype=suite.teacher.dtype,
            hidden_layers=layers,
        )
        teacher = dataclasses.replace(teacher, signal_cache=entry)
    return with_fidelity_reference(teacher, suite, cache)


def with_fidelity_reference(
    teacher: TeacherArtifacts, suite: Suite, cache: str
) -> TeacherArtifacts:
    """``teacher`` with its fidelity reference file (:mod:`kdbench.fidelity`); when it cannot
    be built, with the reason instead: fidelity is then not measured, the suite goes on."""
    try:
        path = fidelity.cached_reference(teacher.path, suite.eval, cache, suite.teacher.dtype)
    except Exception as e:  # noqa: BLE001 - fidelity is a side measurement: never fatal
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        return dataclasses.replace(teacher, fidelity_note=f"{type(e).__name__}: {reason}")
    return dataclasses.replace(teacher, fidelity=str(path))


def _depth(spec: Any) -> int | None:
    """A student's number of decoder layers from its spec or config (None: unreadable)."""
    if spec.arch is not None:
        return spec.arch["num_layers"]
    if spec.from_teacher_layers is not None:
        return len(spec.from_teacher_layers)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec.source).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return None


def cached_hidden_layers(suite: Suite, teacher_path: str) -> tuple[int, ...] | None:
    """The teacher hidden-state layers the suite's methods read with its students (the signal
    cache keeps only those), or None for every layer when that is not known up front
    (:func:`kdbench.signal_cache.hidden_layers_for`)."""
    from transformers import AutoConfig

    from kdbench.methods import resolve

    try:
        teacher_layers = AutoConfig.from_pretrained(teacher_path).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return None
    return signal_cache.hidden_layers_for(
        resolve(suite.methods, registry()),
        suite.method_config,
        [_depth(s) for s in suite.students],
        teacher_layers,
    )
