"""The train and eval stages on Ray: each run's training task chained into its evaluation task,
a window of runs in flight, and a placement group per single-worker run.

Each single-worker run gets a placement group (one bundle: its CPUs/GPUs) that its train and
eval tasks share, so Ray packs runs onto the cluster explicitly; a multi-worker run's Ray Train
trainer makes its own. Runs in flight are twice what the cluster holds now (at least 2), so an
autoscaler sees waiting placement groups and adds nodes, yet few groups wait: Ray's scheduler
retries every waiting group, which costs the head CPU when a node is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from kdbench.config import Suite
from kdbench.eval_job import eval_job
from kdbench.plan import quant_run_id
from kdbench.records import EvalResult, Job, TeacherArtifacts, TrainTask
from kdbench.train_job import train_job


@dataclass
class Submitted:
    """A run in flight: its job (None for the teacher's evaluation), when it was submitted
    (epoch seconds) and its placement group."""

    job: Job | None
    submitted: float
    group: PlacementGroup | None = None


class Scheduler:
    """Submits runs to Ray and yields them as they finish (:meth:`finished`)."""

    def __init__(
        self,
        suite: Suite,
        teacher: TeacherArtifacts,
        out_dir: str,
        prompts: list[str],
        teacher_id: str = "teacher",
    ) -> None:
        self.suite, self.teacher, self.out_dir, self.prompts = suite, teacher, out_dir, prompts
        self.teacher_id = teacher_id
        res = suite.resources
        self.cpus, self.gpus, self.workers = res.cpus_per_job, res.gpus_per_job, res.workers_per_job
        self.pending: dict[ray.ObjectRef, Submitted] = {}
        self.queue: list[Job] = []

    def _eval_args(self, job: Job | None) -> tuple[Any, ...]:
        """The evaluation job's arguments after the model: the suite's [eval], CPUs, prompts,
        the dtype of the model scored (the teacher's for ``job`` None), where each quantised
        variant is saved (``<out_dir>/<its run id>``) and the teacher's fidelity reference
        file, which the teacher stage wrote before any job starts."""
        if job is None:
            dtype = self.suite.teacher.dtype
        else:
            dtype = next(s.dtype for s in self.suite.students if s.name == job.student)
        return (
            self.suite.eval,
            self.cpus,
            self.prompts,
            dtype,
            self.quant_dirs(job),
            self.teacher.fidelity,
        )

    def quant_dirs(self, job: Job | None) -> dict[str, str]:
        """Per scheme of ``[eval] quantize``, the folder of the quantised weights of ``job``'s
        model (the teacher's for None): ``<out_dir>/<quantised run id>``."""
        parent = self.teacher_id if job is None else job.run_id
        return {
            s: str(Path(self.out_dir) / quant_run_id(parent, s)) for s in self.suite.eval.quantize
        }

    def submit_teacher_eval(self) -> None:
        ref = (
            ray.remote(eval_job)
            .options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=1)
            .remote(self.teacher, *self._eval_args(None))
        )
        self.pending[ref] = Submitted(None, time.time())

    def _submit(self, job: Job) -> None:
        submitted = time.time()
        group = None
        if self.workers > 1:  # the task only drives Ray Train; its workers hold the resources
            train_opts: dict[str, Any] = {"num_cpus": 0}
            eval_opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        else:
            bundle = {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}
            group = placement_group([bundle], strategy="PACK")
            strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
            train_opts = {"num_cpus": self.cpus, "num_gpus": self.gpus}
            train_opts["scheduling_strategy"] = strategy
            eval_opts = train_opts
        t = self.teacher
        cache = t.signal_cache.path if t.signal_cache else None
        trained = (
            ray.remote(train_job)
            # a crashed worker is retried (and resumes from its checkpoint); an exception
            # raised by a method is not: it would fail the same way again
            .options(**train_opts, max_retries=2, retry_exceptions=False)
            .remote(
                TrainTask(self.suite, job, t.path, self.out_dir, self.cpus, t.generations, cache)
            )
        )
        scored = (
            ray.remote(eval_job)
            .options(**eval_opts, max_retries=1)
            .remote(trained, *self._eval_args(job))
        )
        self.pending[scored] = Submitted(job, submitted, group)

    def window(self) -> int:
        """Runs in flight: twice what the cluster holds now, at least 2."""
        have = ray.cluster_resources()
        fits = have.get("CPU", 0) // max(self.cpus * self.workers, 0.01)
        if self.gpus:
            fits = min(fits, have.get("GPU", 0) // (self.gpus * self.workers))
        return max(2, 2 * int(fits))

    def _fill(self) -> None:
        while self.queue and len(self.pending) < self.window():
            self._submit(self.queue.pop(0))

    def run(self, jobs: list[Job]) -> Iterator[tuple[Submitted, EvalResult | BaseException]]:
        """Submit ``jobs`` (after any teacher evaluation already submitted) and yield each run
        with its result, or the exception its train or eval task raised, as it finishes."""
        self.queue = list(jobs)
        self._fill()
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            run = self.pending.pop(ready[0])
            try:
                outcome: EvalResult | BaseException = ray.get(ready[0])
            except Exception as e:  # a failing plugin fails only its own runs
                outcome = e
            yield run, outcome
            if run.group is not None:
                remove_placement_group(run.group)
            self._fill()
