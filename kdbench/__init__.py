"""kdbench: an open benchmark and leaderboard for knowledge distillation methods.

What a method plugin imports from here: ``hookimpl`` (the marker of its ``kdbench_methods``
hook, :mod:`kdbench.hookspecs`) and ``Method`` (:class:`kdbench.methods.Method`, loaded on first
use so that ``import kdbench`` does not import torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdbench.hookspecs import hookimpl

if TYPE_CHECKING:
    from kdbench.methods import Method

__version__ = "0.1.0"
__all__ = ["Method", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "Method":
        from kdbench.methods import Method

        return Method
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
