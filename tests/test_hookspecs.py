"""Meta-tests that keep the plugin API honest (after datasette): every hook is documented in
docs/plugins.md with its exact signature, and every hook has a test named after it."""

from __future__ import annotations

import inspect
import re

from kdbench import hookspecs
from kdbench.hookspecs import hookimpl
from kdbench.methods import Method, plugin_manager, registry

from .conftest import ROOT

HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("kdbench_") and callable(f))


def _signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    return f"{name}{sig}".replace("'", "")


def test_hooks_exist_and_use_the_prefix() -> None:
    assert HOOKS == ["kdbench_methods"]


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in HOOKS:
        assert f"### `{_signature(name)}`" in docs, f"{name} is not documented in docs/plugins.md"


def test_every_hook_has_a_test_named_after_it() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in HOOKS:
        assert re.search(rf"def test_hook_{name}\b", sources), f"no test_hook_{name}"


def test_hook_kdbench_methods() -> None:
    """An inline plugin's methods are collected; built-ins come through entry points."""

    class Inline:
        @hookimpl
        def kdbench_methods(self) -> list[Method]:
            return [
                Method(
                    name="inline_sft",
                    family="baseline",
                    config=registry()["sft"].config,
                    loss=registry()["sft"].loss,
                )
            ]

    pm = plugin_manager()
    pm.register(Inline(), name="inline")
    try:
        methods = registry(pm)
        assert methods["inline_sft"].plugin == "inline"
        assert {"sft", "kd"} <= set(methods)
    finally:
        pm.unregister(name="inline")
