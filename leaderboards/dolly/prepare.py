"""Fetch and lay out the data of ``leaderboards/dolly-gpt2.toml`` (run once, with internet).

Usage: ``python leaderboards/dolly/prepare.py [--out DIR]`` (default: ``leaderboards/``, beside
the suite file, so the suite's relative paths find it).

What it writes (the MiniLLM protocol, Gu et al., ICLR 2024):

- ``DIR/data/minillm/dolly/train.jsonl``: the transfer set, databricks-dolly-15k without its
  500 held-out examples, one ``{"prompt": ..., "response": ...}`` per line, the prompt in
  MiniLLM's Alpaca-style template (``### Instruction: ... ### Response:``);
- ``DIR/data/minillm/<set>/valid.jsonl`` for ``dolly``, ``self_inst``, ``vicuna``, ``sinst`` and
  ``uinst``: ``{"prompt": ..., "output": ...}``, read by the ``minillm_*`` lm-eval tasks.

The raw sets come from the MiniLLM authors' Hugging Face datasets (``MiniLLM/dolly``, ...), via
``huggingface_hub.snapshot_download`` into its cache; the models (``gpt2`` ... ``gpt2-xl``)
are fetched by ``transformers`` on first use, or beforehand with ``huggingface-cli download``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SETS = {  # our folder name -> the MiniLLM Hub dataset
    "dolly": "MiniLLM/dolly",
    "self_inst": "MiniLLM/self-inst",
    "vicuna": "MiniLLM/Vicuna",
    "sinst": "MiniLLM/sinst",
    "uinst": "MiniLLM/uinst",
}
N_VALID = 500  # DollyEval: 500 held-out examples
TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
TEMPLATE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def prompt_of(record: dict) -> str:
    """MiniLLM's prompt for a record: its own ``prompt`` if it has one, else the template."""
    if record.get("prompt"):
        return record["prompt"].replace("<n>", "\n")
    context = record.get("input") or record.get("context") or ""
    template = TEMPLATE_INPUT if context else TEMPLATE
    return template.format(instruction=record["instruction"], input=context)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{path}: {len(rows)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    from huggingface_hub import snapshot_download

    root = args.out / "data" / "minillm"
    for name, repo in SETS.items():
        local = Path(snapshot_download(repo, repo_type="dataset"))
        if name == "dolly":
            raw = read_jsonl(local / "raw.jsonl")
            random.Random(0).shuffle(raw)
            valid, train = raw[:N_VALID], raw[N_VALID:]
            write_jsonl(
                root / name / "train.jsonl",
                [{"prompt": prompt_of(r), "response": r["output"]} for r in train],
            )
        else:
            source = local / "valid.jsonl"
            valid = read_jsonl(source if source.is_file() else next(local.glob("*.jsonl")))
        write_jsonl(
            root / name / "valid.jsonl",
            [{"prompt": prompt_of(r), "output": r["output"]} for r in valid],
        )


if __name__ == "__main__":
    main()
