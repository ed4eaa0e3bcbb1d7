"""The cross-tokenizer machinery: paired encodings, character offsets, vocabulary twins,
the two position pairings and the teacher's probabilities from full or top-k logits."""

from __future__ import annotations

import pytest
import torch

from kdbench.config import DataSpec
from kdbench.cross_tokenizer import (
    index_pairs,
    paired_batch,
    sorted_l1,
    span_pairs,
    teacher_probs,
    teacher_view,
    vocab_map,
)
from kdbench.losses import IGNORE, topk_signals
from kdbench.signals import TeacherSignals
from kdbench.tokenizer import char_tokenizer, chunk_tokenizer
from kdbench.transfer import transfer_examples

DATA = DataSpec(kind="synthetic", tasks=("add2", "noisy_compare"), n_per_task=6, max_length=32)


@pytest.fixture(scope="module")
def paired():
    examples = transfer_examples(DATA)
    return examples, paired_batch(examples, chunk_tokenizer(), char_tokenizer(), DATA)


def _completion(tokenizer, ids, labels):
    return tokenizer.decode([int(i) for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_both_encodings_hold_the_same_completions(paired):
    examples, batch = paired
    chunk, char = chunk_tokenizer(), char_tokenizer()
    assert len(batch) == len(examples)
    for i in range(len(batch)):
        ours = _completion(chunk, batch.student.input_ids[i], batch.student.labels[i])
        theirs = _completion(char, batch.teacher.input_ids[i], batch.teacher.labels[i])
        assert ours == theirs and ours
    # the chunk tokenizer needs fewer tokens for the same numbers
    assert (batch.student.labels != IGNORE).sum() < (batch.teacher.labels != IGNORE).sum()


def test_offsets_are_the_character_spans_of_the_completion_tokens(paired):
    _, batch = paired
    chunk = chunk_tokenizer()
    for i in range(len(batch)):
        counted = (batch.student.labels[i] != IGNORE).nonzero().flatten()
        text = _completion(chunk, batch.student.input_ids[i], batch.student.labels[i])
        spans = batch.offsets[i, counted].tolist()
        pieces = [text[a:b] for a, b in spans]
        assert "".join(pieces) == text
        assert pieces == [chunk.decode([int(t)]) for t in batch.student.input_ids[i, counted]]
        prompt = (batch.student.labels[i] == IGNORE) & (batch.student.attention_mask[i] == 1)
        assert (batch.offsets[i, prompt] == -1).all()


def test_vocab_map_pairs_tokens_with_the_same_text():
    char, chunk = char_tokenizer(), chunk_tokenizer()
    twin = vocab_map(char, chunk)
    assert twin.shape == (len(char),)
    for token, i in char.get_vocab().items():
        assert chunk.convert_ids_to_tokens(int(twin[i])) == token
    one = vocab_map(char, char)
    assert one.tolist() == list(range(len(char)))


def test_rows_carry_the_teacher_rows_and_the_teacher_view_picks_them(paired):
    _, batch = paired
    rows = batch.rows(torch.tensor([0, 3]))
    view = teacher_view(rows)
    assert view["input_ids"] is rows["teacher_input_ids"]
    assert rows["offsets"].shape[:2] == rows["input_ids"].shape
    assert rows["teacher_offsets"].shape[:2] == rows["teacher_input_ids"].shape
    assert teacher_view({"input_ids": 1}) == {"input_ids": 1}


def test_span_pairs_have_read_the_same_text(paired):
    _, batch = paired
    chunk, char = chunk_tokenizer(), char_tokenizer()
    rows = batch.rows(torch.arange(len(batch)))
    pairs = span_pairs(rows)
    # a character-level teacher has a boundary wherever the student has one: all pair
    assert len(pairs) == int((rows["labels"][:, 1:] != IGNORE).sum())
    for r, s, t in zip(pairs.rows, pairs.student, pairs.teacher, strict=True):
        seen_s = _completion(chunk, rows["input_ids"][r, : s + 1], rows["labels"][r, : s + 1])
        seen_t = _completion(
            char, rows["teacher_input_ids"][r, : t + 1], rows["teacher_labels"][r, : t + 1]
        )
        assert seen_s == seen_t


def test_index_pairs_stop_at_the_shorter_completion(paired):
    _, batch = paired
    rows = batch.rows(torch.arange(4))
    pairs = index_pairs(rows)
    n_s = (rows["labels"][:, 1:] != IGNORE).sum(1)
    n_t = (rows["teacher_labels"][:, 1:] != IGNORE).sum(1)
    assert len(pairs) == int(torch.minimum(n_s, n_t).sum())
    # one tokenizer: each position with itself
    one = {"labels": rows["labels"]}
    same = index_pairs(one)
    assert torch.equal(same.student, same.teacher)
    assert torch.equal(span_pairs(one).student, same.student)


def test_sorted_l1_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.1, 0.6, 0.2, 0.1]])  # sorted: 0.6 0.2 0.1 0.1; p padded: .7 .2 .1 0
    assert sorted_l1(p, q).item() == pytest.approx(0.1 + 0.0 + 0.0 + 0.1)
    assert sorted_l1(p, p[:, [2, 0, 1]]).item() == pytest.approx(0.0)  # any permutation


def test_teacher_probs_from_top_k_spread_the_rest_and_match_full_at_k_equal_v():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 7)
    batch_pairs = index_pairs({"labels": torch.tensor([[IGNORE, 1, 2]])})
    full = TeacherSignals({"logits": logits}, {"logits"}, "m")
    exact = teacher_probs(full, batch_pairs, 7, 1.0)
    assert torch.allclose(exact, logits[0, :2].softmax(-1))
    every = TeacherSignals(topk_signals(logits, 7), {"logits"}, "m", "cache")
    assert torch.allclose(teacher_probs(every, batch_pairs, 7, 1.0), exact, atol=1e-6)
    top3 = TeacherSignals(topk_signals(logits, 3), {"logits"}, "m", "cache")
    coarse = teacher_probs(top3, batch_pairs, 7, 1.0)
    assert torch.allclose(coarse.sum(-1), torch.ones(2))
    kept = logits[0, :2].topk(3).indices
    assert torch.allclose(coarse.gather(1, kept), exact.gather(1, kept), atol=1e-6)
    hot = teacher_probs(full, batch_pairs, 7, 2.0)
    assert torch.allclose(hot, (logits[0, :2] / 2).softmax(-1))
