"""Conformance checks for method plugins, built-in or pip-installed.

``kdbench plugin check NAME`` runs them from the command line. A plugin's own repository runs
them under pytest in one line::

    # tests/test_conformance.py
    from kdbench.testing import conformance

    test_conformance = conformance("my_method")

"Passes check" means "runs on the leaderboard": every loss-level check runs the method against
each teacher a suite can give it (:data:`TEACHERS`): the live teacher (full logits), the
teacher-signal cache with full logits (``[cache] topk = 0``) and the cache with top-k logits
(the default suite's form), each through the same :class:`kdbench.signals.TeacherSignals`
contract the training job uses. The last checks train the student with the real DeepSpeed
engine, score it with the pipeline's own evaluation job and store the run.

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

from kdbench import signal_cache, store
from kdbench.config import CACHEABLE, Budget, DataSpec, EvalSpec
from kdbench.eval_job import eval_job
from kdbench.generations import method_batch, stop_token_ids
from kdbench.losses import IGNORE, topk_signals
from kdbench.methods import Method, registry, resolve
from kdbench.models import build_llama, default_tokenizer, load_pretrained, prepare_models, save
from kdbench.records import train_result
from kdbench.rollout import HFGenerate, Rollout
from kdbench.signal_cache import SignalCache
from kdbench.signals import SignalError, TeacherSignals, live_signals
from kdbench.train import method_loss, train
from kdbench.transfer import Batch, transfer_batch

TEACHER_ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
STUDENT_ARCH = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
DATA = DataSpec(n_per_task=8, max_length=48)
TOPK = 5  # the cached top-k teacher's k: well below the 25-token vocabulary
TEACHERS = ("live", "cache, full logits", "cache, top-k logits")
ROWS = 4  # examples per checked batch
TOL = {"rtol": 1e-4, "atol": 1e-6}


class ConformanceError(AssertionError):
    """A method does not meet the plugin contract."""


@dataclass
class Context:
    """A tiny teacher/student pair, data and signal caches, shared by the checks of one
    method."""

    method: Method
    tmp: Path
    tokenizer: Any = None
    teacher: Any = None
    teacher_path: Path | None = None
    memo: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, method: Method, tmp: Path) -> Context:
        tok = default_tokenizer()
        teacher = build_llama({**TEACHER_ARCH, "max_length": DATA.max_length}, tok, seed=0)
        path = tmp / "teacher"
        save(teacher, tok, path)
        teacher, _ = load_pretrained(str(path))  # as the pipeline loads it (default kernel)
        prepare_models(method.signals, teacher)
        return cls(method=method, tmp=tmp, tokenizer=tok, teacher=teacher, teacher_path=path)

    def student(self, seed: int = 0) -> Any:
        model = build_llama({**STUDENT_ARCH, "max_length": DATA.max_length}, self.tokenizer, seed)
        prepare_models(self.method.signals, model)
        return model

    def data(self) -> Batch:
        """The training set the method would see (its own data hook applied)."""
        if "data" not in self.memo:
            self.memo["data"] = method_batch(
                self.method,
                self.method.make_config(),
                DATA,
                self.tokenizer,
                str(self.teacher_path),
                self.tmp / "cache",
            )
        return self.memo["data"]

    @property
    def cacheable(self) -> bool:
        """Whether a suite's signal cache can serve this method (per-batch signals only, read
        from the transfer set: a method with its own data always runs the teacher live)."""
        m = self.method
        wanted = set(m.signals) - {"generations"}
        return m.data is None and bool(wanted) and wanted <= set(CACHEABLE)

    def cache(self, topk: int) -> SignalCache:
        """A real signal-cache entry of the teacher over the transfer set (``topk = 0``: full
        logits), built once per context."""
        key = f"cache{topk}"
        if key not in self.memo:
            batch = transfer_batch(DATA, self.tokenizer)
            folder = self.tmp / f"signals-top{topk}"
            signals = frozenset(self.method.signals) & frozenset(CACHEABLE)
            signal_cache.build(
                self.teacher, batch.input_ids, batch.attention_mask, signals, topk, folder
            )
            self.memo[key] = signal_cache.open_cache(folder, verify=True)
        return self.memo[key]

    def teachers(self) -> list[str]:
        """The teacher forms a suite can give this method."""
        if not self.method.needs_teacher:
            return ["live"]  # no per-batch signal: an empty TeacherSignals
        return list(TEACHERS) if self.cacheable else ["live"]

    def batch(self, rows: int = ROWS) -> dict[str, torch.Tensor]:
        """The first ``rows`` training examples as a loss batch (padding trimmed)."""
        return self.data().rows(torch.arange(rows))

    def signals(self, form: str, batch: dict[str, torch.Tensor]) -> TeacherSignals:
        """The method's TeacherSignals for ``batch`` (rows 0.. of the transfer set) from the
        teacher ``form`` of :data:`TEACHERS`."""
        m = self.method
        if not m.needs_teacher:
            return TeacherSignals({}, m.signals, m.name, "none")
        if form == "live":
            return live_signals(self.teacher, m.signals, batch, m.name)
        cache = self.cache(0 if form == "cache, full logits" else TOPK)
        rows = torch.arange(len(batch["input_ids"]))
        return cache.batch(rows, batch["input_ids"].shape[1], m.signals, m.name)


def _loss(
    ctx: Context,
    teacher: TeacherSignals,
    batch: dict[str, torch.Tensor],
    student: Any = None,
    seed: int = 0,
) -> tuple[Any, Any, dict[str, torch.nn.Module]]:
    """The method's loss on one batch, the student and the extra modules it used."""
    m = ctx.method
    cfg = m.make_config()
    student = student if student is not None else ctx.student(seed)
    torch.manual_seed(seed)
    modules = m.modules(student.config, ctx.teacher.config, cfg) if m.modules else {}
    try:
        loss = method_loss(m, cfg, student, teacher, batch, modules)
    except SignalError as e:
        raise ConformanceError(str(e)) from None
    return loss, student, modules


def _scalar(ctx: Context, loss: Any, what: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise ConformanceError(f"{ctx.method.name}: loss must be a tensor, got {type(loss)}")
    if loss.dim() != 0:
        raise ConformanceError(
            f"{ctx.method.name}: loss must be a 0-dim scalar tensor, got shape "
            f"{tuple(loss.shape)} ({what}); reduce it (masked mean over tokens)"
        )
    if not loss.is_floating_point():
        raise ConformanceError(f"{ctx.method.name}: loss must be floating point ({loss.dtype})")
    return loss


def _value(ctx: Context, form: str, batch: dict[str, torch.Tensor], **signal_values: Any) -> float:
    """The loss (a float) with teacher ``form`` on ``batch``, some signal keys replaced."""
    teacher = ctx.signals(form, batch)
    if signal_values:
        teacher = teacher.replace(**signal_values)
    loss, _, _ = _loss(ctx, teacher, batch)
    return float(_scalar(ctx, loss, form).detach())


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


def check_loss_is_scalar(ctx: Context) -> str:
    """The loss is a 0-dim floating-point tensor with every teacher a suite can give."""
    batch = ctx.batch()
    for form in ctx.teachers():
        loss, _, _ = _loss(ctx, ctx.signals(form, batch), batch)
        _scalar(ctx, loss, f"{form} teacher")
    return f"scalar with teachers: {', '.join(ctx.teachers())}"


def check_loss_finite_and_differentiable(ctx: Context) -> str:
    """With every teacher form, the loss is finite and its gradient reaches the student (and
    the extra modules), finite everywhere."""
    name = ctx.method.name
    batch = ctx.batch()
    values = []
    for form in ctx.teachers():
        loss, student, modules = _loss(ctx, ctx.signals(form, batch), batch)
        loss = _scalar(ctx, loss, form)
        if not torch.isfinite(loss):
            raise ConformanceError(f"{name}: loss is not finite ({loss.item()}) ({form} teacher)")
        loss.backward()
        own = [p.grad for p in student.parameters() if p.grad is not None]
        if not own or not any(g.abs().sum() > 0 for g in own):
            raise ConformanceError(f"{name}: the loss has no gradient w.r.t. the student ({form})")
        params = list(student.parameters()) + [p for m in modules.values() for p in m.parameters()]
        grads = [p.grad for p in params if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            raise ConformanceError(f"{name}: non-finite gradients ({form} teacher)")
        for key, mod in modules.items():  # a state module (buffers only) trains nothing
            params = list(mod.parameters())
            if params and not any(p.grad is not None for p in params):
                raise ConformanceError(f"{name}: extra module {key!r} gets no gradient")
        values.append(f"{form} {loss.item():.4f}")
    return "loss " + ", ".join(values)


def check_declared_signals(ctx: Context) -> str:
    """The loss reads exactly the per-batch teacher signals the method declares: reading any
    other raises (on the live and the cached path alike), and a declared signal it never reads
    would make the teacher (or the cache) compute it for nothing."""
    m = ctx.method
    batch = ctx.batch()
    teacher = ctx.signals("live", batch)
    _loss(ctx, teacher, batch)  # an undeclared read raises SignalError -> ConformanceError
    unread = sorted(set(m.signals) - {"generations"} - teacher.signals_read())
    if unread:
        raise ConformanceError(
            f"{m.name}: declares teacher signals {unread} that its loss never reads; "
            "declare only what the loss uses"
        )
    return f"reads {sorted(teacher.signals_read()) or '(no per-batch signal)'}, as declared"


def check_respects_mask(ctx: Context) -> str:
    """Padding does not change the loss: the batch widened by padding columns, with random
    token ids under the padding (so the student's and teacher's outputs there change), gives
    the same loss. A plain ``.mean()`` over positions fails this."""
    batch = ctx.batch()
    extra = 3
    gen = torch.Generator().manual_seed(0)

    def widen(b: dict[str, torch.Tensor], noise: bool) -> dict[str, torch.Tensor]:
        n = len(b["input_ids"])
        pad_ids = torch.full((n, extra), ctx.tokenizer.pad_token_id, dtype=torch.long)
        out = {
            "input_ids": torch.cat([b["input_ids"], pad_ids], 1),
            "attention_mask": torch.cat([b["attention_mask"], torch.zeros_like(pad_ids)], 1),
            "labels": torch.cat([b["labels"], torch.full_like(pad_ids, IGNORE)], 1),
            "weight": b["weight"],
        }
        if noise:
            padded = out["attention_mask"] == 0
            random = torch.randint(0, len(ctx.tokenizer), out["input_ids"].shape, generator=gen)
            out["input_ids"] = torch.where(padded, random, out["input_ids"])
        return out

    a = widen(batch, noise=False)
    b = widen(batch, noise=True)
    la = _value(ctx, "live", a)
    lb = _value(ctx, "live", b)
    if not math.isclose(la, lb, rel_tol=1e-4, abs_tol=1e-6):
        raise ConformanceError(
            f"{ctx.method.name}: the loss changes with what lies under the padding "
            f"({la:.6f} vs {lb:.6f}); average over the tokens that count "
            "(kdbench.losses.masked_mean with the labels' mask, or attention_mask for features)"
        )
    return f"padding ignored (loss {la:.4f} both ways)"


def check_empty_batch_finite(ctx: Context) -> str:
    """A batch in which no token counts (every label -100) gives a finite loss (0 for a pure
    token-level loss), never NaN: a micro-batch of a long-prompt dataset can be all prompt."""
    batch = ctx.batch()
    empty = {**batch, "labels": torch.full_like(batch["labels"], IGNORE)}
    values = []
    for form in ctx.teachers():
        value = _value(ctx, form, empty)
        if not math.isfinite(value):
            raise ConformanceError(
                f"{ctx.method.name}: loss is {value} on a batch with no counted tokens "
                f"({form} teacher); divide by the count clamped to >= 1, as "
                "kdbench.losses.masked_mean does"
            )
        values.append(value)
    return "finite with no counted tokens: " + ", ".join(f"{v:.4f}" for v in values)


def check_cached_teacher_matches_live(ctx: Context) -> str:
    """The loss from the signal cache with full logits equals the live teacher's (up to the
    float16 storage of hidden states, attention maps and q/k/v)."""
    if "cache, full logits" not in ctx.teachers():
        return "not served by the signal cache (the teacher runs live)"
    batch = ctx.batch()
    live = _value(ctx, "live", batch)
    cached = _value(ctx, "cache, full logits", batch)
    if not math.isclose(live, cached, rel_tol=2e-2, abs_tol=1e-3):
        raise ConformanceError(
            f"{ctx.method.name}: loss {cached:.6f} from the cached teacher, {live:.6f} live"
        )
    return f"cached {cached:.4f} = live {live:.4f}"


def check_topk_teacher(ctx: Context) -> str:
    """For a method that reads logits, the top-k teacher is used as the k + 1 bucket
    distribution of :func:`kdbench.losses.distributions`: with k = V (no rest) the loss equals
    the full-logit loss; it does not depend on the order of the k entries; and it depends on
    ``rest_logprob`` (the teacher's mass outside its top k)."""
    m = ctx.method
    if "logits" not in m.signals or not ctx.cacheable:
        return "reads no cached logits"
    batch = ctx.batch()
    full = ctx.signals("live", batch)
    logits = full["logits"]
    whole = topk_signals(logits, logits.shape[-1])
    ref = _value(ctx, "live", batch)
    as_topk = TeacherSignals(whole, m.signals, m.name, "cache")
    loss, _, _ = _loss(ctx, as_topk, batch)
    got = float(_scalar(ctx, loss, "top-k teacher with k = V").detach())
    if not math.isclose(got, ref, rel_tol=1e-4, abs_tol=1e-5):
        raise ConformanceError(
            f"{m.name}: with a top-k teacher holding the whole vocabulary (k = V) the loss is "
            f"{got:.6f}, with full logits {ref:.6f}; build the distributions with "
            "kdbench.losses.distributions (topk_indices are vocabulary ids, logsumexp the "
            "full normaliser)"
        )
    top = ctx.signals("cache, top-k logits", batch)
    base = _value(ctx, "cache, top-k logits", batch)
    perm = torch.arange(TOPK).roll(1)  # every entry moves
    shuffled = _value(
        ctx,
        "cache, top-k logits",
        batch,
        topk_logits=top["topk_logits"][..., perm],
        topk_indices=top["topk_indices"][..., perm],
    )
    if not math.isclose(base, shuffled, **{"rel_tol": 1e-4, "abs_tol": 1e-6}):
        raise ConformanceError(
            f"{m.name}: the loss depends on the order of the top-k entries ({base:.6f} vs "
            f"{shuffled:.6f}); match teacher and student through topk_indices, not positions"
        )
    # the same top-k logits, a rest e times smaller
    moved = _value(ctx, "cache, top-k logits", batch, rest_logprob=top["rest_logprob"] - 1.0)
    if math.isclose(base, moved, rel_tol=1e-6, abs_tol=1e-9):
        raise ConformanceError(
            f"{m.name}: the loss ignores the teacher's rest_logprob, i.e. the mass outside its "
            f"top {TOPK}; the top-k teacher is a k + 1 bucket distribution (see "
            "kdbench.losses.distributions)"
        )
    return f"k = V equals full logits ({got:.4f}); order-free; rest mass counts"


def check_engine_steps(ctx: Context) -> str:
    """A few optimiser steps through the real DeepSpeed engine, reading the teacher as the
    default suite gives it: top-k logits and the other signals from the signal cache when the
    method can be served from it, else the live teacher."""
    m = ctx.method
    student = ctx.student()
    before = [p.detach().clone() for p in student.parameters()]
    cache = ctx.cache(TOPK) if ctx.cacheable else None
    cfg, rollout = m.make_config(), None
    if m.on_policy:  # every step on the student's own samples, scored by the live teacher
        cfg = m.make_config({"lmbda": 1.0})
        tok = ctx.tokenizer
        rollout = Rollout(
            cfg, HFGenerate(), stop_token_ids(tok), tok.pad_token_id, DATA.max_length, seed=0
        )
    stats = train(
        student,
        m,
        cfg,
        ctx.data(),
        Budget(steps=3, batch_size=4, lr=1e-2),
        3,
        seed=0,
        teacher=ctx.teacher if m.needs_teacher and (cache is None or m.on_policy) else None,
        cache=cache,
        teacher_config=ctx.teacher.config,
        rollout=rollout,
    )
    if m.on_policy and not stats["generated_sequences"]:
        raise ConformanceError(
            f"{m.name}: on-policy with lmbda = 1, yet no step trained on student samples "
            f"(batches: {stats['rollout_batches']}); check the config's schedule()"
        )
    if not math.isfinite(stats["final_loss"]):
        raise ConformanceError(f"{m.name}: training loss is not finite: {stats['final_loss']}")
    if all(torch.equal(a, b.detach()) for a, b in zip(before, student.parameters(), strict=True)):
        raise ConformanceError(f"{m.name}: 3 DeepSpeed steps did not change the student")
    ctx.memo["trained"] = (student, stats)
    source = "cached top-k teacher" if cache is not None else "live teacher"
    if m.on_policy:
        source = f"{stats['generated_sequences']} student samples scored by the live teacher"
    return f"3 DeepSpeed steps ({source}), final loss {stats['final_loss']:.4f}"


def check_cross_tokenizer_student(ctx: Context) -> str:
    """A method that declares ``cross_tokenizer`` trains a student with another tokenizer (the
    built-in ``chunk`` one) on paired rows (:mod:`kdbench.cross_tokenizer`) for a few DeepSpeed
    steps, with the live teacher and with the cached top-k teacher, and its loss moves the
    student; any other method is refused such a student at plan time, so there is nothing to
    check."""
    m = ctx.method
    if not m.cross_tokenizer:
        return "not cross-tokenizer: a student with another vocabulary is refused at plan time"
    from kdbench.cross_tokenizer import paired_batch
    from kdbench.tokenizer import chunk_tokenizer
    from kdbench.transfer import transfer_examples

    theirs = chunk_tokenizer()
    data = paired_batch(transfer_examples(DATA), theirs, ctx.tokenizer, DATA)
    done = []
    for source in ("live", "cache") if ctx.cacheable else ("live",):
        student = build_llama({**STUDENT_ARCH, "max_length": DATA.max_length}, theirs, 0)
        prepare_models(m.signals, student)
        before = [p.detach().clone() for p in student.parameters()]
        stats = train(
            student,
            m,
            m.make_config(),
            data,
            Budget(steps=3, batch_size=4, lr=1e-2),
            3,
            seed=0,
            teacher=ctx.teacher if source == "live" else None,
            cache=ctx.cache(TOPK) if source == "cache" else None,
            teacher_config=ctx.teacher.config,
        )
        if not math.isfinite(stats["final_loss"]):
            raise ConformanceError(
                f"{m.name}: with a cross-tokenizer student and the {source} teacher the training "
                f"loss is not finite: {stats['final_loss']}"
            )
        same = zip(before, student.parameters(), strict=True)
        if all(torch.equal(a, b.detach()) for a, b in same):
            raise ConformanceError(
                f"{m.name}: 3 DeepSpeed steps with a cross-tokenizer student did not change it"
            )
        done.append(f"{source} teacher {stats['final_loss']:.4f}")
    return f"chunk-tokenizer student ({len(theirs)} tokens), 3 steps each: " + ", ".join(done)


def check_trains_saves_and_scores(ctx: Context) -> str:
    """The trained student is saved, scored by the pipeline's evaluation job (lm-eval) and its
    run, with the method's config and real metrics, is stored and read back."""
    if "trained" not in ctx.memo:
        check_engine_steps(ctx)
    student, stats = ctx.memo["trained"]
    m = ctx.method
    folder = ctx.tmp / "student"
    size = save(student.cpu(), ctx.tokenizer, folder)
    trained = train_result(
        stats,
        path=str(folder),
        params=sum(p.numel() for p in student.parameters()),
        bytes=size,
        peak_rss_mb=None,
        peak_private_mb=None,
        signal_cache=ctx.cacheable,
        world_size=1,
    )
    threads = torch.get_num_threads()
    try:
        result = eval_job(trained, EvalSpec(tasks=("kd_compare",), limit=4, batch_size=8), 1.0)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConformanceError(
            f"{m.name}: the saved student does not load and score as the evaluation job does "
            f"it ({type(e).__name__}: {first}); do the method's hooks change the student or "
            "its config?"
        ) from None
    finally:
        torch.set_num_threads(threads)  # the job sets a Ray worker's thread count
    if not result.metrics:
        raise ConformanceError(f"{m.name}: the evaluation of the trained student gave no metric")
    db = f":memory:conformance-{m.name}"
    keep = store.connect(db)  # holds the named in-memory database open
    try:
        cfg = dataclasses.asdict(m.make_config())
        run = {
            "run_id": f"check-{m.name}",
            "suite_hash": "conformance",
            "role": "student",
            "method": m.name,
            "family": m.family,
            "method_config": cfg,
            "student": "tiny",
            "seed": 0,
            "status": "ok",
        }
        store.write_run(db, run, result.metrics, {"params": trained.params, "bytes": size})
        runs = store.read_runs(db, "conformance")
        metrics = store.read_metrics(db, "conformance")
        if list(runs.method) != [m.name] or json.loads(runs.method_config[0]) != json.loads(
            json.dumps(cfg)
        ):
            raise ConformanceError(f"{m.name}: stored run does not read back")
        if len(metrics) != len(result.metrics):
            raise ConformanceError(f"{m.name}: stored metrics do not read back")
    finally:
        keep.close()
    first = result.metrics[0]
    return f"saved ({size} bytes), scored ({first['metric']} {first['value']:.2f}) and stored"


CHECKS: dict[str, Callable[[Context], str]] = {
    "config_defaults": check_config_defaults,
    "loss_is_scalar": check_loss_is_scalar,
    "loss_finite_and_differentiable": check_loss_finite_and_differentiable,
    "declared_signals": check_declared_signals,
    "respects_mask": check_respects_mask,
    "empty_batch_finite": check_empty_batch_finite,
    "cached_teacher_matches_live": check_cached_teacher_matches_live,
    "topk_teacher": check_topk_teacher,
    "engine_steps": check_engine_steps,
    "cross_tokenizer_student": check_cross_tokenizer_student,
    "trains_saves_and_scores": check_trains_saves_and_scores,
}


def run_checks(method: str | Method, tmp: Path | None = None) -> list[tuple[str, bool, str]]:
    """Run every check on a method (a registered name, or a :class:`Method` object):
    ``(check, passed, message)`` each."""
    if isinstance(method, str):
        method = resolve([method], registry())[0]
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
            method = resolve([name], registry())[0]
            contexts[name] = Context.build(method, tmp_path_factory.mktemp(f"kdbench-{name}"))
        CHECKS[check](contexts[name])

    test_conformance.__name__ = f"test_conformance_{name}"
    return test_conformance
