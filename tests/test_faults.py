"""End-to-end fault tests (issue 4): a suite survives losing a Ray node mid-training, and a
whole `kdbench run` interrupted with Ctrl-C resumes without rerunning what it stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kdbench import store
from kdbench.config import load_suite
from kdbench.pipeline import plan

from .conftest import SHRINK, tiny_raw

# A small suite: a tiny teacher (as in test_pipeline.SHRINK), one student, sft and kd, two
# seeds; each training job runs long enough (a few seconds) to write several checkpoints.
STEPS = 300
CHECKPOINT_EVERY = 20
FAULT_SHRINK = {
    **SHRINK,
    "students": [tiny_raw()["students"][0]],
    "budget.steps": STEPS,
    "budget.batch_size": 32,
    "resources.checkpoint_every": CHECKPOINT_EVERY,
    "seeds": [0, 1],
    "methods": ["sft", "kd"],
}
TQDM_MAGIC = "__ray_tqdm_magic_token__"  # ray.experimental.tqdm_ray's progress lines


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> Path:
    """One teacher cache for the module: the second test loads the teacher the first trained."""
    return tmp_path_factory.mktemp("cache")


def _wait(what: str, condition, timeout: float, interval: float = 0.3, alive=None):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds or
    as soon as ``alive()`` says the process under test ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive is not None and not alive():
            pytest.fail(f"ended before {what}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _current_progress(logs_dir: Path, pid: int) -> dict | None:
    """The last tqdm_ray progress state a Ray worker printed (its log names its pid)."""
    last = None
    for log in logs_dir.glob(f"worker-*-{pid}.out"):
        for line in log.read_text(errors="replace").splitlines():
            if TQDM_MAGIC in line:
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:
                    continue
    return last


def _checkpoint_step(run_dir: Path) -> int:
    """The step of a training job's last complete checkpoint (0 if none): DeepSpeed writes
    ``latest`` (the tag, ``step<N>``) after the checkpoint's files."""
    try:
        tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    except OSError:
        return 0
    return int(tag.removeprefix("step")) if tag.startswith("step") else 0


def _step(value) -> int:
    """A stored step (``resumed_from``), 0 when NULL."""
    import pandas as pd

    return 0 if pd.isna(value) else int(value)


def _node_processes(node) -> list:
    """The processes a Ray node's raylet started (its workers among them)."""
    import psutil
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    return psutil.Process(raylet.pid).children(recursive=True)


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- 1. a node dies while it trains -----------------------------------------------------------


@pytest.mark.e2e
def test_suite_survives_losing_a_node_mid_training(
    write_suite, tmp_path: Path, teacher_cache: Path, capsys, monkeypatch
) -> None:
    """A head (no CPUs, runs the driver) and two 2-CPU worker nodes. Once a worker node is
    training a job that has checkpointed, that node is removed (all its processes killed):
    Ray retries the job on another node, it resumes from its checkpoint, and every run is
    stored once, ok."""
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    from kdbench.pipeline import init_ray, run_suite

    suite = load_suite(write_suite(FAULT_SHRINK))
    _, jobs = plan(suite)
    by_desc = {f"{j.method} -> {j.student} seed {j.seed}": j for j in jobs}
    db = tmp_path / "results" / "kdbench.duckdb"
    runs_dir = db.parent / "runs"

    # The simulated nodes share this machine's cores. After a node dies, the GCS's
    # placement-group rescheduling exports a flood of metrics that the head's dashboard agent
    # ingests at full CPU for minutes (still, long after capacity is back), starving the
    # (niced) workers; metrics are off here.
    monkeypatch.setenv("RAY_enable_metrics_collection", "false")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    outcome: dict = {}
    try:
        workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cluster.wait_for_nodes()
        init_ray(cluster.address)  # what run_suite does, here in the main thread
        driver_node = ray.get_runtime_context().get_node_id()
        assert driver_node == cluster.head_node.node_id
        assert ray.cluster_resources()["CPU"] == 4

        def drive() -> None:
            try:
                outcome["summary"] = run_suite(
                    suite,
                    db,
                    address=cluster.address,
                    cache=str(teacher_cache),
                    echo=lambda line: print(line, flush=True),
                )
            except BaseException as e:  # surfaced by the main thread
                outcome["error"] = e

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()

        def training_with_checkpoint():
            """(node, process, job, progress, checkpoint step) for a train job on a worker node
            that has checkpointed and has a good part of its steps left."""
            for node in workers:
                for proc in _node_processes(node):
                    try:
                        cmdline = " ".join(proc.cmdline())
                    except psutil.Error:
                        continue
                    if not cmdline.startswith("ray::train_job"):
                        continue
                    progress = _current_progress(Path(node.get_logs_dir_path()), proc.pid)
                    if not progress or progress.get("closed") or progress["desc"] not in by_desc:
                        continue
                    job = by_desc[progress["desc"]]
                    step = _checkpoint_step(runs_dir / job.run_id)
                    if step and progress["x"] < 0.6 * STEPS:
                        return node, proc, job, progress, step
            return None

        node, proc, job, progress, step = _wait(
            "a train job with a checkpoint on a worker node",
            training_with_checkpoint,
            timeout=240,
            interval=0.1,
            alive=driver.is_alive,
        )
        victim_pids = [p.pid for p in _node_processes(node)]
        assert proc.is_running() and proc.pid in victim_pids
        assert proc.cmdline()[0].startswith("ray::train_job")  # still training at removal
        cluster.remove_node(node)
        # its workers notice their raylet is gone and exit
        _wait("the train job's process to die with its node", lambda: not _alive(proc), 60)
        assert len(cluster.worker_nodes) == 1
        # A replacement node joins, as an autoscaler would bring one. Without it, the runs whose
        # placement groups were on the dead node wait for capacity in RESCHEDULING state, and
        # Ray 2.60's GCS retries those without backoff (ray-project/ray#65007), burning a core
        # that the surviving node's workers share on this machine: the suite still finishes,
        # but in minutes rather than seconds.
        cluster.add_node(num_cpus=2)

        driver.join(timeout=300)
        assert not driver.is_alive(), "the suite did not finish after the node was removed"
        dead = [n for n in ray.nodes() if n["NodeID"] == node.node_id]
        assert len(dead) == 1 and not dead[0]["Alive"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    assert (summary.runs, summary.ran, summary.failed) == (len(jobs), len(jobs), 0)

    # every planned run stored exactly once, ok (+ the teacher's row)
    runs = store.read_runs(db, suite.hash)
    assert runs.run_id.is_unique
    assert sorted(runs.loc[runs.role == "student", "run_id"]) == sorted(j.run_id for j in jobs)
    assert (runs.role == "teacher").sum() == 1 and (runs.status == "ok").all()
    assert (runs.loc[runs.role == "student", "steps"] == STEPS).all()

    # the job killed with its node was retried elsewhere and resumed from its checkpoint
    # (at least the one seen before the removal: the job may have written another since)
    assert step >= CHECKPOINT_EVERY
    out = capsys.readouterr().out
    with capsys.disabled():  # what happened, for -s runs
        print(f"\nremoved a worker node while it trained {progress['desc']} (checkpoint {step})")
        for line in out.splitlines():
            if line.startswith(("teacher ", "train + eval stages")) or "resumed from" in line:
                print(line)
    resumed = _step(runs.set_index("run_id").loc[job.run_id, "resumed_from"])
    printed = f"{progress['desc']}: resumed from its checkpoint at step "
    if printed in out:  # what the driver prints, in case the column is not filled
        resumed = max(resumed, int(out.split(printed, 1)[1].split()[0]))
    assert resumed >= step, (
        f"{progress['desc']} was training on the removed node (checkpoint at step {step}) "
        f"but resumed from step {resumed}"
    )


# --- 2. Ctrl-C on a whole run, then run it again ------------------------------------------------


def _cmdline(proc) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


@pytest.mark.e2e
def test_interrupted_run_resumes_without_rerunning_stored_runs(
    write_suite, tmp_path: Path, teacher_cache: Path
) -> None:
    """`kdbench run` in its own process group gets Ctrl-C (SIGINT to the group) once a run is
    stored and another has checkpointed: it exits 130 and leaves no Ray process behind. The
    same command then does only what is missing: stored runs are not rerun, the interrupted
    training resumes from its checkpoint, and every run is stored once, ok."""
    import psutil

    suite_path = write_suite(FAULT_SHRINK)
    suite = load_suite(suite_path)
    _, jobs = plan(suite)
    db = tmp_path / "results" / "kdbench.duckdb"
    runs_dir = db.parent / "runs"
    kdbench = Path(sys.executable).parent / "kdbench"
    cmd = [str(kdbench), "run", str(suite_path), "--db", str(db), "--cache", str(teacher_cache)]

    def stored():
        runs = store.read_runs(db, suite.hash)
        return runs[runs.status == "ok"]

    log = tmp_path / "first.log"
    with log.open("w") as out:
        # SIG_DFL: a test run started in the background by a non-interactive shell inherits
        # SIGINT ignored, and so would `kdbench run`, which then never sees the Ctrl-C
        first = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    seen: dict[int, psutil.Process] = {}  # every process the run started (Ray's included)
    try:

        def some_stored_and_one_checkpointed():
            seen.update({p.pid: p for p in _descendants(first.pid)})
            if not db.exists():
                return False
            ok = stored()
            done = set(ok.loc[ok.role == "student", "run_id"])
            return 1 <= len(done) < len(jobs) and any(
                0 < _checkpoint_step(runs_dir / j.run_id) <= STEPS // 2
                for j in jobs
                if j.run_id not in done
            )

        _wait(
            "a student run to be stored while another has checkpointed",
            some_stored_and_one_checkpointed,
            timeout=200,
            interval=0.5,
            alive=lambda: first.poll() is None,
        )
        seen.update({p.pid: p for p in _descendants(first.pid)})
        names = " ".join(_cmdline(p) for p in seen.values() if _alive(p))
        assert "gcs_server" in names and "raylet" in names and "ray::" in names, names
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        rc = first.wait(timeout=90)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    text = log.read_text(errors="replace")
    assert rc == 130, text[-3000:]
    assert "interrupted; finished runs are stored" in text

    # nothing the run started outlives it
    def all_gone():
        return not [p for p in seen.values() if _alive(p)]

    _wait("the interrupted run's Ray processes to exit", all_gone, timeout=30)
    assert len(seen) >= 3

    before = stored()
    assert before.run_id.is_unique
    kept = before[before.role == "student"]
    assert 1 <= len(kept) < len(jobs)
    # the interrupted training jobs left their last checkpoints behind
    left = {
        j.run_id: _checkpoint_step(runs_dir / j.run_id)
        for j in jobs
        if j.run_id not in set(kept.run_id) and _checkpoint_step(runs_dir / j.run_id)
    }
    assert left and all(step >= CHECKPOINT_EVERY for step in left.values()), left
    finished_before = dict(zip(before.run_id, before.finished_at, strict=True))

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"= {len(jobs)} runs, {len(kept)} already stored" in again.stdout
    assert f"{len(jobs) - len(kept)} runs done, 0 failed" in again.stdout

    runs = store.read_runs(db, suite.hash)
    assert runs.run_id.is_unique and (runs.status == "ok").all()
    assert sorted(runs.loc[runs.role == "student", "run_id"]) == sorted(j.run_id for j in jobs)
    assert (runs.role == "teacher").sum() == 1
    after = dict(zip(runs.run_id, runs.finished_at, strict=True))
    assert {rid: after[rid] for rid in finished_before} == finished_before  # not rerun
    # and what was interrupted mid-training went on from its checkpoint
    resumed = {r: _step(v) for r, v in zip(runs.run_id, runs.resumed_from, strict=True)}
    for run_id, step in left.items():
        assert resumed[run_id] == step or (
            f"resumed from its checkpoint at step {step}" in again.stdout
        ), (run_id, step, resumed[run_id])
    print(
        f"\ninterrupted after {len(kept)} of {len(jobs)} student runs were stored "
        f"({len(seen)} processes of the run, all gone); the rerun did the other "
        f"{len(jobs) - len(kept)}, resuming {len(left)} from their checkpoints"
        + "".join(f"\n{line}" for line in again.stdout.splitlines() if "resumed from" in line)
    )
