import dataclasses

import pytest

from kdbench.hookspecs import hookimpl
from kdbench.methods import Method, MethodError, plugin_manager, registry, resolve


def test_builtin_methods_are_found_through_the_entry_point_group() -> None:
    methods = registry()
    assert {"sft", "kd"} <= set(methods)
    assert methods["kd"].plugin == "kd" and methods["kd"].signals == {"logits"}
    assert methods["sft"].signals == frozenset() and not methods["sft"].needs_teacher


def test_resolve_all_and_did_you_mean() -> None:
    known = registry()
    assert [m.name for m in resolve([], known)] == list(known)
    with pytest.raises(MethodError, match="did you mean 'kd'"):
        resolve(["kdd"], known)


def test_config_overrides_are_checked() -> None:
    kd = registry()["kd"]
    assert kd.make_config({"temperature": 4.0}).temperature == 4.0
    with pytest.raises(MethodError, match="did you mean 'temperature'"):
        kd.make_config({"temprature": 4.0})
    with pytest.raises(MethodError, match="alpha must be in"):
        kd.make_config({"alpha": 2.0})


@dataclasses.dataclass
class _Cfg:
    pass


class _Extra:
    @hookimpl
    def kdbench_methods(self):
        return [Method(name="noop", family="baseline", config=_Cfg, loss=lambda *a: 0)]


def test_an_inline_plugin_registers_and_duplicates_are_refused() -> None:
    pm = plugin_manager()
    plugin = _Extra()
    pm.register(plugin, name="extra")
    try:
        assert registry(pm)["noop"].plugin == "extra"
        pm.register(type("Again", (_Extra,), {})(), name="again")
        with pytest.raises(MethodError, match="registered twice"):
            registry(pm)
    finally:
        pm.unregister(name="extra")
        pm.unregister(name="again")


def test_method_declarations_are_validated() -> None:
    with pytest.raises(MethodError, match="unknown teacher signals"):
        Method(
            name="x", family="logit", config=_Cfg, loss=lambda *a: 0, signals=frozenset({"vibes"})
        )
    with pytest.raises(MethodError, match="family"):
        Method(name="x", family="magic", config=_Cfg, loss=lambda *a: 0)


def test_methods_table_keeps_its_columns_aligned(capsys) -> None:
    """`kdbench methods`: the parameters start in one column even where a method declares
    several signals (gkd: generations,logits)."""
    from kdbench.cli import main

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines[0].index("parameters")
    assert {line.split()[0] for line in lines[1:]} >= {"gkd", "uld", "gold", "abkd"}
    for line in lines[1:]:
        assert line[start - 1] == " " and line[start] != " ", line
