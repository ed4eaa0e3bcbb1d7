"""Build, load and save models. A model is either a Hugging Face id / local folder, loaded with
``AutoModelForCausalLM.from_pretrained``, or a small Llama-style architecture built from scratch
(the tiny suite's teacher and students). Both go through the same functions."""

from __future__ import annotations

import contextlib
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
    cfg = LlamaConfig(
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
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A model's tokenizer by Hugging Face id or local folder, with a pad token (its EOS token
    when it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_pretrained(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and its tokenizer by Hugging Face id or local folder (``save_pretrained`` output)."""
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer


def default_tokenizer() -> PreTrainedTokenizerBase:
    return char_tokenizer()


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
