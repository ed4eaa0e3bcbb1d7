"""End-to-end tier: a shrunken suite through the real Ray + DeepSpeed + lm-eval + DuckDB path,
then the Streamlit app rendered over the database it produced."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from kdbench.config import SuiteError, load_suite
from kdbench.fidelity import ECE, FIDELITY_METRICS, KL, TOP1
from kdbench.pipeline import plan

from .conftest import DELETE, ROOT, SHRINK

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
    path = write_suite({"methods": ["sft", "kdd"]})
    with pytest.raises(SuiteError, match=r"methods: unknown method 'kdd' \(did you mean 'kd'\?\)"):
        plan(load_suite(path))
    path = write_suite({"method_config.kd": {"temprature": 2.0}})
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
    student = {"name": "student-0.1M", "source": str(local)}
    path = write_suite({"students[0]": student, "methods": ["sft", "kd"]})
    with pytest.raises(
        SuiteError,
        match=r"students\[0\]: kd need a vocabulary shared with the "
        r"teacher: teacher has 25 tokens, student has 26 \(teacher tiny-teacher-0.9M, student "
        r"student-0.1M\)",
    ):
        plan(load_suite(path))
    ok = write_suite(
        {"students[0]": student, "methods": ["sft", "seqkd"], "seeds": [0]}, name="ok.toml"
    )
    assert len(plan(load_suite(ok))[1]) == 4


def test_plan_is_methods_x_students_x_seeds(write_suite) -> None:
    methods, jobs = plan(load_suite(write_suite({"seeds": [0, 1]})))
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
    suite = load_suite(write_suite(SHRINK))
    db = tmp_path / "results" / "kdbench.duckdb"
    cache = tmp_path / "cache"
    try:
        summary = run_suite(suite, db, cache=str(cache))
        assert (summary.runs, summary.ran, summary.failed) == (8, 8, 2)
        assert not summary.teacher.cached
        assert (Path(summary.teacher.path) / "kdbench_teacher.json").is_file()

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
        # the size axis is the saved weights alone, the teacher's as the students'
        weights = {
            r.run_id: (db.parent / "runs" / r.run_id / "model.safetensors").stat().st_size
            for r in runs[runs.role == "student"].itertuples()
        }
        weights[runs.loc[runs.role == "teacher", "run_id"].iloc[0]] = (
            (Path(summary.teacher.path) / "model.safetensors").stat().st_size
        )
        assert runs.set_index("run_id").bytes.to_dict() == weights
        # kd read the teacher-signal cache the teacher stage built: no teacher pass in training
        entry = summary.teacher.signal_cache
        assert entry.built and Path(entry.path).is_dir()
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
        assert set(metrics.task) == {"kd_add2", "kd_noisy_compare"}
        scored = metrics[~metrics.metric.isin(FIDELITY_METRICS)]  # lm-eval's own rows
        assert scored.stderr.notna().all() and scored.value.between(0, 1).all()
        assert metrics.groupby("run_id").size().min() >= 2
        # fidelity to the teacher and calibration, on every scored model (kdbench.fidelity)
        assert summary.teacher.fidelity and Path(summary.teacher.fidelity).is_file()
        fid = metrics[metrics.metric.isin(FIDELITY_METRICS)]
        assert not fid.is_primary.any()
        kinds = fid.groupby("run_id").apply(lambda g: frozenset(zip(g.task, g.metric, strict=True)))
        assert set(kinds.index) == set(runs.run_id) and len(set(kinds)) == 1  # the same rows
        assert {("kd_noisy_compare", TOP1), ("kd_noisy_compare", KL)} <= next(iter(kinds))
        assert fid[fid.metric == TOP1].value.between(0, 1).all()
        assert (fid[fid.metric == KL].value >= 0).all()
        assert fid[fid.metric == ECE].value.between(0, 1).all()
        own = fid[(fid.role == "teacher") & fid.metric.isin([TOP1, KL])]
        assert set(own.loc[own.metric == TOP1, "value"]) == {1.0}  # the teacher matches itself
        assert set(own.loc[own.metric == KL, "value"]) == {0.0}

        # a second run reuses the cached teacher and runs nothing already stored
        again = run_suite(suite, db, cache=str(cache))
        assert again.teacher.cached and again.ran == 2  # only the failed runs again
        assert (
            again.teacher.signal_cache.path == entry.path and not again.teacher.signal_cache.built
        )
        assert len(store.read_runs(db, suite.hash)) == 9
        assert again.teacher.fidelity == summary.teacher.fidelity  # the cached reference
    finally:
        ray.shutdown()

    table = leaderboard(db, suite.hash)
    assert set(table.method) == {"teacher", "sft", "kd", "seqkd"}
    assert table[TOP1].notna().all() and table["teacher_ece"].nunique() <= 1
    # the run left the suite's board snapshot, current, for the app (kdbench.snapshots)
    from kdbench import leaderboard as lb
    from kdbench import snapshots

    with store.reader(db) as con:
        assert snapshots.load(con, [suite.hash], lb.snapshot_key(True), lb.SNAPSHOT_PARTS)
    monkeypatch.setenv("KDBENCH_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert len(shown) == len(table) == 7
    assert set(shown["method"]) == {"teacher", "sft", "kd", "seqkd"}
    assert os.path.exists(db)


@pytest.mark.e2e
def test_two_runs_with_fresh_caches_give_identical_metrics(write_suite, tmp_path: Path) -> None:
    """Reproducibility on CPU: the same shrunken suite run twice, each with its own empty
    teacher cache and database (teacher built and trained, signals cached, students trained
    with a logit, a feature and a chain-of-thought method, everything scored), stores the same
    metrics and per-question samples to the last bit."""
    import ray

    from kdbench import store
    from kdbench.pipeline import run_suite

    edits = {**SHRINK, "methods": ["sft", "kd", "fitnets", "seqkd"], "students[1]": DELETE}
    suite = load_suite(write_suite(edits))
    stored = []
    try:
        for i in range(2):
            db = tmp_path / f"run{i}" / "kdbench.duckdb"
            summary = run_suite(suite, db, cache=str(tmp_path / f"cache{i}"))
            assert summary.failed == 0 and not summary.teacher.cached
            keys = ["run_id", "task", "metric"]
            metrics = store.read_metrics(db, suite.hash).sort_values(keys)
            samples = store.read_samples(db, suite.hash).sort_values(["run_id", "task", "doc_id"])
            stored.append((metrics[[*keys, "value", "stderr"]], samples))
    finally:
        ray.shutdown()
    (m0, s0), (m1, s1) = stored
    assert len(m0) > 0 and len(s0) > 0
    pd.testing.assert_frame_equal(m0.reset_index(drop=True), m1.reset_index(drop=True))
    pd.testing.assert_frame_equal(s0.reset_index(drop=True), s1.reset_index(drop=True))


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

    suite = load_suite(
        write_suite(
            {
                **SHRINK,
                "methods": ["sft"],
                "budget.steps": 300,
                "resources.checkpoint_every": 20,
            }
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
            # a job with a complete checkpoint ("latest" is written after the step folder: a
            # kill while the first one is being saved restarts from step 0) and most of its
            # steps still ahead (one about to finish could end before the kill lands)
            done = [
                j
                for j in jobs
                if (db.parent / "runs" / j.run_id / "checkpoints" / "latest").is_file()
                and any(
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
    assert outcome["summary"].failed == 0
    runs = store.read_runs(db, suite.hash)
    assert runs.run_id.is_unique and len(runs) == len(jobs) + 1 and (runs.status == "ok").all()
    resumed = runs.set_index("run_id").loc[killed.run_id, "resumed_from"]
    assert resumed >= 20 and resumed % 20 == 0  # restarted from a checkpoint, not from step 0


TINY_NEW = ROOT / "leaderboards" / "tiny-new.toml"


@pytest.mark.e2e
def test_on_policy_methods_run_in_the_second_embedded_suite(tmp_path: Path) -> None:
    """tiny-new.toml, shrunken like the tiny suite: its on-policy methods sample the student,
    the teacher scores the samples live, and the runs are stored with what sampling cost."""
    import tomllib

    import ray
    import tomli_w

    from kdbench import store
    from kdbench.pipeline import run_suite

    from .conftest import edit_suite

    edits = {**SHRINK, "methods": ["sft", "gkd", "onpolicy_rkl", "distillm"]}
    edits["students[1]"] = DELETE  # the chunk-tokenizer student (its own test below)
    edits["method_config"] = {"gkd": {"lmbda": 1.0}, "distillm": {"lmbda": 1.0}}
    path = tmp_path / "tiny-new.toml"
    path.write_text(tomli_w.dumps(edit_suite(tomllib.loads(TINY_NEW.read_text()), edits)))
    suite = load_suite(path)
    db = tmp_path / "kdbench.duckdb"
    try:
        summary = run_suite(suite, db, cache=str(tmp_path / "cache"))
    finally:
        ray.shutdown()
    assert (summary.ran, summary.failed) == (4, 0)
    runs = store.read_runs(db, suite.hash)
    students = runs[runs.role == "student"].set_index("method")
    on_policy = students.loc[["gkd", "onpolicy_rkl", "distillm"]]
    steps, batch = suite.budget.steps, suite.budget.batch_size
    assert (on_policy.teacher_forwards == steps * batch).all()  # live on every sampled batch
    assert (on_policy.sequences == steps * batch).all()  # the same budget as sft
    assert students.loc["sft", "sequences"] == steps * batch
    # sampling is charged: its seconds, tokens and 2 N_S FLOPs per sampled token
    assert (on_policy.generated_tokens > 0).all() and (on_policy.generation_s > 0).all()
    assert (on_policy.generation_flops == 2 * on_policy.params * on_policy.generated_tokens).all()
    assert students.loc["sft", "generated_tokens"] == 0
    from kdbench.leaderboard import format_table, leaderboard

    shown = format_table(leaderboard(db, suite.hash))
    assert "sampling" in shown


@pytest.mark.e2e
def test_cross_tokenizer_methods_train_a_student_with_its_own_vocabulary(tmp_path: Path) -> None:
    """tiny-new.toml's chunk-tokenizer student, shrunken: uld and gold read the teacher's cached
    top-k logits on the teacher's own rows of the same examples, sft trains on its own tokens,
    and all three students are saved with the chunk tokenizer, scored and ranked."""
    import tomllib

    import ray
    import tomli_w

    from kdbench import store
    from kdbench.leaderboard import format_table, leaderboard
    from kdbench.models import load_tokenizer
    from kdbench.pipeline import run_suite
    from kdbench.tokenizer import chunk_tokenizer

    from .conftest import edit_suite

    edits = {**SHRINK, "methods": ["sft", "uld", "gold"], "students[0]": DELETE}
    path = tmp_path / "tiny-new.toml"
    path.write_text(tomli_w.dumps(edit_suite(tomllib.loads(TINY_NEW.read_text()), edits)))
    suite = load_suite(path)
    assert [s.tokenizer for s in suite.students] == ["chunk"]
    db = tmp_path / "kdbench.duckdb"
    lines: list[str] = []
    try:
        summary = run_suite(suite, db, cache=str(tmp_path / "cache"), echo=lines.append)
    finally:
        ray.shutdown()
    assert (summary.ran, summary.failed) == (3, 0)
    runs = store.read_runs(db, suite.hash)
    students = runs[runs.role == "student"].set_index("method")
    assert (students.teacher_forwards == 0).all()  # uld and gold: from the signal cache
    for run_id in students.run_id:
        saved = load_tokenizer(str(tmp_path / "runs" / run_id))
        assert saved.get_vocab() == chunk_tokenizer().get_vocab()
    metrics = store.read_metrics(db, suite.hash)
    assert set(metrics.run_id) >= set(students.run_id)
    shown = format_table(leaderboard(db, suite.hash))
    assert "uld" in shown and "gold" in shown
