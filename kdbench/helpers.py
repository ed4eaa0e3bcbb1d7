"""Building blocks for method plugins: config checks and whole loss functions made of the
primitives of :mod:`kdbench.losses`, so that a plugin is its formula, its loss card and its
registration.

- :class:`LogitConfig`: ``temperature`` and ``alpha`` with their range checks; a logit-family
  method's config subclasses it, adding fields and, if need be, other defaults.
- :func:`logit_loss`: the loss function of a divergence between teacher and student
  next-token distributions (full or top-k teacher), averaged over the completion tokens,
  temperature-scaled and mixed with the ground-truth cross-entropy by ``alpha``.
- :func:`check_interval`: the range check of a config field in an interval, with the message
  every config uses (``alpha must be in [0, 1], got 1.5``).
- :func:`check_weights`: the range check of the non-negative term weights of an auxiliary
  (feature, attention...) method, whose loss is :func:`kdbench.losses.aux_with_ce`.

A logit-family plugin, whole (Jensen-Shannon with a ``beta`` field)::

    @dataclass
    class JSDConfig(LogitConfig):
        beta: float = 0.5

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0.0 <= self.beta <= 1.0:
                raise ValueError(f"beta must be in [0, 1], got {self.beta}")

    def generalized_jsd(log_p, log_q, beta): ...  # per position, (B, T) from (B, T, V) twice

    jsd_loss = logit_loss(generalized_jsd, "beta")  # divergence(log_p, log_q, cfg.beta)

    @hookimpl
    def kdbench_methods():
        return [Method(name="jsd", family="logit", config=JSDConfig, loss=jsd_loss,
                       signals=frozenset({"logits"}))]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdbench.losses import distributions, masked_mean, with_task_loss

# (log_p_teacher, log_q_student, *params) -> per-position divergence; (B, T, V) -> (B, T)
Divergence = Callable[..., torch.Tensor]
SCALES = ("T^2", "T", "1")


@dataclass
class LogitConfig:
    """The fields every logit-family method has. A subclass adds its own fields after these
    (with defaults) and may redeclare these with other defaults (the field keeps its place)::

        @dataclass
        class KDConfig(LogitConfig):
            temperature: float = 2.0
            alpha: float = 0.5

    A subclass with its own ``__post_init__`` calls ``super().__post_init__()``.
    """

    temperature: float = 1.0  # T > 0: both logits divided by T
    alpha: float = 1.0  # weight of the divergence against the ground-truth CE, in [0, 1]

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        check_interval("alpha", self.alpha, 0.0, 1.0)


def check_interval(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    left: str = "[",
    right: str = "]",
    low_name: str | None = None,
    note: str = "",
) -> None:
    """``value`` in the interval from ``low`` to ``high`` (``left`` ``"["`` or ``"("``,
    ``right`` ``"]"`` or ``")"``: closed or open ends; NaN refused), else ``ValueError``
    ``"{name} must be in {interval}{note}, got {value}"``; ``low_name`` writes the lower end
    as a field's name::

        check_interval("alpha", self.alpha, 0.0, 1.0)
        # ValueError: alpha must be in [0, 1], got 1.5
        check_interval("t_end", self.t_end, self.t_start, 1.0, left="(", low_name="t_start")
        # ValueError: t_end must be in (t_start, 1], got 0.2
    """
    if left not in "[(" or right not in "])" or not left or not right:
        raise ValueError(f"left must be '[' or '(' and right ']' or ')', got {left!r}, {right!r}")
    above = value >= low if left == "[" else value > low
    below = value <= high if right == "]" else value < high
    if not (above and below):
        interval = f"{left}{low_name or f'{low:g}'}, {high:g}{right}"
        raise ValueError(f"{name} must be in {interval}{note}, got {value}")


def check_weights(**weights: float) -> None:
    """Each weight ``>= 0`` (NaN refused) and not all of them 0, raising ``ValueError`` with
    the config's field names, which are the keyword names::

        check_weights(weight=self.weight, ce_weight=self.ce_weight)
        # ValueError: weight must be >= 0, got -1.0
        # ValueError: weight and ce_weight cannot both be 0
    """
    for name, value in weights.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if weights and all(value == 0 for value in weights.values()):
        names = list(weights)
        both = "both" if len(names) == 2 else "all"
        raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} cannot {both} be 0")


def temperature_scale(value: torch.Tensor, temperature: float, scale: str) -> torch.Tensor:
    """``T^2 * value``, ``T * value`` or ``value`` (``scale`` one of :data:`SCALES`).

    ``T^2`` is Hinton's convention for divergences that are locally quadratic in the logits
    (the KL family): their gradient shrinks as ``1/T^2``; ``T`` suits one that shrinks as
    ``1/T`` (total variation); ``1`` leaves the term as it is.
    """
    if scale == "T^2":
        return temperature**2 * value
    if scale == "T":
        return temperature * value
    if scale == "1":
        return value
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def divergence_loss(
    student: Any,
    teacher: Any,
    batch: dict[str, torch.Tensor],
    cfg: Any,
    divergence: Divergence,
    *params: Any,
    scale: str = "T^2",
) -> torch.Tensor:
    """``alpha * scale(T) * masked_mean(divergence(log_p, log_q, *params)) + (1 - alpha) * CE``.

    ``log_p, log_q, mask = distributions(student.logits, teacher, batch["labels"], T)``: the
    teacher's and student's next-token log-distributions at temperature ``cfg.temperature``,
    over the vocabulary for a full teacher (``teacher["logits"]``), over k + 1 buckets for a
    top-k one (``topk_logits`` / ``topk_indices`` / ``logsumexp`` / ``rest_logprob``), and the
    completion-token mask; ``divergence`` maps them (B, T-1, V) to (B, T-1); the mean over the
    mask is scaled by :func:`temperature_scale` and mixed by
    :func:`kdbench.losses.with_task_loss` with ``cfg.alpha``. ``cfg`` needs ``temperature`` and
    ``alpha`` (:class:`LogitConfig`).
    """
    labels = batch["labels"]
    log_p, log_q, mask = distributions(student.logits, teacher, labels, cfg.temperature)
    distill = masked_mean(divergence(log_p, log_q, *params), mask)
    return with_task_loss(
        temperature_scale(distill, cfg.temperature, scale), student.logits, labels, cfg.alpha
    )


@dataclass(frozen=True)
class LogitLoss:
    """A method's ``loss(student, teacher, batch, cfg, modules)`` made by :func:`logit_loss`:
    :func:`divergence_loss` with ``divergence(log_p, log_q, *(cfg.<param> for param in
    params))``. A plain picklable object (the divergence is a module-level function)."""

    divergence: Divergence
    params: tuple[str, ...] = ()
    scale: str = "T^2"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")

    def __call__(
        self,
        student: Any,
        teacher: Any,
        batch: dict[str, torch.Tensor],
        cfg: Any,
        modules: dict[str, torch.nn.Module],
    ) -> torch.Tensor:
        args = tuple(getattr(cfg, name) for name in self.params)
        return divergence_loss(
            student, teacher, batch, cfg, self.divergence, *args, scale=self.scale
        )


def logit_loss(divergence: Divergence, *params: str, scale: str = "T^2") -> LogitLoss:
    """``logit_loss(divergence, *params, scale="T^2") -> loss``: the loss function of a
    logit-family method (see :func:`divergence_loss`).

    ``divergence(log_p_teacher, log_q_student, *values)`` is computed per position, ``values``
    read from the config fields named by ``params``; ``scale`` is ``"T^2"`` (the KL family),
    ``"T"`` (total variation) or ``"1"``::

        kd_loss = logit_loss(kl)
        skl_loss = logit_loss(skew_kl, "lam")  # skew_kl(log_p, log_q, cfg.lam)
        tvd_loss = logit_loss(total_variation, scale="T")
    """
    return LogitLoss(divergence, params, scale)
