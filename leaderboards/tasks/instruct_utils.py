"""Instruction-following evaluation sets of the MiniLLM / DistiLLM protocol, scored by Rouge-L.

MiniLLM (Gu et al., ICLR 2024) and DistiLLM (Ko et al., ICML 2024) distil GPT-2 XL into GPT-2
students on databricks-dolly-15k and report Rouge-L (Lin, 2004) of the student's response
against the reference on five sets: DollyEval (500 held-out Dolly examples), SelfInst, Vicuna,
S-NI (Super-Natural Instructions) and UnNI (Unnatural Instructions). The sets are the ones the
MiniLLM authors publish on the Hugging Face Hub (``MiniLLM/dolly``, ``MiniLLM/self-inst``,
``MiniLLM/Vicuna``, ``MiniLLM/sinst``, ``MiniLLM/uinst``); ``leaderboards/dolly/prepare.py``
downloads them once and writes one JSONL file per set, ``{"prompt": ..., "output": ...}``
(``output``: a reference or a list of references).

``custom_dataset`` gets the task's ``dataset_kwargs`` (``data_file``, relative to the suite's
folder, which kdbench passes as ``suite_dir`` in lm-eval's task metadata; the working directory
when run from the lm_eval CLI). Rouge-L is the F-measure of ``rouge_score`` with Porter
stemming, the maximum over the references, times 100 (MiniLLM's ``rouge_metric.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets


def dataset(data_file: str, suite_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """The set's ``test`` split from ``data_file`` (relative to ``suite_dir``)."""
    path = Path(data_file)
    if not path.is_absolute():
        path = Path(suite_dir or os.getcwd()) / path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: evaluation set not found; run `python leaderboards/dolly/prepare.py` "
            "once on a machine with internet access (it writes data/minillm/ beside the suite)"
        )
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            refs = record["output"] if isinstance(record["output"], list) else [record["output"]]
            rows.append({"prompt": record["prompt"], "references": [str(r) for r in refs]})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


_SCORER = None


def rouge_l(prediction: str, references: list[str]) -> float:
    """Rouge-L F-measure (x100), the best over ``references``."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * max(_SCORER.score(ref, prediction)["rougeL"].fmeasure for ref in references)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"rougeL": rouge_l(results[0].strip(), doc["references"])}
