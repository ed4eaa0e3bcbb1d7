"""End-to-end tier: a shrunken suite through the real Ray + DeepSpeed + lm-eval + DuckDB path,
then the Streamlit app rendered over the database it produced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdbench.config import SuiteError, load_suite
from kdbench.pipeline import plan

from .conftest import ROOT

SHRINK = (
    (
        "arch = { hidden_size = 128, num_layers = 4, num_heads = 4, intermediate_size = 384 }",
        "arch = { hidden_size = 32, num_layers = 2, num_heads = 2, intermediate_size = 64 }",
    ),
    ("train_steps = 600", "train_steps = 6"),
    ("max_steps = 1800", "max_steps = 12"),
    (
        'gate = { task = "kd_addition", metric = "exact_match", value = 0.9 }',
        'gate = { task = "kd_addition", metric = "exact_match", value = 0.0 }',
    ),
    ("n_per_task = 8000", "n_per_task = 64"),
    ("steps = 200", "steps = 4"),
    ("batch_size = 64\nlr = 3e-3\nwarmup", "batch_size = 8\nlr = 3e-3\nwarmup"),
    ('tasks = ["kd_addition", "kd_compare"]', 'tasks = ["kd_addition", "kd_compare"]\nlimit = 6'),
    ("methods = []", 'methods = ["sft", "kd", "seqkd", "boom"]'),
)

BOOM = """
from dataclasses import dataclass

from kdbench.hookspecs import hookimpl
from kdbench.methods import Method


@dataclass
class BoomConfig:
    pass


def boom_loss(student, teacher, batch, cfg, modules):
    raise RuntimeError("boom: a deliberately broken plugin")


@hookimpl
def kdbench_methods():
    return [Method(name="boom", family="logit", config=BoomConfig, loss=boom_loss,
                   signals=frozenset({"logits"}))]
"""


def _install_broken_plugin(tmp_path: Path, monkeypatch) -> None:
    """pip-install a third-party plugin whose loss raises, into a folder on the path of this
    process and of the Ray workers it starts."""
    import subprocess
    import sys

    pkg = tmp_path / "kdbench-boom"
    (pkg / "kdbench_boom").mkdir(parents=True)
    (pkg / "kdbench_boom" / "__init__.py").write_text(BOOM)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "kdbench-boom"\nversion = "0.1"\n'
        '[project.entry-points.kdbench]\nboom = "kdbench_boom"\n'
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(pkg),
        ],
        check=True,
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def test_plan_refuses_unknown_method_before_anything(write_suite, tmp_path: Path) -> None:
    path = write_suite(("methods = []", 'methods = ["sft", "kdd"]'))
    with pytest.raises(SuiteError, match=r"methods: unknown method 'kdd' \(did you mean 'kd'\?\)"):
        plan(load_suite(path))
    path = write_suite(("[method_config.kd]\ntemperature", "[method_config.kd]\ntemprature"))
    with pytest.raises(SuiteError, match="did you mean 'temperature'"):
        plan(load_suite(path))


def test_shared_vocabulary_is_checked_before_training(write_suite, tmp_path: Path) -> None:
    """A student loaded from a local folder (the Hugging Face path) with another vocabulary:
    logit methods refuse at plan time, text-level ones (seqkd) and sft go ahead."""
    from kdbench.models import build_llama, default_tokenizer, save

    tok = default_tokenizer()
    tok.add_tokens(["<extra>"])
    local = tmp_path / "other-vocab"
    save(build_llama({"hidden_size": 16, "num_layers": 1, "num_heads": 2}, tok, 0), tok, local)
    arch = "arch = { hidden_size = 64, num_layers = 2, num_heads = 4, intermediate_size = 192 }"
    path = write_suite((arch, f'source = "{local}"'), ("methods = []", 'methods = ["sft", "kd"]'))
    with pytest.raises(
        SuiteError,
        match=r"students\[0\]: kd need a vocabulary shared with the "
        r"teacher: teacher tiny-teacher-0.9M has 25 tokens, student "
        r"student-0.1M has 26",
    ):
        plan(load_suite(path))
    ok = write_suite(
        (arch, f'source = "{local}"'),
        ("methods = []", 'methods = ["sft", "seqkd"]'),
        name="ok.toml",
    )
    assert len(plan(load_suite(ok))[1]) == 4


def test_plan_is_methods_x_students_x_seeds(write_suite) -> None:
    methods, jobs = plan(load_suite(write_suite(("seeds = [0]", "seeds = [0, 1]"))))
    assert len(jobs) == len(methods) * 2 * 2
    assert len({j.run_id for j in jobs}) == len(jobs)


@pytest.mark.e2e
def test_tiny_suite_end_to_end(write_suite, tmp_path: Path, monkeypatch) -> None:
    import ray
    from streamlit.testing.v1 import AppTest

    from kdbench import store
    from kdbench.leaderboard import leaderboard
    from kdbench.pipeline import run_suite

    _install_broken_plugin(tmp_path, monkeypatch)
    suite = load_suite(write_suite(*SHRINK))
    db = tmp_path / "results" / "kdbench.duckdb"
    cache = tmp_path / "cache"
    try:
        summary = run_suite(suite, db, cache=str(cache))
        assert summary == {**summary, "runs": 8, "ran": 8, "failed": 2, "teacher_cached": False}
        assert (Path(summary["teacher_path"]) / "kdbench_teacher.json").is_file()

        # the broken plugin failed only its own runs, stored with their traceback
        runs = store.read_runs(db, suite.hash)
        failed = runs[runs.status == "failed"]
        assert set(failed.method) == {"boom"} and len(failed) == 2
        assert failed.error.str.contains("boom: a deliberately broken plugin").all()
        assert failed.error.str.contains("Traceback").all()
        runs = runs[runs.status == "ok"]
        assert sorted(runs.role) == ["student"] * 6 + ["teacher"]
        assert runs.git_commit.str.len().min() > 0 and runs.versions.str.contains("deepspeed").all()
        assert (runs.loc[runs.role == "student", "tokens"] > 0).all()
        # kd read the teacher-signal cache the teacher stage built: no teacher pass in training
        assert summary["signal_cache_built"] and Path(summary["signal_cache"]).is_dir()
        kd = runs[runs.method == "kd"]
        assert (kd.teacher_forwards == 0).all() and (kd.teacher_flops > 0).all()
        students = runs[runs.role == "student"]
        assert (students.train_flops > 0).all() and (students.peak_rss_mb > 100).all()
        assert (students.queue_s >= 0).all() and (runs.device_hours > 0).all()
        assert (runs.infer_tokens_per_s > 0).all() and (runs.infer_latency_ms > 0).all()
        samples = store.read_samples(db, suite.hash)
        assert set(samples.run_id) == set(runs.run_id)  # every scored model, teacher included
        assert len(samples) == len(runs) * 2 * 6  # two tasks, limit 6
        metrics = store.read_metrics(db, suite.hash)
        assert set(metrics.task) == {"kd_addition", "kd_compare"}
        assert metrics.stderr.notna().all() and metrics.value.between(0, 1).all()
        assert metrics.groupby("run_id").size().min() >= 2

        # a second run reuses the cached teacher and runs nothing already stored
        again = run_suite(suite, db, cache=str(cache))
        assert again["teacher_cached"] and again["ran"] == 2  # only the failed runs again
        assert again["signal_cache"] == summary["signal_cache"] and not again["signal_cache_built"]
        assert len(store.read_runs(db, suite.hash)) == 9
    finally:
        ray.shutdown()

    table = leaderboard(db, suite.hash)
    assert set(table.method) == {"teacher", "sft", "kd", "seqkd"}
    monkeypatch.setenv("KDBENCH_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert len(shown) == len(table) == 7
    assert set(shown["method"]) == {"teacher", "sft", "kd", "seqkd"}
    assert os.path.exists(db)


@pytest.mark.e2e
def test_a_killed_training_job_resumes_from_its_checkpoint(write_suite, tmp_path: Path) -> None:
    """SIGKILL the process of a running training job mid-suite: Ray retries the task, the job
    resumes from its last checkpoint, and the suite completes with every run stored once."""
    import signal
    import threading
    import time

    import psutil
    import ray

    from kdbench import store
    from kdbench.pipeline import run_suite

    shrink = [r for r in SHRINK if not r[0].startswith(("methods", "steps"))]
    suite = load_suite(
        write_suite(
            *shrink,
            ("methods = []", 'methods = ["sft"]'),
            ("steps = 200", "steps = 300"),
            ("checkpoint_every = 50", "checkpoint_every = 20"),
        )
    )
    db = tmp_path / "results" / "kdbench.duckdb"
    _, jobs = plan(suite)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = run_suite(suite, db, cache=str(tmp_path / "cache"))
        except BaseException as e:  # surfaced by the assertions below
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            # a job with a checkpoint and most of its steps still ahead (one about to finish
            # could end before the kill lands)
            done = [
                j
                for j in jobs
                if any(
                    int(c.name[4:]) <= 160
                    for c in (db.parent / "runs" / j.run_id / "checkpoints").glob("step*")
                    if c.name[4:].isdigit()
                )
            ]
            workers = [
                p
                for p in psutil.process_iter(["cmdline"])
                if (p.info["cmdline"] or [""])[0].startswith("ray::train_job")
            ]
            if done and workers:
                victim = done[0]
                # the train task of that run: the only one with this checkpoint folder open is
                # not knowable from outside, so kill every running train task (one or two)
                for p in workers:
                    p.send_signal(signal.SIGKILL)
                killed = victim
            time.sleep(0.2)
        thread.join(timeout=900)
    finally:
        ray.shutdown()
    assert killed is not None, "no training job was caught between a checkpoint and its end"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["failed"] == 0
    runs = store.read_runs(db, suite.hash)
    assert runs.run_id.is_unique and len(runs) == len(jobs) + 1 and (runs.status == "ok").all()
    resumed = runs.set_index("run_id").loc[killed.run_id, "resumed_from"]
    assert resumed >= 20 and resumed % 20 == 0  # restarted from a checkpoint, not from step 0
