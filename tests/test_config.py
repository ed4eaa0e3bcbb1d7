from pathlib import Path

import pytest

from kdbench.config import SuiteError, load_suite

from .conftest import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "leaderboards").glob("*.toml")), ids=str)
def test_every_shipped_suite_loads_and_names_its_command(path: Path) -> None:
    suite = load_suite(path)
    assert len(suite.students) >= 2
    assert path.read_text().startswith(f"# Run with: kdbench run leaderboards/{path.name}")


def test_tiny_suite_is_typed() -> None:
    suite = load_suite(ROOT / "leaderboards" / "tiny.toml")
    assert suite.teacher.arch["hidden_size"] == 128
    assert suite.budget.steps > 0 and isinstance(suite.budget.lr, float)
    assert suite.eval.tasks == ("kd_addition", "kd_compare")
    assert suite.method_config["kd"]["temperature"] == 2.0
    assert len(suite.hash) == 16


def test_hash_ignores_path_and_comments(write_suite) -> None:
    a = load_suite(write_suite(("# Run with", "# a comment\n# Run with"), name="a.toml"))
    b = load_suite(ROOT / "leaderboards" / "tiny.toml")
    assert a.hash == b.hash
    c = load_suite(write_suite(("steps = 200", "steps = 301"), name="c.toml"))
    assert c.hash != b.hash


@pytest.mark.parametrize(
    "old, new, field, words",
    [
        ("steps = 200", "steps = -5", "budget.steps", ">= 1"),
        ("steps = 200", 'steps = "many"', "budget.steps", "an integer"),
        ("lr = 3e-3\nwarmup", "lr = true\nwarmup", "budget.lr", "a number"),
        ("seeds = [0]", "seeds = []", "seeds", "non-empty"),
        (
            'tasks = ["addition", "compare"]',
            'tasks = ["additon"]',
            "data.tasks",
            "did you mean 'addition'",
        ),
        ("[budget]", "[budgte]", "budgte", "did you mean 'budget'"),
        (
            "num_heads = 4, intermediate_size = 192",
            "num_heads = 5, intermediate_size = 192",
            "students[0].arch.num_heads",
            "divide",
        ),
        ("cpus_per_job = 1", "cpus_per_job = 0", "resources.cpus_per_job", ">="),
    ],
)
def test_bad_input_names_file_and_field(write_suite, old, new, field, words) -> None:
    path = write_suite((old, new))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.field == field
    msg = str(err.value)
    assert msg.startswith(f"{path}: {field}: ") and words in msg and "\n" not in msg


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(bad)


def test_model_needs_source_or_arch(write_suite) -> None:
    path = write_suite(
        (
            'name = "student-0.1M"\narch = { hidden_size = 64, num_layers = 2, '
            "num_heads = 4, intermediate_size = 192 }",
            'name = "x"',
        )
    )
    with pytest.raises(SuiteError, match=r"students\[0\]\.source: give exactly one"):
        load_suite(path)
