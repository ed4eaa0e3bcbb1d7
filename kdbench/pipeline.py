"""The suite pipeline, top to bottom (:func:`run_suite`): plan, then three Ray stages.

1. teacher stage, once per suite (:mod:`kdbench.teacher`): load or build (and cache) the
   teacher; generate its generations and fill the teacher-signal cache when methods need them;
2. train stage, one Ray task per (method, student, seed) (:mod:`kdbench.train_job`);
3. eval stage, one Ray task per trained student and one for the teacher (:mod:`kdbench.eval_job`),
   chained to its training task and scheduled by :mod:`kdbench.schedule`; with ``[eval]
   quantize`` the same task scores each quantised variant too, stored as its own run
   (:func:`write_quantized`).

Only this driver process writes DuckDB, one short transaction per finished run, so the
leaderboard app can read while a suite runs. Costs come from :mod:`kdbench.costs`.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.experimental.tqdm_ray import tqdm

from kdbench import __version__, signal_cache, store
from kdbench.config import Suite
from kdbench.costs import quantized_costs, run_costs, teacher_shares
from kdbench.leaderboard import refresh_snapshots
from kdbench.methods import Method
from kdbench.plan import plan, quant_run_id, run_key
from kdbench.preflight import check_resources, preflight
from kdbench.provenance import provenance
from kdbench.records import EvalResult, Job, TeacherArtifacts
from kdbench.schedule import Scheduler
from kdbench.teacher import cache_root, recipe_hash, teacher_stage
from kdbench.transfer import transfer_examples
from kdbench.workers import init_ray

__all__ = ["SuiteSummary", "init_ray", "plan", "run_suite"]


@dataclass(frozen=True)
class SuiteSummary:
    suite_hash: str
    runs: int  # jobs in the suite
    ran: int  # jobs run now (the others were stored already)
    failed: int
    teacher: TeacherArtifacts


def run_suite(
    suite: Suite,
    db: Path,
    address: str | None = None,
    cache: str | None = None,
    force: bool = False,
    echo: Any = print,
    planned: tuple[list[Method], list[Job]] | None = None,
) -> SuiteSummary:
    """Run every missing job of ``suite`` and store the results in ``db``; ``planned`` is
    :func:`plan`'s result when the caller has it already (planning loads every plugin and
    lm-eval's task index: seconds)."""
    # every input error surfaces in plan, before Ray or the database
    methods, jobs = planned if planned is not None else plan(suite)
    by_name = {m.name: m for m in methods}
    done = set() if force else store.ok_run_ids(db, suite.hash)
    todo = [j for j in jobs if j.run_id not in done]
    shape = f"{len(methods)} methods x {len(suite.students)} students x {len(suite.seeds)} seeds"
    if len(jobs) != len(methods) * len(suite.students) * len(suite.seeds):
        only = "; ".join(
            f"{s.name} only {', '.join(s.methods)}" for s in suite.students if s.methods
        )
        shape = f"{shape} ({only})"
    echo(
        f"suite {suite.name} ({suite.hash}): {shape} = {len(jobs)} runs, "
        f"{len(jobs) - len(todo)} already stored"
    )
    init_ray(address)
    check_resources(suite)  # a job no node can hold would wait forever: refused, now
    if todo:  # every training job must fit its device, before anything is written
        preflight(suite, [m for m in methods if any(j.method == m.name for j in todo)])
    base = {"suite_hash": suite.hash, "kdbench_version": __version__, **provenance()}
    store.write_suite(db, suite.hash, suite.name, suite.path, suite.to_dict())

    clock = time.perf_counter()
    teacher = run_teacher_stage(suite, [by_name[j.method] for j in todo], cache)
    echo(describe_teacher(suite, teacher, time.perf_counter() - clock))

    shares = teacher_shares(jobs, by_name, teacher)
    prompts = [ex["prompt"] for ex in transfer_examples(suite.data)[:16]]
    teacher_id = run_key(suite, "teacher", {"recipe": recipe_hash(suite)}, suite.teacher.name, 0)
    scheduler = Scheduler(suite, teacher, str(db.parent / "runs"), prompts, teacher_id)
    if teacher_id not in done:
        scheduler.submit_teacher_eval()
    failed = 0
    bar = tqdm(total=len(todo) + (teacher_id not in done), desc="runs (train + eval)", unit="run")
    for run, outcome in scheduler.run(todo):
        row = {**base, **run_identity(suite, run.job, by_name, teacher, teacher_id)}
        row.update(started_at=run.submitted, finished_at=time.time())
        if isinstance(outcome, BaseException):
            failed += 1
            error = error_text(outcome)
            store.write_run(db, {**row, "status": "failed", "error": error}, [], {})
            print(f"FAILED {describe_run(suite, run.job)}: {error.strip().splitlines()[-1]}")
        else:
            costs = run_costs(
                outcome,
                suite,
                time.time() - run.submitted,
                job=run.job,
                shares=shares,
                teacher_params=teacher.params or 0,
                submitted=run.submitted,
            )
            if getattr(outcome.model, "resumed_from", 0):
                print(
                    f"{describe_run(suite, run.job)}: resumed from its checkpoint at step "
                    f"{outcome.model.resumed_from}"
                )
            for note in outcome.notes:
                print(f"{describe_run(suite, run.job)}: {note}")
            row.update(status="ok", error=None)
            store.write_run(db, row, outcome.metrics, costs, outcome.samples)
            write_quantized(db, row, costs, outcome, suite)
        bar.update(1)
    bar.close()
    echo(f"train + eval stages: {time.perf_counter() - clock:.0f}s since the teacher stage began")
    refresh_snapshots(db, [suite.hash])  # the board readers use (kdbench.snapshots)
    return SuiteSummary(suite.hash, len(jobs), len(todo), failed, teacher)


def write_quantized(
    db: Path, row: dict[str, Any], costs: dict[str, Any], outcome: EvalResult, suite: Suite
) -> None:
    """Store each quantised variant of a stored run (``[eval] quantize``) as its own run:
    the parent's identity with ``quant`` and ``parent_run_id`` set, its own metrics, samples
    and costs (:func:`kdbench.costs.quantized_costs`); failed, with its traceback, when the
    library could not quantise the model."""
    for q in outcome.quantized:
        run = {
            **row,
            "run_id": quant_run_id(row["run_id"], q.scheme),
            "quant": q.scheme,
            "parent_run_id": row["run_id"],
            "status": "failed" if q.error else "ok",
            "error": q.error,
        }
        store.write_run(db, run, q.metrics, quantized_costs(costs, q, suite), q.samples)
        if q.error:
            print(
                f"FAILED {q.scheme} quantisation of {row['method']} -> {row['student']}: "
                f"{q.error.strip().splitlines()[-1]}"
            )


def run_teacher_stage(suite: Suite, methods: list[Method], cache: str | None) -> TeacherArtifacts:
    """Stage 1 as one Ray task with up to two CPUs of one node (its training is the longest
    job); it also makes, once, what several methods share: generations and cached signals."""
    res = suite.resources
    node_cpus = max(
        [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        or [res.cpus_per_job]
    )  # one task: it must fit on one node, not on the cluster's total
    cpus = max(res.cpus_per_job, min(node_cpus, 2.0))
    generations = any("generations" in m.signals for m in methods)
    signals = signal_cache.signals_for(methods, suite.cache.signals)
    task = ray.remote(teacher_stage).options(num_cpus=cpus, num_gpus=res.gpus_per_job)
    return ray.get(task.remote(suite, str(cache_root(cache)), cpus, generations, signals))


def describe_teacher(suite: Suite, teacher: TeacherArtifacts, seconds: float) -> str:
    """What the teacher stage did, for the terminal."""
    text = f"teacher {suite.teacher.name}: {teacher.how} in {seconds:.0f}s ({teacher.path})"
    if teacher.generations:
        text += f"; generations: {teacher.generations}"
    entry = teacher.signal_cache
    if entry is not None:
        text += (
            f"\nteacher signals {', '.join(entry.signals)}"
            + (f" (top-{entry.topk} logits)" if entry.topk else "")
            + f": {'built' if entry.built else 'verified'}, {entry.bytes / 2**20:.0f} MiB, "
            f"{entry.bytes_per_token:.0f} bytes/token ({entry.path})"
        )
    if teacher.fidelity:
        text += f"\nteacher reference for fidelity: {teacher.fidelity}"
    elif teacher.fidelity_note:
        text += f"\nfidelity to the teacher not measured: {teacher.fidelity_note}"
    return text


def run_identity(
    suite: Suite,
    job: Job | None,
    methods: dict[str, Method],
    teacher: TeacherArtifacts,
    teacher_id: str,
) -> dict[str, Any]:
    """The identifying columns of a stored run: a student's job, or the teacher (``job`` None)."""
    if job is None:
        return {
            "run_id": teacher_id,
            "role": "teacher",
            "method": "teacher",
            "family": "teacher",
            "method_config": json.dumps(teacher.recipe),
            "student": suite.teacher.name,
            "seed": 0,
        }
    return {
        "run_id": job.run_id,
        "role": "student",
        "method": job.method,
        "family": methods[job.method].family,
        "method_config": json.dumps(job.config),
        "student": job.student,
        "seed": job.seed,
    }


def describe_run(suite: Suite, job: Job | None) -> str:
    if job is None:
        return f"teacher {suite.teacher.name}"
    return f"{job.method} -> {job.student} seed {job.seed}"


def error_text(e: BaseException) -> str:
    """The failure as a plain Python traceback (a Ray task error carries the remote one)."""
    if isinstance(e, ray.exceptions.RayTaskError):
        text = re.sub(r"\x1b\[[0-9;]*m", "", getattr(e, "traceback_str", "") or str(e))
        return (
            text if text.startswith("Traceback") else "Traceback (most recent call last):\n" + text
        )
    return "".join(traceback.format_exception(e))
