"""``kdbench plugin new NAME``: write a pip-installable method plugin package.

The generated method is modelled on the built-in ``kd`` plugin (a temperature-scaled forward
KL mixed with the task loss), so it installs, registers through the ``kdbench`` entry-point
group and passes ``kdbench plugin check NAME`` as generated; edit its loss from there.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from kdbench.disk_cache import creation_problem

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

    L = alpha * T^2 * mean_t D( p_T || p_S ) + (1 - alpha) * CE(y, p_S),   p = softmax(z / T)

with D the forward KL as generated (edit :func:`{name}_divergence`).

Loss card:
- divergence: forward KL, teacher first, per position, between the teacher's and the student's
  next-token distributions: over the full vocabulary with a live teacher or a full-logit
  cache; over k + 1 buckets (the teacher's top-k tokens and one "rest" bucket) with a top-k
  cache, the default suite's form (:func:`kdbench.losses.distributions` makes both);
- temperature: both distributions tempered by T, the term multiplied by T^2;
- reduction: averaged over the completion tokens (prompt and padding masked), in float32
  whatever the training dtype; mixed with the ground-truth cross-entropy by alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench import Method, hookimpl
from kdbench.helpers import LogitConfig, logit_loss
from kdbench.losses import kl


@dataclass
class {cls}Config(LogitConfig):
    temperature: float = 1.0  # T > 0 (checked by LogitConfig)
    alpha: float = 0.5  # weight of the distillation term, in [0, 1]


def {name}_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per position (B, T): ``KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v))`` from the
    teacher's and the student's log-distributions (B, T, V or k + 1). Replace with your own."""
    return kl(log_p, log_q)


# teacher signals -> distributions -> masked mean -> T^2 -> alpha mix with the task loss
{name}_loss = logit_loss({name}_divergence)


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

from kdbench.losses import topk_signals
from kdbench.testing import conformance
from kdbench_{name}.method import {cls}Config, {name}_loss

# kdbench's plugin contract, against a live teacher and a cached full / top-k teacher: config
# defaults, a scalar finite differentiable loss, declared signals, masking, empty batches,
# top-k handling, real DeepSpeed steps, a scored and stored run.
test_conformance = conformance("{name}")


@pytest.mark.parametrize("topk", [0, 4])
def test_zero_distillation_when_student_equals_teacher(topk: int) -> None:
    logits = torch.randn(2, 5, 11)
    teacher = topk_signals(logits, topk) if topk else {{"logits": logits}}
    batch = {{"labels": torch.tensor([[-100, 1, 2, 3, 4]] * 2)}}
    loss = {name}_loss(SimpleNamespace(logits=logits), teacher, batch, {cls}Config(alpha=1.0), {{}})
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

MAX_NAME = 40
"""The longest plugin name: it names a method, a module, a package and a folder."""
NAME = re.compile(rf"^[a-z][a-z0-9_]{{0,{MAX_NAME - 1}}}$")


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name)} characters)"


def new_plugin(name: str, where: Path) -> Path:
    """Write ``where/kdbench-NAME/`` and return it. Raises ValueError (one line) on a bad name,
    a ``where`` that is not a folder or cannot be created, or a package that exists already;
    nothing is written then."""
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {_shown(name)}: use 1 to {MAX_NAME} lower-case letters, digits and _ ,"
            " starting with a letter, not a Python keyword (it becomes a Python module name)"
        )
    problem = creation_problem(where)
    if problem:
        raise ValueError(f"--dir {where}: {problem}")
    root = Path(where) / f"kdbench-{name.replace('_', '-')}"
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
    try:
        for rel, template in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template.format(**fields))
    except OSError as exc:
        raise ValueError(f"--dir {where}: cannot write the plugin there: {exc}") from exc
    return root
