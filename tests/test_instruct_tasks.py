"""The MiniLLM / DistiLLM evaluation sets (``leaderboards/tasks/minillm_*.yaml``): Rouge-L as
the protocol computes it, and the data read relative to the suite's folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def utils():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "instruct_utils", ROOT / "leaderboards" / "tasks" / "instruct_utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rouge_l_is_the_best_f_measure_over_references(utils) -> None:
    assert utils.rouge_l("the cat sat on the mat", ["the cat sat on the mat"]) == 100.0
    assert utils.rouge_l("completely different words", ["the cat sat"]) == 0.0
    # LCS "the cat mat" (3 of 6 reference and 3 of 4 prediction tokens): F = 2PR / (P + R)
    p, r = 3 / 4, 3 / 6
    assert utils.rouge_l("the cat a mat", ["the cat sat on the mat"]) == pytest.approx(
        100 * 2 * p * r / (p + r)
    )
    assert utils.rouge_l("a b", ["x y", "a b"]) == 100.0  # the best reference counts
    # Porter stemming, as MiniLLM's rouge_metric.py: "running" matches "runs"
    assert utils.rouge_l("dogs running", ["dog runs"]) == 100.0
    doc = {"references": ["an answer"]}
    assert utils.process_results(doc, ["  an answer \n"]) == {"rougeL": 100.0}


def test_the_data_is_read_beside_the_suite(utils, tmp_path: Path) -> None:
    data = tmp_path / "data" / "minillm" / "vicuna" / "valid.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(
        json.dumps({"prompt": "Q1", "output": "A1"})
        + "\n"
        + json.dumps({"prompt": "Q2", "output": ["A2", "B2"]})
        + "\n"
    )
    split = utils.dataset("data/minillm/vicuna/valid.jsonl", suite_dir=str(tmp_path))["test"]
    assert split["prompt"] == ["Q1", "Q2"] and split["references"] == [["A1"], ["A2", "B2"]]
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        utils.dataset("data/minillm/missing.jsonl", suite_dir=str(tmp_path))


def test_the_prepare_script_uses_minillm_templates() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare", ROOT / "leaderboards" / "dolly" / "prepare.py"
    )
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    plain = prepare.prompt_of({"instruction": "Name a colour.", "input": ""})
    assert plain.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    with_input = prepare.prompt_of({"instruction": "Sum.", "input": "1 2"})
    assert "### Input:\n1 2\n\n### Response:\n" in with_input
    assert prepare.prompt_of({"prompt": "A<n>B"}) == "A\nB"
