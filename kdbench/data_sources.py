"""Transfer data from files and datasets: ``[data] kind = "jsonl" | "parquet" | "csv" | "hf"``.

Every source is read through Hugging Face ``datasets`` (``load_dataset("json" | "parquet" |
"csv", data_files=...)``, ``load_dataset(name, revision=..., split=...)`` with its local cache
and ``HF_DATASETS_OFFLINE``, or ``load_from_disk`` for a ``save_to_disk`` folder). Each record
becomes an example ``{"prompt": record[prompt_field], "target": record[response_field]}``, or,
for chat records (``messages_field``, a list of ``{role, content}``), ``{"prompt": <the last
user turn>, "messages": <every turn before the last>, "target": <the last turn, an
assistant's>}`` (:func:`chat_example`); the records are shuffled with ``random.Random(seed)`` and cut to ``max_examples``, so a suite sees
the same examples in the same order on every machine.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from kdbench.config import FILE_KINDS, DataSpec
from kdbench.disk_cache import sha256_file

_BUILDERS = {"jsonl": "json", "parquet": "parquet", "csv": "csv"}


class DataError(ValueError):
    """A transfer data source cannot be read, or lacks a field: ``field`` names the suite's
    ``[data]`` key at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _load(spec: DataSpec) -> Any:
    import datasets

    if spec.kind == "csv":  # every cell as text: "42" is a response, not a number
        columns = datasets.load_dataset("csv", data_files=spec.path, split="train").column_names
        text = datasets.Features({c: datasets.Value("string") for c in columns})
        return datasets.load_dataset(
            "csv", data_files=spec.path, split="train", features=text, keep_default_na=False
        )
    if spec.kind in FILE_KINDS:
        return datasets.load_dataset(_BUILDERS[spec.kind], data_files=spec.path, split="train")
    if spec.path is not None:
        loaded = datasets.load_from_disk(spec.path)
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DataError(
                    "split", f"{spec.path}: no split {spec.split!r}; splits: {', '.join(loaded)}"
                )
            loaded = loaded[spec.split]
        return loaded
    try:
        return datasets.load_dataset(spec.name, revision=spec.revision, split=spec.split)
    except Exception as e:  # offline, gated, misspelt: one line saying how to get it
        raise DataError(
            "name",
            f"Hub dataset {spec.name!r} (split {spec.split!r}) cannot be loaded "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''});"
            " download it into the datasets cache beforehand, or save_to_disk it and give "
            "[data] path",
        ) from None


def load_examples(spec: DataSpec) -> list[dict[str, Any]]:
    """The transfer examples of a file or dataset source, shuffled and cut (see the module
    docstring). Raises :class:`DataError` naming the source and the missing field."""
    table = _load(spec)
    where = spec.path or spec.name
    fields = (
        [("messages_field", spec.messages_field)]
        if spec.messages_field is not None
        else [("prompt_field", spec.prompt_field), ("response_field", spec.response_field)]
    )
    for field, column in fields:
        if column not in table.column_names:
            raise DataError(
                field,
                f"{where}: {column!r} is not a column; columns: " + ", ".join(table.column_names),
            )
    if spec.messages_field is not None:
        examples = [
            chat_example(record, i, where, spec.messages_field)
            for i, record in enumerate(table[spec.messages_field])
        ]
    else:
        examples = []
        prompts, responses = table[spec.prompt_field], table[spec.response_field]
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise DataError(
                    "prompt_field",
                    f"{where}: record {i}: {spec.prompt_field!r} and {spec.response_field!r} "
                    f"must be strings, got {type(prompt).__name__} and {type(response).__name__}",
                )
            examples.append({"prompt": prompt, "target": response})
    random.Random(spec.seed).shuffle(examples)
    examples = examples[: spec.max_examples] if spec.max_examples else examples
    if not examples:
        raise DataError("path", f"{where}: no records")
    return examples


def chat_example(messages: Any, i: int, where: str, field: str) -> dict[str, Any]:
    """A chat record as an example: ``messages`` = every turn before the last (the prompt),
    ``target`` = the last turn, which must be the assistant's, ``prompt`` = the content of the
    last user turn (the question: what generations are keyed by and contamination compares)."""
    if not (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise DataError(
            "messages_field",
            f"{where}: record {i}: {field!r} must be a non-empty list of "
            f"{{role, content}} strings, got {str(messages)[:80]}",
        )
    if messages[-1]["role"] != "assistant":
        raise DataError(
            "messages_field",
            f"{where}: record {i}: {field!r} must end with an assistant turn (the response), "
            f"ends with a {messages[-1]['role']!r} turn",
        )
    turns = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    users = [m["content"] for m in turns if m["role"] == "user"]
    if not users:
        raise DataError(
            "messages_field", f"{where}: record {i}: {field!r} has no user turn before the response"
        )
    return {"prompt": users[-1], "messages": turns, "target": messages[-1]["content"]}


def fingerprint(spec: DataSpec) -> dict[str, Any]:
    """What identifies a file source's content (its SHA-256), for the teacher's recipe and the
    caches; a Hub dataset is named by its id and revision."""
    if spec.kind in FILE_KINDS and spec.path:
        return {"sha256": sha256_file(Path(spec.path))}
    return {"name": spec.name, "revision": spec.revision, "path": spec.path}
