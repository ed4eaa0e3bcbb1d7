"""Every registered method, built-in or installed, passes kdbench's plugin contract."""

import pytest

from kdbench.methods import registry
from kdbench.testing import CHECKS, run_checks


@pytest.mark.parametrize("name", sorted(registry()))
def test_method_conforms(name: str, tmp_path) -> None:
    results = run_checks(name, tmp_path)
    assert [r[0] for r in results] == list(CHECKS)
    failures = [f"{check}: {message}" for check, ok, message in results if not ok]
    assert not failures, "\n".join(failures)


def test_builtin_families_are_all_there() -> None:
    families = {}
    for method in registry().values():
        families.setdefault(method.family, set()).add(method.name)
    assert families["baseline"] == {"sft"}
    assert {"kd", "fkl", "rkl", "jsd", "skl", "srkl", "tvd"} <= families["logit"]
    assert {"fitnets", "hidden_cosine"} <= families["feature"]
    assert {"at", "minilm"} <= families["attention"]
    assert {"seqkd", "step_by_step"} <= families["chain_of_thought"]
