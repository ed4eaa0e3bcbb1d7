"""``step_by_step``: Distilling step-by-step (Hsieh et al. 2023, "Distilling Step-by-Step!
Outperforming Larger Language Models with Less Training Data and Smaller Model Sizes",
Findings of ACL 2023, arXiv:2305.02301).

The teacher's rationales are extra supervision in a multi-task setup: the student learns to
predict the label and, as a second task, to generate the teacher's rationale; the two tasks are
told apart by task prefixes (``[label]``, ``[rationale]``) on the input, and at test time only
the label task is run, so the deployed student spends no tokens on rationales:

    L = L_label + lambda * L_rationale,
    L_label = mean_i CE(f([label] x_i), y_i),   L_rationale = mean_i CE(f([rationale] x_i), r_i)

Adaptation to this decoder-only, character-level setting (documented choices):
- two training examples per transfer prompt ``x`` (the budget counts sequences, so a
  step_by_step batch holds about half as many distinct prompts as another method's):
  - label task: the bare prompt ``x`` -> the answer alone (``"#632\\n"`` for addition,
    ``"482\\n"`` for compare), weight 1. The bare prompt plays the paper's ``[label]`` prefix,
    since it is what the student sees at evaluation;
  - rationale task: ``rationale_prefix + x`` (default a single space, a character of the
    tokenizer's alphabet) -> the teacher's full greedy generation (rationale then answer,
    ``"7+5=12,4+8+1=13,3+2+1=6#632\\n"``), weight ``lambda``. The paper's rationale target
    omits the label; here the rationale is kept with the answer it leads to, exactly as the
    teacher wrote it (for compare the teacher writes no rationale: its generation is the
    answer);
- labels: the ground truth by default (the paper's setting with human labels and LLM
  rationales); ``labels = "teacher"`` takes the teacher's answer from its generation instead
  (the paper's task-distillation setting, with LLM-predicted labels);
- ``lambda = rationale_weight`` (paper: 1.0);
- on a file or dataset (``[data] kind = "jsonl"``, ...) the label task's target is the
  dataset's response and the rationale task's the teacher's generation on the suite's prompt
  (``[generation]``, rendered with the chat template when ``chat_template`` is on; a chat
  example's prefix goes before its last user turn); ``labels = "teacher"`` takes the teacher's
  answer from its last run of ``#`` on (GSM8K's ``#### 42``), else its whole generation.

Loss card:
- per-example cross-entropy, mean over each example's completion tokens, then the weighted
  mean over the batch's examples with weights 1 (label) and lambda (rationale):
  ``sum_i w_i CE_i / sum_i w_i``; for a batch with as many label as rationale examples this is
  ``(L_label + lambda L_rationale) / (1 + lambda)``: the paper's loss up to a constant factor
  (same minimiser; with AdamW the factor barely matters, gradient clipping aside). The
  per-example mean keeps the long rationale targets (~25 characters) from outweighing the
  short label targets (~5) token by token; float32; prompt, prefix and padding are masked;
- no per-batch teacher signal: the generations are made once per suite by the teacher stage.

Evaluation consequence: ``kd_addition`` feeds the bare prompt and decodes greedily until
``"\\n"``, i.e. it runs the label task, as the paper deploys the student: a trained
step_by_step student answers ``"#632"`` directly, without a rationale, and the ``#(\\d+)``
filter extracts the answer as usual (checked: a 400-step tiny student answered 20 of 20 bare
evaluation prompts with ``#<digits>`` and wrote a rationale for 20 of 20 prefixed ones). The
other methods trained on this suite's targets (``sft``, ``kd``, ``seqkd``... with
``data.rationales = true``) write the column sums first and then the answer: on
``kd_addition`` step_by_step is scored on direct answers, a harder output for a tiny student,
exactly the paper's trade (no rationale tokens at inference). ``kd_compare`` scores the two
choices' log-likelihood after the bare prompt, the label task again. With
``rationale_prefix = ""`` the two tasks share the prompt and the student's first character
decides the mode: at convergence ``P("#") ~= 1 / (1 + lambda)``, a near tie for lambda = 1, so
the same student may answer some prompts directly and others with a rationale (early in
training ``"#"`` wins almost always: 19 of 20 in the same check, the rationale's first digit
being still uncertain); both end in ``#<answer>`` so the score stays well defined, but it
mixes the two modes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from kdbench import Method, hookimpl, synthetic
from kdbench.generations import STOP, as_target, prompt_of
from kdbench.losses import weighted_token_ce
from kdbench.transfer import with_prompt_prefix

LABELS = ("ground_truth", "teacher")


@dataclass
class StepByStepConfig:
    rationale_weight: float = 1.0  # lambda >= 0, the weight of the rationale task (paper: 1)
    labels: str = "ground_truth"  # label targets: "ground_truth" or "teacher" (its answers)
    rationale_prefix: str = " "  # marks the rationale task's prompt; "" shares the label's

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rationale_weight) and self.rationale_weight >= 0):
            raise ValueError(f"rationale_weight must be >= 0, got {self.rationale_weight}")
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}")
        if STOP in self.rationale_prefix:
            raise ValueError("rationale_prefix must not contain a newline (the stop sequence)")


def teacher_label(generation: dict[str, Any]) -> str:
    """The teacher's answer: from its last run of ``#`` on (``"#632\\n"``; GSM8K's
    ``"#### 42"``), else its whole output (compare has no rationale)."""
    text = as_target(generation)
    answer = re.search(r"#+[^#]*$", text)
    return answer.group(0) if answer else text


def ground_truth_label(example: dict[str, Any]) -> str:
    """The dataset's label: a file or dataset example's response, the synthetic set's answer
    without its rationale."""
    if "target" in example:
        return example["target"]
    return synthetic.target_text(example, with_rationale=False)


def step_by_step_data(
    examples: list[dict[str, Any]], generations: list[dict[str, Any]], cfg: StepByStepConfig
) -> list[dict[str, Any]]:
    """Per prompt: the label task (bare prompt -> answer, weight 1) and, when lambda > 0, the
    rationale task (prefixed prompt -> the teacher's generation, weight lambda). A chat
    example keeps its ``messages``; the prefix goes before its last user turn."""
    out: list[dict[str, Any]] = []
    for ex, gen in zip(examples, generations, strict=True):
        label = ground_truth_label(ex) if cfg.labels == "ground_truth" else teacher_label(gen)
        out.append({**prompt_of(ex), "target": label, "weight": 1.0})
        if cfg.rationale_weight > 0:
            prefixed = with_prompt_prefix(prompt_of(ex), cfg.rationale_prefix)
            out.append({**prefixed, "target": as_target(gen), "weight": cfg.rationale_weight})
    return out


def step_by_step_loss(
    student,
    teacher,
    batch: dict[str, torch.Tensor],
    cfg: StepByStepConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    return weighted_token_ce(student.logits, batch["labels"], batch.get("weight"), per_example=True)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="step_by_step",
            family="chain_of_thought",
            config=StepByStepConfig,
            loss=step_by_step_loss,
            signals=frozenset({"generations"}),
            data=step_by_step_data,
            paper="Hsieh et al. 2023",
            description="distilling step-by-step: label task on the bare prompt plus the "
            "teacher's rationale as a prefixed second task, weighted by lambda",
        )
    ]
