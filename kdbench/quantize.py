"""Weight-only quantisation of a scored model with torchao, the size axis after distillation:
distil, then quantise, is how small models ship.

A suite's ``[eval] quantize`` (``["int8"]``, ``["int8", "int4"]``) asks the eval stage to
quantise every model right after its full-precision evaluation (the model is loaded already),
save the quantised weights and score them again with the same lm-eval tasks; each variant is
stored as its own run, linked to the full-precision one (``runs.quant``,
``runs.parent_run_id``).

Schemes (:data:`SCHEMES`), applied by ``torchao.quantization.quantize_`` to the ``nn.Linear``
layers of the decoder, the output head excepted (its weight is tied to the input embedding in
the tiny suite's models, and quantising a tied head would store the matrix twice; GPTQ/AWQ
keep the head in full precision too). Norms, embeddings and biases stay as they are.

- ``int8``: ``Int8WeightOnlyConfig``, per-output-channel symmetric int8 weights with a float
  scale per row (LLM.int8()-style weight-only, Dettmers et al. 2022, without outliers);
  activations stay in the model's dtype. Every Linear qualifies.
- ``int4``: groupwise asymmetric int4 weights (group of :data:`INT4_GROUP` input features,
  a scale and a zero point per group, tinygemm's layout): on a CPU torchao's
  ``PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor``, the ``_weight_int4pack_mm_for_cpu``
  kernel); on CUDA ``Int4WeightOnlyConfig`` with the ``tile_packed_to_4d`` layout (bfloat16
  weights). The kernels need ``in_features % 32 == 0`` and ``out_features % 16 == 0``; a layer
  that does not fit stays in full precision, and ``quantized_params`` says how many
  parameters were quantised; a model none of whose layers fit is refused (its run is stored
  as failed, with the reason). On this 2-core CPU torchao's int4 kernel is 15-25 times slower
  per forward pass than float32 on the tiny models (int8: about 3 times): weight-only
  quantisation buys size here, not speed.

The quantised weights are saved with ``torch.save`` of the state dict (``model.pt``: torchao's
tensor subclasses pickle; its safetensors support does not cover the CPU int4 layout) with the
model's config and tokenizer; ``bytes`` is that file's size, as :func:`kdbench.models.model_bytes`
counts the full-precision weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from kdbench.config import QUANTIZE_SCHEMES
from kdbench.models import model_bytes

SCHEMES: tuple[str, ...] = QUANTIZE_SCHEMES
"""The quantisation schemes a suite's ``[eval] quantize`` may list."""
INT4_GROUP = 32
"""Input features per int4 scale/zero-point group (the smallest group torchao's int4 kernels
take: the tiny models' widths are small)."""
_INT4_ROWS = 16  # the int4 kernels pack output features in tiles of 16
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class Quantized:
    """A model quantised by :func:`quantize`: how many of its parameters are stored in the
    quantised format, the library that did it and how long it took."""

    model: torch.nn.Module
    scheme: str
    quantized_params: int
    library: str
    seconds: float


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """torchao's import warns about CUDA extensions a CPU build cannot load, and torch about a
    deprecated pytree registration: noise on every evaluation, silenced for the import."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def library() -> str:
    """The quantisation library and its version, as stored with each quantised run."""
    return f"torchao {version('torchao')}"


def _config(scheme: str, device: torch.device) -> Any:
    """The torchao config of ``scheme`` on ``device``."""
    with _quiet_import():
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

        # set_inductor_config=False: kdbench does not torch.compile; the default changes
        # torch._inductor's global settings for the whole process
        if scheme == "int8":
            return Int8WeightOnlyConfig(set_inductor_config=False)
        if device.type == "cuda":
            return Int4WeightOnlyConfig(
                group_size=INT4_GROUP,
                int4_packing_format="tile_packed_to_4d",
                set_inductor_config=False,
            )
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP, set_inductor_config=False)


def _layers(model: torch.nn.Module, scheme: str) -> Callable[[torch.nn.Module, str], bool]:
    """torchao's ``filter_fn``: the Linear layers ``scheme`` quantises (never the output
    head; for int4 only the shapes its kernels take)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def keep(module: torch.nn.Module, fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear) or module is head:
            return False
        if scheme == "int4":
            return module.in_features % INT4_GROUP == 0 and module.out_features % _INT4_ROWS == 0
        return True

    return keep


def quantize(model: torch.nn.Module, scheme: str, *, copy_model: bool = True) -> Quantized:
    """``model`` with its Linear weights quantised to ``scheme`` (:data:`SCHEMES`), weight-only,
    on the device it is on (a copy unless ``copy_model`` is False: then ``model`` itself is
    changed). On CUDA, int4 casts the model to bfloat16 first (the kernel's only input type).
    Raises ValueError for an unknown scheme, and for a model none of whose layers the scheme
    takes (int4 on widths that are not multiples of 32): its "quantised" run would be the
    full-precision model."""
    if scheme not in SCHEMES:
        raise ValueError(f"quantize: unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    started = time.perf_counter()
    out = copy.deepcopy(model) if copy_model else model
    out.eval()
    param = next(out.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if scheme == "int4" and device.type == "cuda":
        out.to(torch.bfloat16)
    keep = _layers(out, scheme)
    chosen = [m for name, m in out.named_modules() if keep(m, name)]
    if not chosen:
        raise ValueError(
            f"{scheme}: no Linear layer of this model fits torchao's {scheme} kernels (input "
            f"features a multiple of {INT4_GROUP}, output features of {_INT4_ROWS}): nothing "
            "to quantise"
        )
    count = sum(m.weight.numel() for m in chosen)
    with _quiet_import():
        from torchao.quantization import quantize_

        quantize_(out, _config(scheme, device), filter_fn=keep)
    return Quantized(out, scheme, count, library(), time.perf_counter() - started)


def save_quantized(model: torch.nn.Module, tokenizer: Any, path: str | Path) -> int:
    """Save a :func:`quantize` model under ``path`` (its state dict as ``model.pt``, its config
    and tokenizer); returns the bytes of the weights file (:func:`kdbench.models.model_bytes`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torchao's subclasses reach TypedStorage when pickled
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), path / WEIGHTS_FILE)
    if hasattr(model, "config"):
        model.config.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model_bytes(path)


def load_quantized(path: str | Path, build: Callable[[], torch.nn.Module], scheme: str) -> Any:
    """The model saved by :func:`save_quantized` at ``path``: ``build()`` makes the
    full-precision architecture, :func:`quantize` gives it the quantised layout, and the saved
    state dict is loaded into it (``weights_only=False``: torchao's tensor subclasses are
    pickled; load only files you wrote)."""
    model = quantize(build(), scheme, copy_model=False).model
    with _quiet_import():
        state = torch.load(Path(path) / WEIGHTS_FILE, weights_only=False, map_location="cpu")
    model.load_state_dict(state, assign=True)
    return model


__all__ = [
    "INT4_GROUP",
    "SCHEMES",
    "Quantized",
    "library",
    "load_quantized",
    "quantize",
    "save_quantized",
]
