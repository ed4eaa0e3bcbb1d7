"""The plugin API reference (``docs/reference.md``), generated from the docstrings so that it
stays true: ``python -m kdbench.reference docs/reference.md`` (``make docs``); a test fails
when the committed file differs from what this writes."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from types import ModuleType
from typing import Any

from kdbench import (
    cross_tokenizer,
    helpers,
    hookspecs,
    layers,
    losses,
    methods,
    rollout,
    signals,
    testing,
)

ENVIRONMENT = {
    "KDBENCH_CACHE": "cache folder for built teachers, generations and teacher-signal cache "
    "entries (`kdbench run --cache` wins; default `~/.cache/kdbench`)",
    "KDBENCH_DB": "results database of `kdbench run`, `leaderboard` and `app` (`--db` wins; "
    "default `results/kdbench.duckdb`)",
    "KDBENCH_PRICES": "hardware price table of the app and `kdbench leaderboard` (`--prices` "
    "wins; default: the bundled `leaderboards/prices/default.toml`)",
    "KDBENCH_TASKS_DIR": "folders of lm-eval task YAMLs (joined by `:`) added to the bundled "
    "`leaderboards/tasks/` and to a suite's `[eval] include`",
}


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "(undocumented)")


def _signature(name: str, obj: Any) -> str:
    try:
        sig = str(inspect.signature(obj)).replace("'", "")
    except (TypeError, ValueError):
        sig = "(...)"
    return f"{name}{sig}"


def _public(module: ModuleType) -> list[tuple[str, Any]]:
    """Functions and classes defined in ``module`` (not imported), in source order."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            out.append((name, obj))
    return sorted(out, key=lambda item: inspect.getsourcelines(item[1])[1])


def _members(cls: type) -> list[str]:
    lines = []
    if dataclasses.is_dataclass(cls):
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        lines.append(f"Fields: {fields}.\n")
    for name, member in vars(cls).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        target = member.fget if isinstance(member, property) else member
        head = name if isinstance(member, property) else _signature(name, member)
        lines.append(f"- `{head}`: {' '.join(_doc(target).split())}")
    return lines


def _module(module: ModuleType, title: str) -> list[str]:
    lines = [f"## {title} (`{module.__name__}`)", "", _doc(module), ""]
    for name, obj in _public(module):
        kind = "class" if inspect.isclass(obj) else "def"
        lines += [f"### `{kind} {_signature(name, obj)}`", "", "```text", _doc(obj), "```", ""]
        if inspect.isclass(obj):
            members = _members(obj)
            if members:
                lines += [*members, ""]
    return lines


def generate() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Plugin API reference",
        "",
        "Generated from the docstrings by `python -m kdbench.reference` (`make docs`); do not "
        "edit by hand. The guide is [plugins.md](plugins.md).",
        "",
        "## Hooks (`kdbench.hookspecs`)",
        "",
    ]
    for name, obj in vars(hookspecs).items():
        if name.startswith("kdbench_") and callable(obj):
            lines += [f"### `{_signature(name, obj)}`", "", "```text", _doc(obj), "```", ""]
    lines += ["## The `Method` record (`kdbench.methods`)", "", _doc(methods), ""]
    lines += ["```text", _doc(methods.Method), "```", ""]
    lines += _module(signals, "The teacher-signal contract")
    lines += _module(losses, "Loss primitives")
    lines += _module(helpers, "Loss helpers")
    lines += _module(layers, "Layer pairs")
    lines += _module(rollout, "On-policy sampling")
    lines += _module(cross_tokenizer, "Cross-tokenizer rows and pairings")
    lines += ["## Conformance checks (`kdbench.testing`)", "", _doc(testing), ""]
    for name, check in testing.CHECKS.items():
        lines.append(f"- `{name}`: {' '.join(_doc(check).split())}")
    lines += ["", "## Environment variables", ""]
    lines += [f"- `{name}`: {what}" for name, what in ENVIRONMENT.items()]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = generate()  # (importing DeepSpeed prints to stdout: write the file, not stdout)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
