"""``kdbench plugin new NAME``: write a pip-installable method plugin package.

The generated method is modelled on the built-in ``kd`` plugin (a temperature-scaled forward
KL mixed with the task loss), so it installs, registers through the ``kdbench`` entry-point
group and passes ``kdbench plugin check NAME`` as generated; edit its loss from there.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

PYPROJECT = """[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "kdbench-{dist}"
version = "0.1.0"
description = "The {name} distillation method for kdbench"
requires-python = ">=3.11"
dependencies = ["kdbench"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This line is what makes kdbench find the method once the package is installed.
[project.entry-points.kdbench]
{name} = "kdbench_{name}.method"

[tool.setuptools]
packages = ["kdbench_{name}"]
"""

METHOD = '''"""``{name}``: <one line on what the method does>.

<Paper citation: authors, year, title, arXiv id.>

    L = alpha * T^2 * KL( softmax(z_T / T) || softmax(z_S / T) ) + (1 - alpha) * CE(y, softmax(z_S))

Loss card:
- divergence: forward KL, teacher first, over the full vocabulary (or k+1 buckets for a top-k
  teacher);
- temperature: both logits divided by T, the KL term multiplied by T^2;
- reduction: summed over the vocabulary, averaged over completion tokens (prompt and padding
  masked), in float32 whatever the training dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench.hookspecs import hookimpl
from kdbench.losses import masked_mean, shift, token_ce, token_mask
from kdbench.methods import Method


@dataclass
class {cls}Config:
    temperature: float = 1.0  # T > 0
    alpha: float = 0.5  # weight of the distillation term, in [0, 1]

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {{self.temperature}}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {{self.alpha}}")


def {name}_loss(student, teacher, batch, cfg: {cls}Config, modules) -> torch.Tensor:
    """Pure: student output, teacher signals, batch and config in; a scalar tensor out."""
    labels = batch["labels"]
    s_logits, _ = shift(student.logits, labels)
    t_logits, _ = shift(teacher["logits"], labels)
    s = F.log_softmax(s_logits.float() / cfg.temperature, dim=-1)
    t = F.log_softmax(t_logits.float() / cfg.temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    distill = cfg.temperature**2 * masked_mean(kl, token_mask(labels))
    return cfg.alpha * distill + (1 - cfg.alpha) * token_ce(student.logits, labels)


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="{name}",
            family="logit",
            config={cls}Config,
            loss={name}_loss,
            signals=frozenset({{"logits"}}),
            description="<one line for `kdbench methods`>",
            paper="<citation>",
        )
    ]
'''

TESTS = '''"""Tests of the {name} method: its formula, and kdbench's conformance checks."""

from types import SimpleNamespace

import pytest
import torch

from kdbench.testing import conformance
from kdbench_{name}.method import {cls}Config, {name}_loss

# kdbench's plugin contract: config defaults, a finite differentiable loss, declared teacher
# signals, real DeepSpeed steps, a stored result row.
test_conformance = conformance("{name}")


def test_zero_distillation_when_student_equals_teacher() -> None:
    logits = torch.randn(2, 5, 11)
    batch = {{"labels": torch.tensor([[-100, 1, 2, 3, 4]] * 2)}}
    loss = {name}_loss(SimpleNamespace(logits=logits), {{"logits": logits}}, batch,
                       {cls}Config(alpha=1.0), {{}})
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
'''

README = """# kdbench-{dist}

The `{name}` distillation method for [kdbench](https://pypi.org/project/kdbench/).

```bash
pip install -e .            # kdbench finds it through the `kdbench` entry-point group
kdbench methods             # lists {name}
kdbench plugin check {name} # kdbench's conformance checks
pytest                      # the same checks, plus this method's own tests
```

Then name it in a suite: `methods = ["sft", "{name}"]`, tune it under `[method_config.{name}]`.
"""

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def new_plugin(name: str, where: Path) -> Path:
    """Write ``where/kdbench-NAME/`` and return it. Raises ValueError on a bad name or folder."""
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {name!r}: use lower-case letters, digits and _ , "
            "starting with a letter (it becomes a Python module name)"
        )
    root = where / f"kdbench-{name.replace('_', '-')}"
    if root.exists():
        raise ValueError(f"{root} already exists; choose another name or folder")
    fields = {
        "name": name,
        "dist": name.replace("_", "-"),
        "cls": "".join(part.capitalize() for part in name.split("_")),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        f"kdbench_{name}/__init__.py": '"""The {name} method for kdbench."""\n',
        f"kdbench_{name}/method.py": METHOD,
        f"tests/test_{name}.py": TESTS,
        "README.md": README,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return root
