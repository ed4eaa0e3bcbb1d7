"""Contamination check: transfer examples whose prompt also appears in an evaluation task's
documents, so a student could be scored on questions it was distilled on.

Texts are compared after normalisation (lower case; words and punctuation marks as tokens
separated by single spaces, so ``7+28=`` is not found inside ``347+285=``). An example counts
when its whole prompt occurs, as a token sequence, inside a document's prompt text
(lm-eval's ``doc_to_text``), or when its prompt shares one ``ngram``-word sequence with a
document: the long n-gram overlap of the GPT-3 paper's contamination study (Brown et al.,
2020, appendix C, 13-grams). The suite's ``[eval] contamination`` decides what a finding does
at plan time: ``warn`` prints one line per task, ``error`` refuses the suite, ``off`` skips.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

NGRAM = 13  # words, as in GPT-3's contamination study

_TOKENS = re.compile(r"\w+|[^\w\s]")
_WORDS = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lower case, one space between tokens (words, punctuation marks), a space at each end."""
    return " " + " ".join(_TOKENS.findall(text.lower())) + " "


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The ``n``-word sequences of ``text`` (lower case; punctuation ignored)."""
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class TaskContamination:
    """The finding for one evaluation task (or group) of the suite."""

    task: str
    documents: int  # documents checked
    examples: int  # transfer examples found in them
    example: str | None = None  # one such prompt
    document: str | None = None  # the task (a group's member) and doc id where it appears
    how: str | None = None  # "prompt in document" or "13-gram overlap"

    def line(self, checked: int) -> str:
        """One line: the count, and the first example."""
        if not self.examples:
            return f"task {self.task}: no transfer example found in its {self.documents} documents"
        shown = self.example if len(self.example or "") <= 80 else self.example[:77] + "..."
        return (
            f"task {self.task}: {self.examples} of {checked} transfer examples appear in its "
            f"{self.documents} documents ({self.how}), e.g. {shown!r} in {self.document}"
        )


@dataclass(frozen=True)
class ContaminationReport:
    """The check over every evaluation task: ``examples`` transfer prompts were checked."""

    examples: int
    tasks: tuple[TaskContamination, ...]
    ngram: int = NGRAM

    @property
    def contaminated(self) -> tuple[TaskContamination, ...]:
        """The tasks with at least one transfer example in their documents."""
        return tuple(t for t in self.tasks if t.examples)

    def lines(self) -> list[str]:
        """One line per contaminated task."""
        return [t.line(self.examples) for t in self.contaminated]


def _leaves(obj: Any) -> list[Any]:
    return list(obj.get_all_tasks()) if hasattr(obj, "get_all_tasks") else [obj]


def _doc_texts(task: Any) -> list[str]:
    """The prompt text of each evaluation document of a built lm-eval task."""
    out = []
    for doc in task.eval_docs:
        text = task.doc_to_text(doc)
        if isinstance(text, int):  # multiple inputs (e.g. winogrande): the choices are prompts
            choices = task.doc_to_choice(doc)
            text = " ".join(str(c) for c in choices)
        out.append(str(text))
    return out


def check_task(
    name: str, task: Any, prompts: dict[str, int], ngram: int = NGRAM
) -> TaskContamination:
    """Which of ``prompts`` (:func:`normalise`-d prompt -> how many transfer examples have
    it) appear in ``task``'s documents (a built lm-eval Task or Group, as
    :func:`kdbench.evaluate.load_tasks` returns it)."""
    texts, where = [], []
    for leaf in _leaves(task):
        for i, text in enumerate(_doc_texts(leaf)):
            texts.append(normalise(text))
            where.append(f"{leaf.config.task} doc {i}")
    blob = "\x00".join(texts)  # one string: Python's substring search does the work
    starts = [0]
    for text in texts[:-1]:
        starts.append(starts[-1] + len(text) + 1)
    grams: dict[tuple[str, ...], int] = {}
    for i, text in enumerate(texts):
        for g in ngrams(text, ngram):
            grams.setdefault(g, i)
    found, first = 0, None
    for prompt, count in prompts.items():
        if not prompt.strip():
            continue
        at = blob.find(prompt)
        if at >= 0:
            found += count
            first = first or (prompt, bisect.bisect_right(starts, at) - 1, "prompt in document")
            continue
        hit = next((grams[g] for g in ngrams(prompt, ngram) if g in grams), None)
        if hit is not None:
            found += count
            first = first or (prompt, hit, f"{ngram}-gram overlap")
    if first is None:
        return TaskContamination(name, len(texts), 0)
    prompt, doc, how = first
    return TaskContamination(name, len(texts), found, prompt.strip(), where[doc], how)


def check(
    examples: list[dict[str, Any]], tasks: dict[str, Any], ngram: int = NGRAM
) -> ContaminationReport:
    """The contamination report of transfer ``examples`` (dicts with ``"prompt"``, as
    :func:`kdbench.transfer.transfer_examples` gives them) against built evaluation ``tasks``
    (``{name: Task or Group}``)."""
    prompts: dict[str, int] = {}
    for ex in examples:
        if ex.get("prompt"):
            key = normalise(str(ex["prompt"]))
            prompts[key] = prompts.get(key, 0) + 1
    found = tuple(check_task(name, obj, prompts, ngram) for name, obj in tasks.items())
    return ContaminationReport(sum(prompts.values()), found, ngram)
