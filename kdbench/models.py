"""Build, load and save models. A model is either a Hugging Face id / local folder, loaded with
``AutoModelForCausalLM.from_pretrained``, or a small Llama-style architecture built from scratch
(the tiny suite's teacher and students). Both go through the same functions."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from kdbench.tokenizer import char_tokenizer


def build_llama(
    arch: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreTrainedModel:
    """A freshly initialised Llama-style causal LM with the sizes in ``arch``."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(
        llama_config(arch, tokenizer), attn_implementation="eager"
    )


def llama_config(arch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The config :func:`build_llama` builds from ``arch`` with ``tokenizer``'s vocabulary."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch.get("intermediate_size", 3 * arch["hidden_size"]),
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_heads"],
        max_position_embeddings=arch.get("max_length", 64),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",  # attention maps are a teacher signal some methods use
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A model's tokenizer by Hugging Face id or local folder, with a pad token (its EOS token
    when it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str = "auto", device: torch.device | str | None = None) -> torch.dtype:
    """The torch dtype a suite's ``dtype`` means on ``device`` (default: CUDA when this process
    sees a GPU, else the CPU). On a CPU always float32 (half-precision CPU kernels are slow and
    partial); on CUDA ``auto`` is bfloat16 when the device supports it, else float32."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cuda":
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[dtype]


def job_device() -> torch.device:
    """The device a job computes on: its (first visible) GPU when it has one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pretrained(
    source: str, dtype: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and its tokenizer by Hugging Face id or local folder (``save_pretrained`` output),
    with its weights in ``dtype`` (:func:`resolve_dtype`: float32 on a CPU), on the CPU."""
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype))
    return model, tokenizer


# --- students: from the teacher's layers, gradient checkpointing, LoRA ----------------------


_LAYER_KEY = re.compile(r"^(model\.layers|transformer\.h|model\.decoder\.layers)\.(\d+)\.")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM: ``model.layers`` (Llama, Qwen2, Mistral...) or
    ``transformer.h`` (GPT-2)."""
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    for name in ("layers", "h"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ValueError(
        f"{type(model).__name__}: no decoder layers at model.layers or transformer.h "
        "(Llama, Qwen2 and GPT-2 layouts are supported)"
    )


def from_teacher_layers(
    teacher: PreTrainedModel, keep: tuple[int, ...] | list[int]
) -> PreTrainedModel:
    """A student that is a copy of ``teacher`` keeping only decoder layers ``keep`` (in order),
    DistilBERT's initialisation (Sanh et al. 2019, which keeps every other layer): embeddings,
    final norm and head are copied, layer ``keep[j]`` becomes layer ``j``, and the config's
    ``num_hidden_layers`` (and per-layer lists such as Qwen2's ``layer_types``) follow."""
    n = len(decoder_layers(teacher))
    bad = [i for i in keep if not 0 <= i < n]
    if bad or not keep:
        raise ValueError(
            f"from_teacher_layers {list(keep)}: the teacher has {n} layers (0 to {n - 1})"
        )
    config = kept_layers_config(teacher.config, keep)
    student = AutoModelForCausalLM.from_config(
        config,
        dtype=next(teacher.parameters()).dtype,
        attn_implementation=config._attn_implementation,
    )
    where = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is None:
            state[key] = value
        elif int(m.group(2)) in where:
            state[f"{m.group(1)}.{where[int(m.group(2))]}.{key[m.end() :]}"] = value
    student.load_state_dict(state, strict=True)
    return student.train(teacher.training)


def kept_layers_config(config: Any, keep: tuple[int, ...] | list[int]) -> Any:
    """A copy of a model config with only decoder layers ``keep``: ``num_hidden_layers`` and
    per-layer lists (Qwen2's ``layer_types``) follow."""
    n = config.num_hidden_layers
    config = copy.deepcopy(config)
    config.num_hidden_layers = len(keep)
    for key in ("layer_types",):  # per-layer settings
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) == n:
            setattr(config, key, [value[i] for i in keep])
    return config


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them
    (non-reentrant checkpointing, which also works when the inputs need no gradient, as with
    frozen LoRA bases); the generation cache is switched off."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def with_lora(model: PreTrainedModel, lora: Any) -> torch.nn.Module:
    """``model`` wrapped by ``peft`` with LoRA adapters (a :class:`kdbench.config.LoraSpec`):
    only the adapters require gradients."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # target modules not found
        raise ValueError(f"lora.target_modules {list(lora.target_modules)}: {e}") from None


def merged(model: torch.nn.Module) -> PreTrainedModel:
    """The plain model to save: a LoRA model's adapters merged into its base weights (the
    adapters' ``B A`` added to each target weight), anything else unchanged."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_tokenizer() -> PreTrainedTokenizerBase:
    return char_tokenizer()


def named_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """A built student's ``tokenizer``: a built-in one by name
    (:data:`kdbench.tokenizer.BUILTIN_TOKENIZERS`) or the saved tokenizer in a folder."""
    from kdbench.tokenizer import BUILTIN_TOKENIZERS

    if name in BUILTIN_TOKENIZERS:
        return BUILTIN_TOKENIZERS[name]()
    return load_tokenizer(name)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_bytes(path: str | Path) -> int:
    """Bytes of a saved model's weight files (``*.safetensors`` / ``*.bin`` shards) in ``path``:
    the size axis of the leaderboard. Config, tokenizer and any other file in the folder (a
    training job's checkpoints, say) do not count."""
    return sum(
        f.stat().st_size
        for f in Path(path).iterdir()
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES
    )


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> int:
    """Save in the Hugging Face format; returns the bytes of the weights (:func:`model_bytes`)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model_bytes(path)


def vocabulary_mismatch(
    teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase
) -> str | None:
    """Why two tokenizers do not share a vocabulary (token -> id maps), or None when they do.
    Methods that compare teacher and student position by position need the same ids."""
    a, b = teacher.get_vocab(), student.get_vocab()
    if a == b:
        return None
    if len(a) != len(b):
        return f"teacher has {len(a)} tokens, student has {len(b)}"
    differ = sorted(t for t in set(a) | set(b) if a.get(t) != b.get(t))
    return (
        f"both have {len(a)} tokens but {len(differ)} map to other ids "
        f"(e.g. {differ[0]!r}: teacher {a.get(differ[0])}, student {b.get(differ[0])})"
    )


# --- what methods read from a model's forward pass -----------------------------------------


QKV_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def last_attention(model: torch.nn.Module) -> torch.nn.Module:
    """The last decoder layer's ``self_attn`` of a Hugging Face decoder (Llama and alike)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(base, "layers", None)
    if not layers or not all(hasattr(layers[-1].self_attn, n) for n in QKV_PROJECTIONS):
        raise ValueError(
            f"the 'qkv' signal needs decoder layers with self_attn.{'/'.join(QKV_PROJECTIONS)}"
            f" (HF Llama layout); {type(model).__name__} has none"
        )
    return layers[-1].self_attn


@contextlib.contextmanager
def capture_qkv(model: torch.nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """Forward hooks on the last decoder layer's ``q_proj`` / ``k_proj`` / ``v_proj``.

    Yields a list that, after a forward pass inside the block, holds ``(q, k, v)``, each
    (B, T, width): the projections' outputs, before RoPE and the head split, with their autograd
    graph. The hooks are removed on exit. With ``enabled=False`` nothing is hooked.
    """
    captured: dict[str, torch.Tensor] = {}
    result: list[torch.Tensor] = []
    handles = []
    if enabled:
        attn = last_attention(model)
        for name in QKV_PROJECTIONS:

            def hook(module, inputs, output, name=name):
                captured[name] = output  # a recomputed forward overwrites: the last one wins

            handles.append(getattr(attn, name).register_forward_hook(hook))
    try:
        yield result
        if enabled:
            result[:] = [captured[name] for name in QKV_PROJECTIONS]
    finally:
        for handle in handles:
            handle.remove()


def prepare_models(signals: frozenset[str], *models: torch.nn.Module | None) -> None:
    """Attention maps exist only with eager attention: a model loaded with the default (sdpa)
    kernel returns none, so switch the models over for a method that reads them."""
    if "attentions" in signals:
        for model in models:
            if model is not None and model.config._attn_implementation != "eager":
                model.set_attn_implementation("eager")
