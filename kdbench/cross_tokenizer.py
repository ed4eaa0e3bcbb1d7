"""Cross-tokenizer distillation: a student whose tokenizer is not the teacher's.

The same examples are encoded twice, once with each tokenizer (:func:`paired_batch`), so row
``i`` of the student's batch and row ``i`` of the teacher's are the same text. The teacher's
rows are those of the teacher-signal cache (:func:`kdbench.transfer.transfer_batch` with the
teacher's tokenizer), so a cached teacher serves cross-tokenizer students unchanged. A loss of a
method that declares ``cross_tokenizer`` gets, besides the student's ``input_ids``,
``attention_mask``, ``labels`` and ``weight``:

- ``teacher_input_ids``, ``teacher_attention_mask``, ``teacher_labels``: the teacher's rows
  (the teacher's signals are computed on them, live or from the cache);
- ``offsets``, ``teacher_offsets`` (B, T, 2) long: each token's ``[start, end)`` character span
  in the example's completion text (``-1`` on prompt and padding tokens; an EOS token appended
  after the text spans ``[len, len)``), from the fast tokenizers' offset mappings;
- ``vocab_map`` (V_T,) long: the student id of each teacher token with the same text in the
  student's vocabulary, ``-1`` for the others (special tokens map by role: pad, BOS, EOS, unk).

With ``[data] chat_template`` each side renders the conversation with its own tokenizer's
template, as it would alone: the two completions then share the response text and may differ in
their end-of-turn marks, where the span pairing meets each side's own marks.

Offsets are recomputed from the text with the fast tokenizers when the rows are built (they are
a function of the text and the tokenizer, both part of the cache's key), not read from the
cache.

Two ways to pair positions, both here so every cross-tokenizer method shares them:

- :func:`index_pairs`: the k-th completion token of the student with the k-th of the teacher,
  up to the shorter completion (ULD's alignment, Boizard et al. 2024);
- :func:`span_pairs`: positions whose next tokens start at the same character of the completion,
  i.e. where both models predict what follows the *same text* (a student token spanning several
  teacher tokens is paired with the first of them); the text-span alignment of GOLD and DSKD.

:func:`teacher_probs` turns the teacher's signals at paired positions into probability vectors
over the teacher's whole vocabulary, from full logits or a top-k cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench.losses import IGNORE
from kdbench.transfer import Batch, encode_examples, render

NO_OFFSET = -1
PAIRED_KEYS = (
    "teacher_input_ids",
    "teacher_attention_mask",
    "teacher_labels",
    "offsets",
    "teacher_offsets",
    "vocab_map",
)
"""The keys :meth:`PairedBatch.rows` adds to a loss batch (see the module docstring)."""


@dataclass
class PairedBatch:
    """The transfer set encoded with the student's tokenizer (``student``) and the teacher's
    (``teacher``), row for row, with each token's character span in its completion."""

    student: Batch
    teacher: Batch
    offsets: torch.Tensor  # (N, W_S, 2)
    teacher_offsets: torch.Tensor  # (N, W_T, 2)
    vocab_map: torch.Tensor  # (V_T,) student id of each teacher token, -1 for none

    @property
    def input_ids(self) -> torch.Tensor:
        return self.student.input_ids

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.student.attention_mask

    @property
    def labels(self) -> torch.Tensor:
        return self.student.labels

    @property
    def weight(self) -> torch.Tensor | None:
        return self.student.weight

    @property
    def truncation(self) -> Any:
        return self.student.truncation

    def __len__(self) -> int:
        return len(self.student)

    def rows(self, idx: torch.Tensor | slice, width: int | None = None) -> dict[str, torch.Tensor]:
        """The student's rows (:meth:`Batch.rows`) plus the teacher's rows, both trimmed to
        their longest, the offsets and the vocabulary map (:data:`PAIRED_KEYS`)."""
        out = self.student.rows(idx, width)
        theirs = self.teacher.rows(idx)
        out["teacher_input_ids"] = theirs["input_ids"]
        out["teacher_attention_mask"] = theirs["attention_mask"]
        out["teacher_labels"] = theirs["labels"]
        out["offsets"] = self.offsets[idx, : out["input_ids"].shape[1]]
        out["teacher_offsets"] = self.teacher_offsets[idx, : theirs["input_ids"].shape[1]]
        out["vocab_map"] = self.vocab_map
        return out


def teacher_view(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rows the teacher runs on: the teacher's own in a paired batch, else the batch."""
    if "teacher_input_ids" not in batch:
        return batch
    return {
        "input_ids": batch["teacher_input_ids"],
        "attention_mask": batch["teacher_attention_mask"],
        "labels": batch["teacher_labels"],
    }


def completion_offsets(
    examples: list[dict[str, Any]], tokenizer: Any, data: Any, batch: Batch
) -> torch.Tensor:
    """(N, W, 2) character spans of the completion tokens of ``batch`` (which
    :func:`kdbench.transfer.encode_examples` made from ``examples`` with ``tokenizer``), in
    their completion texts; ``-1`` elsewhere. Checks that the tokens are the batch's."""
    from kdbench import synthetic

    texts = [
        render(
            ex,
            ex["target"] if "target" in ex else synthetic.target_text(ex, data.rationales),
            tokenizer,
            data.chat_template,
        )[1]
        for ex in examples
    ]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = torch.full((*batch.input_ids.shape, 2), NO_OFFSET, dtype=torch.long)
    for i, (ids, spans, text) in enumerate(
        zip(enc["input_ids"], enc["offset_mapping"], texts, strict=True)
    ):
        counted = (batch.labels[i] != IGNORE).nonzero().flatten()
        if not len(counted):
            continue
        first = int(counted[0])
        spans = [tuple(s) for s in spans]
        if len(spans) < len(counted):  # the appended EOS token, after the text
            spans.append((len(text), len(text)))
            ids = [*ids, tokenizer.eos_token_id]
        n = len(counted)
        if list(ids[:n]) != batch.input_ids[i, first : first + n].tolist():
            raise ValueError(
                f"example {i}: the completion tokens with offsets differ from the encoded ones"
            )
        out[i, first : first + n] = torch.tensor(spans[:n], dtype=torch.long)
    return out


def vocab_map(teacher_tokenizer: Any, student_tokenizer: Any) -> torch.Tensor:
    """(V_T,) the student id of every teacher token with the same text (-1: none); the
    special tokens map by role (pad, BOS, EOS, unk) whatever their text."""
    theirs = student_tokenizer.get_vocab()
    out = torch.full((len(teacher_tokenizer),), -1, dtype=torch.long)
    for token, i in teacher_tokenizer.get_vocab().items():
        if token in theirs and i < len(out):
            out[i] = theirs[token]
    for role in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id"):
        t, s = getattr(teacher_tokenizer, role, None), getattr(student_tokenizer, role, None)
        if t is not None and s is not None and t < len(out):
            out[t] = s
    return out


def paired_batch(
    examples: list[dict[str, Any]], student_tokenizer: Any, teacher_tokenizer: Any, data: Any
) -> PairedBatch:
    """``examples`` encoded with both tokenizers by the suite's ``[data]`` settings (without
    packing, and with right truncation: the plan refuses the others for such a student)."""
    student = encode_examples(examples, student_tokenizer, data)
    teacher = encode_examples(examples, teacher_tokenizer, data)
    if len(student) != len(teacher):
        raise ValueError("the two encodings of the transfer set have different rows")
    return PairedBatch(
        student,
        teacher,
        completion_offsets(examples, student_tokenizer, data, student),
        completion_offsets(examples, teacher_tokenizer, data, teacher),
        vocab_map(teacher_tokenizer, student_tokenizer),
    )


# --- pairing positions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """Paired positions of a batch: row ``rows[j]``, the student's logits at ``student[j]`` and
    the teacher's at ``teacher[j]`` (positions that *predict* a completion token, i.e. the
    token before it, as :func:`kdbench.losses.shift` aligns them)."""

    rows: torch.Tensor
    student: torch.Tensor
    teacher: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)


def _predicting(labels: torch.Tensor) -> list[torch.Tensor]:
    """Per row, the positions whose next token counts in the loss, in order."""
    counts = labels[:, 1:] != IGNORE
    return [row.nonzero().flatten() for row in counts]


def index_pairs(batch: dict[str, torch.Tensor]) -> Pairs:
    """The k-th completion token of each side with the k-th of the other, up to the shorter
    (a batch of one tokenizer, without teacher rows: each position with itself)."""
    rows, s_out, t_out = [], [], []
    for i, (s, t) in enumerate(
        zip(
            _predicting(batch["labels"]),
            _predicting(batch.get("teacher_labels", batch["labels"])),
            strict=True,
        )
    ):
        n = min(len(s), len(t))
        rows.append(torch.full((n,), i, dtype=torch.long))
        s_out.append(s[:n])
        t_out.append(t[:n])
    return _pairs(rows, s_out, t_out, batch["labels"].device)


def span_pairs(batch: dict[str, torch.Tensor]) -> Pairs:
    """Positions whose next tokens start at the same character of the completion: both sides
    have read the same text there. Every student completion token finds its teacher partner
    when the teacher's token boundaries include the student's (a character-level teacher);
    otherwise only the shared boundaries pair. A batch of one tokenizer (no offsets) pairs each
    position with itself."""
    if "offsets" not in batch:
        return index_pairs(batch)
    rows, s_out, t_out = [], [], []
    s_pos, t_pos = _predicting(batch["labels"]), _predicting(batch["teacher_labels"])
    for i, (s, t) in enumerate(zip(s_pos, t_pos, strict=True)):
        s_start = batch["offsets"][i, s + 1, 0]  # where the predicted token starts
        t_start = batch["teacher_offsets"][i, t + 1, 0]
        match = s_start[:, None] == t_start[None, :]  # (n_s, n_t); starts are increasing
        has = match.any(1)
        rows.append(torch.full((int(has.sum()),), i, dtype=torch.long))
        s_out.append(s[has])
        t_out.append(t[match[has].float().argmax(1)])
    return _pairs(rows, s_out, t_out, batch["labels"].device)


def _pairs(rows: list, s: list, t: list, device: Any) -> Pairs:
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Pairs(empty, empty, empty)
    return Pairs(*(torch.cat(x).to(device) for x in (rows, s, t)))


# --- teacher distributions at paired positions ---------------------------------------------------


def teacher_vocab_size(signals: Any, batch: dict[str, torch.Tensor], student_logits: Any) -> int:
    """V_T: the teacher's logits' width, else the vocabulary map's length (a paired batch),
    else the student's (one tokenizer for both)."""
    if not signals.topk:
        return int(signals["logits"].shape[-1])
    if "vocab_map" in batch:
        return int(batch["vocab_map"].shape[0])
    return int(student_logits.shape[-1])


def teacher_probs(signals: Any, pairs: Pairs, vocab_size: int, temperature: float) -> torch.Tensor:
    """(n, V_T) the teacher's next-token probabilities at the paired teacher positions, at
    ``temperature``. Full logits: ``softmax(z / T)``. A top-k cache: the k probabilities at
    their ids and the rest mass ``exp(rest_logprob)`` spread evenly over the other ``V_T - k``
    ids (the tail's shape is not stored), then tempered as ``p^(1/T)`` renormalised; exact for
    k = V_T."""
    r, t = pairs.rows, pairs.teacher
    if not signals.topk:
        return torch.softmax(signals["logits"][r, t].float() / temperature, dim=-1)
    logits = signals["topk_logits"][r, t].float()
    ids = signals["topk_indices"][r, t]
    lse = signals["logsumexp"][r, t].float()
    rest = signals["rest_logprob"][r, t].float()
    k = ids.shape[-1]
    others = max(vocab_size - k, 1)
    fill = torch.exp(rest - torch.log(torch.tensor(float(others)))) if vocab_size > k else rest * 0
    probs = fill[:, None].expand(-1, vocab_size).clone()
    probs.scatter_(1, ids, torch.exp(logits - lse[:, None]))
    if temperature != 1.0:
        probs = probs.clamp_min(0) ** (1.0 / temperature)
    return probs / probs.sum(-1, keepdim=True)


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ULD's distance per row (Boizard et al. 2024, eq. 4): ``sum_i |p_(i) - q_(i)|`` between the
    two probability vectors each sorted in decreasing order, the shorter padded with zeros (the
    closed form of the Wasserstein-1 distance between them under ULD's uniform cost). It does
    not depend on which token holds which probability, so any two vocabularies compare."""
    width = max(p.shape[-1], q.shape[-1])
    p = torch.nn.functional.pad(p, (0, width - p.shape[-1]))
    q = torch.nn.functional.pad(q, (0, width - q.shape[-1]))
    return (p.sort(-1, descending=True).values - q.sort(-1, descending=True).values).abs().sum(-1)
