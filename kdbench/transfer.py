"""The transfer set, built in one place: the examples every student (and a built teacher) trains
on, and their encoding into one padded batch.

Every stage that needs the transfer set (the teacher's training, the teacher-signal cache, the
teacher's generations, every training job, the conformance checks) calls
:func:`transfer_examples` / :func:`transfer_batch`, so they all see the same examples in the same
order: row ``i`` of the signal cache is example ``i`` of the batch a job trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import synthetic
from kdbench.config import DataSpec
from kdbench.data_sources import load_examples
from kdbench.losses import IGNORE

TRANSFER_SEED = 0  # fixed: the transfer set does not change with a suite's seeds


@dataclass
class Batch:
    """The whole transfer set, tokenised once: right-padded ids, mask, labels and weights."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # IGNORE on prompt and padding: only completions are learnt
    weight: torch.Tensor | None = None  # (N,) float per-example loss weight; None: all 1.0

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = torch.ones(len(self.input_ids), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def rows(self, idx: torch.Tensor | slice, width: int | None = None) -> dict[str, torch.Tensor]:
        """The examples ``idx`` as a loss batch (``input_ids``, ``attention_mask``, ``labels``,
        ``weight``), trimmed to ``width`` columns (default: the longest of them)."""
        if width is None:
            width = int(self.attention_mask[idx].sum(1).max())
        return {
            "input_ids": self.input_ids[idx, :width],
            "attention_mask": self.attention_mask[idx, :width],
            "labels": self.labels[idx, :width],
            "weight": self.weight[idx],
        }


def transfer_examples(data: DataSpec) -> list[dict[str, Any]]:
    """The suite's transfer examples in a fixed order: for the synthetic suite ``prompt``,
    ``task`` and the ground-truth fields of :mod:`kdbench.synthetic` (disjoint from the
    evaluation split); for a file or dataset, ``prompt`` and ``target``
    (:func:`kdbench.data_sources.load_examples`)."""
    if data.kind != "synthetic":
        return load_examples(data)
    return synthetic.transfer_set(list(data.tasks), data.n_per_task, TRANSFER_SEED)


def encode(examples: list[dict[str, Any]], tokenizer, max_length: int, rationales: bool) -> Batch:
    """Tokenise ``prompt + completion``; the loss sees completion tokens only.

    The completion is ``ex["target"]`` when given (a method's ``data``), else the ground truth
    ``synthetic.target_text(ex, rationales)``; ``ex["weight"]`` (default 1.0) is kept per example.
    """
    ids, labels = [], []
    weights = [float(ex.get("weight", 1.0)) for ex in examples]
    for ex in examples:
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        target = ex["target"] if "target" in ex else synthetic.target_text(ex, rationales)
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        seq = (p + t)[:max_length]
        ids.append(seq)
        labels.append(([IGNORE] * len(p) + t)[:max_length])
    width = max(map(len, ids))
    out_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    out_labels = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(ids, labels, strict=True)):
        out_ids[i, : len(seq)] = torch.tensor(seq)
        out_labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(seq)] = 1
    return Batch(out_ids, mask, out_labels, torch.tensor(weights, dtype=torch.float32))


def transfer_batch(data: DataSpec, tokenizer) -> Batch:
    """:func:`transfer_examples`, encoded with ``tokenizer`` (ground-truth completions)."""
    return encode(transfer_examples(data), tokenizer, data.max_length, data.rationales)
