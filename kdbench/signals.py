"""The teacher-signal contract: what a method's loss receives as ``teacher``.

One type, :class:`TeacherSignals`, comes from both sources: the live teacher run on the batch
(:func:`live_signals`) and the teacher-signal cache (:meth:`kdbench.signal_cache.SignalCache.batch`).
It is a read-only mapping that holds exactly the signals the method declared in
``Method.signals``; reading any other key raises :class:`SignalError` naming the method and the
signal, on the cached path as on the live one, so a loss that works in ``kdbench plugin check``
works on the leaderboard.

Keys, per declared signal (B: batch, T: the batch's tokens, V: vocabulary, H: hidden width):

- ``"logits"``, in one of two forms, never both (``teacher.topk`` tells which):

  * full (a live teacher, or a cache with ``topk = 0``): ``teacher["logits"]`` (B, T, V);
  * top-k (a cache with ``topk = k``, the default suite's form): ``teacher["topk_logits"]``
    (B, T, k) float, the k largest logits in descending order; ``teacher["topk_indices"]``
    (B, T, k) long, their vocabulary ids; ``teacher["logsumexp"]`` (B, T), the log-normaliser of
    the full softmax at temperature 1; ``teacher["rest_logprob"]`` (B, T), the log of the
    probability outside the top k (exact however small; ``-inf`` for none).
    ``teacher["logits"]`` raises :class:`SignalError`.

  :func:`kdbench.losses.distributions` takes either form and returns teacher and student
  log-distributions over the same support; use it rather than reading the keys.
- ``"hidden_states"``: a tuple of L + 1 tensors (B, T, H): the embeddings, then each layer's
  output (Hugging Face's ``output_hidden_states``; the last one after the final norm).
- ``"attentions"``: a tuple of L tensors (B, heads, T, T), softmax attention probabilities.
- ``"qkv"``: ``(q, k, v)``, each (B, T, width): the last decoder layer's ``q_proj`` /
  ``k_proj`` / ``v_proj`` outputs, before RoPE and the head split.
- ``"generations"`` is not a per-batch signal (it reaches the method's ``data`` hook as text).

Positions are those of the batch: padding positions (``attention_mask == 0``) hold
arbitrary values (zeros from the cache) and must be masked by the loss. Cached hidden states,
attention maps and q/k/v are stored in float16 and come back as float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from kdbench.models import capture_qkv

TOPK_KEYS = ("topk_logits", "topk_indices", "logsumexp", "rest_logprob")
# the keys each declarable signal may put in a TeacherSignals
SIGNAL_KEYS: dict[str, tuple[str, ...]] = {
    "logits": ("logits", *TOPK_KEYS),
    "hidden_states": ("hidden_states",),
    "attentions": ("attentions",),
    "qkv": ("qkv",),
    "generations": (),
}


class SignalError(LookupError):
    """A loss read a teacher signal it did not declare, or a form the teacher does not have."""


class TeacherSignals(Mapping[str, Any]):
    """The teacher's signals for one batch, exactly those ``method`` declared (see the module
    docstring for the keys and shapes). ``source`` is ``"live"`` or ``"cache"``; ``topk`` is k
    for top-k logits, 0 for full logits or none."""

    def __init__(
        self,
        values: Mapping[str, Any],
        declared: frozenset[str] | set[str],
        method: str,
        source: str = "live",
    ) -> None:
        self.declared = frozenset(declared)
        self.method, self.source = method, source
        allowed = {key for signal in self.declared for key in SIGNAL_KEYS.get(signal, ())}
        self._values = {k: v for k, v in values.items() if k in allowed and v is not None}
        self._allowed = allowed
        self.read: set[str] = set()  # the keys the loss has read (the conformance checks use it)
        self.topk = int(self._values["topk_indices"].shape[-1]) if self.is_topk else 0

    @property
    def is_topk(self) -> bool:
        """Whether the logits come in the top-k form (``topk_logits`` / ``topk_indices`` /
        ``logsumexp`` / ``rest_logprob``) rather than as full ``logits``."""
        return "topk_indices" in self._values

    def _refuse(self, key: str) -> SignalError:
        if key not in self._allowed:
            signal = next((s for s, keys in SIGNAL_KEYS.items() if key in keys), key)
            return SignalError(
                f"method {self.method!r} read teacher[{key!r}], but it declares signals "
                f"{sorted(self.declared) or '(none)'}; add {signal!r} to its Method(signals=...)"
            )
        if key == "logits" and self.is_topk:
            return SignalError(
                f"method {self.method!r} read teacher['logits'], but this {self.source} teacher "
                f"gives top-{self.topk} logits (topk_logits, topk_indices, logsumexp, "
                "rest_logprob), as a suite with [cache] topk > 0 does: use "
                "kdbench.losses.distributions, which takes both forms"
            )
        if key in TOPK_KEYS:
            return SignalError(
                f"method {self.method!r} read teacher[{key!r}], but this {self.source} teacher "
                "gives full logits (teacher['logits']): use kdbench.losses.distributions, which "
                "takes both forms"
            )
        return SignalError(f"method {self.method!r}: teacher[{key!r}] is missing")

    def __getitem__(self, key: str) -> Any:
        try:
            value = self._values[key]
        except KeyError:
            raise self._refuse(key) from None
        self.read.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The signal, or ``default`` when it is a declared key this teacher does not hold (the
        other logits form); an undeclared key raises :class:`SignalError` here too."""
        if key not in self._allowed:
            raise self._refuse(key)
        if key in self._values:
            self.read.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def signals_read(self) -> set[str]:
        """The declared signals whose keys the loss has read so far."""
        return {s for s in self.declared if self.read & set(SIGNAL_KEYS.get(s, ()))}

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shapes = {k: _shape(v) for k, v in self._values.items()}
        return f"TeacherSignals({self.method!r}, {self.source}, {shapes})"

    def replace(self, **values: Any) -> TeacherSignals:
        """A copy with some keys replaced (for tests and conformance checks)."""
        return TeacherSignals({**self._values, **values}, self.declared, self.method, self.source)

    def to(self, device: Any) -> TeacherSignals:
        """The same signals on ``device``."""
        return TeacherSignals(
            {k: _to(v, device) for k, v in self._values.items()},
            self.declared,
            self.method,
            self.source,
        )


def _shape(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, tuple):
        return [_shape(v) for v in value]
    return type(value).__name__


def _to(value: Any, device: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(v.to(device) for v in value)
    return value


def live_outputs(
    teacher: torch.nn.Module, signals: frozenset[str], batch: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Run the teacher once on a batch (no gradient) and keep the outputs ``signals`` need:
    ``logits`` always, ``hidden_states`` / ``attentions`` / ``qkv`` when asked."""
    with torch.no_grad(), capture_qkv(teacher, enabled="qkv" in signals) as qkv:
        out = teacher(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states="hidden_states" in signals,
            output_attentions="attentions" in signals,
        )
    keep: dict[str, Any] = {"logits": out.logits}
    if "hidden_states" in signals:
        keep["hidden_states"] = out.hidden_states
    if "attentions" in signals:
        keep["attentions"] = out.attentions
    if "qkv" in signals:
        keep["qkv"] = tuple(qkv)
    return keep


def live_signals(
    teacher: torch.nn.Module,
    signals: frozenset[str],
    batch: Mapping[str, torch.Tensor],
    method: str,
) -> TeacherSignals:
    """The live teacher's :class:`TeacherSignals` for a batch: full logits and the other
    declared signals, computed in one forward pass."""
    return TeacherSignals(live_outputs(teacher, signals, batch), signals, method, "live")
