"""The teacher's generations on the transfer set: greedy, batched, cached once, never half read;
and ``encode`` with method-built targets and weights."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from kdbench import synthetic
from kdbench.config import DataSpec, GenerationSpec
from kdbench.generations import (
    as_target,
    cached_generations,
    end_of_turn_ids,
    generate_transfer,
    is_complete,
    load_generations,
    training_examples,
)
from kdbench.losses import IGNORE
from kdbench.methods import Method
from kdbench.models import build_llama, default_tokenizer, load_pretrained, save
from kdbench.transfer import encode

DATA = DataSpec(tasks=("addition", "compare"), n_per_task=4, max_length=32)


def noisy_teacher(folder: Path, seed: int = 0) -> Path:
    """A tiny model with large random weights: varied greedy outputs, some ending in "\\n"."""
    tok = default_tokenizer()
    model = build_llama(
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_length": 64}, tok, 0
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    save(model, tok, folder)
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return noisy_teacher(tmp_path_factory.mktemp("teacher") / "t")


def _single_greedy(model, tok, prompt: str, max_new_tokens: int) -> str:
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id
    )
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return text[: text.index("\n") + 1] if "\n" in text else text


def test_generations_equal_single_prompt_greedy(teacher: Path) -> None:
    records = generate_transfer(teacher, DATA, max_new_tokens=19, batch_size=3)
    examples = synthetic.transfer_set(list(DATA.tasks), DATA.n_per_task, seed=0)
    assert [r["prompt"] for r in records] == [ex["prompt"] for ex in examples]
    model, tok = load_pretrained(str(teacher))
    for r in records:
        assert r["text"] == _single_greedy(model, tok, r["prompt"], 19), r["prompt"]
        assert r["stopped"] == r["text"].endswith("\n")
        assert "\n" not in r["text"][:-1]
    assert any(r["stopped"] for r in records) and not all(r["stopped"] for r in records)
    assert all(as_target(r).endswith("\n") for r in records)


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_cache_is_reused_and_partial_or_corrupt_files_rebuilt(teacher: Path, tmp_path) -> None:
    path = cached_generations(teacher, DATA, tmp_path, max_new_tokens=8)
    assert path.parent == tmp_path / "generations" and path.suffix == ".jsonl"
    assert is_complete(path) and json.loads(path.with_suffix(".done").read_text())["count"] == 8
    good, stamp = path.read_text(), _stamp(path)

    assert cached_generations(teacher, DATA, tmp_path, max_new_tokens=8) == path
    assert _stamp(path) == stamp  # reused: not written again

    path.with_suffix(".done").unlink()  # a partial file: written, but no marker
    path.write_text(good[: len(good) // 2])
    with pytest.raises(FileNotFoundError, match="partial"):
        load_generations(path)
    assert cached_generations(teacher, DATA, tmp_path, max_new_tokens=8) == path
    assert path.read_text() == good and is_complete(path)

    path.write_text(good.replace('"stopped"', '"stoped"'))  # corrupt under a valid marker
    assert not is_complete(path)
    cached_generations(teacher, DATA, tmp_path, max_new_tokens=8)
    assert path.read_text() == good
    assert not list(path.parent.glob("*.tmp*"))


def test_a_damaged_marker_means_generate_again(teacher: Path, tmp_path) -> None:
    """A marker that is ``{}``, not JSON, or has a wrong count blesses nothing: the file is
    generated again, never read and never a crash (more cases: tests/bad_input/test_caches.py)."""
    path = cached_generations(teacher, DATA, tmp_path, max_new_tokens=8)
    marker, good = path.with_suffix(".done"), path.read_text()
    meta = json.loads(marker.read_text())
    for text in ("{}", "[]", "not json", json.dumps({**meta, "count": meta["count"] - 1})):
        marker.write_text(text)
        assert not is_complete(path)
        with pytest.raises(FileNotFoundError, match="partial"):
            load_generations(path)
        assert cached_generations(teacher, DATA, tmp_path, max_new_tokens=8) == path
        assert path.read_text() == good and json.loads(marker.read_text())["count"] == 8


def test_cache_key_follows_teacher_data_and_settings(teacher: Path, tmp_path) -> None:
    base = cached_generations(teacher, DATA, tmp_path, max_new_tokens=4)
    other_data = dataclasses.replace(DATA, n_per_task=3)
    assert cached_generations(teacher, other_data, tmp_path, max_new_tokens=4) != base
    assert cached_generations(teacher, DATA, tmp_path, max_new_tokens=5) != base
    retrained = noisy_teacher(tmp_path / "other", seed=1)
    assert cached_generations(retrained, DATA, tmp_path, max_new_tokens=4) != base
    # the teacher's content, not its folder, is the key: a copy reuses the file
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in teacher.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert cached_generations(copy, DATA, tmp_path, max_new_tokens=4) == base


@dataclasses.dataclass
class _Cfg:
    pass


def test_training_examples_align_generations_with_examples(teacher: Path, tmp_path) -> None:
    path = cached_generations(teacher, DATA, tmp_path, max_new_tokens=4)
    seen = {}

    def data(examples, generations, cfg):
        seen["pairs"] = [
            (ex["prompt"], g["prompt"]) for ex, g in zip(examples, generations, strict=True)
        ]
        return [{"prompt": g["prompt"], "target": as_target(g)} for g in generations]

    method = Method(
        name="x",
        family="chain_of_thought",
        config=_Cfg,
        loss=lambda *a: 0,
        signals=frozenset({"generations"}),
        data=data,
    )
    out = training_examples(method, _Cfg(), DATA, path)
    assert len(out) == 8 and all(a == b for a, b in seen["pairs"])
    with pytest.raises(ValueError, match="produced none"):
        training_examples(method, _Cfg(), DATA, None)
    with pytest.raises(ValueError, match="another data spec"):
        training_examples(method, _Cfg(), dataclasses.replace(DATA, n_per_task=5), path)


def test_encode_keeps_plain_examples_and_takes_targets_and_weights() -> None:
    tok = default_tokenizer()
    examples = synthetic.transfer_set(["addition", "compare"], 3, seed=0)
    batch = encode(examples, tok, 64, rationales=True)
    assert batch.weight.tolist() == [1.0] * 6 and batch.weight.dtype == torch.float32
    for i, ex in enumerate(examples):  # the old behaviour: prompt masked, ground truth learnt
        p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        t = tok(synthetic.target_text(ex, True), add_special_tokens=False)["input_ids"]
        n = len(p) + len(t)
        assert batch.input_ids[i, :n].tolist() == p + t
        assert batch.labels[i, :n].tolist() == [IGNORE] * len(p) + t
        assert batch.attention_mask[i].sum() == n and (batch.labels[i, n:] == IGNORE).all()

    custom = [
        {"prompt": "12+34=", "target": "#46\n", "weight": 0.25},
        {"prompt": "1+2=", "target": "3\n"},
    ]
    batch = encode(custom, tok, 64, rationales=True)
    assert batch.weight.tolist() == [0.25, 1.0]
    assert tok.decode(batch.labels[0][batch.labels[0] != IGNORE]) == "#46\n"
    assert tok.decode(batch.labels[1][batch.labels[1] != IGNORE]) == "3\n"


# --- a file transfer set: [generation] settings, chat prompts, EOS-ended targets -------------


def file_data(world, **kw) -> DataSpec:
    spec = {"kind": "jsonl", "path": str(world.transfer), "max_length": 40, "max_examples": 6}
    return DataSpec(**{**spec, "add_eos": True, **kw})


def test_stop_strings_cut_like_a_greedy_run_cut_by_hand(hf_world) -> None:
    data = file_data(hf_world)
    free = generate_transfer(hf_world.teacher, data, generation=GenerationSpec(max_new_tokens=12))
    text = next(r["text"] for r in free if len(r["text"]) > 8)
    stop = text[4:7]  # a multi-character stop string the teacher does write
    cut = generate_transfer(
        hf_world.teacher, data, generation=GenerationSpec(max_new_tokens=12, stop=(stop, "zzz"))
    )
    for a, b in zip(free, cut, strict=True):
        assert b["prompt"] == a["prompt"] and "task" in b
        if stop in a["text"]:
            assert b["text"] == a["text"][: a["text"].index(stop) + len(stop)] and b["stopped"]
            assert as_target(b) == b["text"][: -len(stop)]  # EOS, not the stop, ends the target
        else:
            assert b["text"] == a["text"] and as_target(b) == b["text"]


def test_the_default_budget_fits_each_prompt_in_max_length(hf_world) -> None:
    # an untrained model of the same tokenizer as the teacher: it writes to the end of its
    # budget (the trained teacher stops early at its EOS)
    data = file_data(hf_world, max_examples=None)
    _, tok = load_pretrained(str(hf_world.student))
    records = generate_transfer(hf_world.student, data, batch_size=16)
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in records]
    for r, n in zip(records, lengths, strict=True):
        assert 1 <= r["tokens"] <= data.max_length - n
    # each batch its own budget: the shorter prompts' batch got more than the longest one's
    assert max(r["tokens"] for r in records) > data.max_length - max(lengths)


def test_chat_prompts_are_rendered_and_the_end_of_turn_stops(hf_world) -> None:
    data = dataclasses.replace(
        file_data(hf_world), path=str(hf_world.chat), messages_field="messages", chat_template=True
    )
    model, tok = load_pretrained(str(hf_world.teacher))
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]
    records = generate_transfer(hf_world.teacher, data, generation=GenerationSpec(max_new_tokens=6))
    for r in records:
        assert r["messages"][-1]["content"] == r["prompt"]  # the question, with its turns
        rendered = tok.apply_chat_template(
            r["messages"], tokenize=False, add_generation_prompt=True
        )
        enc = tok([rendered], return_tensors="pt", add_special_tokens=False)
        out = model.generate(
            **enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id
        )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        ends = {tok.eos_token_id, *end_of_turn_ids(tok)}
        end = next((i for i, t in enumerate(new) if t in ends), None)
        assert r["text"] == tok.decode(new[:end], skip_special_tokens=True)
        assert r["stopped"] == (end is not None)


def test_sampling_is_seeded_and_the_cache_key_follows_the_spec(hf_world, tmp_path) -> None:
    data = file_data(hf_world)
    hot = GenerationSpec(max_new_tokens=8, do_sample=True, temperature=1.5)
    a = generate_transfer(hf_world.teacher, data, generation=hot)
    assert a == generate_transfer(hf_world.teacher, data, generation=hot)
    greedy = GenerationSpec(max_new_tokens=8)
    assert a != generate_transfer(hf_world.teacher, data, generation=greedy)
    paths = {
        cached_generations(hf_world.teacher, data, tmp_path, generation=g)
        for g in (hot, greedy, GenerationSpec(max_new_tokens=8, stop=("\n\n",)), greedy)
    }
    assert len(paths) == 3
