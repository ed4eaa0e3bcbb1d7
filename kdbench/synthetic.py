"""Synthetic task family for the offline tiny suite.

Two tasks of different kinds, both generated from a seed so every machine gets the same data:

- ``addition``: multi-digit addition with a step-by-step rationale (column sums with carries,
  least significant digit first), then the answer after ``#``. Scored by lm-eval as free
  generation (``generate_until``) with exact match on the extracted answer.
  ``347+285=`` -> ``7+5=12,4+8+1=13,3+2+1=6#632``
- ``compare``: which of two close numbers is larger. Scored by lm-eval as a two-way
  multiple choice over log-likelihoods (``acc``). ``max(482,428)=`` -> ``482``

The transfer set (what students and the teacher train on) and the evaluation set come from
disjoint seeds, and evaluation prompts are removed from the transfer set.
"""

from __future__ import annotations

import random
from typing import Any

TASKS = ("addition", "compare")
EOS = "\n"  # every target ends with a newline: the stop sequence of generation


def addition_rationale(a: int, b: int) -> str:
    """Column-by-column sums with carries, least significant digit first."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        s = x + y + carry
        steps.append(f"{terms}={s}")
        carry = s // 10
    return ",".join(steps)


def make_addition(rng: random.Random, digits: tuple[int, int] = (2, 3)) -> dict[str, Any]:
    na, nb = rng.randint(*digits), rng.randint(*digits)
    a = rng.randint(10 ** (na - 1), 10**na - 1)
    b = rng.randint(10 ** (nb - 1), 10**nb - 1)
    return {
        "task": "addition",
        "prompt": f"{a}+{b}=",
        "rationale": addition_rationale(a, b),
        "answer": str(a + b),
    }


def make_compare(rng: random.Random, digits: tuple[int, int] = (2, 3)) -> dict[str, Any]:
    n = rng.randint(*digits)
    a = rng.randint(10 ** (n - 1), 10**n - 1)
    # a close competitor: same length, one or two digits changed, so the task needs reading
    b_digits = list(str(a))
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(1 if len(b_digits) > 1 else 0, len(b_digits))
        b_digits[i] = str(rng.randint(0, 9))
    b = int("".join(b_digits))
    if b == a:
        b = a + 1 if a % 10 != 9 else a - 1
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    choices = [str(first), str(second)]
    return {
        "task": "compare",
        "prompt": f"max({first},{second})=",
        "rationale": "",
        "answer": str(max(a, b)),
        "choices": choices,
        "label": choices.index(str(max(a, b))),
    }


MAKERS = {"addition": make_addition, "compare": make_compare}


def target_text(ex: dict[str, Any], with_rationale: bool = True) -> str:
    """The completion a model is trained to produce after the prompt."""
    if ex["task"] == "addition" and with_rationale:
        return f"{ex['rationale']}#{ex['answer']}{EOS}"
    if ex["task"] == "addition":
        return f"#{ex['answer']}{EOS}"
    return f"{ex['answer']}{EOS}"


def generate(task: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct examples of ``task`` from ``seed``, skipping prompts in ``exclude``."""
    if task not in MAKERS:
        raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
    rng = random.Random(f"{task}:{seed}")
    exclude = exclude or set()
    seen: set[str] = set()
    out = []
    while len(out) < n:
        ex = MAKERS[task](rng)
        if ex["prompt"] in seen or ex["prompt"] in exclude:
            continue
        seen.add(ex["prompt"])
        out.append(ex)
    return out


EVAL_SEED = 1_000_003  # fixed: the evaluation set never changes with the suite's seeds


def eval_set(task: str, n: int = 200) -> list[dict[str, Any]]:
    """The held-out evaluation split that the lm-eval task YAMLs load."""
    return generate(task, n, EVAL_SEED)


def transfer_set(
    tasks: list[str], n_per_task: int, seed: int, n_eval: int = 200
) -> list[dict[str, Any]]:
    """Training/transfer examples for ``tasks``, disjoint from the evaluation split."""
    out: list[dict[str, Any]] = []
    for task in tasks:
        held_out = {ex["prompt"] for ex in eval_set(task, n_eval)}
        out += generate(task, n_per_task, seed, exclude=held_out)
    random.Random(seed).shuffle(out)
    return out
