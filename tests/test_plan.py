"""Plan-time rules for cross-tokenizer students: which methods train them, which are refused
and why, in one line naming the file and the field."""

from __future__ import annotations

import pytest

from kdbench.config import SuiteError, load_suite
from kdbench.plan import plan


def _suite(write_suite, methods, student_methods=None, **edits):
    chunk = {
        "name": "chunky",
        "arch": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
        "tokenizer": "chunk",
    }
    if student_methods is not None:
        chunk["methods"] = student_methods
    return load_suite(write_suite({"methods": methods, "students[1]": chunk, **edits}))


def test_only_cross_tokenizer_methods_may_distil_into_another_vocabulary(write_suite) -> None:
    suite = _suite(write_suite, ["sft", "kd", "uld"])
    with pytest.raises(SuiteError) as err:
        plan(suite, fetch=False)
    text = str(err.value)
    assert err.value.field == "students[1]" and "\n" not in text
    assert "kd need a vocabulary shared with the teacher" in text
    assert "cross-tokenizer ones (gold, uld)" in text and "uld need" not in text


def test_a_students_methods_choose_its_jobs(write_suite) -> None:
    suite = _suite(write_suite, ["sft", "kd", "uld", "gold"], ["sft", "uld", "gold"])
    _, jobs = plan(suite, fetch=False)
    by_student: dict[str, set[str]] = {}
    for job in jobs:
        by_student.setdefault(job.student, set()).add(job.method)
    assert by_student["chunky"] == {"sft", "uld", "gold"}
    assert by_student[suite.students[0].name] == {"sft", "kd", "uld", "gold"}
    assert len(jobs) == (4 + 3) * len(suite.seeds)


@pytest.mark.parametrize(
    ("edits", "field"),
    [({"data.packing": True}, "data.packing"), ({"data.truncation": "drop"}, "data.truncation")],
)
def test_paired_rows_refuse_packing_and_dropping(write_suite, edits, field) -> None:
    suite = _suite(write_suite, ["sft", "uld"], ["sft", "uld"], **edits)
    with pytest.raises(SuiteError) as err:
        plan(suite, fetch=False)
    assert err.value.field in (field, "data.packing")  # packing: uld does not allow packed rows
    assert "\n" not in str(err.value)


def test_methods_without_teacher_signals_need_no_shared_vocabulary(write_suite) -> None:
    suite = _suite(write_suite, ["sft", "seqkd"])
    _, jobs = plan(suite, fetch=False)
    assert {j.method for j in jobs if j.student == "chunky"} == {"sft", "seqkd"}


def test_an_on_policy_cross_tokenizer_method_is_refused_for_another_vocabulary(
    write_suite, monkeypatch
) -> None:
    """Its samples would have to be re-tokenized for the teacher, which kdbench does not do:
    refused at plan time rather than failing in training."""
    import dataclasses

    from kdbench import methods as registry_module

    real = registry_module.registry()
    both = dataclasses.replace(real["gkd"], name="xgkd", cross_tokenizer=True)
    monkeypatch.setattr("kdbench.plan.registry", lambda: {**real, "xgkd": both})
    suite = _suite(write_suite, ["sft", "xgkd"])
    with pytest.raises(SuiteError) as err:
        plan(suite, fetch=False)
    assert err.value.field == "students[1]" and "on-policy sampling is not supported" in str(
        err.value
    )
