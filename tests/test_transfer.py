"""Tokenising the transfer set (:mod:`kdbench.transfer`): chat data rendered with the
tokenizer's chat template, EOS appended to every target of a file or dataset, prompt tokens
never in the loss, truncation counted (and dropping), packing; and a suite's hash that does not
depend on where the checkout or the data file is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomli_w
import torch

from kdbench.config import DataSpec, SuiteError, load_suite, parse_suite
from kdbench.data_sources import DataError
from kdbench.losses import IGNORE
from kdbench.models import default_tokenizer, load_tokenizer
from kdbench.plan import plan
from kdbench.transfer import (
    describe_truncation,
    encode,
    encode_examples,
    render,
    transfer_batch,
    transfer_examples,
)

from .conftest import SHRINK, edit_suite, tiny_raw


def hf_suite(world, data: dict, path: Path, **edits):
    """The tiny suite on the hf_world models with ``data`` as its ``[data]`` table."""
    raw = edit_suite(
        tiny_raw(),
        {
            **SHRINK,
            "teacher": {"name": "t", "source": str(world.teacher)},
            "students": [{"name": "s", "source": str(world.student)}],
            "data": data,
            "methods": ["sft"],
            **edits,
        },
    )
    return parse_suite(raw, path)


CHAT = {"kind": "jsonl", "messages_field": "messages", "chat_template": True, "max_length": 96}


def _learnt(batch, i: int) -> list[int]:
    return batch.labels[i][batch.labels[i] != IGNORE].tolist()


def test_chat_records_render_with_the_template_and_learn_the_response_only(
    hf_world, tmp_path
) -> None:
    suite = hf_suite(hf_world, {**CHAT, "path": str(hf_world.chat)}, tmp_path / "s.toml")
    tok = load_tokenizer(str(hf_world.teacher))
    examples = transfer_examples(suite.data)
    ex = examples[0]
    assert [m["role"] for m in ex["messages"]] == ["system", "user"]
    assert ex["prompt"] == ex["messages"][1]["content"]  # the question
    batch = transfer_batch(suite.data, tok)
    prompt = tok.apply_chat_template(ex["messages"], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "Answer briefly." in prompt
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    n = int(batch.attention_mask[0].sum())
    assert batch.input_ids[0, : len(p)].tolist() == p
    assert (batch.labels[0, : len(p)] == IGNORE).all()  # no prompt token carries loss
    learnt = _learnt(batch, 0)
    assert len(p) + len(learnt) == n  # every other token is learnt
    # the response, the template's end of turn and the EOS token
    assert tok.decode(learnt) == ex["target"] + "<|im_end|>\n</s>"
    assert batch.truncation.cut == 0 and batch.truncation.rows == len(examples)


def test_prompt_response_data_with_the_chat_template_is_one_user_turn(hf_world, tmp_path) -> None:
    data = {"kind": "jsonl", "path": str(hf_world.transfer), "chat_template": True}
    suite = hf_suite(hf_world, {**data, "max_length": 96}, tmp_path / "s.toml")
    tok = load_tokenizer(str(hf_world.teacher))
    ex = transfer_examples(suite.data)[0]
    prompt, completion = render(ex, ex["target"], tok, True)
    assert prompt == f"<|im_start|>user\n{ex['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    assert completion == ex["target"] + "<|im_end|>\n"
    batch = transfer_batch(suite.data, tok)
    assert tok.decode(_learnt(batch, 0)) == completion + "</s>"


def test_eos_ends_file_targets_but_not_synthetic_ones(hf_world, tmp_path) -> None:
    tok = load_tokenizer(str(hf_world.teacher))
    on = hf_suite(hf_world, {"kind": "jsonl", "path": str(hf_world.transfer)}, tmp_path / "a")
    assert on.data.add_eos is True and on.data.eos
    off = hf_suite(
        hf_world,
        {"kind": "jsonl", "path": str(hf_world.transfer), "add_eos": False},
        tmp_path / "b",
    )
    examples = transfer_examples(on.data)
    with_eos, without = transfer_batch(on.data, tok), transfer_batch(off.data, tok)
    for i, ex in enumerate(examples[:5]):
        t = tok(ex["target"], add_special_tokens=False)["input_ids"]
        assert _learnt(with_eos, i) == [*t, tok.eos_token_id]
        assert _learnt(without, i) == t
    char = default_tokenizer()
    batch = transfer_batch(DataSpec(tasks=("addition",), n_per_task=4), char)
    assert char.eos_token_id not in batch.labels.tolist()[0]  # targets end with "\n" only
    assert char.decode(_learnt(batch, 0)).endswith("\n")


def test_eos_is_not_doubled_when_the_template_ends_the_turn_with_it(hf_world, tmp_path) -> None:
    tok = load_tokenizer(str(hf_world.teacher))
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    batch = encode(
        [{"prompt": "What is 1 plus 2? ", "target": "1 plus 2 is 3."}],
        tok,
        64,
        True,
        chat_template=True,
        add_eos=True,
    )
    assert tok.decode(_learnt(batch, 0)) == "1 plus 2 is 3.</s>"


def test_truncation_right_counts_and_drop_leaves_out(hf_world, tmp_path) -> None:
    tok = load_tokenizer(str(hf_world.teacher))
    data = {"kind": "jsonl", "path": str(hf_world.transfer), "max_length": 15}
    right = transfer_batch(hf_suite(hf_world, data, tmp_path / "a").data, tok)
    drop_spec = hf_suite(hf_world, {**data, "truncation": "drop"}, tmp_path / "b").data
    drop = transfer_batch(drop_spec, tok)
    examples = transfer_examples(drop_spec)
    lengths = [  # prompt and response are tokenised apart, the EOS token appended
        len(tok(e["prompt"], add_special_tokens=False)["input_ids"])
        + len(tok(e["target"], add_special_tokens=False)["input_ids"])
        + 1
        for e in examples
    ]
    longer = [n for n in lengths if n > 15]
    assert longer and len(longer) < len(lengths)
    r = right.truncation
    assert (r.policy, r.examples, r.cut, r.dropped, r.rows) == (
        "right",
        len(examples),
        len(longer),
        0,
        len(examples),
    )
    assert r.tokens_cut == sum(n - 15 for n in longer) and right.input_ids.shape[1] == 15
    d = drop.truncation
    assert (d.dropped, d.cut, d.rows) == (len(longer), 0, len(examples) - len(longer))
    assert len(drop) == d.rows and int(drop.attention_mask.sum(1).max()) <= 15
    for text in (describe_truncation(r), describe_truncation(d)):
        assert "\n" not in text and "max_length 15" in text
    assert f"{len(longer)} longer, cut on the right ({r.tokens_cut:,} tokens)" in (
        describe_truncation(r)
    )
    assert "dropped" in describe_truncation(d)


def test_a_prompt_that_fills_max_length_is_counted_as_left_with_no_target() -> None:
    tok = default_tokenizer()
    batch = encode(
        [{"prompt": "1+2+3+4+5=", "target": "15\n"}, {"prompt": "1=", "target": "1\n"}],
        tok,
        8,
        True,
    )
    assert batch.truncation.no_target == 1 and batch.truncation.cut == 1
    assert _learnt(batch, 0) == [] and "1 keep no response token" in describe_truncation(
        batch.truncation
    )
    with pytest.raises(DataError, match="every one of the 2 examples"):
        encode([{"prompt": "1+2+3+4+5=", "target": "15\n"}] * 2, tok, 8, True, truncation="drop")


# --- errors --------------------------------------------------------------------------------


def test_messages_need_the_chat_template_at_parse_time(hf_world, tmp_path) -> None:
    data = {"kind": "jsonl", "path": str(hf_world.chat), "messages_field": "messages"}
    with pytest.raises(SuiteError) as err:
        hf_suite(hf_world, data, tmp_path / "s.toml")
    assert err.value.field == "data.messages_field" and "chat_template = true" in str(err.value)
    with pytest.raises(SuiteError) as err:
        hf_suite(hf_world, {**CHAT, "path": str(hf_world.chat), "prompt_field": "q"}, tmp_path)
    assert err.value.field == "data.prompt_field" and "not both" in str(err.value)
    with pytest.raises(SuiteError) as err:
        hf_suite(hf_world, {"kind": "synthetic", "chat_template": True}, tmp_path / "s.toml")
    assert err.value.field == "data.chat_template"
    with pytest.raises(SuiteError) as err:
        hf_suite(hf_world, {"kind": "synthetic", "truncation": "left"}, tmp_path / "s.toml")
    assert err.value.field == "data.truncation" and "right, drop" in str(err.value)


def test_a_record_without_a_final_assistant_turn_is_refused_at_plan_time(
    hf_world, tmp_path
) -> None:
    rows = [json.loads(line) for line in hf_world.chat.read_text().splitlines()]
    rows[3]["messages"] = rows[3]["messages"][:2]  # system, user: no response
    bad = tmp_path / "chat.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = hf_suite(hf_world, {**CHAT, "path": "chat.jsonl"}, tmp_path / "s.toml")
    with pytest.raises(SuiteError) as err:
        plan(suite)
    assert err.value.field == "data.messages_field" and "\n" not in str(err.value)
    assert "record 3: 'messages' must end with an assistant turn" in str(err.value)


def test_a_tokenizer_without_a_chat_template_is_refused_at_plan_time(hf_world, tmp_path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(hf_world.teacher, plain)
    for f in plain.glob("*.jinja"):
        f.unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert not load_tokenizer(str(plain)).chat_template
    data = {"kind": "jsonl", "path": str(hf_world.transfer), "chat_template": True}
    suite = hf_suite(
        hf_world, data, tmp_path / "s.toml", teacher={"name": "t", "source": str(plain)}
    )
    with pytest.raises(SuiteError) as err:
        plan(suite)
    assert err.value.field == "data.chat_template" and "has no chat template" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no chat template"):  # and when encoding, all the same
        transfer_batch(suite.data, load_tokenizer(str(plain)))


# --- identity ------------------------------------------------------------------------------


def test_the_hash_does_not_depend_on_where_the_suite_and_its_data_are(hf_world, tmp_path) -> None:
    raw = edit_suite(
        tiny_raw(),
        {**SHRINK, "data": {"kind": "jsonl", "path": "data/transfer.jsonl", "max_length": 64}},
    )
    suites = []
    for where in ("checkout-a", "deep/checkout-b"):
        folder = tmp_path / where
        (folder / "data").mkdir(parents=True)
        shutil.copy(hf_world.transfer, folder / "data" / "transfer.jsonl")
        (folder / "suite.toml").write_text(tomli_w.dumps(raw))
        suites.append(load_suite(folder / "suite.toml"))
    a, b = suites
    assert a.data.path != b.data.path and Path(a.data.path).is_absolute()  # loaders: resolved
    assert a.hash == b.hash and a.identity()["data"]["path"] == "data/transfer.jsonl"
    c = load_suite_with(tmp_path / "checkout-a", raw, {"data.max_length": 65})
    assert c.hash != a.hash


def load_suite_with(folder: Path, raw: dict, edits: dict):
    path = folder / "edited.toml"
    path.write_text(tomli_w.dumps(edit_suite(raw, edits)))
    return load_suite(path)


def test_new_fields_at_their_defaults_keep_the_tiny_hash() -> None:
    from .conftest import TINY

    suite = load_suite(TINY)
    assert "generation" not in suite.identity()
    assert not {"add_eos", "chat_template", "truncation", "packing"} & set(suite.identity()["data"])
    edited = parse_suite(edit_suite(tiny_raw(), {"generation.max_new_tokens": 8}), TINY)
    assert edited.hash != suite.hash and edited.identity()["generation"]["max_new_tokens"] == 8
    for edit in ({"data.add_eos": True}, {"data.truncation": "drop"}):
        assert parse_suite(edit_suite(tiny_raw(), edit), TINY).hash != suite.hash


def test_encode_examples_uses_every_data_setting() -> None:
    tok = default_tokenizer()
    spec = DataSpec(tasks=("addition",), n_per_task=3, max_length=64, add_eos=True)
    examples = transfer_examples(spec)
    batch = encode_examples(examples, tok, spec)
    assert all(_learnt(batch, i)[-1] == tok.eos_token_id for i in range(3))
    assert torch.equal(batch.labels, encode(examples, tok, 64, True, add_eos=True).labels)


# --- packing -------------------------------------------------------------------------------


def test_packing_fills_rows_and_learns_responses_only() -> None:
    tok = default_tokenizer()
    spec = DataSpec(tasks=("addition", "compare"), n_per_task=6, max_length=32, packing=True)
    examples = transfer_examples(spec)
    plain = encode(examples, tok, 32, True)
    packed = transfer_batch(spec, tok)
    # every example once, each followed by EOS (a separator, not learnt: synthetic add_eos off)
    stream = []
    for i in range(len(plain)):
        n = int(plain.attention_mask[i].sum())
        stream += [*plain.input_ids[i, :n].tolist(), tok.eos_token_id]
    assert len(packed) == -(-len(stream) // 32) < len(plain)
    assert packed.attention_mask[:-1].all() and packed.input_ids.shape[1] == 32
    flat = packed.input_ids[packed.attention_mask.bool()].tolist()
    assert flat == stream
    learnt = packed.labels[packed.labels != IGNORE].tolist()
    assert learnt == plain.labels[plain.labels != IGNORE].tolist()  # no prompt token, no EOS
    assert packed.truncation.rows == len(packed) and packed.truncation.examples == len(plain)
    with_eos = encode(examples, tok, 32, True, add_eos=True, packing=True)
    assert (with_eos.labels == tok.eos_token_id).sum() == len(examples)  # now learnt
    with pytest.raises(ValueError, match="weight to be 1"):
        encode([{**examples[0], "weight": 0.5}], tok, 32, True, packing=True)


def test_packing_is_refused_for_methods_that_do_not_allow_it(tmp_path) -> None:
    from dataclasses import replace

    from kdbench.methods import registry
    from kdbench.plan import check_packing

    methods = ["sft", "kd", "fitnets", "seqkd"]
    raw = edit_suite(tiny_raw(), {**SHRINK, "data.packing": True, "methods": methods})
    suite = parse_suite(raw, tmp_path / "s.toml")
    with pytest.raises(SuiteError) as err:
        plan(suite)
    message = str(err.value)
    assert err.value.field == "data.packing" and "fitnets, seqkd do not allow packed" in message
    assert "sft" in message.split("allow it:")[1] and "\n" not in message  # the ones that do
    known = registry()
    check_packing(suite, [known["sft"], known["kd"]])  # token-level methods allow it
    fitnets = known["fitnets"]
    check_packing(suite, [replace(fitnets, allows_packing=True)])  # once declared: no error


def test_a_packed_batch_trains(tmp_path) -> None:
    from kdbench.config import Budget
    from kdbench.methods import registry
    from kdbench.models import build_llama
    from kdbench.train import train

    tok = default_tokenizer()
    spec = DataSpec(tasks=("addition",), n_per_task=8, max_length=32, packing=True)
    student = build_llama({"hidden_size": 16, "num_layers": 1, "num_heads": 2}, tok, 0)
    sft = registry()["sft"]
    stats = train(
        student, sft, sft.make_config(), transfer_batch(spec, tok), Budget(2, 2, 1e-2), 2, seed=0
    )
    assert stats["steps"] == 2 and stats["tokens"] > 0


def test_truncation_line_for_the_terminal(hf_world, tmp_path) -> None:
    from kdbench.transfer import truncation_line

    data = {"kind": "jsonl", "path": str(hf_world.transfer), "max_length": 15}
    suite = hf_suite(hf_world, data, tmp_path / "s.toml")
    line = truncation_line(suite.data, suite.teacher)
    assert line.startswith("transfer set: 48 examples, max_length 15: ") and "\n" not in line
