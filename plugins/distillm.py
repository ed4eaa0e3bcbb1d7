"""``distillm``: DistiLLM (Ko, Kim, Chen & Yun 2024, "DistiLLM: Towards Streamlined Distillation
for Large Language Models", ICML 2024, arXiv:2402.03898): the skew KL divergences (sec. 3.1)
trained with the adaptive off-policy approach (sec. 3.2, Algorithm 1), as in the reference
code (``finetune.py``, ``distillm/buffer.py`` of github.com/jongwooko/distillm).

    SKL:  KL( p_T || lam p_T + (1 - lam) p_S )          (``divergence = "skl"``)
    SRKL: KL( p_S || lam p_S + (1 - lam) p_T )          (``divergence = "srkl"``, the default)

Adaptive off-policy schedule (:class:`kdbench.rollout.AdaptiveSchedule`): the probability phi
of training on student-generated outputs starts at ``lmbda`` (``--init-threshold 0.0``) and
rises by 0.1 whenever the loss on a fixed probe batch rose by at least ``loss_eps`` (0.1) since
the last rise, probed every ``probe_every`` steps; a student batch is sampled afresh (and
pushed into a replay buffer of ``capacity`` sequences, 1000) with probability
``phi (1 - step / steps)`` or while the buffer is not full, and otherwise drawn from the buffer
(the "decreasing" replay ratio). With phi at 0 it is the off-policy skew divergence; DistiLLM's
gain comes from the student data it admits once the fixed-data loss stops falling.

Deviations (documented): the probe is a fixed sample of the training rows, not a held-out dev
split (kdbench has none shared by every method); the probe loss is the method's own loss;
DistiLLM samples with ``--gen-num-beams``-free ancestral sampling at T = 1, top-p 1, as here.

Loss card:
- divergence: SRKL with ``lam = 0.1`` by default (the paper's best on instruction following;
  ``--skew-alpha 0.1``), summed over the vocabulary, mean over the completion tokens, float32;
- data: fixed rows (ground truth), fresh student samples or replayed ones, per the schedule;
- temperature ``T = 1`` and ``alpha = 1`` (``--kd-ratio 1.0``);
- the teacher: live (samples), the signal cache for the fixed rows when the suite has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import check_interval, logit_loss
from kdbench.losses import skew_kl, skew_reverse_kl
from kdbench.rollout import AdaptiveSchedule, OnPolicyConfig


@dataclass
class DistiLLMConfig(OnPolicyConfig):
    """The reference scripts' settings (``scripts/gpt2/distillm/*.sh``, ``arguments.py``)."""

    lmbda: float = 0.0  # the initial probability of student data (--init-threshold 0.0)
    sample_temperature: float = 1.0  # --temperature 1
    divergence: str = "srkl"  # "skl" or "srkl"
    lam: float = 0.1  # the skew (--skew-alpha 0.1), in [0, 1)
    loss_eps: float = 0.1  # a probe-loss rise of this much raises phi by 0.1 (--loss-eps)
    capacity: int = 1000  # replay buffer, sequences (--capacity)
    probe_every: int = 20  # steps between probe losses (DistiLLM: every --eval-interval)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.divergence not in ("skl", "srkl"):
            raise ValueError(f"divergence must be 'skl' or 'srkl', got {self.divergence!r}")
        check_interval("lam", self.lam, 0.0, 1.0, right=")", note=" (lam = 1 makes the loss 0)")
        if not self.loss_eps >= 0:
            raise ValueError(f"loss_eps must be >= 0, got {self.loss_eps}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {self.probe_every}")

    def schedule(self) -> AdaptiveSchedule:
        return AdaptiveSchedule(
            phi=self.lmbda, capacity=self.capacity, loss_eps=self.loss_eps, every=self.probe_every
        )


_skl, _srkl = logit_loss(skew_kl, "lam"), logit_loss(skew_reverse_kl, "lam")


def distillm_loss(
    student: Any,
    teacher: Any,
    batch: dict[str, torch.Tensor],
    cfg: DistiLLMConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    loss = _srkl if cfg.divergence == "srkl" else _skl
    return loss(student, teacher, batch, cfg, modules)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="distillm",
            family="on_policy",
            config=DistiLLMConfig,
            loss=distillm_loss,
            signals=frozenset({"logits"}),
            on_policy=True,
            paper="Ko et al. 2024 (DistiLLM)",
            description="skew reverse KL with the adaptive off-policy schedule and replay buffer",
        )
    ]
