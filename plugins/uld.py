"""``uld``: Universal Logit Distillation (Boizard, El Haddad, Hudelot & Colombo 2024, "Towards
Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs", arXiv:2402.12030,
eqs. 3-4; reference code ``ULDLoss`` of github.com/Nicolas-BZRD/llm-recipes).

    L = ce_weight * CE(y, p_S) + weight * mean_k sum_i | sort(p_S^(k))_i - sort(p_T^(k))_i |
    p_S^(k) = softmax(z_S / T_S) at the student's k-th completion token,
    p_T^(k) = softmax(z_T / T_T) at the teacher's k-th completion token

Teacher and student may have any two tokenizers: the distance compares the two next-token
distributions sorted by probability (zero-padded to the larger vocabulary), the closed form of
ULD's Wasserstein-1 distance, so no token of one vocabulary has to exist in the other.

Loss card:
- alignment: by index, the k-th completion token of the student with the k-th of the teacher,
  up to the shorter completion (the reference truncates both to the shorter length);
  :func:`kdbench.cross_tokenizer.index_pairs`;
- distance: :func:`kdbench.cross_tokenizer.sorted_l1`, summed over the sorted vocabulary,
  averaged over the paired positions, float32; 0 when the sorted distributions are equal;
- the ground-truth CE is the student's own next-token cross-entropy on its tokens; ULD is
  permutation-invariant, so only the CE says *which* token is right: the reference trains with
  both, ``ce_weight = 1`` and ``weight = 1`` by default (its ``crossentropy_weight`` and
  ``distillation_weight``), both temperatures 1;
- top-k teacher (the signal cache): the teacher's vector is its k probabilities plus the rest
  mass spread evenly over the other ids (:func:`kdbench.cross_tokenizer.teacher_probs`); k = V
  gives the full-logit loss;
- it runs for a student with the teacher's tokenizer too (index alignment is then the identity).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbench import Method, hookimpl
from kdbench.cross_tokenizer import index_pairs, sorted_l1, teacher_probs, teacher_vocab_size
from kdbench.helpers import check_weights
from kdbench.losses import aux_with_ce


@dataclass
class ULDConfig:
    """The reference's defaults."""

    weight: float = 1.0  # the ULD term (the reference's distillation_weight)
    ce_weight: float = 1.0  # the ground-truth CE (the reference's crossentropy_weight)
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0

    def __post_init__(self) -> None:
        check_weights(weight=self.weight, ce_weight=self.ce_weight)
        for name in ("student_temperature", "teacher_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def uld_loss(student, teacher, batch, cfg: ULDConfig, modules):
    pairs = index_pairs(batch)
    logits = student.logits
    if len(pairs):
        q = (logits[pairs.rows, pairs.student].float() / cfg.student_temperature).softmax(-1)
        p = teacher_probs(
            teacher, pairs, teacher_vocab_size(teacher, batch, logits), cfg.teacher_temperature
        )
        term = sorted_l1(p, q).mean()
    else:
        term = logits.sum() * 0.0  # nothing paired: no distillation signal, still in the graph
    return aux_with_ce(term, cfg.weight, cfg.ce_weight, logits, batch["labels"])


@hookimpl
def kdbench_methods() -> list[Method]:
    return [
        Method(
            name="uld",
            family="cross_tokenizer",
            config=ULDConfig,
            loss=uld_loss,
            signals=frozenset({"logits"}),
            cross_tokenizer=True,
            paper="Boizard et al. 2024 (ULD)",
            description="sorted-probability L1 (Wasserstein-1) + CE, any two tokenizers",
        )
    ]
