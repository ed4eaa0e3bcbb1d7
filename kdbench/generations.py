"""The teacher's generations on the transfer set: produced once per suite, cached on disk, read
by every training job of a method that declares the ``"generations"`` signal.

A generation is the teacher's completion of a transfer prompt (rendered with the chat template
when ``[data] chat_template`` is on), decoded as ``[generation]`` says
(:class:`kdbench.config.GenerationSpec`: greedy by default, or sampled; batched, left-padded,
on the GPU when there is one) and stopped at the first stop string (``"\\n"`` for the synthetic
set, the end of every target in :mod:`kdbench.synthetic`; none by default otherwise), at the
tokenizer's EOS token or at the chat template's end-of-turn token. One JSON line per prompt::

    {"prompt": "347+285=", "task": "addition", "text": "7+5=12,4+8+1=13,3+2+1=6#632\\n",
     "stopped": true, "target": "7+5=12,4+8+1=13,3+2+1=6#632\\n"}

``text`` is the decoded completion, up to and including the stop string that ended it;
``stopped`` says the teacher reached what ends a target in the suite (a stop string; with
``[data] add_eos`` also EOS or the end-of-turn token) rather than running out of
``max_new_tokens`` (or, on the synthetic set, emitting EOS first); ``tokens`` counts the tokens
generated; chat records also keep their ``messages``. ``target``
(:func:`as_target`) is the generation as a training target, ending with what marks the end of
a target in the suite: with ``[data] add_eos`` (files and datasets) the stop string is left
out, since :mod:`kdbench.transfer` appends the EOS token; without it (the synthetic set) the
target ends with the stop string, appended when the teacher was cut off, so a student trained
on it still learns to stop.

Cache: ``<cache root>/generations/<key>.jsonl`` where ``key`` hashes the teacher (content of
its folder's config, tokenizer and weight files; id, cached snapshot path and mtime for a Hub
id), the data spec (its identity and a file's content hash) and the generation settings. The
file is written under a temporary name and atomically renamed, then a marker ``<key>.done``
(count and sha256 of the file) is written the same way: a file without a matching marker (none,
not JSON, ``{}``, another checksum or count) or with a line that is not a record is partial or
corrupt and is generated again, never read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdbench import synthetic
from kdbench.config import DataSpec, GenerationSpec, data_identity
from kdbench.data_sources import fingerprint
from kdbench.disk_cache import remove_entry, sha256_file, write_atomic
from kdbench.models import load_pretrained
from kdbench.transfer import (
    TRANSFER_SEED,
    Batch,
    encode_examples,
    prompt_text,
    render,
    transfer_batch,
    transfer_examples,
)

if TYPE_CHECKING:
    from kdbench.methods import Method

STOP = synthetic.EOS
BATCH_SIZE = 256  # prompts per ``generate`` call (speed only: not part of the cache key)
BATCH_TOKENS = 1 << 17  # at most this many (prompt + new) tokens per call: bounds the KV cache
FORMAT = 2  # bump when the record format or the generation procedure changes
# files of a model folder that determine its generations (``kdbench_teacher.json`` is metadata)
_MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".tiktoken")


# --- generating -----------------------------------------------------------------------------


def stop_token_ids(tokenizer, stops: tuple[str, ...] = (STOP,)) -> list[int]:
    """Every token whose text contains a stop string (``"\\n"``: one token for the char
    tokenizer; ``"\\n\\n"``, ``".\\n"``... for a Hub tokenizer), plus the end-of-sequence
    token."""
    ids = []
    if stops:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ids = [i for i, text in enumerate(texts) if any(s in text for s in stops)]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special tokens a chat template closes an assistant turn with (``<|im_end|>``,
    ``<|eot_id|>``...): found by rendering a probe response and reading what follows it."""
    probe = "kdbench-probe"
    _, completion = render({"prompt": "hi"}, probe, tokenizer, True)
    tail = completion[completion.index(probe) + len(probe) :]
    special = set(tokenizer.all_special_ids)
    return [i for i in tokenizer(tail, add_special_tokens=False)["input_ids"] if i in special]


def _cut(text: str, stops: tuple[str, ...] = (STOP,)) -> tuple[str, bool]:
    """``text`` up to and including its first stop string, and whether there was one."""
    found = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    if not found:
        return text, False
    i, s = min(found)
    return text[: i + len(s)], True


def _batches(lengths: list[int], batch_size: int, row: Callable[[int], int]) -> list[list[int]]:
    """Prompt indices sorted by length, in batches of at most ``batch_size`` prompts and
    :data:`BATCH_TOKENS` tokens, ``row(prompt length)`` per sequence (little padding;
    sequences of a batch finish together)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and (
            len(out[-1]) < batch_size and (len(out[-1]) + 1) * row(lengths[i]) <= BATCH_TOKENS
        ):
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.no_grad()
def completions(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int | None,
    batch_size: int = BATCH_SIZE,
    *,
    spec: GenerationSpec | None = None,
    stops: tuple[str, ...] = (STOP,),
    end_ids: tuple[int, ...] = (),
    max_length: int | None = None,
    eos_ends: bool = False,
) -> list[tuple[str, bool, int]]:
    """The completion of each prompt, cut after its first stop string: ``(text, stopped,
    tokens)``, ``tokens`` being how many the teacher generated (up to its first stop token).

    Decoding follows ``spec`` (default: greedy); the model's own ``generation_config`` sampling
    and repetition settings are overridden. ``end_ids`` (an end-of-turn token) stop like EOS;
    ``stopped`` counts them (and EOS) only with ``eos_ends`` (where EOS ends a target).
    ``max_new_tokens`` None: each batch gets what fits in ``max_length`` after its longest
    prompt. Prompts are batched by token length, left-padded, and returned in the order given.
    """
    spec = spec or GenerationSpec()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop = sorted(set(stop_token_ids(tokenizer, stops)) | set(end_ids))
    ends = set(end_ids) | ({tokenizer.eos_token_id} - {None})
    # a one-byte stop is inside one token: the stop tokens catch it; longer ones may span tokens
    spanning = [s for s in stops if len(s.encode()) > 1]
    decoding: dict[str, Any] = {"do_sample": spec.do_sample, "repetition_penalty": 1.0}
    if spec.do_sample:  # top_k 0: off (a model's generation_config may set one)
        decoding.update(temperature=spec.temperature, top_p=spec.top_p, top_k=0)
        torch.manual_seed(TRANSFER_SEED)
    if spanning:
        decoding.update(stop_strings=spanning, tokenizer=tokenizer)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    out: list[tuple[str, bool, int]] = [("", False, 0)] * len(prompts)
    halt = set(stop)
    try:
        # a sequence's tokens: its prompt and what it may generate (up to max_length when fitting)
        row = (
            (lambda n: n + max_new_tokens)
            if max_new_tokens
            else (lambda n: max(n, max_length or 0))
        )
        for idx in _batches(lengths, batch_size, row):
            new_tokens = max_new_tokens or max(1, (max_length or 0) - max(lengths[i] for i in idx))
            enc = tokenizer(
                [prompts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            ids = model.generate(
                **enc,
                max_new_tokens=new_tokens,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
                **decoding,
            )
            for i, row in zip(idx, ids[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
                end = next((j for j, t in enumerate(row) if t in ends), None)
                text = tokenizer.decode(row[:end], skip_special_tokens=True)
                text, stopped = _cut(text, stops)
                n = next((j + 1 for j, t in enumerate(row) if t in halt), len(row))
                out[i] = (text, stopped or (eos_ends and end is not None), n)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def greedy_completions(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BATCH_SIZE
) -> list[tuple[str, bool]]:
    """Greedy completion of each prompt, cut after the first ``"\\n"`` (:func:`completions`)."""
    done = completions(model, tokenizer, prompts, max_new_tokens, batch_size)
    return [(text, stopped) for text, stopped, _ in done]


def default_max_new_tokens(data: DataSpec, tokenizer) -> int:
    """What fits after the longest transfer prompt in the suite's ``max_length``."""
    examples = transfer_examples(data)
    longest = max(
        len(
            tokenizer(prompt_text(ex, tokenizer, data.chat_template), add_special_tokens=False)[
                "input_ids"
            ]
        )
        for ex in examples
    )
    return max(1, data.max_length - longest)


def _budget(data: DataSpec, generation: GenerationSpec, max_new_tokens: int | None, tokenizer):
    """``max_new_tokens`` resolved: the argument, else ``[generation] max_new_tokens``, else
    (0) what fits: for the synthetic set after its longest prompt (one number), for a file or
    dataset after each batch's longest prompt (None: decided per batch)."""
    if max_new_tokens is None and generation.max_new_tokens:
        max_new_tokens = generation.max_new_tokens
    if max_new_tokens is None and data.kind == "synthetic":
        max_new_tokens = default_max_new_tokens(data, tokenizer())
    return max_new_tokens


def target_of(text: str, stopped: bool, stops: tuple[str, ...], eos: bool) -> str:
    """A generation as a training target (see the module docstring): without the stop string
    that ended it when the EOS token marks the end (``eos``), else ending with a stop string."""
    ended = next((s for s in stops if text.endswith(s)), None)
    if eos:
        return text[: -len(ended)] if ended else text
    if ended or not stops:
        return text
    return text + stops[0]


def generate_transfer(
    teacher_path: str | Path,
    data: DataSpec,
    max_new_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
    generation: GenerationSpec | None = None,
    dtype: str = "auto",
) -> list[dict[str, Any]]:
    """The teacher's generation for every prompt of the transfer set, in its order, with the
    teacher loaded in ``dtype`` (:func:`kdbench.models.resolve_dtype`)."""
    generation = generation or GenerationSpec()
    model, tokenizer = load_pretrained(str(teacher_path), dtype)
    if torch.cuda.is_available():
        model.cuda()
    max_new_tokens = _budget(data, generation, max_new_tokens, lambda: tokenizer)
    stops = generation.stops(data)
    examples = transfer_examples(data)
    prompts = [prompt_text(ex, tokenizer, data.chat_template) for ex in examples]
    done = completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens,
        batch_size,
        spec=generation,
        stops=stops,
        end_ids=tuple(end_of_turn_ids(tokenizer)) if data.chat_template else (),
        max_length=data.max_length,
        eos_ends=data.eos,
    )
    records = []
    for ex, (text, stopped, n) in zip(examples, done, strict=True):
        record = {"prompt": ex["prompt"], "task": ex.get("task"), "text": text, "stopped": stopped}
        record["tokens"] = n
        if "messages" in ex:
            record["messages"] = ex["messages"]
        record["target"] = target_of(text, stopped, stops, data.eos)
        records.append(record)
    return records


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


def cache_key(
    teacher_path: str | Path,
    data: DataSpec,
    max_new_tokens: int | None,
    generation: GenerationSpec | None = None,
    dtype: str = "auto",
) -> str:
    """The generations file's key: teacher (and the dtype it runs in, when not float32), data
    (identity and content) and decoding."""
    from kdbench.models import resolve_dtype

    generation = generation or GenerationSpec()
    resolved = str(resolve_dtype(dtype)).removeprefix("torch.")
    blob = {
        **({"dtype": resolved} if resolved != "float32" else {}),
        "teacher": teacher_fingerprint(teacher_path),
        "data": {**data_identity(dataclasses.asdict(data)), **fingerprint(data)},
        "generation": {
            **dataclasses.asdict(generation),
            "transfer_seed": TRANSFER_SEED,
            "stop": list(generation.stops(data)),
            "max_new_tokens": max_new_tokens or "fit",
            "format": FORMAT,
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _marker(path: Path) -> Path:
    return path.with_suffix(".done")


def _is_record(record: Any) -> bool:
    """Whether a parsed line is a generation record (what :func:`as_target` and
    :func:`prompt_key` read)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("prompt"), str)
        and isinstance(record.get("text"), str)
        and isinstance(record.get("stopped"), bool)
    )


def _complete_records(path: Path) -> list[dict[str, Any]] | None:
    """The records of ``path`` when it was written to the end, else None: no file or marker, a
    marker that is not a JSON object with the file's ``sha256`` and its record ``count``, or a
    line that is not a record (every such file is generated again, never read)."""
    marker = _marker(path)
    if not (path.is_file() and marker.is_file()):
        return None
    try:
        meta = json.loads(marker.read_text())
        if not isinstance(meta, dict) or meta.get("sha256") != sha256_file(path):
            return None
        records = [json.loads(line) for line in path.read_text().split("\n") if line]
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    count = meta.get("count")
    if isinstance(count, bool) or count != len(records) or not all(map(_is_record, records)):
        return None
    return records


def is_complete(path: Path) -> bool:
    """Whether ``path`` was written to the end: its marker exists and matches its content (its
    checksum and record count), and every line is a generation record."""
    return _complete_records(Path(path)) is not None


def cached_generations(
    teacher_path: str | Path,
    data: DataSpec,
    root: str | Path,
    max_new_tokens: int | None = None,
    batch_size: int = BATCH_SIZE,
    generation: GenerationSpec | None = None,
    dtype: str = "auto",
) -> Path:
    """The JSONL file of the teacher's generations on the transfer set, generating it only when
    no complete file for this (teacher, data, ``generation`` settings) is cached under ``root``.
    ``max_new_tokens`` overrides ``generation.max_new_tokens``."""
    generation = generation or GenerationSpec()

    def tokenizer():
        from kdbench.models import load_tokenizer

        return load_tokenizer(str(teacher_path))

    max_new_tokens = _budget(data, generation, max_new_tokens, tokenizer)
    folder = Path(root) / "generations"
    path = folder / f"{cache_key(teacher_path, data, max_new_tokens, generation, dtype)}.jsonl"
    if is_complete(path):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    remove_entry(_marker(path))  # a stale marker must never bless the new file
    remove_entry(path)  # whatever is there (a folder, say) would block the new file
    start = time.perf_counter()
    records = generate_transfer(teacher_path, data, max_new_tokens, batch_size, generation, dtype)
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
    records = _complete_records(path)
    if records is None:
        raise FileNotFoundError(f"{path}: no complete generations file (missing or partial)")
    return records


def as_target(record: dict[str, Any]) -> str:
    """A generation as a training target: its ``target`` (see the module docstring); a record
    without one (older code, hand-made) is its text ending with ``"\\n"`` (appended when the
    teacher was cut off, so a student trained on it still learns to stop)."""
    if "target" in record:
        return record["target"]
    return record["text"] if record["stopped"] else record["text"] + STOP


def prompt_of(example: dict[str, Any]) -> dict[str, Any]:
    """The prompt part of a transfer example, for a method's own training example: ``prompt``,
    and a chat example's ``messages`` (the turns before the response)."""
    return {k: example[k] for k in ("prompt", "messages") if k in example}


def prompt_key(record: dict[str, Any]) -> str:
    """What ties a generation to its transfer example: the prompt, and a chat record's turns."""
    return json.dumps([record["prompt"], record.get("messages")])


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
        by_prompt = {prompt_key(r): r for r in load_generations(generations)}
        missing = [ex["prompt"] for ex in examples if prompt_key(ex) not in by_prompt]
        if missing:
            raise ValueError(
                f"{generations}: no generation for {len(missing)} transfer prompts "
                f"(e.g. {missing[0]!r}); it was made for another data spec"
            )
        records = [by_prompt[prompt_key(ex)] for ex in examples]
    return method.data(examples, records, cfg)


def method_batch(
    method: Method,
    cfg: Any,
    data: DataSpec,
    tokenizer,
    teacher_path: str | Path | None = None,
    cache: str | Path | None = None,
    generation: GenerationSpec | None = None,
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
        path = cached_generations(teacher_path, data, cache, generation=generation)
    examples = training_examples(method, cfg, data, path)
    return encode_examples(examples, tokenizer, data)
