"""Build, load and save models. A model is either a Hugging Face id / local folder, loaded with
``AutoModelForCausalLM.from_pretrained``, or a small Llama-style architecture built from scratch
(the tiny suite's teacher and students). Both go through the same functions."""

from __future__ import annotations

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


def load_pretrained(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and its tokenizer by Hugging Face id or local folder (``save_pretrained`` output)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model, tokenizer


def default_tokenizer() -> PreTrainedTokenizerBase:
    return char_tokenizer()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> int:
    """Save in the Hugging Face format; returns the bytes written."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
