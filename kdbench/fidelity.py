"""Fidelity to the teacher: how closely a student matches its teacher, and how well each is
calibrated, next to accuracy.

Three metrics per model and task, stored as ordinary metric rows (``is_primary`` false, so
ranking never uses them):

- :data:`TOP1` ``fidelity_top1``: **top-1 agreement**, the fraction of evaluation tokens at
  which the student's most likely next token is the teacher's (higher is better);
- :data:`KL` ``fidelity_kl``: the **teacher-to-student KL divergence**
  ``KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v))`` in nats, averaged over the same
  tokens (lower is better; Hinton et al. 2015 distil by minimising it);
- :data:`ECE` ``ece``: the **expected calibration error** of the task's own predictions (Guo et
  al. 2017, "On Calibration of Modern Neural Networks", eq. 3): questions binned by confidence
  into :data:`ECE_BINS` equal-width bins ``B_m = ((m-1)/M, m/M]``,
  ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``, from the per-question ``confidence`` and
  ``correct`` of :func:`kdbench.evaluate.question_samples` (lower is better). The teacher's is
  stored on the teacher's run, so the board shows both.

**The evaluation tokens** (:func:`reference_pairs`) are the continuation tokens of every
evaluation document, after the prompt exactly as lm-eval builds it (few-shot examples, chat
template and all), tokenised as lm-eval's ``HFLM`` does:

- a multiple-choice task (or a ``loglikelihood`` one): the gold continuation, the one lm-eval
  scores for the right answer;
- a generation task: the **teacher's own greedy answer** (lm-eval's ``generate_until`` with the
  task's settings, up to its stop string): a gold target need not be what the models write (a
  bare number where they write a rationale first), while on the teacher's answer every position
  is one the teacher itself reached;
- a ``loglikelihood_rolling`` (perplexity) task has no continuation: it is skipped, with the
  reason in the reference.

**The teacher's reference** (:func:`cached_reference`) is computed once per suite by the teacher
stage: the teacher is scored with lm-eval (for its answers), then run over those tokens, and its
next-token distributions are saved with the token ids under
``<cache root>/fidelity/<key>.pt``, the key hashing the teacher's weights, its dtype, the suite's
``[eval]`` and each task's documents. Every evaluation job (students and the teacher) runs its
model over the same token ids (:func:`fidelity_rows`): one forward pass over a few hundred short
sequences on the tiny suite. The distributions are kept whole for a vocabulary of at most
:data:`FULL_VOCAB_MAX` tokens (the tiny suite's has 25); a larger one keeps the teacher's top
:data:`TOPK` tokens and one bucket for the rest, and the KL is then the exact KL of the two
distributions coarsened to those ``k + 1`` outcomes, ``sum_{i in top-k} p_i log(p_i / q_i) +
p_rest log(p_rest / q_rest)``, with ``q_rest`` the student's exact mass outside the teacher's
top-k: a lower bound of the full KL (log-sum inequality) that equals it as ``k`` reaches the
vocabulary. A student with another vocabulary than the teacher's is not compared
(cross-tokenizer fidelity needs an alignment): its evaluation says so in a note.

The stderr of agreement and KL treats the document as the sampling unit (tokens of one answer
are not independent): the linearised standard error of a ratio estimator,
``se(r) = sqrt(n / (n - 1) * sum_d (s_d - r c_d)^2) / sum_d c_d`` for per-document sums ``s_d``
over ``c_d`` tokens (Cochran, *Sampling Techniques*, 3rd ed., 1977, eq. 6.9).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: the app reads the names only
    import torch

    from kdbench.config import EvalSpec

TOP1 = "fidelity_top1"
"""Metric name: top-1 agreement with the teacher on the evaluation tokens (higher is better)."""
KL = "fidelity_kl"
"""Metric name: mean KL(teacher || student) in nats on the evaluation tokens (lower is better)."""
ECE = "ece"
"""Metric name: expected calibration error of the task's predictions (lower is better)."""
FIDELITY_METRICS = (TOP1, KL, ECE)
HIGHER_IS_BETTER = {TOP1: True, KL: False, ECE: False}

ECE_BINS = 10  # Guo et al. 2017 use 15; 10 equal-width bins is the common choice since
FULL_VOCAB_MAX = 4096  # keep the teacher's whole distribution up to this vocabulary size
TOPK = 32  # else its top-k tokens and one bucket for the rest
FORMAT = 1  # bump when the reference's content or layout changes


# --------------------------------------------------------------------------- the metrics


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[float] | np.ndarray,
    bins: int = ECE_BINS,
) -> float:
    """ECE (Guo et al. 2017, eq. 3): ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over
    ``bins`` equal-width bins ``((m-1)/M, m/M]`` of the confidence (0 falls in the first).

    ``confidence`` is each prediction's probability, ``correct`` whether it was right (1/0,
    or a score in [0, 1]). Raises ValueError naming the argument for an empty input, unequal
    lengths or a value outside [0, 1]."""
    conf = np.asarray(confidence, dtype=float).ravel()
    acc = np.asarray(correct, dtype=float).ravel()
    if conf.size == 0:
        raise ValueError("confidence: no predictions")
    if conf.shape != acc.shape:
        raise ValueError(f"correct: {acc.size} values for {conf.size} confidences")
    for name, x in (("confidence", conf), ("correct", acc)):
        if not np.all((x >= 0) & (x <= 1)):  # also refuses NaN
            raise ValueError(f"{name}: values must be in [0, 1]")
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    which = np.searchsorted(inner, conf, side="left")  # bin m holds ((m-1)/M, m/M]
    gap = np.bincount(which, acc, bins) - np.bincount(which, conf, bins)
    return float(np.abs(gap).sum() / conf.size)


def ratio_stderr(
    sums: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray
) -> float | None:
    """Standard error of ``r = sum(sums) / sum(counts)`` with documents as the sampling unit:
    ``sqrt(n / (n - 1) * sum_d (s_d - r c_d)^2) / sum_d c_d`` (Cochran 1977, eq. 6.9). None
    for fewer than two documents."""
    s = np.asarray(sums, dtype=float)
    c = np.asarray(counts, dtype=float)
    n, total = s.size, c.sum()
    if n < 2 or total <= 0:
        return None
    r = s.sum() / total
    return float(math.sqrt(n / (n - 1) * float(((s - r * c) ** 2).sum())) / total)


def top1_agreement(teacher_argmax: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """Per position, whether the student's most likely token (``student_logp`` [P, V]) is the
    teacher's (``teacher_argmax`` [P]), as 0./1."""
    return (student_logp.argmax(-1) == teacher_argmax).double()


def kl_full(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """Per position, ``KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v))`` from full
    log-probabilities [P, V] (float64; a token the teacher gives 0 adds 0)."""
    import torch

    t, s = teacher_logp.double(), student_logp.double()
    p = t.exp()
    terms = torch.where(p > 0, p * (t - s), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)


def kl_topk(
    top_ids: torch.Tensor,
    top_logp: torch.Tensor,
    rest_logp: torch.Tensor,
    student_logp: torch.Tensor,
) -> torch.Tensor:
    """Per position, the KL of the teacher's top-k tokens plus one bucket for the rest:
    ``sum_{i in top-k} p_i (log p_i - log q_i) + p_rest (log p_rest - log q_rest)``, where
    ``q_rest`` is the student's exact mass outside the teacher's top-k (a logsumexp over its
    full ``student_logp`` [P, V]). ``top_ids``/``top_logp`` [P, k], ``rest_logp`` [P]: the
    teacher's. Exact for the coarsened distributions, a lower bound of the full KL."""
    import torch

    # gathered and summed in the dtype the teacher's were (float32): the teacher scored
    # against its own reference gives exactly 0
    s_top = student_logp.gather(-1, top_ids.long()).double()
    s_rest = _rest_logp(student_logp, top_ids).double()
    t_top, t_rest = top_logp.double(), rest_logp.double()
    p_top, p_rest = t_top.exp(), t_rest.exp()
    head = torch.where(p_top > 0, p_top * (t_top - s_top), torch.zeros_like(p_top)).sum(-1)
    tail = torch.where(p_rest > 0, p_rest * (t_rest - s_rest), torch.zeros_like(p_rest))
    return (head + tail).clamp_min(0.0)


def _rest_logp(logp: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside ``top_ids`` per position (-inf when none is)."""
    import torch

    rest = logp.scatter(-1, top_ids.long(), float("-inf"))
    return torch.logsumexp(rest, -1)


# --------------------------------------------------------------------------- the reference


@dataclass
class TaskReference:
    """The teacher's reference on one (leaf) task: per document its id, the model input
    (prompt and continuation, minus the last token, truncated on the left to the teacher's
    context) and how many of its last positions predict continuation tokens; per position, in
    document order, the teacher's argmax and its distribution (full ``logp`` [P, V], or
    ``top_ids``/``top_logp`` [P, k] and ``rest_logp`` [P])."""

    doc_ids: list[int]
    inputs: list[list[int]]
    n_cont: list[int]
    argmax: Any  # torch.Tensor [P]
    logp: Any = None
    top_ids: Any = None
    top_logp: Any = None
    rest_logp: Any = None


@dataclass
class Reference:
    """The teacher's reference for a suite's evaluation (:func:`build_reference`)."""

    vocab: str  # sha256 of the tokenizer's token -> id map
    vocab_size: int  # the teacher's logits dimension
    topk: int  # 0: full distributions
    tasks: dict[str, TaskReference]
    groups: dict[str, list[str]] = field(default_factory=dict)  # suite task -> its leaf tasks
    skipped: dict[str, str] = field(default_factory=dict)  # leaf task -> why it has none


def vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 of a tokenizer's token -> id map (what teacher and student must share)."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _gold_index(target: Any, arguments: Sequence[Any]) -> int | None:
    """The gold choice of a multiple-choice sample: an index (the first of several golds), or
    a choice text matched against the continuations."""
    if isinstance(target, list):
        target = target[0] if target else None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target) if 0 <= int(target) < len(arguments) else None
    if isinstance(target, str):
        for i, args in enumerate(arguments):
            if str(args[1]).strip() == target.strip():
                return i
    return None


def reference_pairs(
    results: dict[str, Any],
) -> tuple[dict[str, list[tuple[int, str, str]]], dict[str, str]]:
    """Per leaf task, ``(doc_id, context, continuation)`` of every document from lm-eval's
    logged samples (``results``: :func:`kdbench.evaluate.lm_eval_results` with samples): the
    gold continuation of a multiple-choice or loglikelihood task, the model's own generation
    of a generation task; and the tasks skipped, with why."""
    pairs: dict[str, list[tuple[int, str, str]]] = {}
    skipped: dict[str, str] = {}
    for task, samples in (results.get("samples") or {}).items():
        kind = (results.get("configs", {}).get(task) or {}).get("output_type")
        if kind not in ("multiple_choice", "loglikelihood", "generate_until"):
            skipped[task] = f"output type {kind}: no continuation to compare the models on"
            continue
        seen: set[int] = set()
        out = pairs.setdefault(task, [])
        for sample in samples:
            doc_id = int(sample["doc_id"])
            if doc_id in seen:  # one row per filter: keep one per document
                continue
            seen.add(doc_id)
            args = sample.get("arguments") or []
            if not args:
                continue
            if kind == "multiple_choice":
                gold = _gold_index(sample.get("target"), args)
                if gold is None:
                    continue
                context, continuation = args[gold][0], args[gold][1]
            elif kind == "loglikelihood":
                context, continuation = args[0][0], args[0][1]
            else:
                resps = sample.get("resps") or [[]]
                if not resps[0]:
                    continue
                context, continuation = args[0][0], resps[0][0]
            if isinstance(continuation, str) and continuation:
                out.append((doc_id, str(context), continuation))
    return pairs, skipped


def _encode(lm: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's ``HFLM.loglikelihood`` encodes them."""
    if context == "":
        return [lm.prefix_token_id], lm.tok_encode(continuation)
    return lm._encode_pair(context, continuation)


def model_inputs(ids: tuple[list[int], list[int]], max_length: int | None) -> tuple[list[int], int]:
    """The input of one document (prompt + continuation minus its last token, the last
    ``max_length`` kept) and how many of its last positions predict continuation tokens."""
    context, continuation = ids
    inputs = (list(context) + list(continuation))[:-1]
    if max_length is not None and len(inputs) > max_length:
        inputs = inputs[-max_length:]
    return inputs, min(len(continuation), len(inputs))


def continuation_logprobs(
    model: Any,
    inputs: Sequence[Sequence[int]],
    n_cont: Sequence[int],
    batch_size: int,
    device: str | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Per batch of documents (in order, ``batch_size`` at a time, right-padded): the index
    of its first document and the model's next-token log-probabilities at the continuation
    positions of its documents, concatenated [sum n, V] (float32)."""
    import torch

    device = device or str(next(model.parameters()).device)
    with torch.no_grad():
        for start in range(0, len(inputs), max(1, batch_size)):
            chunk = inputs[start : start + batch_size]
            counts = n_cont[start : start + batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, x in enumerate(chunk):
                ids[i, : len(x)] = torch.tensor(list(x), dtype=torch.long)
                mask[i, : len(x)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            rows = [
                logits[i, len(x) - n : len(x)]
                for i, (x, n) in enumerate(zip(chunk, counts, strict=True))
            ]
            yield start, torch.log_softmax(torch.cat(rows).float(), -1).cpu()


def build_reference(
    model: Any, tokenizer: Any, spec: EvalSpec, device: str | None = "cpu"
) -> Reference:
    """The teacher's reference on a suite's ``[eval]``: lm-eval scores ``model`` (with logged
    samples, for its generations), then :func:`reference_pairs` gives the tokens and one pass
    of ``model`` over them its distributions, kept whole or as top-:data:`TOPK` plus a rest
    bucket (see the module docstring)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from kdbench.evaluate import (
        _lm_eval_patched,
        _preserved_state,
        lm_eval_results,
        suite_arguments,
    )

    out = lm_eval_results(model, tokenizer, device=device, samples=True, **suite_arguments(spec))
    if out is None:
        raise RuntimeError("lm-eval returned no results (a non-zero rank of a distributed run)")
    pairs, skipped = reference_pairs(out[0])
    tasks: dict[str, TaskReference] = {}
    vocab_size, topk = 0, 0
    with _preserved_state(model, device), _lm_eval_patched(quiet=True):
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=spec.batch_size)
        for task, docs in pairs.items():
            encoded = [model_inputs(_encode(lm, c, x), lm.max_length) for _, c, x in docs]
            keep = [i for i, (_, n) in enumerate(encoded) if n > 0]
            if not keep:
                skipped[task] = "no document has a continuation token"
                continue
            inputs = [encoded[i][0] for i in keep]
            n_cont = [encoded[i][1] for i in keep]
            parts: dict[str, list[torch.Tensor]] = {}
            for _, logp in continuation_logprobs(model, inputs, n_cont, spec.batch_size, device):
                vocab_size = logp.shape[-1]
                topk = 0 if vocab_size <= FULL_VOCAB_MAX else TOPK
                parts.setdefault("argmax", []).append(logp.argmax(-1))
                if topk:
                    values, ids = torch.topk(logp, topk, dim=-1)
                    parts.setdefault("top_ids", []).append(ids.int())
                    parts.setdefault("top_logp", []).append(values)
                    parts.setdefault("rest_logp", []).append(_rest_logp(logp, ids))
                else:
                    parts.setdefault("logp", []).append(logp)
            tasks[task] = TaskReference(
                doc_ids=[docs[i][0] for i in keep],
                inputs=inputs,
                n_cont=n_cont,
                **{k: torch.cat(v) for k, v in parts.items()},
            )
    return Reference(
        vocab=vocab_fingerprint(tokenizer),
        vocab_size=vocab_size,
        topk=topk,
        tasks=tasks,
        groups=leaf_tasks(spec),
        skipped=skipped,
    )


def leaf_tasks(spec: EvalSpec) -> dict[str, list[str]]:
    """Each task of a suite's ``[eval]`` (a task, group or tag) -> the lm-eval leaf tasks it
    scores (built once per process by :func:`kdbench.evaluate.load_tasks`)."""
    from kdbench.evaluate import _loaded, load_tasks, suite_arguments

    args = suite_arguments(spec)
    loaded = load_tasks(args["tasks"], args["include_path"], args["options"], args["suite_dir"])
    return {name: [t.config.task for t in _loaded(obj)] for name, obj in loaded.items()}


def save_reference(reference: Reference, path: Path) -> None:
    """Write a reference (torch's format, tensors and plain containers only) in one step."""
    import torch

    from kdbench.disk_cache import atomic_entry

    blob = {"format": FORMAT, **dataclasses.asdict(reference)}
    with atomic_entry(Path(path)) as tmp:
        torch.save(blob, tmp)


def load_reference(path: str | Path) -> Reference:
    """Read a reference written by :func:`save_reference`; ValueError when the file is not
    one (another format, damaged)."""
    import torch

    try:
        blob = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file, whatever torch raises
        raise ValueError(
            f"{path}: not a readable fidelity reference ({type(e).__name__})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fidelity reference of format {FORMAT}")
    try:
        tasks = {t: TaskReference(**fields) for t, fields in blob["tasks"].items()}
        return Reference(
            vocab=blob["vocab"],
            vocab_size=int(blob["vocab_size"]),
            topk=int(blob["topk"]),
            tasks=tasks,
            groups=dict(blob.get("groups") or {}),
            skipped=dict(blob.get("skipped") or {}),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a fidelity reference ({type(e).__name__}: {e})") from None


def _plain(value: Any) -> Any:
    """A task setting as data for a cache key (a function by its qualified name)."""
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    return value


def reference_key(teacher_path: str, spec: EvalSpec, dtype: str = "auto") -> str:
    """The reference's cache key: the teacher's weights (:func:`kdbench.generations.
    teacher_fingerprint`) and dtype, the suite's ``[eval]`` (its folder aside), each leaf
    task's documents and prompt settings, lm-eval's version and :data:`FORMAT`."""
    import lm_eval

    from kdbench.evaluate import _loaded, load_tasks, suite_arguments
    from kdbench.generations import teacher_fingerprint
    from kdbench.models import resolve_dtype

    args = suite_arguments(spec)
    loaded = load_tasks(args["tasks"], args["include_path"], args["options"], args["suite_dir"])
    docs = hashlib.sha256()
    for name in args["tasks"]:
        for task in _loaded(loaded[name]):
            settings = {
                k: _plain(getattr(task.config, k, None))
                for k in (
                    "task",
                    "output_type",
                    "doc_to_text",
                    "doc_to_target",
                    "doc_to_choice",
                    "target_delimiter",
                    "fewshot_delimiter",
                    "num_fewshot",
                    "generation_kwargs",
                )
            }
            docs.update(json.dumps(settings, sort_keys=True, default=str).encode())
            for doc in task.eval_docs:
                docs.update(json.dumps(doc, sort_keys=True, default=str).encode())
    blob = {
        "teacher": teacher_fingerprint(teacher_path),
        "dtype": str(resolve_dtype(dtype)),
        "eval": {k: v for k, v in dataclasses.asdict(spec).items() if k != "root"},
        "include": args["include_path"],
        "docs": docs.hexdigest(),
        "lm_eval": getattr(lm_eval, "__version__", ""),
        "format": FORMAT,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_reference(
    teacher_path: str, spec: EvalSpec, cache: str | Path, dtype: str = "auto"
) -> Path:
    """The teacher's reference file for ``spec``, built now (teacher loaded in ``dtype`` on
    the job's device) unless the cache holds a readable one:
    ``<cache>/fidelity/<reference_key>.pt``."""
    from kdbench.models import job_device, load_pretrained

    path = Path(cache) / "fidelity" / f"{reference_key(teacher_path, spec, dtype)}.pt"
    if path.is_file():
        try:
            load_reference(path)
            return path
        except ValueError:
            pass  # damaged: built again and replaced
    model, tokenizer = load_pretrained(teacher_path, dtype)
    device = str(job_device())
    model.to(device)
    reference = build_reference(model, tokenizer, spec, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_reference(reference, path)
    return path


# --------------------------------------------------------------------------- scoring


def _row(task: str, metric: str, value: float, stderr: float | None) -> dict[str, Any]:
    return {
        "task": task,
        "metric": metric,
        "value": value,
        "stderr": stderr,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "is_primary": False,
        "aggregation": "mean",
    }


def _pooled(groups: Mapping[str, Sequence[str]], have: Sequence[str]) -> dict[str, list[str]]:
    """Every leaf task with values alone, and each suite task that is not a leaf (a group or
    tag) pooled over its leaves that have values."""
    out = {t: [t] for t in have}
    for name, leaves in groups.items():
        members = [t for t in leaves if t in have]
        if name not in out and members:
            out[name] = members
    return out


def fidelity_rows(
    model: Any,
    tokenizer: Any,
    reference: Reference,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """:data:`TOP1` and :data:`KL` rows per task of ``reference`` (each leaf task, and each
    group or tag of the suite pooled over its leaves' tokens) for ``model`` run over the
    reference's token ids; and notes on what was not compared (another vocabulary, a task
    without tokens). Inputs longer than the model's context keep their last tokens."""
    import torch

    notes = [f"fidelity: {t}: {why}" for t, why in sorted(reference.skipped.items())]
    if vocab_fingerprint(tokenizer) != reference.vocab:
        return [], [
            "fidelity to the teacher not measured: the model's vocabulary differs from the "
            "teacher's (cross-tokenizer fidelity needs an alignment)"
        ]
    max_length = getattr(model.config, "max_position_embeddings", None)
    sums: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    was_training = model.training
    model.eval()
    try:
        for task, ref in reference.tasks.items():
            ends = np.cumsum(ref.n_cont)
            inputs, n_cont = [], []
            for x, n in zip(ref.inputs, ref.n_cont, strict=True):
                x = x[-max_length:] if max_length and len(x) > max_length else x
                inputs.append(x)
                n_cont.append(min(n, len(x)))
            agree, kl = np.zeros(len(inputs)), np.zeros(len(inputs))
            for start, logp in continuation_logprobs(model, inputs, n_cont, batch_size, device):
                if not reference.topk and logp.shape[-1] != reference.vocab_size:
                    return [], [
                        f"fidelity to the teacher not measured: the model has "
                        f"{logp.shape[-1]} logits, the teacher {reference.vocab_size}"
                    ]
                docs = range(start, min(start + batch_size, len(inputs)))
                # the reference positions of these documents: the last n of each one's
                pos = torch.cat([torch.arange(ends[d] - n_cont[d], ends[d]) for d in docs])
                doc = torch.cat([torch.full((n_cont[d],), i) for i, d in enumerate(docs)])
                hits = top1_agreement(ref.argmax[pos], logp)
                if reference.topk:
                    div = kl_topk(ref.top_ids[pos], ref.top_logp[pos], ref.rest_logp[pos], logp)
                else:
                    div = kl_full(ref.logp[pos], logp)
                width = len(docs)
                agree[start : start + width] = torch.zeros(width).double().index_add(0, doc, hits)
                kl[start : start + width] = torch.zeros(width).double().index_add(0, doc, div)
            sums[task] = (agree, kl, np.asarray(n_cont, dtype=float))
    finally:
        model.train(was_training)
    rows = []
    for name, members in _pooled(reference.groups, list(sums)).items():
        agree = np.concatenate([sums[t][0] for t in members])
        kl = np.concatenate([sums[t][1] for t in members])
        count = np.concatenate([sums[t][2] for t in members])
        if count.sum() <= 0:
            notes.append(f"fidelity: {name}: no evaluation token fits the model's context")
            continue
        rows.append(_row(name, TOP1, float(agree.sum() / count.sum()), ratio_stderr(agree, count)))
        rows.append(_row(name, KL, float(kl.sum() / count.sum()), ratio_stderr(kl, count)))
    return rows, notes


def ece_rows(
    samples: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """An :data:`ECE` row per task of ``samples`` (:func:`kdbench.evaluate.question_samples`:
    ``task``, ``confidence``, ``correct``), and per group or tag of ``groups`` (suite task ->
    leaf tasks) pooled over its leaves' questions. Questions without a confidence (an empty
    generation) are left out; a task whose ``correct`` is not in [0, 1] has no row."""
    per_task: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        conf, correct = s.get("confidence"), s.get("correct")
        if conf is None or correct is None or not math.isfinite(conf):
            continue
        per_task.setdefault(str(s["task"]), []).append((float(conf), float(correct)))
    usable = [
        t for t, pairs in per_task.items() if all(0 <= c <= 1 and 0 <= a <= 1 for c, a in pairs)
    ]
    rows = []
    for name, members in _pooled(groups or {}, usable).items():
        pairs = [p for t in members for p in per_task[t]]
        conf, correct = zip(*pairs, strict=True)
        rows.append(_row(name, ECE, expected_calibration_error(conf, correct), None))
    return rows


def evaluation_rows(
    model: Any,
    tokenizer: Any,
    spec: EvalSpec,
    samples: Sequence[Mapping[str, Any]],
    reference_path: str | None,
    device: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """What an evaluation job adds to lm-eval's rows: :func:`ece_rows` from its samples, and
    :func:`fidelity_rows` against the teacher's reference at ``reference_path`` (none
    without one); with notes on what was not measured."""
    groups = leaf_tasks(spec)
    rows = ece_rows(samples, groups)
    if not reference_path:
        return rows, []
    try:
        reference = load_reference(reference_path)
    except (OSError, ValueError) as e:
        return rows, [f"fidelity to the teacher not measured: {e}"]
    found, notes = fidelity_rows(model, tokenizer, reference, spec.batch_size, device)
    return rows + found, notes
