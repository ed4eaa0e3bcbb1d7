"""Tests for kdbench.fidelity: the three metrics on hand-computed inputs, the teacher's
reference on real lm-eval tasks with tiny models, and the board's fidelity columns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kdbench import fidelity as F
from kdbench import store
from kdbench.config import EvalSpec
from kdbench.leaderboard import format_table, leaderboard, run_fidelity
from kdbench.models import build_llama, default_tokenizer, save

ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
SPEC = EvalSpec(tasks=("kd_addition", "kd_compare"), limit=4, batch_size=3)


# --------------------------------------------------------------------------- the metrics


def test_ece_by_hand() -> None:
    # bins (0.9, 1]: two questions, accuracy 0.5, confidence 0.95 -> 2/4 * 0.45
    # (0.5, 0.6]: one, right at 0.55 -> 1/4 * 0.45; (0.2, 0.3]: one, wrong at 0.25 -> 1/4 * 0.25
    ece = F.expected_calibration_error([0.95, 0.95, 0.55, 0.25], [1, 0, 1, 0])
    assert ece == pytest.approx(0.225 + 0.1125 + 0.0625)
    # a bin's upper edge belongs to it: 0.3 is in (0.2, 0.3], 0.31 in (0.3, 0.4]
    assert F.expected_calibration_error([0.3, 0.31], [1, 0]) == pytest.approx((0.7 + 0.31) / 2)
    # confidence 0 falls in the first bin; a calibrated model scores 0
    assert F.expected_calibration_error([0.0, 1.0, 1.0], [0, 1, 1]) == 0.0
    # one bin: |mean accuracy - mean confidence|
    assert F.expected_calibration_error([0.2, 0.9], [1, 1], bins=1) == pytest.approx(0.45)


@pytest.mark.parametrize(
    ("confidence", "correct", "field"),
    [([], [], "confidence"), ([0.5], [1, 0], "correct"), ([1.5], [1], "confidence"),
     ([0.5], [2.0], "correct"), ([math.nan], [1], "confidence")],
)  # fmt: skip
def test_ece_refuses_bad_input(confidence, correct, field) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        F.expected_calibration_error(confidence, correct)


def test_ratio_stderr_by_hand() -> None:
    # r = 3/4; residuals 1 - 0.75 and 2 - 2.25; sqrt(2/1 * 0.125) / 4
    assert F.ratio_stderr([1, 2], [1, 3]) == pytest.approx(0.125)
    assert F.ratio_stderr([1], [3]) is None  # one document: no spread to measure


def test_kl_and_agreement_by_hand() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])
    q = torch.tensor([[0.25, 0.25, 0.5], [0.4, 0.4, 0.2]])
    t, s = p.log(), q.log()
    full = F.kl_full(t, s)
    kl2 = 0.7 * math.log(0.7 / 0.4) + 0.2 * math.log(0.2 / 0.4) + 0.1 * math.log(0.1 / 0.2)
    assert full.tolist() == pytest.approx([math.log(2), kl2])  # a 0 of the teacher adds 0
    assert F.kl_full(t, t).tolist() == [0.0, 0.0]
    # teacher argmax 0 on both rows (a tie: the first index); the student: 2, then 0 (a tie)
    assert F.top1_agreement(t.argmax(-1), s).tolist() == [0.0, 1.0]

    # top-1 plus a rest bucket: 0.7 ln(0.7/0.4) + 0.3 ln(0.3/0.6) on the second row
    values, ids = torch.topk(t, 1)
    rest = F._rest_logp(t, ids)
    topk = F.kl_topk(ids, values, rest, s)
    assert topk[1].item() == pytest.approx(0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6))
    assert (topk <= full + 1e-6).all()  # coarsening never raises a KL (equal on row 2)
    values, ids = torch.topk(t, 3)  # k = the vocabulary: the full KL
    assert F.kl_topk(ids, values, F._rest_logp(t, ids), s).tolist() == pytest.approx(full.tolist())


def test_reference_pairs_from_lm_eval_samples() -> None:
    results = {
        "configs": {
            "mc": {"output_type": "multiple_choice"},
            "gen": {"output_type": "generate_until"},
            "ppl": {"output_type": "loglikelihood_rolling"},
        },
        "samples": {
            "mc": [
                {"doc_id": 0, "target": 1, "arguments": [("Q:", " a"), ("Q:", " b")]},
                {"doc_id": 0, "target": 1, "arguments": [("Q:", " a"), ("Q:", " b")]},
                {"doc_id": 1, "target": "a", "arguments": [("R:", " a"), ("R:", " b")]},
            ],
            "gen": [
                {"doc_id": 3, "arguments": [("1+1=", {"until": ["\n"]})], "resps": [["2"]]},
                {"doc_id": 4, "arguments": [("2+2=", {})], "resps": [[""]]},  # empty: none
            ],
            "ppl": [{"doc_id": 0, "arguments": [("text",)]}],
        },
    }
    pairs, skipped = F.reference_pairs(results)
    assert pairs == {"mc": [(0, "Q:", " b"), (1, "R:", " a")], "gen": [(3, "1+1=", "2")]}
    assert set(skipped) == {"ppl"} and "loglikelihood_rolling" in skipped["ppl"]


def test_model_inputs_keep_the_continuation_positions() -> None:
    assert F.model_inputs(([1, 2, 3], [4, 5]), None) == ([1, 2, 3, 4], 2)
    assert F.model_inputs(([1, 2, 3], [4, 5]), 3) == ([2, 3, 4], 2)
    assert F.model_inputs(([1], [4, 5, 6]), 2) == ([4, 5], 2)  # the context is cut first


def test_ece_rows_per_task_and_group() -> None:
    samples = [
        {"task": "a", "doc_id": 0, "correct": 1.0, "confidence": 0.95},
        {"task": "a", "doc_id": 1, "correct": 0.0, "confidence": 0.95},
        {"task": "b", "doc_id": 0, "correct": 1.0, "confidence": 0.55},
        {"task": "b", "doc_id": 1, "correct": 1.0, "confidence": None},  # left out
        {"task": "c", "doc_id": 0, "correct": 3.5, "confidence": 0.5},  # not in [0, 1]
    ]
    rows = {r["task"]: r for r in F.ece_rows(samples, {"g": ["a", "b"], "a": ["a"]})}
    assert set(rows) == {"a", "b", "g"}
    assert rows["a"]["value"] == pytest.approx(0.45)
    assert rows["b"]["value"] == pytest.approx(0.45)
    assert rows["g"]["value"] == pytest.approx(
        F.expected_calibration_error([0.95, 0.95, 0.55], [1, 0, 1])
    )
    assert all(r["metric"] == "ece" and not r["is_primary"] and not r["higher_is_better"]
               for r in rows.values())  # fmt: skip


# --------------------------------------------------------------------------- the reference


@pytest.fixture(scope="module")
def models():
    tok = default_tokenizer()
    arch = {**ARCH, "max_length": 64}
    return build_llama(arch, tok, seed=0), build_llama(arch, tok, seed=1), tok


@pytest.fixture(scope="module")
def reference(models) -> F.Reference:
    teacher, _, tok = models
    return F.build_reference(teacher, tok, SPEC, "cpu")


def test_reference_tokens(reference: F.Reference, models) -> None:
    teacher, _, tok = models
    assert reference.topk == 0 and reference.vocab_size == len(tok)  # 25 tokens: kept whole
    assert set(reference.tasks) == {"kd_addition", "kd_compare"}
    assert reference.groups == {"kd_addition": ["kd_addition"], "kd_compare": ["kd_compare"]}
    compare = reference.tasks["kd_compare"]
    assert compare.doc_ids == [0, 1, 2, 3]
    # the gold choice after the bare prompt: max(a,b)= then its digits, minus the last token
    first = tok.decode(compare.inputs[0])
    assert first.startswith("max(") and "=" in first
    assert sum(compare.n_cont) == compare.logp.shape[0] == compare.argmax.shape[0]
    # a generation task: the teacher's own answer, every position one it reached greedily
    addition = reference.tasks["kd_addition"]
    assert addition.logp.shape == (sum(addition.n_cont), len(tok))
    assert torch.allclose(addition.logp.exp().sum(-1), torch.ones(addition.logp.shape[0]))


def test_the_teacher_against_itself_and_a_student(reference: F.Reference, models, tmp_path) -> None:
    teacher, student, tok = models
    path = tmp_path / "ref.pt"
    F.save_reference(reference, path)
    loaded = F.load_reference(path)
    rows, notes = F.fidelity_rows(teacher, tok, loaded, SPEC.batch_size, "cpu")
    assert notes == []
    by = {(r["task"], r["metric"]): r for r in rows}
    for task in ("kd_addition", "kd_compare"):
        assert by[(task, F.TOP1)]["value"] == 1.0 and by[(task, F.KL)]["value"] == 0.0
        assert by[(task, F.TOP1)]["higher_is_better"] and not by[(task, F.KL)]["higher_is_better"]
    rows, _ = F.fidelity_rows(student, tok, loaded, SPEC.batch_size, "cpu")
    assert len(rows) == 4 and all(not r["is_primary"] for r in rows)
    for r in rows:
        assert r["value"] >= 0 and (r["metric"] != F.TOP1 or r["value"] <= 1)
        assert r["stderr"] is not None and r["stderr"] >= 0
    assert any(r["metric"] == F.KL and r["value"] > 0 for r in rows)  # another model differs
    # the batch size does not change what is measured
    again, _ = F.fidelity_rows(student, tok, loaded, 64, "cpu")
    assert [r["value"] for r in again] == pytest.approx([r["value"] for r in rows])


def test_topk_reference_for_a_large_vocabulary(models, monkeypatch) -> None:
    teacher, student, tok = models
    full = F.build_reference(teacher, tok, SPEC, "cpu")
    monkeypatch.setattr(F, "FULL_VOCAB_MAX", 8)  # the char vocabulary (25) counts as large
    monkeypatch.setattr(F, "TOPK", 4)
    top = F.build_reference(teacher, tok, SPEC, "cpu")
    assert top.topk == 4 and top.tasks["kd_compare"].logp is None
    assert top.tasks["kd_compare"].top_ids.shape[1] == 4
    self_rows, _ = F.fidelity_rows(teacher, tok, top, SPEC.batch_size, "cpu")
    assert {r["value"] for r in self_rows if r["metric"] == F.KL} == {0.0}
    exact = {(r["task"], r["metric"]): r["value"] for r in F.fidelity_rows(student, tok, full)[0]}
    bound = {(r["task"], r["metric"]): r["value"] for r in F.fidelity_rows(student, tok, top)[0]}
    for key, value in bound.items():
        if key[1] == F.KL:
            assert 0 <= value <= exact[key] + 1e-9  # a lower bound of the full KL
        else:
            assert value == exact[key]  # the teacher's argmax is kept exactly


def test_another_vocabulary_is_not_compared(reference: F.Reference) -> None:
    tok = default_tokenizer()
    tok.add_tokens(["<extra>"])
    other = build_llama({**ARCH, "max_length": 64}, tok, seed=2)
    rows, notes = F.fidelity_rows(other, tok, reference)
    assert rows == [] and "vocabulary differs" in notes[0]


def test_cached_reference_is_reused_and_a_damaged_one_rebuilt(models, tmp_path) -> None:
    teacher, _, tok = models
    folder = tmp_path / "teacher"
    save(teacher, tok, folder)
    path = F.cached_reference(str(folder), SPEC, tmp_path / "cache")
    assert path.parent == tmp_path / "cache" / "fidelity" and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert F.cached_reference(str(folder), SPEC, tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == stamp  # read, not built again
    other = EvalSpec(tasks=("kd_compare",), limit=4, batch_size=3)
    assert F.cached_reference(str(folder), other, tmp_path / "cache") != path  # another key
    path.write_bytes(b"not a reference")
    with pytest.raises(ValueError, match="not a readable fidelity reference"):
        F.load_reference(path)
    assert F.cached_reference(str(folder), SPEC, tmp_path / "cache") == path
    assert F.load_reference(path).tasks  # rebuilt


# --------------------------------------------------------------------------- the board


def _run(db: Path, run_id: str, method: str, score: float, fid: dict[str, float] | None) -> None:
    metrics = [{"task": "q", "metric": "acc", "value": score, "is_primary": True}]
    for metric, value in (fid or {}).items():
        metrics.append({"task": "q", "metric": metric, "value": value, "is_primary": False,
                        "higher_is_better": F.HIGHER_IS_BETTER[metric]})  # fmt: skip
    role = "teacher" if method == "teacher" else "student"
    run = {"run_id": run_id, "suite_hash": "s", "role": role, "method": method,
           "family": method, "student": "st", "seed": 0, "status": "ok"}  # fmt: skip
    store.write_run(db, run, metrics, {"params": 10})


def test_board_fidelity_columns_leave_the_ranking_alone(tmp_path: Path) -> None:
    plain, fid = tmp_path / "plain.duckdb", tmp_path / "fid.duckdb"
    rows = [
        ("t", "teacher", 0.9, {F.TOP1: 1.0, F.KL: 0.0, F.ECE: 0.02}),
        ("a", "kd", 0.6, {F.TOP1: 0.9, F.KL: 0.2, F.ECE: 0.10}),
        ("b", "sft", 0.7, {F.TOP1: 0.5, F.KL: 1.5, F.ECE: 0.30}),
    ]
    for db in (plain, fid):
        store.write_suite(db, "s", "s", "s.toml", {})
        for run_id, method, score, values in rows:
            _run(db, run_id, method, score, values if db == fid else None)
    with_fid, without = leaderboard(fid, "s"), leaderboard(plain, "s")
    same = ["method", "rank_label", "retention_avg"]
    assert with_fid[same].equals(without[same])  # non-primary rows: ranking untouched
    by = with_fid.set_index("method")
    assert by.loc["kd", F.TOP1] == 0.9 and by.loc["kd", f"{F.KL}_q"] == 0.2
    assert by.loc["sft", F.ECE] == 0.30 and list(by["teacher_ece"]) == [0.02] * 3
    assert without[F.TOP1].isna().all()

    text = format_table(with_fid)
    assert "ECE/teacher" in text.splitlines()[0] and "90.0%  0.200  0.100/0.020" in text
    assert "fidelity: top-1 agreement" in text
    assert "ECE/teacher" not in format_table(without)  # runs without fidelity: as before

    detail = run_fidelity(fid, "a")
    assert detail.to_dict("records") == [
        {"task": "q", F.TOP1: 0.9, F.KL: 0.2, F.ECE: 0.10, "teacher_ece": 0.02}
    ]
    assert run_fidelity(plain, "a").empty
