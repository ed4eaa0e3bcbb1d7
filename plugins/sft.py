"""``sft``: the no-teacher baseline. The student is trained on the ground-truth completions
alone, with the same data, budget and seeds as every distillation method, so each method's
gain over it is what the teacher adds.

Loss card: ``L = CE(y, p_S)`` = mean over completion tokens of ``-log p_S(y_t | y_<t, x)``;
no temperature, no teacher term; prompt and padding tokens are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.losses import token_ce


@dataclass
class SFTConfig:
    """No hyper-parameters: the optimiser and budget come from the suite."""


def sft_loss(
    student,
    teacher,
    batch: dict[str, torch.Tensor],
    cfg: SFTConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    return token_ce(student.logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="sft",
            family="baseline",
            config=SFTConfig,
            loss=sft_loss,
            allows_packing=True,  # token-level: a row may hold several examples
            description="student on ground truth only (no teacher)",
        )
    ]
