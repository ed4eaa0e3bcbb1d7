"""kdbench: an open benchmark and leaderboard for knowledge distillation methods.

What a method plugin imports from here: ``hookimpl`` (the marker of its ``kdbench_methods``
hook, :mod:`kdbench.hookspecs`) and ``Method`` (:class:`kdbench.methods.Method`, loaded on first
use so that ``import kdbench`` does not import torch)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kdbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from kdbench.methods import Method

# torchao (kdbench.quantize) is imported by transformers whenever it is installed, in every
# process that loads a model: its import warns about the CUDA extensions a CPU machine cannot
# load and torch about its deprecated pytree registration. Its errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

__version__ = "0.1.0"
__all__ = ["Method", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "Method":
        from kdbench.methods import Method

        return Method
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
