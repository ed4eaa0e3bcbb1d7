"""Benchmark of issue 13: what an on-policy step costs, as ratios measured in one run.

Same student (the suite's last), same batch size, same transfer rows, seconds per training step:
- ``sft``: cross-entropy on the fixed data;
- ``kd_cached``: kd reading the teacher's top-k logits from the signal cache;
- ``gkd_onpolicy``: gkd with ``lmbda = 1`` (every step samples the student, generation
  included, and the teacher scores the samples live);
and the share of the on-policy step spent generating (``generation_wall_s / train_wall_s``).

    python benchmarks/onpolicy_step.py [--suite leaderboards/tiny-new.toml] [--steps 20]

With ``--backend vllm`` (a GPU with vllm installed) the gkd step samples through vLLM.
Prints text and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from kdbench.config import load_suite
from kdbench.methods import registry
from kdbench.train_job import on_policy_rollout


def bench(suite_path: str, cache: Path, steps: int, backend: str) -> dict:
    from kdbench import signal_cache
    from kdbench.models import build_llama, load_pretrained
    from kdbench.teacher import build_teacher
    from kdbench.train import train
    from kdbench.transfer import transfer_batch

    torch.set_num_threads(1)
    suite = load_suite(suite_path)
    suite = dataclasses.replace(
        suite, resources=dataclasses.replace(suite.resources, generation_backend=backend)
    )
    info = build_teacher(suite, cache)
    entry = signal_cache.ensure(
        info.path, suite.data, frozenset({"logits"}), suite.cache.topk, cache
    )
    sig = signal_cache.open_cache(entry.path)
    teacher, tok = load_pretrained(info.path)
    if torch.cuda.is_available():
        teacher.cuda()
    data = transfer_batch(suite.data, tok)
    spec = [s for s in suite.students if s.arch][-1]
    budget = dataclasses.replace(suite.budget, steps=steps)
    methods = registry()

    def timed(name: str, overrides: dict | None = None, **kw) -> dict:
        method = methods[name]
        cfg = method.make_config(overrides or {})
        student = build_llama({**spec.arch, "max_length": suite.data.max_length}, tok, seed=0)
        roll = on_policy_rollout(method, cfg, suite, tok, 0)
        stats = train(student, method, cfg, data, budget, steps, seed=0, rollout=roll, **kw)
        return {
            "s_per_step": stats["train_wall_s"] / steps,
            "generation_share": stats["generation_wall_s"] / stats["train_wall_s"],
            "generated_tokens_per_step": stats["generated_tokens"] / steps,
        }

    timed("sft")  # warm-up: first DeepSpeed engine, allocator
    runs: dict[str, list[dict]] = {}
    for _ in range(2):  # interleaved twice: drift on a shared machine hits all alike
        for label, name, overrides, kw in (
            ("sft", "sft", None, {}),
            ("kd_cached", "kd", None, {"cache": sig, "teacher_config": teacher.config}),
            ("gkd_onpolicy", "gkd", {"lmbda": 1.0}, {"teacher": teacher}),
        ):
            runs.setdefault(label, []).append(timed(name, overrides, **kw))
    best = {k: min(v, key=lambda r: r["s_per_step"]) for k, v in runs.items()}
    s = {k: v["s_per_step"] for k, v in best.items()}
    return {
        "suite": suite.name,
        "student": spec.name,
        "batch_size": budget.batch_size,
        "max_length": suite.data.max_length,
        "steps": steps,
        "backend": backend,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "s_per_step": s,
        "gkd_over_sft": s["gkd_onpolicy"] / s["sft"],
        "gkd_over_kd_cached": s["gkd_onpolicy"] / s["kd_cached"],
        "kd_cached_over_sft": s["kd_cached"] / s["sft"],
        "gkd_generation_share": best["gkd_onpolicy"]["generation_share"],
        "gkd_generated_tokens_per_step": best["gkd_onpolicy"]["generated_tokens_per_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="leaderboards/tiny.toml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    parser.add_argument("--cache", default=os.environ.get("KDBENCH_CACHE"))
    args = parser.parse_args()
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="kdbench-bench-"))
    out = bench(args.suite, cache, args.steps, args.backend)
    s = out["s_per_step"]
    print(
        f"{out['student']}, batch {out['batch_size']}, {out['device']}, backend {out['backend']}: "
        f"sft {s['sft'] * 1000:.0f} ms/step, kd cached {s['kd_cached'] * 1000:.0f} ms/step, "
        f"gkd on-policy {s['gkd_onpolicy'] * 1000:.0f} ms/step"
    )
    print(
        f"gkd / sft = {out['gkd_over_sft']:.2f}x, gkd / kd cached = "
        f"{out['gkd_over_kd_cached']:.2f}x, kd cached / sft = {out['kd_cached_over_sft']:.2f}x; "
        f"generation is {out['gkd_generation_share']:.0%} of the gkd step "
        f"({out['gkd_generated_tokens_per_step']:.0f} tokens sampled per step)"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
