"""On-policy training data: the student's own samples for the prompts of a batch.

An on-policy method (``Method.on_policy``) trains, on some of its steps, on sequences the
current student generates for the prompts of its batch, scored by the teacher live (the
teacher's signals of a sequence nobody has seen before cannot come from the signal cache). Its
config subclasses :class:`OnPolicyConfig`; what the training loop does on each step is its
*schedule* (:meth:`OnPolicyConfig.schedule`):

- :class:`MixSchedule` (GKD, Agarwal et al. ICLR 2024, and TRL's ``GKDTrainer``): with
  probability ``lmbda`` the batch is the student's samples, else the fixed data (ground truth,
  or a method's ``data``); ``regenerate_every = n > 1`` samples afresh only every n-th
  on-policy batch and replays the newest samples in between (cheaper, slightly off-policy);
- :class:`AdaptiveSchedule` (DistiLLM, Ko et al. ICML 2024, Algorithm 1 and the reference
  ``finetune.py``): the probability ``phi`` of student data starts at ``lmbda``
  (``--init-threshold``) and rises by 0.1 whenever the loss on a fixed probe batch rose by at
  least ``loss_eps`` since the last rise; student batches are fresh samples (pushed into a
  replay buffer of ``replay_capacity`` sequences) with probability ``phi (1 - step / steps)``
  (the "decreasing" replay ratio) or while the buffer is not full, else drawn from the buffer.

Sampling goes through a :class:`GenerationBackend` (``[resources] generation_backend``):
``"hf"`` (:class:`HFGenerate`, transformers' ``generate``, everywhere) or ``"vllm"``
(:class:`VLLMGenerate`, the optional ``vllm`` extra on a GPU). Sampling is seeded per step
(``seed``, step), in a forked RNG, so a run is reproducible and a resumed run samples what the
uninterrupted run would have sampled.

A sampled sequence is the row's prompt tokens followed by the student's new tokens up to and
including the first stop token (EOS, a token holding a stop string, a chat end-of-turn token;
:func:`kdbench.generations.stop_token_ids`), cut at the suite's ``max_length``; its labels are
the new tokens (the prompt and padding are ``-100``), its weight 1.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from kdbench.helpers import LogitConfig
from kdbench.losses import IGNORE

FIXED, GENERATE, REPLAY = "fixed", "generate", "replay"


# --- the config every on-policy method subclasses ------------------------------------------


@dataclass
class OnPolicyConfig(LogitConfig):
    """The sampling settings of an on-policy method, flat in ``[method_config.<name>]``.
    Defaults are TRL's ``GKDConfig`` (``lmbda = 0.5``, ``temperature = 0.9``, top-k off);
    ``max_new_tokens = 0`` is what fits in the suite's ``max_length`` after the prompt."""

    lmbda: float = 0.5  # probability that a batch is the student's samples, in [0, 1]
    sample_temperature: float = 0.9  # the student's sampling temperature (> 0)
    top_p: float = 1.0  # nucleus sampling, in (0, 1]
    max_new_tokens: int = 0  # 0: what fits in [data] max_length after the batch's prompts
    regenerate_every: int = 1  # sample afresh every n-th on-policy batch, replay in between

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.lmbda <= 1.0:
            raise ValueError(f"lmbda must be in [0, 1], got {self.lmbda}")
        if not self.sample_temperature > 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.regenerate_every < 1:
            raise ValueError(f"regenerate_every must be >= 1, got {self.regenerate_every}")

    def schedule(self) -> Schedule:
        """What the training loop does on each step (see the module docstring)."""
        return MixSchedule(self.lmbda, self.regenerate_every)


# --- schedules ------------------------------------------------------------------------------


class Schedule(Protocol):
    """Decides, step by step, whether a batch is fixed data, fresh samples or replayed ones."""

    capacity: int  # sequences the replay buffer keeps (0: none)

    def choose(self, step: int, steps: int, u: float, buffered: int) -> str:
        """:data:`FIXED`, :data:`GENERATE` or :data:`REPLAY` for ``step`` of ``steps``, given a
        uniform draw ``u`` in [0, 1) and the sequences in the replay buffer."""
        ...

    def probe_every(self) -> int:
        """Steps between two probe losses (0: the schedule uses none)."""
        ...

    def observe(self, probe_loss: float) -> None:
        """The loss on the fixed probe batch, measured every :meth:`probe_every` steps."""
        ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...


@dataclass
class MixSchedule:
    """GKD's mixture: student data with probability ``lmbda``; with ``regenerate_every = n``,
    every n-th student batch is sampled afresh and the others replay the newest samples."""

    lmbda: float
    regenerate_every: int = 1
    on_policy_batches: int = 0

    @property
    def capacity(self) -> int:
        return 0 if self.regenerate_every == 1 else -1  # -1: the newest batch only

    def choose(self, step: int, steps: int, u: float, buffered: int) -> str:
        if not u < self.lmbda:
            return FIXED
        fresh = self.on_policy_batches % self.regenerate_every == 0 or buffered == 0
        self.on_policy_batches += 1
        return GENERATE if fresh else REPLAY

    def probe_every(self) -> int:
        return 0

    def observe(self, probe_loss: float) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"on_policy_batches": self.on_policy_batches}

    def load(self, state: dict[str, Any]) -> None:
        self.on_policy_batches = int(state.get("on_policy_batches", 0))


@dataclass
class AdaptiveSchedule:
    """DistiLLM's adaptive off-policy schedule (see the module docstring)."""

    phi: float  # probability of a student batch; rises by ``step_up`` when the probe loss rises
    capacity: int = 1000  # replay buffer, sequences (DistiLLM's --capacity)
    loss_eps: float = 0.1  # the rise of the probe loss that raises phi (--loss-eps)
    every: int = 20  # steps between probe losses (DistiLLM evaluates on its dev set)
    step_up: float = 0.1
    previous: float | None = None

    def choose(self, step: int, steps: int, u: float, buffered: int) -> str:
        fresh = self.phi * (1.0 - step / steps)  # the "decreasing" replay ratio
        if u < fresh or (u < self.phi and buffered < self.capacity):
            return GENERATE
        if u < self.phi:
            return REPLAY
        return FIXED

    def probe_every(self) -> int:
        return self.every

    def observe(self, probe_loss: float) -> None:
        if self.previous is None:
            self.previous = probe_loss
        elif probe_loss >= self.previous + self.loss_eps:
            self.phi = min(1.0, self.phi + self.step_up)
            self.previous = probe_loss

    def state(self) -> dict[str, Any]:
        return {"phi": self.phi, "previous": self.previous}

    def load(self, state: dict[str, Any]) -> None:
        self.phi = float(state.get("phi", self.phi))
        self.previous = state.get("previous")


# --- backends -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the student samples: temperature, top-p, the new-token limit and the stop ids."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop_ids: tuple[int, ...]
    pad_id: int


class GenerationBackend(Protocol):
    """Samples continuations of prompts from the current student."""

    name: str

    def sample(
        self, model: torch.nn.Module, prompts: list[list[int]], sampling: Sampling, seed: int
    ) -> list[list[int]]:
        """The new tokens of each prompt (ids), each ending at its first stop id (included)
        or at ``sampling.max_new_tokens``."""
        ...


def _until_stop(row: list[int], stops: set[int], pad: int) -> list[int]:
    out = []
    for t in row:
        out.append(t)
        if t in stops:
            break
    if out and out[-1] == pad and pad not in stops:  # generate pads finished rows
        while out and out[-1] == pad:
            out.pop()
    return out


class HFGenerate:
    """transformers' ``generate``: left-padded prompts, ancestral sampling with temperature and
    top-p (top-k off), stopping at the stop ids; under a forked RNG seeded with ``seed``."""

    name = "hf"

    @torch.no_grad()
    def sample(
        self, model: torch.nn.Module, prompts: list[list[int]], sampling: Sampling, seed: int
    ) -> list[list[int]]:
        device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), sampling.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        was_training = model.training
        model.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=True,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=0,
                    repetition_penalty=1.0,
                    max_new_tokens=sampling.max_new_tokens,
                    eos_token_id=list(sampling.stop_ids),
                    pad_token_id=sampling.pad_id,
                )
        finally:
            model.train(was_training)
        stops = set(sampling.stop_ids)
        return [_until_stop(row, stops, sampling.pad_id) for row in out[:, width:].tolist()]


class VLLMGenerate:
    """vLLM (``pip install 'kdbench[vllm]'``, a CUDA GPU): the student is loaded into a vLLM
    engine once, and its current weights are pushed into the engine before each sampling call
    (``load_weights`` on the engine's model, as TRL's vLLM colocate mode does). Only tried where
    a GPU is lent; the ``hf`` backend is the default and the tested path."""

    name = "vllm"

    def __init__(self) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "resources.generation_backend = 'vllm' needs the vllm package "
                "(pip install 'kdbench[vllm]'); use 'hf' on this machine"
            ) from None
        if not torch.cuda.is_available():
            raise RuntimeError(
                "resources.generation_backend = 'vllm' needs a CUDA GPU; use 'hf' on this machine"
            )
        self._llm: Any = None

    def _engine(self, model: torch.nn.Module) -> Any:
        import tempfile

        from vllm import LLM

        if self._llm is None:
            folder = tempfile.mkdtemp(prefix="kdbench-vllm-")
            model.save_pretrained(folder)
            self._llm = LLM(folder, skip_tokenizer_init=True, gpu_memory_utilization=0.2)
        return self._llm

    def sample(
        self, model: torch.nn.Module, prompts: list[list[int]], sampling: Sampling, seed: int
    ) -> list[list[int]]:
        from vllm import SamplingParams, TokensPrompt

        llm = self._engine(model)
        weights = [(k, v.detach()) for k, v in model.state_dict().items()]
        runner = llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(weights)
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=list(sampling.stop_ids),
            seed=seed,
        )
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
        stops = set(sampling.stop_ids)
        return [_until_stop(list(o.outputs[0].token_ids), stops, sampling.pad_id) for o in outs]


BACKENDS: dict[str, type] = {"hf": HFGenerate, "vllm": VLLMGenerate}


def backend(name: str) -> GenerationBackend:
    """The backend of ``[resources] generation_backend``."""
    if name not in BACKENDS:
        raise ValueError(
            f"resources.generation_backend must be one of {', '.join(BACKENDS)}, got {name!r}"
        )
    return BACKENDS[name]()


# --- sequences from a batch ----------------------------------------------------------------


def prompts_of(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's prompt: its tokens before the first one that is learnt (``labels`` != -100),
    the whole row when none is."""
    out = []
    for ids, mask, labels in zip(
        batch["input_ids"].tolist(),
        batch["attention_mask"].tolist(),
        batch["labels"].tolist(),
        strict=True,
    ):
        n = sum(mask)
        first = next((j for j, y in enumerate(labels[:n]) if y != IGNORE), n)
        out.append(ids[:first])
    return out


def sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, max_length: int
) -> dict[str, torch.Tensor]:
    """A right-padded loss batch of ``prompt + completion`` rows cut at ``max_length``: labels
    on the completion tokens only, weight 1."""
    rows = [(p + c)[:max_length] for p, c in zip(prompts, completions, strict=True)]
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
        labels[i, len(p) : len(r)] = ids[i, len(p) : len(r)]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "weight": torch.ones(len(rows)),
    }


def pad_rows(rows: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Single-row batches (as kept in the replay buffer) stacked, right-padded to the longest."""
    width = max(int(r["input_ids"].shape[-1]) for r in rows)

    def stack(key: str, fill: int) -> torch.Tensor:
        out = torch.full((len(rows), width), fill, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : r[key].shape[-1]] = r[key]
        return out

    return {
        "input_ids": stack("input_ids", pad_id),
        "attention_mask": stack("attention_mask", 0),
        "labels": stack("labels", IGNORE),
        "weight": torch.ones(len(rows)),
    }


# --- the rollout the training loop drives ---------------------------------------------------


@dataclass
class RolloutStats:
    """What sampling cost in one training job (this worker)."""

    generation_wall_s: float = 0.0
    generated_tokens: int = 0
    generated_sequences: int = 0
    batches: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class Rollout:
    """Per step, the batch an on-policy method trains on: :meth:`batch` takes the fixed rows
    of the step and returns them, the student's fresh samples for their prompts, or samples
    replayed from the buffer, as the method's schedule says."""

    def __init__(
        self,
        cfg: OnPolicyConfig,
        backend: GenerationBackend,
        stop_ids: list[int],
        pad_id: int,
        max_length: int,
        seed: int,
    ) -> None:
        self.cfg, self.backend = cfg, backend
        self.schedule = cfg.schedule()
        self.stop_ids, self.pad_id = tuple(sorted(set(stop_ids))), pad_id
        self.max_length, self.seed = max_length, seed
        self.buffer: collections.deque[dict[str, torch.Tensor]] = collections.deque(
            maxlen=None if self.schedule.capacity <= 0 else self.schedule.capacity
        )
        self.rng = torch.Generator().manual_seed(seed + 7919)
        self.stats = RolloutStats()

    def batch(
        self, model: torch.nn.Module, rows: dict[str, torch.Tensor], step: int, steps: int
    ) -> tuple[dict[str, torch.Tensor], str]:
        """The rows to train on at ``step`` and what they are (:data:`FIXED`, :data:`GENERATE`
        or :data:`REPLAY`); ``model``: the student itself (not the engine)."""
        u = float(torch.rand((), generator=self.rng))
        kind = self.schedule.choose(step, steps, u, len(self.buffer))
        self.stats.batches[kind] += 1
        if kind == FIXED:
            return rows, kind
        n = len(rows["input_ids"])
        if kind == REPLAY:
            pick = torch.randint(len(self.buffer), (n,), generator=self.rng).tolist()
            return pad_rows([self.buffer[i] for i in pick], self.pad_id), kind
        prompts = prompts_of(rows)
        room = self.max_length - max(len(p) for p in prompts)
        new = min(self.cfg.max_new_tokens or room, room)
        if new < 1:  # no room after the prompt: nothing can be sampled
            return rows, FIXED
        sampling = Sampling(
            self.cfg.sample_temperature, self.cfg.top_p, new, self.stop_ids, self.pad_id
        )
        start = time.perf_counter()
        completions = self.backend.sample(model, prompts, sampling, self.seed * 1_000_003 + step)
        self.stats.generation_wall_s += time.perf_counter() - start
        self.stats.generated_tokens += sum(len(c) for c in completions)
        self.stats.generated_sequences += len(completions)
        out = sequences(prompts, completions, self.pad_id, self.max_length)
        if self.schedule.capacity == -1:  # the newest batch only
            self.buffer.clear()
        if self.schedule.capacity != 0:
            for i in range(n):
                length = int(out["attention_mask"][i].sum())
                self.buffer.append(
                    {k: out[k][i, :length] for k in ("input_ids", "attention_mask", "labels")}
                )
        return out, kind

    def state(self) -> dict[str, Any]:
        """Everything a resumed job needs to continue as the uninterrupted one would."""
        return {
            "schedule": self.schedule.state(),
            "rng": self.rng.get_state(),
            "buffer": list(self.buffer),
            "stats": {
                "generation_wall_s": self.stats.generation_wall_s,
                "generated_tokens": self.stats.generated_tokens,
                "generated_sequences": self.stats.generated_sequences,
                "batches": dict(self.stats.batches),
            },
        }

    def load(self, state: dict[str, Any]) -> None:
        self.schedule.load(state["schedule"])
        self.rng.set_state(state["rng"])
        self.buffer.extend(state["buffer"])
        stats = dict(state["stats"])
        stats["batches"] = collections.Counter(stats.get("batches", {}))
        self.stats = RolloutStats(**stats)
