"""Datasets for the local lm-eval tasks (``kd_*.yaml``), built from ``kdbench.synthetic``.

lm-eval calls ``custom_dataset`` with the task's ``metadata`` (``version``, ``config_source``
and whatever was passed as ``TaskManager(metadata=...)`` / ``lm_eval --metadata``) plus its
``dataset_kwargs`` as keyword arguments, so both loaders take ``n`` and ignore the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import datasets

try:
    from kdbench.synthetic import eval_set
except ModuleNotFoundError:  # run from the lm_eval CLI without the repo on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from kdbench.synthetic import eval_set

N_DOCS = 200  # size of the held-out split of addition / compare (``synthetic.eval_docs``)


def _split(task: str, n: int | None) -> datasets.DatasetDict:
    docs = eval_set(task, None if n is None else int(n))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def addition(n: int = N_DOCS, **_: Any) -> datasets.DatasetDict:
    """The ``addition`` evaluation split (generate_until, exact match on the answer)."""
    return _split("addition", n)


def compare(n: int = N_DOCS, **_: Any) -> datasets.DatasetDict:
    """The ``compare`` evaluation split (two-way multiple choice)."""
    return _split("compare", n)


def add2(n: int | None = None, **_: Any) -> datasets.DatasetDict:
    """The ``add2`` evaluation split (two 2-digit numbers; generate_until, exact match)."""
    return _split("add2", n)


def noisy_compare(n: int | None = None, **_: Any) -> datasets.DatasetDict:
    """The ``noisy_compare`` evaluation split: the true larger number (the training answers
    were noisy)."""
    return _split("noisy_compare", n)
