"""Conformance checks for method plugins, built-in or pip-installed.

``kdbench plugin check NAME`` runs them from the command line. A plugin's own repository runs
them under pytest in one line::

    # tests/test_conformance.py
    from kdbench.testing import conformance

    test_conformance = conformance("my_method")

Each check is a plain function ``check(ctx) -> str`` that raises :class:`ConformanceError`
with a message saying what to fix, and returns a short description of what it verified.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdbench.config import Budget, DataSpec
from kdbench.methods import Method, registry

TEACHER_ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
STUDENT_ARCH = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
DATA = DataSpec(n_per_task=8, max_length=48)


class ConformanceError(AssertionError):
    """A method does not meet the plugin contract."""


@dataclass
class Context:
    """A tiny teacher/student pair and data, shared by the checks of one method."""

    method: Method
    tmp: Path
    tokenizer: Any = None
    teacher: Any = None
    teacher_path: Path | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, method: Method, tmp: Path) -> Context:
        from kdbench.models import build_llama, default_tokenizer, load_pretrained, save

        tok = default_tokenizer()
        teacher = build_llama({**TEACHER_ARCH, "max_length": DATA.max_length}, tok, seed=0)
        path = tmp / "teacher"
        save(teacher, tok, path)
        teacher, _ = load_pretrained(path)  # as the pipeline loads it (default attention kernel)
        return cls(method=method, tmp=tmp, tokenizer=tok, teacher=teacher, teacher_path=path)

    def student(self, seed: int = 0) -> Any:
        from kdbench.models import build_llama

        return build_llama({**STUDENT_ARCH, "max_length": DATA.max_length}, self.tokenizer, seed)

    def data(self) -> Any:
        """The training batch the method would see (its own data hook applied)."""
        if "data" not in self.cache:
            from kdbench.train import method_batch

            self.cache["data"] = method_batch(
                self.method,
                self.method.make_config(),
                DATA,
                self.tokenizer,
                str(self.teacher_path),
                self.tmp / "cache",
            )
        return self.cache["data"]


# --- the checks -----------------------------------------------------------------------------


def check_config_defaults(ctx: Context) -> str:
    """The config dataclass builds from its defaults alone and survives a round trip."""
    m = ctx.method
    missing = [
        f.name
        for f in dataclasses.fields(m.config)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConformanceError(f"{m.name}: config fields without a default: {missing}")
    cfg = m.make_config()
    again = m.make_config(dataclasses.asdict(cfg))
    if again != cfg:
        raise ConformanceError(f"{m.name}: config does not round-trip through its fields")
    json.dumps(dataclasses.asdict(cfg))  # stored as JSON provenance: must serialise
    return f"defaults valid: {dataclasses.asdict(cfg) or '(no fields)'}"


class _SignalGuard(dict):
    """The teacher dict, refusing signals the method did not declare."""

    def __init__(self, signals: dict[str, Any], declared: frozenset[str], name: str) -> None:
        super().__init__(signals)
        self.declared, self.name = declared, name

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise ConformanceError(
                f"{self.name}: the loss read teacher[{key!r}] but the method declares signals "
                f"{sorted(self.declared)}; add it to `signals`"
            )
        return super().__getitem__(key)


def _one_loss(ctx: Context) -> tuple[torch.Tensor, torch.nn.Module, dict[str, Any]]:
    from kdbench.train import method_loss, prepare_models

    m = ctx.method
    cfg = m.make_config()
    student = ctx.student()
    prepare_models(m, student, ctx.teacher)
    modules = m.modules(student.config, ctx.teacher.config, cfg) if m.modules else {}
    data = ctx.data()
    batch = {
        "input_ids": data.input_ids[:4],
        "attention_mask": data.attention_mask[:4],
        "labels": data.labels[:4],
        "weight": data.weight[:4],
    }
    loss = method_loss(
        m,
        cfg,
        student,
        ctx.teacher if m.needs_teacher else None,
        batch,
        modules,
        guard=lambda s: _SignalGuard(s, m.signals, m.name),
    )
    return loss, student, modules


def check_loss_finite_and_differentiable(ctx: Context) -> str:
    """The loss is a finite scalar whose gradient reaches the student (and extra modules)."""
    loss, student, modules = _one_loss(ctx)
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise ConformanceError(f"{ctx.method.name}: loss must be a scalar tensor, got {loss!r}")
    if not torch.isfinite(loss):
        raise ConformanceError(f"{ctx.method.name}: loss is not finite ({loss.item()})")
    loss.backward()
    params = list(student.parameters()) + [p for mod in modules.values() for p in mod.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not any(g.abs().sum() > 0 for g in grads):
        raise ConformanceError(f"{ctx.method.name}: the loss has no gradient w.r.t. the student")
    if not all(torch.isfinite(g).all() for g in grads):
        raise ConformanceError(f"{ctx.method.name}: non-finite gradients")
    for name, mod in modules.items():
        if not any(p.grad is not None for p in mod.parameters()):
            raise ConformanceError(f"{ctx.method.name}: extra module {name!r} gets no gradient")
    return f"loss {loss.item():.4f}, finite gradients on {len(grads)} tensors"


def check_declared_signals_suffice(ctx: Context) -> str:
    """The loss runs with only the teacher signals the method declares."""
    _one_loss(ctx)  # the guard raises on any undeclared signal
    return f"signals {sorted(ctx.method.signals) or '(none)'} are enough"


def check_engine_steps(ctx: Context) -> str:
    """A few optimiser steps through the real DeepSpeed engine."""
    from kdbench.train import train

    m = ctx.method
    student = ctx.student()
    before = [p.detach().clone() for p in student.parameters()]
    stats = train(
        student,
        m,
        m.make_config(),
        ctx.data(),
        Budget(steps=3, batch_size=4, lr=1e-2),
        3,
        seed=0,
        teacher=ctx.teacher if m.needs_teacher else None,
    )
    if not math.isfinite(stats["final_loss"]):
        raise ConformanceError(f"{m.name}: training loss is not finite: {stats['final_loss']}")
    if all(torch.equal(a, b.detach()) for a, b in zip(before, student.parameters(), strict=True)):
        raise ConformanceError(f"{m.name}: 3 DeepSpeed steps did not change the student")
    return f"3 DeepSpeed steps, final loss {stats['final_loss']:.4f}"


def check_result_reaches_store(ctx: Context) -> str:
    """A run row with the method's config and a metric reaches an in-memory store."""
    from kdbench import store

    db = f":memory:conformance-{ctx.method.name}"
    keep = store.connect(db)  # holds the named in-memory database open
    try:
        cfg = dataclasses.asdict(ctx.method.make_config())
        store.write_run(
            db,
            {
                "run_id": f"check-{ctx.method.name}",
                "suite_hash": "conformance",
                "role": "student",
                "method": ctx.method.name,
                "family": ctx.method.family,
                "method_config": cfg,
                "student": "tiny",
                "seed": 0,
                "status": "ok",
            },
            [
                {
                    "task": "check",
                    "metric": "loss",
                    "value": 0.0,
                    "stderr": None,
                    "higher_is_better": False,
                    "is_primary": True,
                }
            ],
            {"params": 1},
        )
        runs = store.read_runs(db, "conformance")
        if list(runs.method) != [ctx.method.name] or json.loads(
            runs.method_config[0]
        ) != json.loads(json.dumps(cfg)):
            raise ConformanceError(f"{ctx.method.name}: stored run does not read back")
    finally:
        keep.close()
    return "run row stored and read back"


CHECKS: dict[str, Callable[[Context], str]] = {
    "config_defaults": check_config_defaults,
    "loss_finite_and_differentiable": check_loss_finite_and_differentiable,
    "declared_signals_suffice": check_declared_signals_suffice,
    "engine_steps": check_engine_steps,
    "result_reaches_store": check_result_reaches_store,
}


def run_checks(name: str, tmp: Path | None = None) -> list[tuple[str, bool, str]]:
    """Run every check on the registered method ``name``: (check, passed, message) each."""
    from kdbench.methods import resolve

    method = resolve([name], registry())[0]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        ctx = Context.build(method, Path(tmp or scratch))
        for check_name, check in CHECKS.items():
            try:
                results.append((check_name, True, check(ctx)))
            except Exception as e:  # report every failing check, not just the first
                results.append((check_name, False, f"{type(e).__name__}: {e}"))
    return results


def conformance(name: str) -> Callable[..., None]:
    """A pytest test function, parametrized over :data:`CHECKS`, for the method ``name``."""
    import pytest

    contexts: dict[str, Context] = {}

    @pytest.mark.parametrize("check", list(CHECKS))
    def test_conformance(check: str, tmp_path_factory: Any) -> None:
        if name not in contexts:
            from kdbench.methods import resolve

            method = resolve([name], registry())[0]
            contexts[name] = Context.build(method, tmp_path_factory.mktemp(f"kdbench-{name}"))
        CHECKS[check](contexts[name])

    test_conformance.__name__ = f"test_conformance_{name}"
    return test_conformance
