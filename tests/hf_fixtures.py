"""Small Hugging Face-format models, transfer data and an lm-eval task, built offline.

What a research group brings to kdbench, shrunk to seconds on a CPU:

- :func:`bpe_tokenizer`: a byte-level BPE tokenizer trained with ``tokenizers`` on generated
  text, with ``<pad>``/``<s>``/``</s>`` and a chat template (:data:`CHAT_TEMPLATE`);
- :func:`save_model`: a randomly initialised Llama, GPT-2 or Qwen2 causal LM saved with
  ``save_pretrained`` beside the tokenizer (what ``from_pretrained`` reads from a Hub snapshot);
- :func:`write_transfer_jsonl` / :func:`write_chat_jsonl`: transfer data in prompt/response and
  in chat ``messages`` form;
- :func:`write_task`: a local lm-eval task (``dataset_path: json`` over a JSONL file of
  questions) scored by exact match, in a folder an ``[eval] include`` can name.

:func:`hf_world` builds all of it under one folder (a session fixture in conftest).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

# A minimal ChatML-style template (Qwen's form): what ``apply_chat_template`` renders.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]


def qa_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs of a small word-arithmetic world: the text the tokenizer is
    trained on, the transfer data and the evaluation questions are drawn from it."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if rng.random() < 0.5:
            out.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
        else:
            big = "first" if a > b else "second" if b > a else "neither"
            out.append((f"Which is larger, {a} or {b}?", f"The {big} one."))
    return out


def bpe_tokenizer(text: str, vocab: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``text``, with a chat template."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text.splitlines(), trainer)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    out.chat_template = CHAT_TEMPLATE
    return out


ARCHS = ("llama", "gpt2", "qwen2")


def save_model(
    folder: Path,
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = 32,
    layers: int = 2,
    arch: str = "llama",
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """A randomly initialised causal LM of class ``arch`` (llama, gpt2 or qwen2) with the
    tokenizer, written with ``save_pretrained`` into ``folder``."""
    import torch

    torch.manual_seed(seed)
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=2, n_positions=max_length, **ids)
        model = GPT2LMHeadModel(config)
    else:
        cls_cfg, cls = (
            (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
        )
        config = cls_cfg(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=max_length,
            **ids,
        )
        model = cls(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_transfer_jsonl(path: Path, n: int = 48, seed: int = 1) -> Path:
    """Prompt/response transfer data: ``{"prompt": ..., "response": ...}`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": q + " ", "response": a} for q, a in qa_pairs(n, seed)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_chat_jsonl(path: Path, n: int = 48, seed: int = 2) -> Path:
    """Chat transfer data: ``{"messages": [system, user, assistant]}`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in qa_pairs(n, seed)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_task(folder: Path, name: str = "word_math", n: int = 12, seed: int = 3) -> Path:
    """A local lm-eval generation task over a JSONL file (``dataset_path: json``), scored by
    exact match of the answer; returns the folder (what ``[eval] include`` names)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in qa_pairs(n, seed))
    )
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}} "\n'
        'doc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n", "</s>", "<|im_end|>"]\n  do_sample: false\n'
        "  max_gen_toks: 16\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return folder


def train_teacher(folder: Path, steps: int = 300, seed: int = 0) -> Path:
    """Teach the model in ``folder`` the word-arithmetic world in the two forms kdbench feeds
    it: plain (prompt ``"Q "`` and target ``"A</s>"``, tokenised apart as
    :func:`kdbench.transfer.encode` does, which is also :func:`write_task`'s prompt) and chat
    (the template's rendered prompt, then ``"A<|im_end|>"``), so it scores above zero on the
    task in either form and the board has retention to rank. A few hundred AdamW steps on a
    CPU: seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    rows = []
    for i, (q, a) in enumerate(qa_pairs(600, seed + 10)):
        if i % 2:
            prompt, target = q + " ", a + tokenizer.eos_token
        else:
            chat = [{"role": "user", "content": q}]
            prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            target = a + "<|im_end|>"
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        rows.append(ids + tokenizer(target, add_special_tokens=False)["input_ids"])
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = labels[i, : len(row)] = torch.tensor(row)
    mask = (labels != -100).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (32,), generator=gen)
        loss = model(input_ids=input_ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class HFWorld:
    """Paths of a built world: models (``teacher``, trained by :func:`train_teacher`;
    ``student``, ``gpt2``, ``qwen2`` and ``other`` with a different vocabulary, untrained), data
    files and the task folder."""

    teacher: Path
    student: Path
    gpt2: Path
    qwen2: Path
    other: Path
    transfer: Path
    chat: Path
    tasks: Path


def hf_world(root: Path) -> HFWorld:
    text = "\n".join(f"{q} {a}" for q, a in qa_pairs(400, 0))
    shared = bpe_tokenizer(text, 400)
    other = bpe_tokenizer(text.replace(" is ", " equals "), 380)
    return HFWorld(
        teacher=train_teacher(save_model(root / "teacher", shared, 48, 4, "llama")),
        student=save_model(root / "student", shared, 24, 2, "llama", seed=1),
        gpt2=save_model(root / "gpt2", shared, 24, 2, "gpt2", seed=2),
        qwen2=save_model(root / "qwen2", shared, 24, 2, "qwen2", seed=3),
        other=save_model(root / "other", other, 24, 2, "llama", seed=4),
        transfer=write_transfer_jsonl(root / "data" / "transfer.jsonl"),
        chat=write_chat_jsonl(root / "data" / "chat.jsonl"),
        tasks=write_task(root / "tasks"),
    )
