"""The transfer set, built in one place: the examples every student (and a built teacher) trains
on, and their encoding into one padded batch.

Every stage that needs the transfer set (the teacher's training, the teacher-signal cache, the
teacher's generations, every training job, the conformance checks) calls
:func:`transfer_examples` / :func:`transfer_batch` (or :func:`encode_examples` for a method's
own examples), so they all see the same examples in the same order: row ``i`` of the signal
cache is row ``i`` of the batch a job trains on.

Encoding an example (:func:`encode`):

- the text: ``prompt + target``, or with ``chat_template`` the tokenizer's chat template
  (:func:`render`): the prompt is the conversation before the response rendered with
  ``add_generation_prompt=True``, the completion is the rendered full conversation minus that
  prompt, so the template's end-of-turn token is learnt;
- ``add_eos``: the tokenizer's EOS token ends every completion (unless the rendered completion
  holds it already);
- the loss counts completion tokens only: prompt and padding labels are ``IGNORE``;
- ``truncation``: ``"right"`` cuts a sequence at ``max_length``, ``"drop"`` leaves out the
  examples longer than that; what was cut is counted in a :class:`TruncationReport` kept on the
  :class:`Batch` (:func:`describe_truncation` prints it as one line);
- ``packing``: the (truncated) examples are concatenated, EOS-separated, and cut into rows of
  ``max_length`` (naive packing, as TRL's ``packing=True``; attention crosses example
  boundaries), so no padding is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import synthetic
from kdbench.config import DataSpec
from kdbench.data_sources import DataError, load_examples
from kdbench.losses import IGNORE

TRANSFER_SEED = 0  # fixed: the transfer set does not change with a suite's seeds


@dataclass(frozen=True)
class TruncationReport:
    """What fitting the examples into ``max_length`` tokens cost (:func:`encode`)."""

    policy: str  # "right" | "drop"
    max_length: int
    examples: int  # examples given
    cut: int  # examples cut at max_length ("right")
    tokens_cut: int  # tokens lost by the cut ("right") or with the dropped examples ("drop")
    dropped: int  # examples left out ("drop")
    no_target: int  # examples kept with no completion token left (their prompt fills the row)
    rows: int  # rows of the batch (examples kept; fewer when packed)


def describe_truncation(report: TruncationReport) -> str:
    """One line for the terminal, e.g. ``transfer set: 12 of 500 examples longer than
    max_length 256, cut on the right (1,040 tokens); 2 keep no response token``."""
    head = f"transfer set: {report.examples} examples, max_length {report.max_length}"
    if report.policy == "drop":
        if not report.dropped:
            return f"{head}: none longer, none dropped"
        return (
            f"{head}: {report.dropped} longer, dropped ({report.tokens_cut:,} tokens), "
            f"{report.examples - report.dropped} kept"
        )
    if not report.cut:
        return f"{head}: none longer, none cut"
    text = f"{head}: {report.cut} longer, cut on the right ({report.tokens_cut:,} tokens)"
    if report.no_target:
        text += f"; {report.no_target} keep no response token (their prompt fills max_length)"
    return text


@dataclass
class Batch:
    """The whole transfer set, tokenised once: right-padded ids, mask, labels and weights."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # IGNORE on prompt and padding: only completions are learnt
    weight: torch.Tensor | None = None  # (N,) float per-example loss weight; None: all 1.0
    truncation: TruncationReport | None = None  # what max_length cut (None: not measured)

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = torch.ones(len(self.input_ids), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def rows(self, idx: torch.Tensor | slice, width: int | None = None) -> dict[str, torch.Tensor]:
        """The examples ``idx`` as a loss batch (``input_ids``, ``attention_mask``, ``labels``,
        ``weight``), trimmed to ``width`` columns (default: the longest of them)."""
        if width is None:
            width = int(self.attention_mask[idx].sum(1).max())
        return {
            "input_ids": self.input_ids[idx, :width],
            "attention_mask": self.attention_mask[idx, :width],
            "labels": self.labels[idx, :width],
            "weight": self.weight[idx],
        }


def transfer_examples(data: DataSpec) -> list[dict[str, Any]]:
    """The suite's transfer examples in a fixed order: for the synthetic suite ``prompt``,
    ``task`` and the ground-truth fields of :mod:`kdbench.synthetic` (disjoint from the
    evaluation split); for a file or dataset, ``prompt`` and ``target`` (and ``messages``, the
    turns before the response, for chat records; :func:`kdbench.data_sources.load_examples`)."""
    if data.kind != "synthetic":
        return load_examples(data)
    return synthetic.transfer_set(list(data.tasks), data.n_per_task, TRANSFER_SEED)


# --- rendering --------------------------------------------------------------------------------


def check_chat_template(tokenizer) -> str | None:
    """Why ``tokenizer`` cannot render chat data (None: it can)."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return (
            f"the tokenizer of {name} has no chat template; set chat_template = false (and "
            "give prompt_field / response_field) or use an instruct model's tokenizer"
        )
    return None


def turns(example: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation before the response: the example's ``messages``, or one user turn."""
    return list(example.get("messages") or [{"role": "user", "content": example["prompt"]}])


def with_prompt_prefix(example: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``example`` with ``prefix`` before its prompt (and before the content of the last user
    turn of its ``messages``, the same text), e.g. a task prefix of distilling step-by-step."""
    out = {**example, "prompt": prefix + example["prompt"]}
    if "messages" in example:
        msgs = [dict(m) for m in example["messages"]]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        msgs[last]["content"] = prefix + msgs[last]["content"]
        out["messages"] = msgs
    return out


def _chat(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    problem = check_chat_template(tokenizer)
    if problem:
        raise DataError("chat_template", problem)
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def prompt_text(example: dict[str, Any], tokenizer, chat_template: bool) -> str:
    """The text a model is given for ``example``: its prompt, or the conversation rendered with
    the chat template up to the assistant's turn (``add_generation_prompt=True``)."""
    if not chat_template:
        return example["prompt"]
    return _chat(tokenizer, turns(example), True)


def render(example: dict[str, Any], target: str, tokenizer, chat_template: bool) -> tuple[str, str]:
    """``(prompt, completion)`` texts of ``example`` with ``target`` as the response. With the
    chat template the completion is the full rendered conversation minus the rendered prompt
    (the response and the template's end-of-turn text)."""
    if not chat_template:
        return example["prompt"], target
    prompt = prompt_text(example, tokenizer, True)
    full = _chat(tokenizer, [*turns(example), {"role": "assistant", "content": target}], False)
    if not full.startswith(prompt):
        raise DataError(
            "chat_template",
            "the chat template renders the conversation differently with and without the "
            f"response (prompt {prompt[-40:]!r} is not a prefix of {full[:80]!r}...): it "
            "cannot mark which tokens are the response",
        )
    return prompt, full[len(prompt) :]


# --- encoding ---------------------------------------------------------------------------------


def _tokens(
    examples: list[dict[str, Any]], tokenizer, rationales: bool, chat_template: bool, add_eos: bool
) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, completion ids)`` of every example (tokenised in one call each)."""
    texts = [
        render(
            ex,
            ex["target"] if "target" in ex else synthetic.target_text(ex, rationales),
            tokenizer,
            chat_template,
        )
        for ex in examples
    ]
    if not texts:
        return []
    prompts = tokenizer([p for p, _ in texts], add_special_tokens=False)["input_ids"]
    completions = tokenizer([c for _, c in texts], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise DataError("add_eos", "the tokenizer has no EOS token to append; set add_eos = false")
    out = []
    for p, t in zip(prompts, completions, strict=True):
        if add_eos and eos not in t:  # a chat template may end the turn with it already
            t = [*t, eos]
        out.append((list(p), list(t)))
    return out


def encode(
    examples: list[dict[str, Any]],
    tokenizer,
    max_length: int,
    rationales: bool,
    *,
    chat_template: bool = False,
    add_eos: bool = False,
    truncation: str = "right",
    packing: bool = False,
) -> Batch:
    """Tokenise ``prompt + completion``; the loss sees completion tokens only (module
    docstring: chat template, EOS, truncation, packing).

    The completion is ``ex["target"]`` when given (a method's ``data``), else the ground truth
    ``synthetic.target_text(ex, rationales)``; ``ex["weight"]`` (default 1.0) is kept per example
    (a packed batch has no per-example rows, so it refuses weights other than 1).
    """
    if truncation not in ("right", "drop"):
        raise ValueError(f"truncation must be 'right' or 'drop', got {truncation!r}")
    seqs: list[tuple[list[int], list[int], float]] = []  # (ids, labels, weight)
    cut = tokens_cut = dropped = no_target = 0
    tokens = _tokens(examples, tokenizer, rationales, chat_template, add_eos)
    for ex, (p, t) in zip(examples, tokens, strict=True):
        ids, labels = p + t, [IGNORE] * len(p) + t
        excess = len(ids) - max_length
        if excess > 0:
            tokens_cut += excess
            if truncation == "drop":
                dropped += 1
                continue
            cut += 1
            ids, labels = ids[:max_length], labels[:max_length]
            no_target += len(p) >= max_length
        seqs.append((ids, labels, float(ex.get("weight", 1.0))))
    if not seqs:
        raise DataError(
            "truncation",
            f"every one of the {len(examples)} examples is longer than max_length "
            f"{max_length} and was dropped; raise max_length or set truncation = 'right'",
        )
    if packing:
        seqs = _pack(seqs, tokenizer, max_length, add_eos)
    report = TruncationReport(
        truncation, max_length, len(examples), cut, tokens_cut, dropped, no_target, len(seqs)
    )
    width = max(len(ids) for ids, _, _ in seqs)
    out_ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    out_labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ids, lab, _) in enumerate(seqs):
        out_ids[i, : len(ids)] = torch.tensor(ids)
        out_labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    weights = torch.tensor([w for _, _, w in seqs], dtype=torch.float32)
    return Batch(out_ids, mask, out_labels, weights, report)


def _pack(
    seqs: list[tuple[list[int], list[int], float]], tokenizer, max_length: int, add_eos: bool
) -> list[tuple[list[int], list[int], float]]:
    """Concatenate the sequences, each ended by EOS (added when it does not end with it; counted
    in the loss only with ``add_eos``), and cut the stream into rows of ``max_length``."""
    if any(w != 1.0 for _, _, w in seqs):
        raise ValueError("packing needs every example's weight to be 1 (rows mix examples)")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("packing", "the tokenizer has no EOS token to separate packed examples")
    ids: list[int] = []
    labels: list[int] = []
    for seq, lab, _ in seqs:
        ids += seq
        labels += lab
        if seq[-1] != eos:
            ids.append(eos)
            labels.append(eos if add_eos else IGNORE)
    return [
        (ids[i : i + max_length], labels[i : i + max_length], 1.0)
        for i in range(0, len(ids), max_length)
    ]


def encode_examples(examples: list[dict[str, Any]], tokenizer, data: DataSpec) -> Batch:
    """:func:`encode` with every tokenisation setting of the suite's ``[data]`` table: what the
    signal cache, the teacher's training and every training job encode with."""
    return encode(
        examples,
        tokenizer,
        data.max_length,
        data.rationales,
        chat_template=data.chat_template,
        add_eos=data.eos,
        truncation=data.truncation,
        packing=data.packing,
    )


def transfer_batch(data: DataSpec, tokenizer) -> Batch:
    """:func:`transfer_examples`, encoded with ``tokenizer`` (ground-truth completions)."""
    return encode_examples(transfer_examples(data), tokenizer, data)


def truncation_report(data: DataSpec, tokenizer) -> TruncationReport:
    """What ``max_length`` cuts of the suite's transfer set with ``tokenizer`` (tokenises the
    whole set: seconds for tens of thousands of examples)."""
    report = transfer_batch(data, tokenizer).truncation
    assert report is not None
    return report


def truncation_line(data: DataSpec, teacher: Any) -> str | None:
    """:func:`describe_truncation` of the suite's transfer set with the teacher's tokenizer
    (``teacher`` a :class:`kdbench.config.ModelSpec`), for the terminal before anything runs;
    None when the tokenizer cannot be read offline yet."""
    from kdbench.plan import tokenizer_of

    tokenizer = tokenizer_of(teacher)
    return None if tokenizer is None else describe_truncation(truncation_report(data, tokenizer))
