"""Benchmarks of issue 4 (scale-out), each figure a ratio measured within one run:

1. ``step``: a kd training step reading cached top-k teacher logits vs a plain sft step, same
   student and batches (target: at most 1.15x); a live-teacher kd step for reference; and the
   cache's size in bytes per token.
2. ``suite``: a suite with every method, once with the teacher-signal cache and once with
   ``[cache] signals = []`` (every job runs the teacher live): wall time, and teacher forward
   passes over training sequences (target: one pass over the transfer set per suite).
3. ``concurrency``: two training jobs at once vs the same two one after the other, as Ray tasks
   with one CPU each (target: at least 1.6x the throughput on this 2-core machine).
4. (with 3) Ray's overhead per job: submit to start, and end to stored result (target: < 1 s).
5. (with 3) peak resident memory per training job, per method.

    python benchmarks/scale.py step|suite|concurrency|all [--suite leaderboards/tiny.toml]

Figures print as text and as one JSON line per benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdbench.config import load_suite
from kdbench.methods import registry


def _teacher(suite, cache: Path):
    from kdbench.teacher import build_teacher

    return build_teacher(suite, cache)


def bench_step(suite_path: str, cache: Path, steps: int) -> dict:
    """Seconds per training step, sft vs kd on cached top-k vs kd with a live teacher."""
    from kdbench import signal_cache
    from kdbench.models import build_llama, load_pretrained
    from kdbench.train import train
    from kdbench.transfer import transfer_batch

    torch.set_num_threads(1)
    suite = load_suite(suite_path)
    teacher_info = _teacher(suite, cache)
    entry = signal_cache.ensure(
        teacher_info.path, suite.data, frozenset({"logits"}), suite.cache.topk, cache
    )
    sig = signal_cache.open_cache(entry.path)
    teacher, tok = load_pretrained(teacher_info.path)
    data = transfer_batch(suite.data, tok)
    spec = suite.students[-1]
    budget = dataclasses.replace(suite.budget, steps=steps)
    methods = registry()

    def timed(name: str, **kw) -> float:
        method = methods[name]
        student = build_llama({**spec.arch, "max_length": suite.data.max_length}, tok, seed=0)
        stats = train(student, method, method.make_config(), data, budget, steps, seed=0, **kw)
        return stats["train_wall_s"] / steps

    timed("sft")  # warm-up: first DeepSpeed engine, allocator
    per_step = {}
    for _ in range(2):  # interleaved twice: drift on a shared machine hits all three alike
        for label, name, kw in (
            ("sft", "sft", {}),
            ("kd_cached_topk", "kd", {"cache": sig, "teacher_config": teacher.config}),
            ("kd_live_teacher", "kd", {"teacher": teacher}),
        ):
            per_step.setdefault(label, []).append(timed(name, **kw))
    best = {k: min(v) for k, v in per_step.items()}
    return {
        "student": spec.name,
        "batch_size": budget.batch_size,
        "steps": steps,
        "topk": suite.cache.topk,
        "s_per_step": best,
        "kd_cached_over_sft": best["kd_cached_topk"] / best["sft"],
        "kd_live_over_sft": best["kd_live_teacher"] / best["sft"],
        "cache_bytes_per_token": sig.bytes_per_token,
        "cache_build_s": sig.manifest["build_s"],
    }


def _run(suite_file: Path, db: Path, cache: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kdbench.cli", "run", str(suite_file), "--db", str(db)]
        + ["--cache", str(cache)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def bench_suite(suite_path: str, cache: Path, steps: int) -> dict:
    """The suite with every method, with and without the signal cache (teacher cached)."""
    from kdbench import store

    text = Path(suite_path).read_text()
    text = re.sub(r"(?m)^steps = \d+", f"steps = {steps}", text)
    _teacher(load_suite(suite_path), cache)  # both variants start from the cached teacher
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (("cache", ""), ("recompute", "signals = []\n")):
            suite_file = Path(tmp) / f"{label}.toml"
            # the recompute variant: the same [cache] table, with no signal cached
            suite_file.write_text(
                re.sub(r"(?m)^\[cache\][^\n]*\n", lambda m, e=extra: m[0] + e, text)
            )
            db = Path(tmp) / label / "kdbench.duckdb"
            wall = _run(suite_file, db, cache)
            runs = store.read_runs(db)
            students = runs[runs.role == "student"]
            suite = load_suite(suite_file)
            n_transfer = len(suite.data.tasks) * suite.data.n_per_task
            cache_pass = n_transfer if label == "cache" else 0
            out[label] = {
                "wall_s": wall,
                "runs": len(runs),
                "failed": int((runs.status == "failed").sum()),
                "teacher_forward_sequences": int(students.teacher_forwards.fillna(0).sum())
                + cache_pass,
                "in_passes_over_transfer_set": (
                    int(students.teacher_forwards.fillna(0).sum()) + cache_pass
                )
                / n_transfer,
            }
    out["steps"] = steps
    out["speedup"] = out["recompute"]["wall_s"] / out["cache"]["wall_s"]
    return out


def bench_concurrency(suite_path: str, cache: Path, steps: int) -> dict:
    """Two jobs together vs one after the other (Ray tasks, 1 CPU each), Ray's per-job overhead
    and each job's peak memory."""
    import ray

    from kdbench import signal_cache, store
    from kdbench.records import Job, TrainTask
    from kdbench.train_job import train_job
    from kdbench.workers import WORKER_ENV

    suite = load_suite(suite_path)
    suite = dataclasses.replace(
        suite, budget=dataclasses.replace(suite.budget, steps=steps), cache=suite.cache
    )
    teacher_info = _teacher(suite, cache)
    methods = registry()
    wanted = signal_cache.signals_for(methods.values(), suite.cache.signals)
    entry = signal_cache.ensure(teacher_info.path, suite.data, wanted, suite.cache.topk, cache)
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV}
    )
    remote = ray.remote(train_job).options(num_cpus=1, max_retries=0)
    out_dir = Path(tempfile.mkdtemp())
    db = out_dir / "bench.duckdb"

    def job(method: str, seed: int, student: int = -1) -> Job:
        m = methods[method]
        cfg = dataclasses.asdict(m.make_config(suite.method_config.get(method)))
        return Job(
            f"{method}-{seed}-{time.monotonic_ns()}",
            method,
            suite.students[student].name,
            seed,
            cfg,
        )

    def submit(j: Job, cached: bool = True):
        path = entry.path if cached else None
        task = TrainTask(suite, j, teacher_info.path, str(out_dir), 1.0, None, path)
        return remote.remote(task), (time.time())

    # warm both workers (imports, DeepSpeed op build) and the page cache
    ray.get([submit(job("sft", s))[0] for s in (0, 1)])

    overhead = []

    def collect(pairs) -> list[dict]:
        """Results in the order they finish, each stored as soon as it arrives."""
        submitted = dict(pairs)
        results = []
        while submitted:
            (ref,), _ = ray.wait(list(submitted), num_returns=1)
            result = ray.get(ref)
            received = time.time()
            store.write_run(
                db,
                {"run_id": result.path, "role": "student", "status": "ok"},
                [],
                {"train_wall_s": result.train_wall_s, "peak_rss_mb": result.peak_rss_mb},
            )
            stored = time.time()
            overhead.append(
                {
                    "submit_to_start_s": result.job_started - submitted.pop(ref),
                    "end_to_stored_s": stored - result.job_ended,
                    "store_write_s": stored - received,
                }
            )
            results.append(result)
        return results

    start = time.perf_counter()
    collect([submit(job("sft", 10))])
    collect([submit(job("kd", 11))])
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    collect([submit(job("sft", 12)), submit(job("kd", 13))])
    concurrent = time.perf_counter() - start

    memory = {}
    for name, cached in (
        ("sft", True),
        ("kd", True),
        ("kd", False),
        ("fitnets", True),
        ("fitnets", False),
        ("at", True),
        ("at", False),
    ):
        label = name if name == "sft" else f"{name} ({'cached' if cached else 'live'} teacher)"
        (r,) = collect([submit(job(name, 20), cached)])
        assert r.signal_cache == (cached and name != "sft"), (label, r.signal_cache)
        memory[label] = {"rss": r.peak_rss_mb, "private": r.peak_private_mb}
    ray.shutdown()
    worst = {k: max(o[k] for o in overhead) for k in overhead[0]}
    return {
        "steps": steps,
        "sequential_s": sequential,
        "concurrent_s": concurrent,
        "throughput_ratio": sequential / concurrent,
        "overhead_worst_s": worst,
        "overhead_jobs": len(overhead),
        "peak_rss_mb": memory,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=["step", "suite", "concurrency", "all"])
    p.add_argument("--suite", default="leaderboards/tiny.toml")
    p.add_argument("--cache", default=None, help="cache root (default: a fresh temporary one)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default per bench)")
    args = p.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="kdbench-bench-"))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, cache {cache}")
    if args.which in ("step", "all"):
        r = bench_step(args.suite, cache, args.steps or 30)
        print(
            f"1. step time, {r['student']} batch {r['batch_size']}: sft {r['s_per_step']['sft']:.3f}s,"
            f" kd on cached top-{r['topk']} {r['s_per_step']['kd_cached_topk']:.3f}s"
            f" ({r['kd_cached_over_sft']:.2f}x sft, target <= 1.15x), kd with a live teacher "
            f"{r['s_per_step']['kd_live_teacher']:.3f}s ({r['kd_live_over_sft']:.2f}x); cache "
            f"{r['cache_bytes_per_token']:.0f} bytes/token"
        )
        print(json.dumps({"step": r}))
    if args.which in ("suite", "all"):
        r = bench_suite(args.suite, cache, args.steps or 50)
        for label in ("cache", "recompute"):
            x = r[label]
            print(
                f"2. suite ({r['steps']} steps), {label}: {x['wall_s'] / 60:.2f} min, {x['runs']} runs"
                f" ({x['failed']} failed), teacher forwards {x['teacher_forward_sequences']} sequences"
                f" = {x['in_passes_over_transfer_set']:.2f} passes over the transfer set"
            )
        print(f"   recompute / cache wall time: {r['speedup']:.2f}x")
        print(json.dumps({"suite": r}))
    if args.which in ("concurrency", "all"):
        r = bench_concurrency(args.suite, cache, args.steps or 60)
        print(
            f"3. two jobs ({r['steps']} steps): one after the other {r['sequential_s']:.1f}s, "
            f"together {r['concurrent_s']:.1f}s: {r['throughput_ratio']:.2f}x throughput "
            "(target >= 1.6x)"
        )
        w = r["overhead_worst_s"]
        print(
            f"4. Ray overhead per job, worst of {r['overhead_jobs']}: submit to start "
            f"{w['submit_to_start_s']:.2f}s, end to stored {w['end_to_stored_s']:.2f}s "
            f"(of which the DuckDB write {w['store_write_s']:.2f}s); target < 1 s"
        )
        print(
            "5. peak memory per training job, resident (private: without the cache's file pages): "
            + ", ".join(
                f"{k} {v['rss']:.0f} ({v['private']:.0f}) MiB" for k, v in r["peak_rss_mb"].items()
            )
        )
        print(json.dumps({"concurrency": r}))


if __name__ == "__main__":
    main()
