"""One training job over several workers (GPUs or nodes) with Ray Train.

A ``TorchTrainer`` starts ``resources.workers_per_job`` workers, packed by Ray Train's own
placement group (``ScalingConfig(placement_strategy="PACK")``), each with
``resources.cpus_per_job`` CPUs and ``resources.gpus_per_job`` GPUs, and sets up the torch
process group (NCCL on GPUs, gloo on CPUs). Each worker runs the training job's worker function
(:func:`kdbench.train_job.train_worker`, passed in), which calls ``deepspeed.initialize`` on that
group: the ZeRO stage comes from ``resources.zero_stage``, every worker takes its share of each
global batch, and rank 0 saves the student. A worker that dies restarts the group
(``FailureConfig``), which resumes from the job's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdbench.records import TrainResult, TrainTask

RESULT = "train_result.json"  # rank 0's TrainResult, next to the saved student


def _loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the job; rank 0 leaves its result on disk (Ray Train
    keeps reported metrics only with a checkpoint, and the student is saved already)."""
    import torch

    result = config["worker"](config["task"])
    if torch.distributed.get_rank() == 0:
        (Path(result.path) / RESULT).write_text(json.dumps(dataclasses.asdict(result)))


def fit(worker: Callable[[TrainTask], TrainResult], task: TrainTask) -> TrainResult:
    """Run ``worker(task)`` on ``task.suite.resources.workers_per_job`` workers; returns rank
    0's result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res, job, out_dir = task.suite.resources, task.job, task.out_dir
    per_worker = {"CPU": task.cpus, **({"GPU": res.gpus_per_job} if res.gpus_per_job else {})}
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"worker": worker, "task": task},
        torch_config=TorchConfig(backend="nccl" if res.gpus_per_job else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_job,
            use_gpu=res.gpus_per_job > 0,
            resources_per_worker=per_worker,
            placement_strategy="PACK",
        ),
        run_config=RunConfig(
            name=f"kdbench-{job.run_id}",
            storage_path=str(Path(out_dir).resolve() / "ray_train"),
            failure_config=FailureConfig(max_failures=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return TrainResult(**json.loads((Path(out_dir) / job.run_id / RESULT).read_text()))
