"""``taid``: Temporally Adaptive Interpolated Distillation (Shing, Misaki, Bao, Yokoi & Akiba
2025, "TAID: Temporally Adaptive Interpolated Distillation for Efficient Knowledge Transfer in
Language Models", ICLR 2025, arXiv:2501.16937, eqs. 2-5; reference code
``src/distil_losses/taid.py`` of github.com/SakanaAI/TAID).

    L = alpha * T^2 * mean_t KL( p_t || p_S ) + (1 - alpha) CE
    p_t = softmax( (1 - t) * stopgrad(z_S) + t * z_T )          (interpolation of the logits)

The target moves from (mostly) the student itself to the teacher as ``t`` grows from
``t_start`` to ``t_end``. ``t`` never falls below the linear schedule
``t_start + (t_end - t_start) * step / steps`` and rises faster while the loss falls (eq. 5):

    delta_n = (J_{n-1} - J_n) / (J_{n-1} + 1e-15)          relative change of the loss
    m_n = beta m_{n-1} + (1 - beta) delta_n                 momentum
    t_{n+1} = min(t_end, max(linear(n), t_n + alpha_t * sigmoid(m_n) * (1 - t_n)))

``t`` is updated after each training step's loss (the loss of the step uses the current ``t``),
kept with its momentum and previous loss in the method's state module (buffers, saved in the
training checkpoint, so a resumed job continues the schedule). A loss called outside training
(without ``batch["step"]``) uses ``t`` without moving it.

The loss ``J_n`` that drives the update is the value the reference tracks: the output of its
``compute_loss``, ``forward_kl(..., teacher_probs=p_t)``, which is the cross-entropy
``-sum_v p_t log p_S`` averaged over the completion tokens, i.e. ``KL(p_t || p_S) + H(p_t)``
(the entropy of the moving target is in it: it is not a constant as ``t`` moves), before any
``T^2`` factor or CE mix (the reference has neither in it; a constant factor would not change
the relative change anyway). In data-parallel training (``torch.distributed`` initialised with
more than one worker) ``J_n`` is the mean over every worker's completion tokens (the token sums
and counts are all-reduced), so every worker moves ``t`` the same way; the reference, under
Lightning's DDP, would let each worker's ``t`` drift on its own shard. A step with no
completion token on any worker leaves ``t``, the momentum and the previous loss as they are
(its loss is 0, not NaN, like every masked mean here).

Loss card:
- interpolation in logit space with the student's logits detached (the reference); with a top-k
  teacher it is done on the k + 1 bucket log-probabilities, ``softmax((1 - t) log q + t log p)``
  (equal to the logit form for full logits, since log-softmax shifts each position by a
  constant); k = V gives the full-vocabulary loss;
- divergence: ``KL(p_t || p_S)`` (the reference's ``forward_kl`` with ``teacher_probs = p_t``,
  up to the entropy of ``p_t``, a constant), summed over the vocabulary, mean over the
  completion tokens, float32; at ``t = 1`` it is exactly ``fkl``;
- defaults (the reference's): ``t_start = 0.4``, ``t_end = 1.0``, ``alpha_t = 5e-4``,
  ``beta = 0.99``, adaptive on; temperature ``T = 1`` and ``alpha = 1`` (pure divergence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, check_interval
from kdbench.losses import distributions, kl, masked_mean, with_task_loss


@dataclass
class TAIDConfig(LogitConfig):
    """The reference's defaults; ``alpha_t`` is TAID's alpha (``alpha`` is the CE mix)."""

    t_start: float = 0.4
    t_end: float = 1.0
    alpha_t: float = 5e-4  # the adaptive step size (TAID's alpha)
    beta: float = 0.99  # the momentum of the loss's relative change
    adaptive: bool = True  # false: the linear schedule only

    def __post_init__(self) -> None:
        super().__post_init__()
        check_interval("t_start", self.t_start, 0.0, 1.0, right=")")
        check_interval("t_end", self.t_end, self.t_start, 1.0, left="(", low_name="t_start")
        check_interval("alpha_t", self.alpha_t, 0.0, 1.0)
        check_interval("beta", self.beta, 0.0, 1.0, right=")")


class TAIDState(torch.nn.Module):
    """``t``, the momentum and the previous loss, as buffers (no parameters)."""

    def __init__(self, t_start: float) -> None:
        super().__init__()
        self.register_buffer("t", torch.tensor(float(t_start)))
        self.register_buffer("momentum", torch.tensor(0.0))
        self.register_buffer("prev_loss", torch.tensor(float("inf")))

    @torch.no_grad()
    def update(self, loss: float, step: int, steps: int, cfg: TAIDConfig) -> None:
        """Eq. 5 after a training step's loss (the reference's ``update_t``)."""
        linear = cfg.t_start + (cfg.t_end - cfg.t_start) * step / steps
        if torch.isinf(self.prev_loss):
            self.prev_loss.fill_(loss)
            return
        change = (float(self.prev_loss) - loss) / (float(self.prev_loss) + 1e-15)
        self.momentum.mul_(cfg.beta).add_((1 - cfg.beta) * change)
        t = float(self.t)
        if cfg.adaptive:
            step_up = cfg.alpha_t * float(torch.sigmoid(self.momentum)) * (1 - t)
            t = min(cfg.t_end, max(linear, t + step_up))
        else:
            t = linear
        self.t.fill_(t)
        self.prev_loss.fill_(loss)


def taid_modules(student_config: Any, teacher_config: Any, cfg: TAIDConfig) -> dict:
    return {"taid": TAIDState(cfg.t_start)}


def interpolated(log_p: torch.Tensor, log_q: torch.Tensor, t: float) -> torch.Tensor:
    """``log softmax((1 - t) stopgrad(log q) + t log p)``: TAID's target at ``t``."""
    low = torch.finfo(torch.float32).min
    mix = (1 - t) * log_q.detach().clamp_min(low) + t * log_p.clamp_min(low)
    return torch.log_softmax(mix, -1)


def tracked_loss(target: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> float | None:
    """The loss the update reads (the reference's ``forward_kl`` with ``teacher_probs = p_t``):
    the cross-entropy ``-sum_v p_t log p_S`` averaged over the completion tokens of every
    worker (token sums and counts all-reduced when ``torch.distributed`` has more than one
    worker); None when no worker has a completion token. Every worker must call it on every
    training step (it is a collective)."""
    with torch.no_grad():
        p = target.exp()
        live = p > 0  # 0 log 0 = 0
        ce = -(p * torch.where(live, log_q, 0.0)).sum(-1)
        keep = mask.bool()
        stats = torch.stack([torch.where(keep, ce, 0.0).sum(), keep.sum().to(ce.dtype)])
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        total, count = stats.tolist()
        return None if count == 0 else total / count


def taid_loss(
    student: Any,
    teacher: Any,
    batch: dict[str, torch.Tensor],
    cfg: TAIDConfig,
    modules: dict[str, torch.nn.Module],
) -> torch.Tensor:
    state = modules["taid"]
    t = float(state.t)
    log_p, log_q, mask = distributions(student.logits, teacher, batch["labels"], cfg.temperature)
    target = log_p if t == 1.0 else interpolated(log_p, log_q, t)
    distill = cfg.temperature**2 * masked_mean(kl(target, log_q), mask)
    if "step" in batch and torch.is_grad_enabled():  # a training step: move t
        tracked = tracked_loss(target, log_q, mask)
        if tracked is not None:  # no completion token anywhere: nothing to learn from
            state.update(tracked, int(batch["step"]), int(batch["steps"]), cfg)
    return with_task_loss(distill, student.logits, batch["labels"], cfg.alpha)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="taid",
            family="logit",
            config=TAIDConfig,
            loss=taid_loss,
            signals=frozenset({"logits"}),
            modules=taid_modules,
            allows_packing=True,  # token-level: a row may hold several examples
            paper="Shing et al. 2025 (TAID, ICLR)",
            description="KL to a target interpolated from the student to the teacher, "
            "t rising adaptively from 0.4 to 1",
        )
    ]
