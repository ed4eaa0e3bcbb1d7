"""Memory preflight: before anything starts, each student's training job is estimated against
the memory of the devices its jobs will get, and a suite that cannot fit is refused in one line.

Parameters are counted from the models' configs on PyTorch's ``meta`` device (no weights are
read). Per job (one data-parallel worker of ``resources.workers_per_job``, ``n`` of them), with
``P`` the student's parameters, ``T`` the trained ones (``P``, or the LoRA adapters' ``r (in +
out)`` per target matrix), ``b`` the bytes of its dtype (2 for bf16/fp16, 4 for float32; a GPU
job's ``auto`` is taken as bf16, a CPU job's as float32):

- weights ``b P`` (``/ n`` under ZeRO-3, plus its largest layer gathered, ``4 L``);
- gradients ``b T``, plus float32 copies ``4 T`` in mixed precision (``/ n`` from ZeRO-2);
- optimiser state: Adam's two moments ``8 T``, plus float32 master weights ``4 T`` in mixed
  precision (``/ n`` from ZeRO-1). For a mixed-precision job on GPUs that trains every
  parameter at ZeRO-2 or 3, the model states come from DeepSpeed's own estimators
  (``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``, with
  the ``[deepspeed]`` table's optimiser/parameter offload), the optimiser being what they count
  beyond weights and gradients;
- activations, a rough formula after Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", eq. 2): ``layers x s x B x h x (34 + 5 a s / h)
  x b / 2`` bytes for micro-batch ``B``, sequence ``s = data.max_length``, width ``h``, ``a``
  heads; with gradient checkpointing only each layer's input ``b s B h`` is kept, plus one
  layer's full activations. The float32 logits (``3 x B s V x 4``: logits, log-softmax and
  their gradient) are added, as large vocabularies make them dominate;
- the live teacher's weights and float32 logits when a method runs the teacher on every batch
  (its signals are not all in the signal cache).

Devices (:func:`device_memory`): a GPU job's budget is one GPU's memory (times
``gpus_per_job`` when it is a fraction: jobs share the GPU), asked of a GPU node by a tiny Ray
task; a CPU job's is the largest node's memory that Ray schedules (``ray.nodes()``). This is an
estimate: a suite refused by a small margin may fit, one accepted by a small margin may not.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any

import torch

from kdbench.config import ModelSpec, Suite, SuiteError

GIB = 2**30
# a config that cannot be read or built here (offline, custom code): that model is not estimated
UNREADABLE = (OSError, ValueError, KeyError, AttributeError, TypeError, ImportError)


@dataclass(frozen=True)
class ModelSize:
    """What the preflight reads from a config: parameters, the largest module's parameters,
    layers, width, heads and vocabulary."""

    params: int
    largest_layer: int
    layers: int
    hidden: int
    heads: int
    vocab: int
    lora_params: int = 0  # the adapters' parameters (LoRA students)


@dataclass(frozen=True)
class MemoryEstimate:
    """The bytes one training job of ``student`` (with ``method``) needs on one device."""

    student: str
    index: int  # the student's place in the suite (``students[index]``)
    method: str  # the method with the largest need
    device: str  # "GPU" or "CPU"
    dtype: str
    zero_stage: int
    params: int
    trainable: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    teacher: int  # the live teacher's weights and logits (0: none, or read from the cache)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.teacher

    def describe(self) -> str:
        """One line: the total and its parts, in GiB."""
        parts = (
            f"weights {gib(self.weights)}, gradients {gib(self.gradients)}, optimizer "
            f"{gib(self.optimizer)}, activations {gib(self.activations)}"
            + (f", live teacher {gib(self.teacher)}" if self.teacher else "")
        )
        return (
            f"{self.student} ({count(self.params)} params, {count(self.trainable)} "
            f"trained, {self.dtype}, ZeRO-{self.zero_stage}, {self.method}): "
            f"~{gib(self.total)} per {self.device} ({parts})"
        )


def count(n: int) -> str:
    """Parameters for people: 12.3k, 0.1M, 124.4M, 1.54B."""
    if n < 10**5:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def gib(n: float) -> str:
    """Bytes for people: MiB below 1 GiB, else GiB."""
    if n < GIB:
        return f"{n / 2**20:.0f} MiB" if n >= 2**20 else "<1 MiB"
    return f"{n / GIB:.1f} GiB" if n < 10 * GIB else f"{n / GIB:.0f} GiB"


# --- sizes from configs --------------------------------------------------------------------


def _meta_size(config: Any, lora: Any = None) -> ModelSize:
    """Parameters of a model built from ``config`` on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"), contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    largest = max(
        (sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()),
        default=0,
    )
    adapters = 0
    if lora is not None:
        targets = tuple(lora.target_modules)
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            leaf = name.rsplit(".", 1)[-1]
            if leaf in targets and weight is not None and weight.dim() == 2:
                adapters += lora.r * (weight.shape[0] + weight.shape[1])
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    return ModelSize(
        params=params,
        largest_layer=largest,
        layers=config.num_hidden_layers,
        hidden=hidden,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        lora_params=adapters,
    )


def _teacher_config(suite: Suite) -> Any:
    from transformers import AutoConfig

    from kdbench.models import default_tokenizer, llama_config

    t = suite.teacher
    if t.arch is not None:
        return llama_config({**t.arch, "max_length": suite.data.max_length}, default_tokenizer())
    return AutoConfig.from_pretrained(t.source)


def model_config(spec: ModelSpec, suite: Suite, teacher_config: Any) -> Any:
    """A student's config without its weights: its folder's or Hub id's, the Llama config its
    ``arch`` builds (with the teacher's vocabulary, or its own ``tokenizer``'s) or the
    teacher's with its kept layers."""
    from transformers import AutoConfig

    from kdbench.models import kept_layers_config, llama_config

    if spec.source is not None:
        return AutoConfig.from_pretrained(spec.source)
    if spec.from_teacher_layers is not None:
        return kept_layers_config(teacher_config, spec.from_teacher_layers)
    if spec.tokenizer is not None:  # its own vocabulary
        from kdbench.models import named_tokenizer

        return llama_config(
            {**spec.arch, "max_length": suite.data.max_length}, named_tokenizer(spec.tokenizer)
        )

    class _Vocab:  # llama_config reads only these of a tokenizer
        pad_token_id = getattr(teacher_config, "pad_token_id", None)
        bos_token_id = getattr(teacher_config, "bos_token_id", None)
        eos_token_id = getattr(teacher_config, "eos_token_id", None)

        def __len__(self) -> int:
            return teacher_config.vocab_size

    return llama_config({**spec.arch, "max_length": suite.data.max_length}, _Vocab())


# --- the estimate --------------------------------------------------------------------------


def zero_stage(suite: Suite) -> int:
    """The ZeRO stage the engines run: the ``[deepspeed]`` table's, else ``resources``'."""
    stage = suite.deepspeed.get("zero_optimization", {}).get("stage")
    return int(stage) if isinstance(stage, int) else suite.resources.zero_stage


def _offload(suite: Suite, key: str) -> bool:
    target = suite.deepspeed.get("zero_optimization", {}).get(key) or {}
    return isinstance(target, dict) and target.get("device") in ("cpu", "nvme")


def _dtype_bytes(dtype: str, gpu: bool) -> tuple[str, int]:
    if not gpu or dtype == "float32":
        return "float32", 4
    return ("float16", 2) if dtype == "float16" else ("bfloat16", 2)


def activation_bytes(
    size: ModelSize, micro_batch: int, seq: int, nbytes: int, checkpointing: bool
) -> int:
    """The rough activation memory of one training step (see the module docstring)."""
    h, a, layers = max(1, size.hidden), max(1, size.heads), size.layers
    per_layer = seq * micro_batch * h * (34 + 5 * a * seq / h) * nbytes / 2
    if checkpointing:
        kept = layers * nbytes * seq * micro_batch * h + per_layer
    else:
        kept = layers * per_layer
    logits = 3 * micro_batch * seq * size.vocab * 4
    return int(kept + logits)


def model_states(
    size: ModelSize,
    nbytes: int,
    stage: int,
    workers: int,
    gpu: bool,
    offload_optimizer: bool = False,
    offload_params: bool = False,
) -> tuple[int, int, int, int]:
    """``(trainable, weights, gradients, optimizer)`` bytes per worker (module docstring)."""
    p = size.params
    t = size.lora_params or p
    mixed = nbytes == 2
    n = max(1, workers)
    weights = nbytes * (p + size.lora_params)
    grads = (nbytes + (4 if mixed else 0)) * t
    optim = (8 + (4 if mixed else 0)) * t
    if stage >= 1:
        optim //= n
    if stage >= 2:
        grads //= n
    if stage >= 3:
        weights = weights // n + 4 * size.largest_layer
    if offload_optimizer:
        grads, optim = 0, 0
    if offload_params and stage >= 3:
        weights = 4 * size.largest_layer
    if gpu and mixed and not size.lora_params and stage >= 2:
        # DeepSpeed's own estimate of the GPU's model states (non-printing inner functions)
        if stage == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import (
                estimate_zero2_model_states_mem_needs,
            )

            _, total = estimate_zero2_model_states_mem_needs(
                p, num_gpus_per_node=n, cpu_offload=offload_optimizer
            )
        else:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

            _, total, _ = estimate_zero3_model_states_mem_needs(
                p,
                size.largest_layer,
                num_gpus_per_node=n,
                cpu_offload=offload_optimizer,
                cpu_offload_params=offload_params,
            )
        optim = max(0, total - weights - grads)
    return t, weights, grads, optim


def _live_methods(suite: Suite, methods: list[Any]) -> set[str]:
    """The methods whose jobs run the teacher on every batch (the cache does not cover them)."""
    from kdbench.signal_cache import signals_for

    cached = signals_for(methods, suite.cache.signals)
    live = set()
    for m in methods:
        wanted = set(m.signals) - {"generations"}
        covered = m.data is None and bool(wanted) and wanted <= cached
        if m.needs_teacher and not covered:
            live.add(m.name)
    return live


def estimates(suite: Suite, methods: list[Any]) -> list[MemoryEstimate]:
    """Per student, the training job with the largest memory need among ``methods`` (the live
    teacher's weights count for methods that run it), on one device of a job. A student whose
    config cannot be read here (a Hub id not in the local cache) is left out."""
    gpu = suite.resources.gpus_per_job > 0
    workers = suite.resources.workers_per_job
    stage = zero_stage(suite)
    micro = max(1, suite.budget.batch_size // workers)
    seq = suite.data.max_length
    try:
        t_config = _teacher_config(suite)
        t_size = _meta_size(t_config)
    except UNREADABLE:
        return []
    _, t_bytes = _dtype_bytes(suite.teacher.dtype, gpu)
    teacher_live = t_bytes * t_size.params + micro * seq * t_size.vocab * 4
    live = _live_methods(suite, methods)
    out = []
    for i, spec in enumerate(suite.students):
        try:
            size = _meta_size(model_config(spec, suite, t_config), spec.lora)
        except UNREADABLE:
            continue
        dtype, nbytes = _dtype_bytes(spec.dtype, gpu)
        trainable, weights, grads, optim = model_states(
            size,
            nbytes,
            stage,
            workers,
            gpu,
            _offload(suite, "offload_optimizer"),
            _offload(suite, "offload_param"),
        )
        act = activation_bytes(size, micro, seq, nbytes, spec.gradient_checkpointing)
        worst = next((m.name for m in methods if m.name in live), None)
        out.append(
            MemoryEstimate(
                student=spec.name,
                index=i,
                method=worst or (methods[0].name if methods else "-"),
                device="GPU" if gpu else "CPU",
                dtype=dtype,
                zero_stage=stage,
                params=size.params,
                trainable=trainable,
                weights=weights,
                gradients=grads,
                optimizer=optim,
                activations=act,
                teacher=teacher_live if worst else 0,
            )
        )
    return out


# --- the devices ---------------------------------------------------------------------------


def node_shapes() -> list[dict[str, float]]:
    """The resources of each node the connected Ray cluster has or can start: its alive nodes
    and, on an autoscaling cluster, each node type its config may launch, with ``count`` its
    most nodes (``inf``: no limit; a shape without ``count`` is one node)."""
    import ray

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    try:  # Ray's own view of the autoscaler's node types (what Ray Train and Data read)
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # no autoscaler, or another Ray version's internals: the alive nodes
        config = None
    for group in getattr(config, "node_group_configs", None) or ():
        if group.max_count != 0:
            count = math.inf if group.max_count < 0 else float(group.max_count)
            shapes.append({**{k: float(v) for k, v in group.resources.items()}, "count": count})
    return shapes


def check_resources(suite: Suite, shapes: list[dict[str, float]] | None = None) -> None:
    """Refuse, in one :class:`SuiteError` line naming the ``[resources]`` field, a suite whose
    jobs can never be scheduled: every training and evaluation job (each worker of one, with
    ``workers_per_job`` > 1) asks one node for ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs,
    and Ray would wait for such a node forever. ``shapes``: the nodes' resources (default:
    :func:`node_shapes` of the connected cluster)."""
    res = suite.resources
    shapes = node_shapes() if shapes is None else shapes
    cpus = [float(n.get("CPU", 0)) for n in shapes]
    gpus = [float(n.get("GPU", 0)) for n in shapes]
    fits = [
        c >= res.cpus_per_job and g >= res.gpus_per_job for c, g in zip(cpus, gpus, strict=True)
    ]
    if any(fits):
        _check_workers(suite, shapes)
        return
    who = (
        f"each of a job's {res.workers_per_job} workers" if res.workers_per_job > 1 else "every job"
    )
    nodes = f"{len(shapes)} node{'s' if len(shapes) != 1 else ''}"
    fix = "lower it or connect to a cluster that has such a node (--address)"
    if res.gpus_per_job > 0 and max(gpus, default=0) < res.gpus_per_job:
        have = max(gpus, default=0)
        raise SuiteError(
            suite.path,
            "resources.gpus_per_job",
            f"is {res.gpus_per_job:g} ({who} asks one node for that many GPUs) but "
            + (
                f"the Ray cluster ({nodes}) has no GPU"
                if have == 0
                else f"the largest node of the Ray cluster ({nodes}) has {have:g} GPUs"
            )
            + f"; {fix}",
        )
    if max(cpus, default=0) < res.cpus_per_job:
        raise SuiteError(
            suite.path,
            "resources.cpus_per_job",
            f"is {res.cpus_per_job:g} ({who} asks one node for that many CPUs) but the largest "
            f"node of the Ray cluster ({nodes}) has {max(cpus, default=0):g} CPUs; {fix}",
        )
    raise SuiteError(
        suite.path,
        "resources.cpus_per_job",
        f"is {res.cpus_per_job:g} with gpus_per_job = {res.gpus_per_job:g} but no node of the Ray "
        f"cluster ({nodes}) has both that many CPUs and GPUs; {fix}",
    )


def _check_workers(suite: Suite, shapes: list[dict[str, float]]) -> None:
    """The ``workers_per_job`` workers of one job (one placement group: all at once) fit the
    cluster's nodes together."""
    res = suite.resources
    if res.workers_per_job == 1:
        return
    slots = 0.0
    for n in shapes:
        per_node = math.floor(float(n.get("CPU", 0)) / res.cpus_per_job + 1e-9)
        if res.gpus_per_job > 0:
            per_node = min(per_node, math.floor(float(n.get("GPU", 0)) / res.gpus_per_job + 1e-9))
        slots += per_node * float(n.get("count", 1)) if per_node else 0
    if slots < res.workers_per_job:
        raise SuiteError(
            suite.path,
            "resources.workers_per_job",
            f"is {res.workers_per_job} but the Ray cluster's nodes hold {slots:g} workers of "
            f"{res.cpus_per_job:g} CPUs"
            + (f" and {res.gpus_per_job:g} GPUs" if res.gpus_per_job else "")
            + " at once (a job's workers start together); lower it or connect to a larger "
            "cluster (--address)",
        )


def _gpu_total_memory() -> int:
    return torch.cuda.get_device_properties(0).total_memory


def device_memory(suite: Suite) -> int | None:
    """Bytes one job may use on one device of the connected Ray cluster: a GPU's memory
    (times ``gpus_per_job`` when below 1) for GPU jobs, else the largest node's schedulable
    memory; None when it cannot be told. Raises :class:`SuiteError` when GPU jobs are asked of
    a cluster without GPUs."""
    import ray

    res = suite.resources
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if res.gpus_per_job > 0:
        if not any(n["Resources"].get("GPU", 0) for n in nodes):
            raise SuiteError(
                suite.path,
                "resources.gpus_per_job",
                f"is {res.gpus_per_job} but the Ray cluster has no GPU; set it to 0 or connect "
                "to a cluster with GPU nodes (--address)",
            )
        task = ray.remote(_gpu_total_memory).options(num_gpus=min(1.0, res.gpus_per_job))
        try:
            total = ray.get(task.remote(), timeout=120)
        except ray.exceptions.GetTimeoutError:
            return None
        return int(total * min(1.0, res.gpus_per_job))
    memory = [n["Resources"].get("memory", 0) for n in nodes]
    return int(max(memory)) if memory and max(memory) > 0 else None


def preflight(suite: Suite, methods: list[Any], budget: int | None = None) -> list[MemoryEstimate]:
    """Refuse, with one :class:`SuiteError` line naming the student, the numbers and what to
    change, a suite one of whose training jobs needs more memory than ``budget`` bytes (default:
    :func:`device_memory` of the connected Ray cluster). Returns the estimates."""
    found = estimates(suite, methods)
    if budget is None:
        budget = device_memory(suite)
    if budget is None:
        return found
    for e in found:
        if e.total > budget:
            raise SuiteError(
                suite.path,
                f"students[{e.index}]",
                f"does not fit: {e.describe()}, but a {e.device} job has {gib(budget)}; "
                + _advice(suite, e),
            )
    return found


def _advice(suite: Suite, e: MemoryEstimate) -> str:
    tips = []
    parts = {
        "states": e.weights + e.gradients + e.optimizer,
        "activations": e.activations,
        "teacher": e.teacher,
    }
    if e.zero_stage < 3 and suite.resources.workers_per_job > 1:
        tips.append("resources.zero_stage = 3")
    elif e.zero_stage < 3 and e.device == "GPU":
        tips.append("resources.zero_stage = 3 with more resources.workers_per_job")
    spec = suite.students[e.index]
    if spec.lora is None and parts["states"] >= parts["activations"]:
        tips.append("lora = { r = 16 }")
    if not spec.gradient_checkpointing:
        tips.append("gradient_checkpointing = true")
    tips.append(f"a smaller budget.batch_size (now {suite.budget.batch_size})")
    if e.teacher:
        tips.append("[cache] signals for the live teacher")
    if e.device == "GPU" and e.dtype == "float32":
        tips.append('dtype = "bfloat16"')
    return "try " + ", ".join(tips)
