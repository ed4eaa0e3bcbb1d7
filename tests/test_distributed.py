"""A job spanning several workers: Ray Train's TorchTrainer, two gloo workers on this CPU,
``deepspeed.initialize`` in each, every worker on its share of each global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench.config import load_suite

from .conftest import SHRINK


@pytest.mark.e2e
def test_two_gloo_workers_train_one_job(write_suite, tmp_path: Path) -> None:
    import ray

    from kdbench import store
    from kdbench.pipeline import run_suite

    suite = load_suite(
        write_suite(
            {
                **SHRINK,
                "methods": ["kd"],
                "resources.checkpoint_every": 2,
                "resources.workers_per_job": 2,
                "resources.zero_stage": 1,
            }
        )
    )
    assert suite.resources.workers_per_job == 2
    db = tmp_path / "results" / "kdbench.duckdb"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        summary = run_suite(suite, db, cache=str(tmp_path / "cache"))
    finally:
        ray.shutdown()
    assert summary.failed == 0, store.read_runs(db).error.dropna().tolist()
    runs = store.read_runs(db, suite.hash)
    students = runs[runs.role == "student"]
    assert len(students) == 2 and (students.status == "ok").all()
    # Ray Train ran them: one trainer run folder per job, and the workers formed a group of 2
    trainer_runs = sorted(p.name for p in (db.parent / "runs" / "ray_train").iterdir())
    assert trainer_runs == sorted(f"kdbench-{r}" for r in students.run_id)
    assert (students.teacher_forwards == 0).all()  # the workers read the signal cache
    # every global batch of 8 was split 4 + 4: the tokens counted cover whole global batches
    assert (students.tokens >= suite.budget.steps * suite.budget.batch_size).all()
    for run_id in students.run_id:
        saved = db.parent / "runs" / run_id
        assert json.loads((saved / "config.json").read_text())["num_hidden_layers"] >= 1
        stats = json.loads((saved / "train_result.json").read_text())  # rank 0's
        assert stats["world_size"] == 2 and stats["signal_cache"]
