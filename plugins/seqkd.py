"""``seqkd``: sequence-level knowledge distillation (Kim & Rush 2016, "Sequence-Level Knowledge
Distillation", EMNLP 2016, arXiv:1606.07947).

The student is trained with plain cross-entropy on the teacher's own outputs for the transfer
prompts instead of the ground truth. Word-level KD matches the teacher's distribution token by
token; sequence-level KD approximates matching its distribution over whole sequences by its
mode, found with beam search, ``y_hat ~= argmax_y q(y | x)``:

    L_SEQ-KD = -log p_S(y_hat | x),    y_hat = the teacher's decoded output for x

With ``alpha < 1`` the ground truth ``y`` is mixed back in, the sequence-level interpolation of
the paper's sec. 3.3, ``L = -(1 - alpha) log p_S(y | x) - alpha log p_S(y_hat | x)``, realised
as two training examples per prompt (teacher output with weight ``alpha``, ground truth with
weight ``1 - alpha``). The paper notes that this doubles the data and gives one prompt two
targets, and replaces it by Seq-Inter (train on the beam candidate closest to ``y``), which
needs beam candidates (see below). The default ``alpha = 1`` is pure Seq-KD.

Loss card:
- targets: the teacher's generation on the suite's own prompts (``[generation]``: greedy by
  default; on the synthetic set stopped at ``"\\n"``, which is appended when the teacher ran
  out of tokens so the student learns to stop; on a file or dataset stopped at EOS, the chat
  template's end-of-turn token or a stop string, and ended by the EOS token), made once per
  suite by the teacher stage (:mod:`kdbench.generations`); no per-batch teacher signal, the
  teacher is not loaded during training;
- decoding: greedy, i.e. beam size 1 (the paper decodes the teacher with beam size 5);
  Seq-Inter (training on the beam candidate closest to the gold sequence) needs several
  candidates and is not offered; Word-KD is the ``kd`` method;
- reduction: token-level cross-entropy, mean over the completion tokens that count, each
  example's tokens weighted by its weight (``alpha`` / ``1 - alpha``): with ``alpha = 1`` (the
  default, pure Seq-KD) it is exactly ``sft``'s loss on the teacher's sequences; float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import Method, hookimpl
from kdbench.generations import as_target, prompt_of
from kdbench.losses import weighted_token_ce


@dataclass
class SeqKDConfig:
    alpha: float = 1.0  # weight of the teacher's sequence in [0, 1]; 1 - alpha: ground truth

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def seqkd_data(
    examples: list[dict[str, Any]], generations: list[dict[str, Any]], cfg: SeqKDConfig
) -> list[dict[str, Any]]:
    """The teacher's generation as target for every prompt (weight ``alpha``), plus the ground
    truth (the example itself: its ``target``, or for the synthetic set its ``target_text``)
    with weight ``1 - alpha`` when > 0. A chat example keeps its ``messages`` (the turns the
    response follows)."""
    out: list[dict[str, Any]] = []
    for ex, gen in zip(examples, generations, strict=True):
        if cfg.alpha > 0:
            out.append({**prompt_of(ex), "target": as_target(gen), "weight": cfg.alpha})
        if cfg.alpha < 1:
            out.append({**ex, "weight": 1.0 - cfg.alpha})
    return out


def seqkd_loss(
    student,
    teacher,
    batch: dict[str, torch.Tensor],
    cfg: SeqKDConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    return weighted_token_ce(student.logits, batch["labels"], batch.get("weight"))


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="seqkd",
            family="chain_of_thought",
            config=SeqKDConfig,
            loss=seqkd_loss,
            signals=frozenset({"generations"}),
            data=seqkd_data,
            paper="Kim & Rush 2016",
            description="sequence-level KD: cross-entropy on the teacher's greedy generations "
            "(alpha < 1 mixes the ground truth back in)",
        )
    ]
