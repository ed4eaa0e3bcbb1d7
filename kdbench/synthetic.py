"""Synthetic task family for the offline tiny suite.

Two tasks of different kinds, both generated from a seed so every machine gets the same data:

- ``addition``: multi-digit addition with a step-by-step rationale (column sums with carries,
  least significant digit first), then the answer after ``#``. Scored by lm-eval as free
  generation (``generate_until``) with exact match on the extracted answer.
  ``347+285=`` -> ``7+5=12,4+8+1=13,3+2+1=6#632``
- ``compare``: which of two close numbers is larger. Scored by lm-eval as a two-way
  multiple choice over log-likelihoods (``acc``). ``max(482,428)=`` -> ``482``
- ``add2``: ``addition`` on two 2-digit numbers (``47+85=`` -> ``7+5=12,4+8+1=13#132``): the
  embedded default suite's reasoning task, within reach of a 0.1M-parameter student.
- ``noisy_compare``: ``compare`` whose *training* answers come from a noisy annotator, who
  names the smaller number with probability :data:`ANNOTATOR_NOISE` (0.15); the evaluation
  split is scored against the true larger number. A hard label is then wrong about one time in seven,
  while a teacher trained on many such examples has learnt the calibrated distribution (about
  0.85 / 0.15 on the true / the other choice): its soft labels carry what the hard labels
  cannot, so the task measures dark knowledge (label noise as in Hinton et al. 2015's soft
  targets; the same denoising is why a teacher's distribution helps under noisy labels).

The transfer set (what students and the teacher train on) and the evaluation set come from
disjoint seeds, and evaluation prompts are removed from the transfer set.
"""

from __future__ import annotations

import random
from typing import Any

TASKS = ("addition", "compare", "add2", "noisy_compare")
DEFAULT_TASKS = ("addition", "compare")  # ``[data] tasks`` when a suite names none
ANNOTATOR_NOISE = 0.15  # noisy_compare: the chance that a training answer is the smaller number
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


def make_add2(rng: random.Random) -> dict[str, Any]:
    return {**make_addition(rng, (2, 2)), "task": "add2"}


def make_noisy_compare(rng: random.Random) -> dict[str, Any]:
    """A ``compare`` example with its true answer; :func:`annotate` gives it the noisy one."""
    return {**make_compare(rng), "task": "noisy_compare"}


MAKERS = {
    "addition": make_addition,
    "compare": make_compare,
    "add2": make_add2,
    "noisy_compare": make_noisy_compare,
}
NOISY = {"noisy_compare": ANNOTATOR_NOISE}  # tasks whose training answers are annotated noisily


def annotate(examples: list[dict[str, Any]], task: str, seed: int) -> list[dict[str, Any]]:
    """The training split of a noisy task: each answer replaced by the other choice with
    probability ``NOISY[task]`` (the true one kept as ``true_answer``); other tasks as given."""
    noise = NOISY.get(task)
    if noise is None:
        return examples
    rng = random.Random(f"{task}:annotator:{seed}")
    out = []
    for ex in examples:
        wrong = rng.random() < noise
        label = 1 - ex["label"] if wrong else ex["label"]
        out.append({**ex, "true_answer": ex["answer"], "answer": ex["choices"][label]})
    return out


def target_text(ex: dict[str, Any], with_rationale: bool = True) -> str:
    """The completion a model is trained to produce after the prompt."""
    if ex["task"] in ("addition", "add2") and with_rationale:
        return f"{ex['rationale']}#{ex['answer']}{EOS}"
    if ex["task"] in ("addition", "add2"):
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
    misses = 0  # draws in a row that gave no new prompt: the task's prompts are used up
    while len(out) < n:
        ex = MAKERS[task](rng)
        if ex["prompt"] in seen or ex["prompt"] in exclude:
            misses += 1
            if misses > 100_000:
                raise ValueError(
                    f"synthetic task {task!r} has fewer than {n} distinct prompts outside the "
                    f"evaluation split (found {len(out)}): ask for fewer examples"
                )
            continue
        misses = 0
        seen.add(ex["prompt"])
        out.append(ex)
    return out


EVAL_SEED = 1_000_003  # fixed: the evaluation set never changes with the suite's seeds
EVAL_DOCS = {"add2": 400, "noisy_compare": 600}  # held-out documents per task (default 200)
TEACHER_SEED = 1  # the built teacher's own training set (``[teacher] examples_per_task``)


def eval_docs(task: str) -> int:
    """The size of ``task``'s held-out evaluation split."""
    return EVAL_DOCS.get(task, 200)


def eval_set(task: str, n: int | None = None) -> list[dict[str, Any]]:
    """The held-out evaluation split that the lm-eval task YAMLs load (true answers)."""
    return generate(task, eval_docs(task) if n is None else n, EVAL_SEED)


def transfer_set(
    tasks: list[str],
    n_per_task: int,
    seed: int,
    n_eval: int | None = None,
    exclude: dict[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Training/transfer examples for ``tasks``, disjoint from the evaluation split (and from
    ``exclude[task]``'s prompts), with a noisy task's answers annotated (:func:`annotate`)."""
    out: list[dict[str, Any]] = []
    for task in tasks:
        held_out = {ex["prompt"] for ex in eval_set(task, n_eval)}
        held_out |= (exclude or {}).get(task, set())
        out += annotate(generate(task, n_per_task, seed, exclude=held_out), task, seed)
    random.Random(seed).shuffle(out)
    return out


def teacher_set(
    tasks: list[str], n_per_task: int, transfer_per_task: int, transfer_seed: int
) -> list[dict[str, Any]]:
    """A built teacher's own training set: ``n_per_task`` examples per task from
    :data:`TEACHER_SEED`, disjoint from the evaluation split and from the transfer set (so the
    teacher's signals on the transfer set are its predictions, not a memory of those examples'
    noisy answers)."""
    transfer = transfer_set(tasks, transfer_per_task, transfer_seed)
    seen = {t: {ex["prompt"] for ex in transfer if ex["task"] == t} for t in tasks}
    return transfer_set(tasks, n_per_task, TEACHER_SEED, exclude=seen)
