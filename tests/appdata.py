"""A small results database for the leaderboard, economics and app tests, written through
the real store (``store.write_suite`` / ``store.write_run``).

Suite ``tiny`` (hash :data:`SUITE`): a teacher and four methods (sft, kd, fkl, seqkd) on two
students with :data:`SEEDS` seeds each, two tasks, every schema-2 cost column, per-question
samples for every run (consistent with the scores: :func:`right_answers`), and one failed
run with a traceback. Suite ``tiny-300`` (hash
:data:`OTHER`): the same teacher with another budget, for the open track; written first, so
``tiny`` is the newest suite. Scores come from
:func:`score`, so tests compute their expectations from it instead of hard-coding them.
The methods are off-policy (no sampling costs); :func:`add_on_policy` adds an on-policy
method's runs with their sampling costs.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kdbench import store

SUITE = "5a17e000aaaa1111"
OTHER = "0bbe7000bbbb2222"
TASKS = ("kd_addition", "kd_compare")
METRIC = {"kd_addition": "exact_match", "kd_compare": "acc"}
TEACHER_SCORE = {"kd_addition": 0.90, "kd_compare": 0.95}
METHODS = ("sft", "kd", "fkl", "seqkd")
FAMILY = {"sft": "baseline", "kd": "logit", "fkl": "logit", "seqkd": "chain_of_thought"}
STUDENTS = {"student-0.1M": 108_416, "student-0.25M": 252_160}
TEACHER = ("tiny-teacher-0.9M", 856_320)
SEEDS = (0, 1, 2)
QUESTIONS = 40
HARDWARE = {"platform": "Linux-test", "cpu_count": 2, "machine": "x86_64"}
CONFIG = {
    "name": "tiny",
    "teacher": {"name": TEACHER[0]},
    "data": {"kind": "synthetic", "tasks": ["addition", "compare"]},
    "budget": {"steps": 200, "batch_size": 64},
    "resources": {"cpus_per_job": 1},
}
# method quality on top of sft, and per-seed noise: fixed, so every rank is known
_BONUS = {"sft": 0.0, "kd": 0.05, "fkl": 0.12, "seqkd": -0.02}
_SIZE_BONUS = {"student-0.1M": 0.0, "student-0.25M": 0.08}
_NOISE = (-0.01, 0.0, 0.013)


def score(method: str, student: str, seed: int, task: str) -> float:
    """The stored primary score of one run on one task."""
    base = {"kd_addition": 0.30, "kd_compare": 0.70}[task]
    return round(base + _BONUS[method] + _SIZE_BONUS[student] + _NOISE[seed], 6)


def run_id(method: str, student: str, seed: int) -> str:
    """The run id the builder gives a run."""
    return f"{method}-{student.removeprefix('student-')}-s{seed}"


# per task, the order in which questions get easy: a run with score s gets the first
# round(s x QUESTIONS) of them right, so a better run is right on a superset (paired tests)
_EASY = {t: random.Random(f"easy-{t}").sample(range(QUESTIONS), QUESTIONS) for t in TASKS}


def right_answers(task: str, score: float) -> set[int]:
    """The doc ids a run with this score on ``task`` answers right."""
    return set(_EASY[task][: round(score * QUESTIONS)])


def _samples(rng: random.Random, scores: dict[str, float], confident_right: bool) -> list[dict]:
    rows = []
    for task in TASKS:
        right = right_answers(task, scores[task])
        for doc in range(QUESTIONS):
            correct = 1.0 if doc in right else 0.0
            # confidence tracks correctness, so routing the least confident helps
            conf = 0.55 + 0.4 * rng.random() if correct or not confident_right else 0.5
            rows.append(
                {"task": task, "doc_id": doc, "correct": correct, "confidence": round(conf, 4)}
            )
    return rows


def _metrics(scores: dict[str, float]) -> list[dict]:
    out = []
    for task, value in scores.items():
        out.append(
            {
                "task": task,
                "metric": METRIC[task],
                "value": value,
                "stderr": 0.02,
                "higher_is_better": True,
                "is_primary": True,
                "aggregation": "mean",
            }
        )
        out.append({"task": task, "metric": "extra", "value": 9.0, "is_primary": False})
    return out


def fidelity(method: str, student: str, seed: int, task: str) -> dict[str, float]:
    """The stored fidelity rows of one run on one task (kdbench.fidelity): agreement with the
    teacher grows with the score, KL shrinks; the teacher's own are 1 and 0."""
    if method == "teacher":
        return {"fidelity_top1": 1.0, "fidelity_kl": 0.0, "ece": 0.03}
    s = score(method, student, seed, task)
    return {"fidelity_top1": round(0.5 + 0.5 * s, 6), "fidelity_kl": round(1.0 - s, 6),
            "ece": round(0.05 + 0.1 * (1 - s), 6)}  # fmt: skip


def _fidelity_metrics(method: str, student: str, seed: int) -> list[dict]:
    return [
        {
            "task": task,
            "metric": metric,
            "value": value,
            "stderr": None,
            "higher_is_better": metric == "fidelity_top1",
            "is_primary": False,
            "aggregation": "mean",
        }  # fmt: skip
        for task in TASKS
        for metric, value in fidelity(method, student, seed, task).items()
    ]


def _costs(params: int, seed: int, tokens_per_s: float) -> dict:
    return {
        "train_wall_s": 40.0 + seed,
        "eval_wall_s": 2.0,
        "total_wall_s": 45.0 + seed,
        "params": params,
        "bytes": params * 4,
        "tokens": 400_000,
        "steps": 200,
        "sequences": 200 * 64,
        "live_teacher_flops": 0.0,
        "peak_rss_mb": 900.0,
        "teacher_forwards": 12_800,
        "train_flops": 6.0 * params * 400_000,
        "teacher_flops": 1.0e12,
        "device_hours": (40.0 + seed) / 3600,
        "queue_s": 0.5,
        "infer_tokens_per_s": tokens_per_s,
        "infer_latency_ms": 1000.0 / tokens_per_s * 8,
    }


def build(path: Path, *, other_suite: bool = True) -> Path:
    """Write the database to ``path`` and return it."""
    rng = random.Random(0)
    if other_suite:
        config = {**CONFIG, "name": "tiny-300", "budget": {"steps": 300, "batch_size": 64}}
        store.write_suite(path, OTHER, "tiny-300", "leaderboards/tiny300.toml", config)
        store.write_run(
            path,
            {
                "run_id": "o-teacher",
                "suite_hash": OTHER,
                "role": "teacher",
                "method": "teacher",
                "family": "teacher",
                "student": TEACHER[0],
                "seed": 0,
                "status": "ok",
            },
            _metrics(TEACHER_SCORE),
            {"params": TEACHER[1]},
        )
        store.write_run(
            path,
            {
                "run_id": "o-kd",
                "suite_hash": OTHER,
                "role": "student",
                "method": "kd",
                "family": "logit",
                "student": "student-0.1M",
                "seed": 0,
                "status": "ok",
            },
            _metrics({t: 0.5 for t in TASKS}),
            {"params": 108_416},
        )
    store.write_suite(path, SUITE, "tiny", "leaderboards/tiny.toml", CONFIG)
    teacher_run = {
        "run_id": "teacher-s0",
        "suite_hash": SUITE,
        "role": "teacher",
        "method": "teacher",
        "family": "teacher",
        "student": TEACHER[0],
        "seed": 0,
        "status": "ok",
        "method_config": {"arch": {"hidden_size": 128}},
        "versions": {"torch": "2.13.0"},
        "git_commit": "abc1234",
        "hardware": HARDWARE,
        "kdbench_version": "0.1.0",
        "started_at": "2026-11-23T10:00:00",
        "finished_at": "2026-11-23T10:02:00",
    }
    tcost = _costs(TEACHER[1], 0, 2_000.0)
    tcost["teacher_flops"] = tcost["train_flops"]  # the teacher row: its training FLOPs
    teacher_metrics = _metrics(TEACHER_SCORE) + _fidelity_metrics("teacher", TEACHER[0], 0)
    store.write_run(path, teacher_run, teacher_metrics, tcost, _samples(rng, TEACHER_SCORE, True))
    for method in METHODS:
        for student, params in STUDENTS.items():
            for seed in SEEDS:
                scores = {t: score(method, student, seed, t) for t in TASKS}
                run = {
                    "run_id": run_id(method, student, seed),
                    "suite_hash": SUITE,
                    "role": "student",
                    "method": method,
                    "family": FAMILY[method],
                    "student": student,
                    "seed": seed,
                    "status": "ok",
                    "method_config": {"temperature": 2.0} if method == "kd" else {},
                    "versions": {"torch": "2.13.0"},
                    "git_commit": "abc1234",
                    "hardware": HARDWARE,
                    "kdbench_version": "0.1.0",
                    "started_at": "2026-11-23T10:03:00",
                    "finished_at": "2026-11-23T10:04:00",
                }
                tps = 2_000.0 * 856_320 / params
                store.write_run(
                    path,
                    run,
                    _metrics(scores) + _fidelity_metrics(method, student, seed),
                    _costs(params, seed, tps),
                    _samples(rng, scores, True),
                )
    failed = {
        "run_id": "kd-0.1M-s9",
        "suite_hash": SUITE,
        "role": "student",
        "method": "kd",
        "family": "logit",
        "student": "student-0.1M",
        "seed": 9,
        "status": "failed",
        "error": "Traceback (most recent call last):\nRuntimeError: CUDA out of memory",
        "hardware": HARDWARE,
        "git_commit": "abc1234",
    }
    store.write_run(path, failed, [], {})
    return path


ON_POLICY = ("gkd", "on_policy")  # the method add_on_policy writes, and its family


def generation_s(seed: int) -> float:
    """The seconds an :func:`add_on_policy` run of this seed spent sampling (part of its
    training time, ``40 + seed`` s as every run's)."""
    return 8.0 + 2.0 * seed


def generated_tokens(seed: int) -> int:
    """The tokens an :func:`add_on_policy` run of this seed sampled."""
    return 50_000 + 1_000 * seed


def add_on_policy(
    path: Path,
    *,
    method: str = ON_POLICY[0],
    suite_hash: str = SUITE,
    students: tuple[str, ...] = tuple(STUDENTS),
    seeds: tuple[int, ...] = SEEDS,
) -> Path:
    """Add an on-policy method's runs to a database :func:`build` wrote: per student and
    seed an ok run scored like ``kd`` (:func:`score`), with the schema-4 sampling costs
    (:func:`generation_s` of its ``40 + seed`` training seconds, :func:`generated_tokens`,
    and their 2 N_S FLOPs per token in ``train_flops`` and ``generation_flops``)."""
    rng = random.Random(f"on-policy-{method}")
    for student in students:
        params = STUDENTS[student]
        for seed in seeds:
            scores = {t: score("kd", student, seed, t) for t in TASKS}
            run = {
                "run_id": run_id(method, student, seed),
                "suite_hash": suite_hash,
                "role": "student",
                "method": method,
                "family": ON_POLICY[1],
                "student": student,
                "seed": seed,
                "status": "ok",
                "method_config": {"lmbda": 0.5},
                "hardware": HARDWARE,
                "git_commit": "abc1234",
            }
            costs = _costs(params, seed, 2_000.0 * 856_320 / params)
            sampled = generated_tokens(seed)
            costs.update(
                generation_s=generation_s(seed),
                generated_tokens=sampled,
                generation_flops=2.0 * params * sampled,
                train_flops=costs["train_flops"] + 2.0 * params * sampled,
            )
            store.write_run(
                path,
                run,
                _metrics(scores) + _fidelity_metrics("kd", student, seed),
                costs,
                _samples(rng, scores, True),
            )
    return path


_TEMPLATE: dict[str, Path] = {}


def template(factory: pytest.TempPathFactory) -> Path:
    """The database built once per test session; copy it before writing to it."""
    if "db" not in _TEMPLATE:
        _TEMPLATE["db"] = build(factory.mktemp("appdata") / "kdbench.duckdb")
    return _TEMPLATE["db"]


def merged_submissions(folder: Path) -> tuple[Path, str]:
    """Two submitters' bundles merged into ``folder/merged.duckdb`` (the helpers of
    tests/test_bundle.py): Ann's store (the teacher and seed 0) and Bob's (seed 1) of an open
    suite, each exported as a bundle (``folder/ann``, ``folder/bob``) and imported. Returns
    the merged database and the suite hash."""
    from kdbench.bundle import export_bundle, import_bundle
    from tests.test_bundle import ANN, BOB, open_suite, write_runs

    suite = open_suite([0, 1])
    ann = write_runs(folder / "ann.duckdb", suite, seeds=(0,))
    bob = write_runs(folder / "bob.duckdb", suite, seeds=(1,), teacher=False)
    merged = folder / "merged.duckdb"
    import_bundle(export_bundle(ann, folder / "ann", ANN).path, merged)
    import_bundle(export_bundle(bob, folder / "bob", BOB).path, merged)
    return merged, suite.hash


def served_downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The files the app's download buttons serve, by file name, filled as AppTest renders
    (Streamlit's in-memory media storage, recorded through ``monkeypatch``)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):  # type: ignore[no-untyped-def]
        if filename:
            served[filename] = bytes(path_or_data)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return served
