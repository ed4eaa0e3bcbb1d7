"""The teacher's generations on the transfer set: produced once per suite, cached on disk, read
by every training job of a method that declares the ``"generations"`` signal.

A generation is the teacher's greedy completion of a transfer prompt (batched, left-padded,
``model.generate(do_sample=False)``), stopped at the first ``"\\n"`` (the end of every target in
:mod:`kdbench.synthetic`). One JSON line per prompt::

    {"prompt": "347+285=", "task": "addition", "text": "7+5=12,4+8+1=13,3+2+1=6#632\\n",
     "stopped": true}

``text`` ends with ``"\\n"`` when ``stopped``; otherwise the teacher ran out of
``max_new_tokens`` (or emitted its end-of-sequence token) first. :func:`as_target` turns a
record into a training target that always ends with ``"\\n"``.

Cache: ``<cache root>/generations/<key>.jsonl`` where ``key`` hashes the teacher (content of
its folder's config, tokenizer and weight files; id, cached snapshot path and mtime for a Hub
id), the data spec and the generation settings. The file is written under a temporary name and
atomically renamed, then a marker ``<key>.done`` (count and sha256 of the file) is written the
same way: a file without a matching marker is partial or corrupt and is generated again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdbench import synthetic
from kdbench.config import DataSpec
from kdbench.disk_cache import sha256_file, write_atomic
from kdbench.models import load_pretrained
from kdbench.transfer import TRANSFER_SEED, Batch, encode, transfer_batch, transfer_examples

if TYPE_CHECKING:
    from kdbench.methods import Method

STOP = synthetic.EOS
BATCH_SIZE = 256  # prompts per ``generate`` call (speed only: not part of the cache key)
FORMAT = 1  # bump when the record format or the generation procedure changes
# files of a model folder that determine its generations (``kdbench_teacher.json`` is metadata)
_MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".tiktoken")


# --- generating -----------------------------------------------------------------------------


def stop_token_ids(tokenizer) -> list[int]:
    """Every token whose text contains ``"\\n"`` (one token for the char tokenizer; ``"\\n\\n"``,
    ``".\\n"``... for a Hub tokenizer), plus the end-of-sequence token."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    ids = [i for i, text in enumerate(texts) if STOP in text]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def _cut(text: str) -> tuple[str, bool]:
    """``text`` up to and including its first ``"\\n"``, and whether there was one."""
    i = text.find(STOP)
    return (text[: i + len(STOP)], True) if i >= 0 else (text, False)


@torch.no_grad()
def greedy_completions(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BATCH_SIZE
) -> list[tuple[str, bool]]:
    """Greedy completion of each prompt, cut after the first ``"\\n"``: ``(text, stopped)``.

    Prompts are batched by token length (little padding, sequences of a batch finish together),
    left-padded, and returned in the order given.
    """
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop = stop_token_ids(tokenizer)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out: list[tuple[str, bool]] = [("", False)] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [prompts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            ids = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = ids[:, enc["input_ids"].shape[1] :]
            for i, text in zip(
                idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                out[i] = _cut(text)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def default_max_new_tokens(data: DataSpec, tokenizer) -> int:
    """What fits after the longest transfer prompt in the suite's ``max_length``."""
    examples = transfer_examples(data)
    longest = max(
        len(tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]) for ex in examples
    )
    return max(1, data.max_length - longest)


def generate_transfer(
    teacher_path: str | Path,
    data: DataSpec,
    max_new_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> list[dict[str, Any]]:
    """The teacher's greedy generation for every prompt of the transfer set, in its order."""
    model, tokenizer = load_pretrained(str(teacher_path))
    if torch.cuda.is_available():
        model.cuda()
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(data, tokenizer)
    examples = transfer_examples(data)
    done = greedy_completions(
        model, tokenizer, [ex["prompt"] for ex in examples], max_new_tokens, batch_size
    )
    return [
        {"prompt": ex["prompt"], "task": ex["task"], "text": text, "stopped": stopped}
        for ex, (text, stopped) in zip(examples, done, strict=True)
    ]


# --- the cache ------------------------------------------------------------------------------


def teacher_fingerprint(teacher_path: str | Path) -> dict[str, Any]:
    """What identifies the teacher's weights: a content hash of a local folder's model and
    tokenizer files; for a Hub id, the id with the cached snapshot's path (it names the commit)
    and mtime (hashing gigabytes of weights on every run would cost more than it saves)."""
    path = Path(teacher_path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.iterdir()):
            if f.is_file() and f.suffix in _MODEL_SUFFIXES and f.name != "kdbench_teacher.json":
                h.update(f.name.encode() + b"\0")
                with f.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
        return {"folder_sha256": h.hexdigest()}
    out: dict[str, Any] = {"hub": str(teacher_path)}
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(str(teacher_path), "config.json")
    except Exception:  # not a valid repo id, or no hub library: the id alone
        config = None
    if isinstance(config, str):
        out.update(snapshot=config, mtime=os.stat(config).st_mtime)
    return out


def cache_key(teacher_path: str | Path, data: DataSpec, max_new_tokens: int) -> str:
    blob = {
        "teacher": teacher_fingerprint(teacher_path),
        "data": dataclasses.asdict(data),
        "generation": {
            "transfer_seed": TRANSFER_SEED,
            "do_sample": False,
            "stop": STOP,
            "max_new_tokens": max_new_tokens,
            "format": FORMAT,
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _marker(path: Path) -> Path:
    return path.with_suffix(".done")


def is_complete(path: Path) -> bool:
    """Whether ``path`` was written to the end: its marker exists and matches its content."""
    marker = _marker(path)
    if not (path.is_file() and marker.is_file()):
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == sha256_file(path)


def cached_generations(
    teacher_path: str | Path,
    data: DataSpec,
    root: str | Path,
    max_new_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> Path:
    """The JSONL file of the teacher's generations on the transfer set, generating it only when
    no complete file for this (teacher, data, settings) is cached under ``root``."""
    if max_new_tokens is None:
        from transformers import AutoTokenizer

        max_new_tokens = default_max_new_tokens(
            data, AutoTokenizer.from_pretrained(str(teacher_path))
        )
    folder = Path(root) / "generations"
    path = folder / f"{cache_key(teacher_path, data, max_new_tokens)}.jsonl"
    if is_complete(path):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    _marker(path).unlink(missing_ok=True)  # a stale marker must never bless the new file
    start = time.perf_counter()
    records = generate_transfer(teacher_path, data, max_new_tokens, batch_size)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    meta = {
        "count": len(records),
        "sha256": sha256_file(path),
        "teacher": str(teacher_path),
        "max_new_tokens": max_new_tokens,
        "stopped": sum(r["stopped"] for r in records),
        "wall_s": time.perf_counter() - start,
    }
    write_atomic(_marker(path), json.dumps(meta, indent=1))
    return path


def load_generations(path: str | Path) -> list[dict[str, Any]]:
    """Read a cached generations file; refuses one that was not written to the end."""
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path}: no complete generations file (missing or partial)")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def as_target(record: dict[str, Any]) -> str:
    """A generation as a training target: its text, ending with ``"\\n"`` (appended when the
    teacher was cut off, so a student trained on it still learns to stop)."""
    return record["text"] if record["stopped"] else record["text"] + STOP


# --- training data of a method --------------------------------------------------------------


def training_examples(
    method: Method, cfg: Any, data: DataSpec, generations: str | Path | None
) -> list[dict[str, Any]]:
    """``method.data(examples, generations, cfg)`` on the transfer set; ``generations[i]`` is the
    teacher's generation for ``examples[i]`` (empty when the method does not declare them)."""
    if method.data is None:
        raise ValueError(f"method {method.name!r} does not define training data")
    examples = transfer_examples(data)
    records: list[dict[str, Any]] = []
    if "generations" in method.signals:
        if generations is None:
            raise ValueError(
                f"method {method.name!r} trains on the teacher's generations, but the teacher "
                "stage produced none"
            )
        by_prompt = {r["prompt"]: r for r in load_generations(generations)}
        missing = [ex["prompt"] for ex in examples if ex["prompt"] not in by_prompt]
        if missing:
            raise ValueError(
                f"{generations}: no generation for {len(missing)} transfer prompts "
                f"(e.g. {missing[0]!r}); it was made for another data spec"
            )
        records = [by_prompt[ex["prompt"]] for ex in examples]
    return method.data(examples, records, cfg)


def method_batch(
    method: Method,
    cfg: Any,
    data: DataSpec,
    tokenizer,
    teacher_path: str | Path | None = None,
    cache: str | Path | None = None,
) -> Batch:
    """The encoded training set of ``method`` outside the pipeline (tests, conformance checks):
    the ground truth for a method without ``data``, else its examples, generating the
    teacher's generations under ``cache`` first when they are not cached yet. (In a suite the
    teacher stage makes them and ``train_job`` only reads them.)"""
    if method.data is None:
        return transfer_batch(data, tokenizer)
    path = None
    if "generations" in method.signals:
        if teacher_path is None or cache is None:
            raise ValueError(f"method {method.name!r} needs a teacher_path and a cache folder")
        path = cached_generations(teacher_path, data, cache)
    examples = training_examples(method, cfg, data, path)
    return encode(examples, tokenizer, data.max_length, data.rationales)
