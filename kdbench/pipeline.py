"""The suite pipeline, top to bottom: validate and plan, then three Ray stages.

1. teacher stage, once per suite: load or build (and cache) the teacher, score it with lm-eval;
   when a method trains on the teacher's generations, generate (and cache) them once here;
2. train stage, one Ray task per (method, student, seed): DeepSpeed engine, the method's loss,
   the same budget for every method;
3. eval stage, one Ray task per trained student: lm-eval on the suite's tasks.

Only this driver process writes DuckDB, one short transaction per finished run, so the
leaderboard app can read while a suite runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench import __version__, store
from kdbench.config import Suite, SuiteError
from kdbench.methods import Method, MethodError, plugin_versions, registry, resolve

# Environment of every Ray worker: quiet libraries, no tokenizer thread fights, no hub calls
# for the synthetic tasks (real models by id still load from the local HF cache).
WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "0",
}


@dataclass(frozen=True)
class Job:
    run_id: str
    method: str
    student: str
    seed: int
    config: dict[str, Any]


def run_key(suite: Suite, method: str, config: dict[str, Any], student: str, seed: int) -> str:
    """A run's identity: suite, method and its config, student, seed and code version."""
    blob = json.dumps([suite.hash, method, config, student, seed, __version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(suite: Suite) -> tuple[list[Method], list[Job]]:
    """Every (method, student, seed) job. Raises :class:`SuiteError` for a bad method or config."""
    from dataclasses import asdict

    from kdbench.evaluate import task_names

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
    _check_vocabularies(suite, [m for m in methods if m.needs_teacher])
    jobs = []
    for method in methods:
        try:
            cfg = asdict(method.make_config(suite.method_config.get(method.name)))
        except MethodError as e:
            raise SuiteError(suite.path, str(e).split(":")[0], str(e).split(": ", 1)[-1]) from None
        for student in suite.students:
            for seed in suite.seeds:
                jobs.append(
                    Job(
                        run_key(suite, method.name, cfg, student.name, seed),
                        method.name,
                        student.name,
                        seed,
                        cfg,
                    )
                )
    return methods, jobs


def vocab_size(spec: Any) -> int | None:
    """The vocabulary size of a model spec, without loading weights (None if unknown offline)."""
    from kdbench.models import default_tokenizer

    if spec.arch is not None:
        return len(default_tokenizer())
    try:
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(spec.source))
    except (OSError, ValueError):
        return None  # checked again in the training job, once the model is at hand


def _check_vocabularies(suite: Suite, methods: list[Method]) -> None:
    """Methods that compare teacher and student token by token refuse different vocabularies
    before anything trains."""
    if not methods:
        return
    teacher = vocab_size(suite.teacher)
    for i, student in enumerate(suite.students):
        size = vocab_size(student)
        if teacher is not None and size is not None and size != teacher:
            names = ", ".join(m.name for m in methods)
            raise SuiteError(
                suite.path,
                f"students[{i}]",
                f"{names} need a vocabulary shared "
                f"with the teacher: teacher {suite.teacher.name} has {teacher} "
                f"tokens, student {student.name} has {size}; use the teacher's "
                "tokenizer or only methods without per-batch teacher signals",
            )


def _suggest(word: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- provenance -----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in (
        "kdbench",
        "torch",
        "transformers",
        "deepspeed",
        "ray",
        "lm_eval",
        "duckdb",
        "pluggy",
        "streamlit",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    out["python"] = platform.python_version()
    out["plugins"] = json.dumps(plugin_versions(), sort_keys=True)
    return out


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    import torch

    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["gpu_count"] = torch.cuda.device_count()
    return hw


# --- Ray stages -----------------------------------------------------------------------------


def _worker_setup(cpus: float) -> None:
    """Per-process setup of a Ray worker: threads, quiet logs, DeepSpeed's accelerator."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name in ("DeepSpeed", "lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def teacher_stage(
    suite: Suite,
    cache: str,
    cpus: float,
    generations: bool = False,
    signals: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Ray task: load or build the teacher (cached by recipe hash); with ``generations``, also
    its greedy generations on the transfer set; with ``signals``, the teacher-signal cache entry
    (:mod:`kdbench.signal_cache`), verified or (re)built. Both are cached by content."""
    from ray.experimental.tqdm_ray import tqdm

    from kdbench import signal_cache
    from kdbench.generations import cached_generations
    from kdbench.teacher import build_teacher

    _worker_setup(cpus)
    teacher = build_teacher(suite, Path(cache), progress_factory=tqdm)
    if generations:
        teacher["generations"] = str(cached_generations(teacher["path"], suite.data, cache))
    if signals:
        entry = signal_cache.ensure(
            teacher["path"], suite.data, signals, suite.cache.topk, cache, progress_factory=tqdm
        )
        teacher["signal_cache"] = entry["path"]
        teacher["signal_cache_built"] = entry["built"]
        teacher["signal_cache_manifest"] = {
            k: v for k, v in entry["manifest"].items() if k != "files"
        }
    return teacher


def train_job(
    suite: Suite,
    job: Job,
    teacher_path: str,
    out_dir: str,
    cpus: float,
    generations: str | None = None,
    cache_path: str | None = None,
) -> dict[str, Any]:
    """Ray task: train one student with one method; saves it and returns its folder and costs.

    ``generations``: the teacher stage's generations file, read (never made) here for a method
    with ``data``; ``cache_path``: the teacher-signal cache entry, read instead of running the
    teacher when it holds every signal the method reads. With ``resources.workers_per_job`` > 1
    this task only drives a Ray Train ``TorchTrainer`` whose workers run :func:`train_worker`.
    """
    started = time.time()
    _worker_setup(cpus)
    if suite.resources.workers_per_job > 1:
        from kdbench.distributed import fit

        result = fit(suite, job, teacher_path, out_dir, cpus, generations, cache_path)
    else:
        result = train_worker(suite, job, teacher_path, out_dir, cpus, generations, cache_path)
    return {**result, "job_started": started, "job_ended": time.time()}


def train_worker(
    suite: Suite,
    job: Job,
    teacher_path: str,
    out_dir: str,
    cpus: float,
    generations: str | None = None,
    cache_path: str | None = None,
) -> dict[str, Any]:
    """The training job itself, in one process of a group of one (a Ray task) or several (Ray
    Train workers, which share each global batch); rank 0 saves the student."""
    import torch
    from ray.experimental.tqdm_ray import tqdm
    from transformers import AutoConfig

    from kdbench.generations import training_examples
    from kdbench.models import build_llama, default_tokenizer, load_pretrained, n_params, save
    from kdbench.signal_cache import open_cache
    from kdbench.speed import PeakMemory
    from kdbench.train import encode, init_distributed, train, transfer_batch

    _worker_setup(cpus)
    init_distributed()
    rank = torch.distributed.get_rank()
    method = registry()[job.method]
    cfg = method.make_config(job.config)
    spec = next(s for s in suite.students if s.name == job.student)
    cache = open_cache(cache_path) if cache_path else None
    if cache is not None and not cache.covers(method):
        cache = None
    teacher, tokenizer, teacher_config = None, default_tokenizer(), None
    if cache is not None:  # the signals are on disk: the teacher is not even loaded
        teacher_config = AutoConfig.from_pretrained(teacher_path)
        if spec.source is None:
            _, tokenizer = load_pretrained(teacher_path)
    elif method.needs_teacher or spec.source is None:
        teacher, tokenizer = load_pretrained(teacher_path)
    if spec.source is not None:
        student, student_tok = load_pretrained(spec.source)
        if method.needs_teacher and len(student_tok) != len(tokenizer):
            raise ValueError(
                f"{job.method} needs a shared vocabulary: teacher has "
                f"{len(tokenizer)} tokens, student {spec.name} has {len(student_tok)}"
            )
        tokenizer = student_tok
    else:
        student = build_llama(
            {**spec.arch, "max_length": suite.data.max_length}, tokenizer, seed=job.seed
        )
    if not method.needs_teacher:  # generations are text, made once in the teacher stage
        teacher = None
    if method.data is not None:
        examples = training_examples(method, cfg, suite.data, generations)
        data = encode(examples, tokenizer, suite.data.max_length, suite.data.rationales)
    else:
        data = transfer_batch(suite.data, tokenizer, seed=0)
    bar = (
        tqdm(total=suite.budget.steps, desc=f"{job.method} -> {job.student} seed {job.seed}")
        if rank == 0
        else None
    )
    folder = Path(out_dir) / job.run_id
    with PeakMemory() as memory:
        stats = train(
            student,
            method,
            cfg,
            data,
            suite.budget,
            suite.budget.steps,
            job.seed,
            teacher=teacher,
            ds_overrides=suite.deepspeed,
            progress=bar,
            checkpoint_dir=folder / "checkpoints",
            checkpoint_every=suite.resources.checkpoint_every,
            cache=cache,
            teacher_config=teacher_config,
            zero_stage=suite.resources.zero_stage,
        )
    if bar is not None:
        bar.close()
    out = {
        **stats,
        "path": str(folder),
        "params": n_params(student),
        "peak_rss_mb": memory.peak_mb,
        "peak_private_mb": memory.peak_private_mb,
        "signal_cache": cache is not None,
        "world_size": torch.distributed.get_world_size(),
    }
    if rank == 0:
        out["bytes"] = save(student.cpu(), tokenizer, folder)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # saved: no resume needed
    return out


def eval_job(
    trained: dict[str, Any],
    tasks: list[str],
    limit: int | None,
    batch_size: int,
    cpus: float,
    prompts: list[str] | None = None,
) -> dict[str, Any]:
    """Ray task: score a saved model with lm-eval (loaded the way a Hub model is loaded), keep
    its per-question results, and time its inference on ``prompts``."""
    from kdbench.evaluate import evaluate
    from kdbench.models import load_pretrained, n_params
    from kdbench.speed import inference_speed

    started = time.time()
    _worker_setup(cpus)
    model, tokenizer = load_pretrained(trained["path"])
    start = time.perf_counter()
    metrics, samples = evaluate(
        model, tokenizer, tasks, limit=limit, batch_size=batch_size, samples=True
    )
    wall = time.perf_counter() - start
    speed = inference_speed(model, tokenizer, prompts) if prompts else {}
    return {
        **trained,
        **speed,
        "metrics": metrics,
        "samples": samples,
        "eval_wall_s": wall,
        "params": trained.get("params") or n_params(model),
        "eval_started": started,
        "eval_ended": time.time(),
    }


# --- the driver -----------------------------------------------------------------------------


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(
        # no address: a private local instance, never a cluster someone else started on this
        # machine (Ray's own default would join it); "auto" joins that one on purpose
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=True,
        runtime_env={"env_vars": WORKER_ENV},
        configure_logging=True,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def run_suite(
    suite: Suite,
    db: Path,
    address: str | None = None,
    cache: str | None = None,
    force: bool = False,
    echo: Any = print,
) -> dict[str, Any]:
    """Run every missing job of ``suite`` and store the results in ``db``."""
    import ray
    from ray.experimental.tqdm_ray import tqdm
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from kdbench import signal_cache, synthetic
    from kdbench.speed import forward_flops, train_flops
    from kdbench.teacher import cache_root, recipe_hash

    methods, jobs = plan(suite)  # every input error surfaces here, before Ray or the database
    by_name = {m.name: m for m in methods}
    done = set()
    if not force and db.exists():
        runs = store.read_runs(db, suite.hash)
        done = set(runs.loc[runs.status == "ok", "run_id"]) if len(runs) else set()
    todo = [j for j in jobs if j.run_id not in done]
    echo(
        f"suite {suite.name} ({suite.hash}): {len(methods)} methods x {len(suite.students)} "
        f"students x {len(suite.seeds)} seeds = {len(jobs)} runs, {len(jobs) - len(todo)} "
        "already stored"
    )

    init_ray(address)
    res = suite.resources
    cpus, gpus, workers = res.cpus_per_job, res.gpus_per_job, res.workers_per_job
    # the teacher stage is one task: it must fit on one node, not on the cluster's total
    node_cpus = max(
        [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus]
    )
    hw = hardware()
    base = {
        "suite_hash": suite.hash,
        "kdbench_version": __version__,
        "versions": json.dumps(versions()),
        "git_commit": git_commit(),
        "hardware": json.dumps(hw),
    }
    store.write_suite(db, suite.hash, suite.name, suite.path, suite.to_dict())
    out_dir = db.parent / "runs"

    # 1. teacher stage: one task with the whole machine (its training is the longest job);
    # it also makes, once, what several methods share: generations and cached teacher signals
    remote = ray.remote  # workers are reused across tasks: imports are paid once per worker
    clock = time.perf_counter()
    teacher_cpus = max(cpus, min(node_cpus, 2.0))
    todo_methods = [by_name[j.method] for j in todo]
    generations = any("generations" in m.signals for m in todo_methods)
    signals = signal_cache.signals_for(todo_methods, suite.cache.signals)
    teacher = ray.get(
        remote(teacher_stage)
        .options(num_cpus=teacher_cpus, num_gpus=gpus)
        .remote(suite, str(cache_root(cache)), teacher_cpus, generations, signals)
    )
    how = (
        "loaded from cache"
        if teacher["cached"]
        else "trained"
        if teacher.get("trained")
        else "loaded"
    )
    echo(
        f"teacher {suite.teacher.name}: {how} in {time.perf_counter() - clock:.0f}s ({teacher['path']})"
        + (f"; generations: {teacher['generations']}" if generations else "")
    )
    manifest = teacher.get("signal_cache_manifest")
    if manifest:
        echo(
            f"teacher signals {', '.join(manifest['signals'])}"
            + (f" (top-{manifest['topk']} logits)" if manifest["topk"] else "")
            + f": {'built' if teacher['signal_cache_built'] else 'verified'}, "
            f"{manifest['bytes'] / 2**20:.0f} MiB, {manifest['bytes_per_token']:.0f} bytes/token "
            f"({teacher['signal_cache']})"
        )

    # the teacher's share of each run's FLOPs: one pass for the cache, one for generations,
    # divided among the runs that read them
    t_params = teacher.get("params") or 0
    cache_users = [
        j
        for j in jobs
        if manifest
        and set(by_name[j.method].signals) - {"generations"}
        and by_name[j.method].data is None
        and set(by_name[j.method].signals) - {"generations"} <= set(manifest["signals"])
    ]
    gen_users = [j for j in jobs if "generations" in by_name[j.method].signals]
    cache_share = (
        forward_flops(t_params, manifest["teacher_tokens"]) / len(cache_users)
        if cache_users
        else 0.0
    )
    gen_share = (
        forward_flops(t_params, _generation_tokens(teacher.get("generations"))) / len(gen_users)
        if gen_users and teacher.get("generations")
        else 0.0
    )
    device_count = (gpus or cpus) * workers  # GPU-hours on GPUs, core-hours on CPUs
    prompts = [ex["prompt"] for ex in synthetic.transfer_set(list(suite.data.tasks), 16, 1)]

    # 2 + 3. train and eval stages: every job at once. Each single-worker run gets a placement
    # group (one bundle: its CPUs/GPUs) that its train and eval tasks share, so Ray packs runs
    # onto the cluster explicitly; a multi-worker run's Ray Train trainer makes its own.
    pending: dict[Any, tuple[Job | None, dt.datetime, float, Any]] = {}
    teacher_id = run_key(suite, "teacher", {"recipe": recipe_hash(suite)}, suite.teacher.name, 0)
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    if teacher_id not in done:
        ref = (
            remote(eval_job)
            .options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
            .remote(
                {
                    "path": teacher["path"],
                    "params": teacher.get("params"),
                    "tokens": teacher.get("tokens"),
                    "steps": teacher.get("steps"),
                    "train_wall_s": teacher.get("train_wall_s"),
                    "bytes": teacher.get("bytes"),
                },
                list(suite.eval.tasks),
                suite.eval.limit,
                suite.eval.batch_size,
                cpus,
                prompts,
            )
        )
        pending[ref] = (None, _now(), time.time(), None)

    def submit(job: Job) -> None:
        submitted = time.time()
        if workers > 1:  # the task only drives Ray Train; its workers hold the resources
            pg, train_opts, eval_opts = None, {"num_cpus": 0}, {"num_cpus": cpus, "num_gpus": gpus}
        else:
            pg = placement_group([bundle], strategy="PACK")
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
            train_opts = {"num_cpus": cpus, "num_gpus": gpus, "scheduling_strategy": strategy}
            eval_opts = train_opts
        trained = (
            remote(train_job)
            # a crashed worker is retried (and resumes from its checkpoint); an exception
            # raised by a method is not: it would fail the same way again
            .options(**train_opts, max_retries=2, retry_exceptions=False)
            .remote(
                suite,
                job,
                teacher["path"],
                str(out_dir),
                cpus,
                teacher.get("generations"),
                teacher.get("signal_cache"),
            )
        )
        scored = (
            remote(eval_job)
            .options(**eval_opts, max_retries=1)
            .remote(
                trained,
                list(suite.eval.tasks),
                suite.eval.limit,
                suite.eval.batch_size,
                cpus,
                prompts,
            )
        )
        pending[scored] = (job, _now(), submitted, pg)

    def window() -> int:
        """Runs in flight: twice what the cluster holds now (at least 2), so that an autoscaler
        sees waiting placement groups and adds nodes, yet few groups wait: Ray's scheduler
        retries every waiting group, which costs the head CPU when a node is lost."""
        have = ray.cluster_resources()
        fits = have.get("CPU", 0) // max(cpus * workers, 0.01)
        if gpus:
            fits = min(fits, have.get("GPU", 0) // (gpus * workers))
        return max(2, 2 * int(fits))

    queue = list(todo)
    while queue and len(pending) < window():
        submit(queue.pop(0))
    failed = 0
    bar = tqdm(total=len(pending) + len(queue), desc="runs (train + eval)", unit="run")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job, started, submitted, pg = pending.pop(ready[0])
        if job is None:
            run = {
                **base,
                "run_id": teacher_id,
                "role": "teacher",
                "method": "teacher",
                "family": "teacher",
                "method_config": json.dumps(teacher.get("recipe", {})),
                "student": suite.teacher.name,
                "seed": 0,
            }
            what = f"teacher {suite.teacher.name}"
        else:
            run = {
                **base,
                "run_id": job.run_id,
                "role": "student",
                "method": job.method,
                "family": by_name[job.method].family,
                "method_config": json.dumps(job.config),
                "student": job.student,
                "seed": job.seed,
            }
            what = f"{job.method} -> {job.student} seed {job.seed}"
        run["started_at"] = started
        try:
            result = ray.get(ready[0])
        except Exception as e:  # a failing plugin fails only its own runs
            failed += 1
            error = _error_text(e)
            store.write_run(
                db, {**run, "status": "failed", "error": error, "finished_at": _now()}, [], {}
            )
            print(f"FAILED {what}: {error.strip().splitlines()[-1]}")
        else:
            costs = {
                key: result.get(key)
                for key in (
                    "train_wall_s",
                    "eval_wall_s",
                    "params",
                    "bytes",
                    "tokens",
                    "steps",
                    "resumed_from",
                    "peak_rss_mb",
                    "teacher_forwards",
                    "infer_tokens_per_s",
                    "infer_latency_ms",
                )
            }
            costs["total_wall_s"] = (_now() - started).total_seconds()
            tokens, params = result.get("tokens") or 0, result.get("params") or 0
            if job is None:
                costs["train_flops"] = train_flops(params, tokens) if tokens else None
                costs["teacher_flops"] = costs["train_flops"]
            else:
                costs["train_flops"] = train_flops(params, tokens) + forward_flops(
                    t_params,
                    tokens
                    * (result.get("teacher_forwards") or 0)
                    / max(1, suite.budget.steps * suite.budget.batch_size),
                )
                costs["teacher_flops"] = (
                    cache_share if job in cache_users and result.get("signal_cache") else 0.0
                ) + (gen_share if job in gen_users else 0.0)
                costs["queue_s"] = result["job_started"] - submitted
            hours = ((result.get("train_wall_s") or 0) + (result.get("eval_wall_s") or 0)) / 3600
            costs["device_hours"] = hours * device_count
            if result.get("resumed_from"):
                print(f"{what}: resumed from its checkpoint at step {result['resumed_from']}")
            store.write_run(
                db,
                {**run, "status": "ok", "error": None, "finished_at": _now()},
                result["metrics"],
                costs,
                result.get("samples", []),
            )
        if pg is not None:
            remove_placement_group(pg)
        while queue and len(pending) < window():
            submit(queue.pop(0))
        bar.update(1)
    bar.close()
    echo(f"train + eval stages: {time.perf_counter() - clock:.0f}s since the teacher stage began")
    return {
        "suite_hash": suite.hash,
        "runs": len(jobs),
        "ran": len(todo),
        "failed": failed,
        "teacher_cached": teacher["cached"],
        "teacher_path": teacher["path"],
        "signal_cache": teacher.get("signal_cache"),
        "signal_cache_built": teacher.get("signal_cache_built"),
    }


def _generation_tokens(path: str | None) -> int:
    """Characters of prompts and generations in a generations file: with kdbench's character
    tokenizer, its token count (an estimate for other tokenizers)."""
    if not path:
        return 0
    from kdbench.generations import load_generations

    return sum(len(r.get("prompt", "")) + len(r.get("text", "")) for r in load_generations(path))


def _error_text(e: BaseException) -> str:
    """The failure as a plain Python traceback (a Ray task error carries the remote one)."""
    import re

    import ray

    if isinstance(e, ray.exceptions.RayTaskError):
        text = re.sub(r"\x1b\[[0-9;]*m", "", getattr(e, "traceback_str", "") or str(e))
        return (
            text if text.startswith("Traceback") else "Traceback (most recent call last):\n" + text
        )
    return "".join(traceback.format_exception(e))
