"""The method API and the registry of methods found through pluggy.

A method is data plus a pure loss function. It knows nothing of Ray or DeepSpeed:

- ``signals``: which teacher signals the loss reads (:data:`SIGNALS`); the trainer computes
  only those (the teacher is not even loaded for a method that declares none). ``logits``,
  ``hidden_states`` (HF tuple: embeddings + one per layer, each (B, T, H)) and ``attentions``
  (tuple per layer of (B, heads, T, T) softmax maps) are the HF outputs; ``qkv`` is the last
  decoder layer's ``self_attn.q_proj`` / ``k_proj`` / ``v_proj`` outputs (before RoPE and the
  head split), a tuple ``(q, k, v)`` each (B, T, width), captured by forward hooks
  (:func:`kdbench.models.capture_qkv`); ``hidden_states``, ``attentions`` and ``qkv``, when
  declared, are computed for the student too. The loss receives them as a
  :class:`kdbench.signals.TeacherSignals` (live or from the signal cache: the same type, the
  same keys; logits as full ``logits`` or as top-k ``topk_logits`` / ``topk_indices`` /
  ``logsumexp`` / ``rest_logprob``); reading an undeclared signal raises;
- ``config``: a dataclass whose defaults are the paper's and whose ``__post_init__`` checks
  ranges; a suite overrides fields under ``[method_config.<name>]``;
- ``modules``: optional extra trainable modules (e.g. a projection for feature matching),
  trained with the student and dropped afterwards;
- ``data``: optional ``(examples, generations, cfg) -> training examples``: a method that
  changes the *training data* instead of (or besides) the per-batch teacher signal. It gets
  the transfer examples (:func:`kdbench.transfer.transfer_examples`), the teacher's greedy
  generations for them (``generations[i]`` for ``examples[i]``, records of
  :mod:`kdbench.generations`; empty unless the method declares the ``"generations"`` signal,
  which makes the teacher stage produce them once per suite) and its config, and returns the
  examples the student trains on, each with ``prompt``, ``target`` (the completion text,
  trailing ``"\\n"`` included; omitted: the ground truth) and optional ``weight`` (float,
  default 1.0), which reaches the loss as ``batch["weight"]``;
- ``loss(student, teacher, batch, cfg, modules) -> scalar tensor``;
- ``on_policy``: the method trains on the student's own generations: its config subclasses
  :class:`kdbench.rollout.OnPolicyConfig` (the fraction of student-generated batches, the
  sampling settings, how often to regenerate), the training loop replaces a batch's completions
  by the current student's samples for the prompts of the batch, the teacher scores those
  sequences live, and the loss gets them like any batch (``batch["on_policy"]`` says which);
- ``cross_tokenizer``: the loss handles a student whose tokenizer differs from the teacher's
  (see :mod:`kdbench.cross_tokenizer`); every other method that reads per-batch teacher signals
  is refused at plan time for such a student;
- ``allows_packing``: the loss stays right when a row of the batch holds several examples
  concatenated (``[data] packing = true``: no per-example weights or per-example means, no
  reliance on one prompt per row); default False, and a suite that packs refuses the others.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib.metadata
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
import torch

from kdbench import hookspecs
from kdbench.hookspecs import PROJECT

SIGNALS = frozenset({"logits", "hidden_states", "attentions", "generations", "qkv"})
FAMILIES = (
    "baseline",
    "logit",
    "feature",
    "attention",
    "chain_of_thought",
    "on_policy",
    "cross_tokenizer",
)

# student: the model's output (``logits``, and ``hidden_states`` / ``attentions`` when the
#   method declares them; with ``qkv`` declared, its attribute ``student.qkv`` holds the
#   student's (q, k, v) like ``teacher["qkv"]``); teacher: a kdbench.signals.TeacherSignals
#   holding exactly the declared per-batch signals (empty for a method that declares none);
# batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt and padding), ``weight``
#   (B,) float: each example's loss weight (1.0 unless the method's ``data`` sets it);
#   ``step`` and ``steps``: 0-d long tensors, the optimiser step (0-based) and the budget's steps
#   (for a schedule over training, e.g. TAID's interpolation); ``on_policy``: 0-d bool tensor,
#   True when the batch's completions were sampled from the student.
LossFn = Callable[
    [Any, Mapping[str, Any], dict[str, torch.Tensor], Any, dict[str, torch.nn.Module]],
    torch.Tensor,
]
ModulesFn = Callable[[Any, Any, Any], dict[str, torch.nn.Module]]
# (transfer examples, teacher generations, cfg) -> training examples (see the module docstring)
DataFn = Callable[[list[dict[str, Any]], list[dict[str, Any]], Any], list[dict[str, Any]]]


class MethodError(ValueError):
    """A method name or method config is wrong. ``field`` names the suite field to blame
    (e.g. ``method_config.kd.temperature``; empty when none) and ``detail`` says what is wrong
    without it; ``str()`` is ``"<field>: <detail>"`` (or the detail alone)."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field, self.detail = field, message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True)
class Method:
    """A registered method; each field is described in the module docstring. ``data`` (None:
    train on the transfer set's ground truth) builds the training examples from the transfer
    examples and the teacher's generations, e.g. sequence-level KD trains on the teacher's
    outputs, distilling step-by-step adds the teacher's rationales as weighted extra targets."""

    name: str
    family: str
    config: type
    loss: LossFn
    signals: frozenset[str] = frozenset()
    modules: ModulesFn | None = None  # (student_config, teacher_config, cfg) -> modules
    data: DataFn | None = None  # (examples, generations, cfg) -> training examples
    description: str = ""
    paper: str = ""
    allows_packing: bool = False  # [data] packing = true is allowed (see the module docstring)
    on_policy: bool = False  # trains on the student's own samples (see the module docstring)
    cross_tokenizer: bool = False  # handles a student tokenizer that is not the teacher's
    plugin: str = field(default="", compare=False)  # filled in by the registry

    def __post_init__(self) -> None:
        unknown = set(self.signals) - SIGNALS
        if unknown:
            raise MethodError(
                f"method {self.name!r}: unknown teacher signals {sorted(unknown)};"
                f" allowed: {sorted(SIGNALS)}"
            )
        if self.family not in FAMILIES:
            raise MethodError(f"method {self.name!r}: family must be one of {FAMILIES}")
        if not dataclasses.is_dataclass(self.config):
            raise MethodError(f"method {self.name!r}: config must be a dataclass")
        if self.on_policy:
            from kdbench.rollout import OnPolicyConfig

            if not issubclass(self.config, OnPolicyConfig):
                raise MethodError(
                    f"method {self.name!r}: an on-policy method's config must subclass "
                    "kdbench.rollout.OnPolicyConfig (its sampling settings)"
                )
            if "logits" not in self.signals:
                raise MethodError(
                    f"method {self.name!r}: an on-policy method reads the teacher's 'logits' "
                    "on the student's samples; declare that signal"
                )

    @property
    def needs_teacher(self) -> bool:
        """The teacher runs on every batch (any signal but generations, which are text made
        once per suite). Such a method also needs teacher and student to share a vocabulary:
        logits are compared token for token, hidden states and attention position by position."""
        return bool(self.signals - {"generations"})

    def make_config(self, overrides: dict[str, Any] | None = None) -> Any:
        """The config dataclass with ``overrides``; unknown fields are refused by name."""
        overrides = overrides or {}
        names = [f.name for f in dataclasses.fields(self.config)]
        prefix = f"method_config.{self.name}"
        try:
            hints = typing.get_type_hints(self.config)
        except Exception:  # an annotation that cannot be resolved here: left to the dataclass
            hints = {}
        for key, value in overrides.items():
            if key not in names:
                raise MethodError(
                    f"unknown field; allowed: {', '.join(names)}" + _did_you_mean(str(key), names),
                    f"{prefix}.{_key_text(key)}",
                )
            if key in hints and _matches(value, hints[key]) is False:
                raise MethodError(
                    f"must be {_describe(hints[key])}, got {value!r}", f"{prefix}.{key}"
                )
        try:
            return self.config(**overrides)
        except (TypeError, ValueError, AssertionError) as e:
            text = str(e)
            blamed = next((n for n in names if text.startswith((f"{n} ", f"{n}:"))), None)
            raise MethodError(text, f"{prefix}.{blamed}" if blamed else prefix) from None

    def parameters(self) -> list[dict[str, Any]]:
        """Name, type and default of each config field (for ``kdbench methods``)."""
        return [
            {"name": f.name, "type": getattr(f.type, "__name__", str(f.type)), "default": f.default}
            for f in dataclasses.fields(self.config)
        ]


def _key_text(key: Any) -> str:
    """A key as a field name: itself when printable, else its ``repr``."""
    text = str(key)
    return text if text and text.isprintable() and " " not in text else repr(text)


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether a TOML value fits a config field's type hint: booleans are not numbers, strings
    are not numbers, a float must be finite; None when the hint is not one this checks."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        found = [_matches(value, a) for a in args]
        return True if any(found) else (None if None in found else False)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            found = [_matches(v, a) for v, a in zip(value, args, strict=True)]
        else:
            found = [_matches(v, args[0]) for v in value] if args else []
        return False if False in found else (None if None in found else True)
    return None


def _describe(hint: Any) -> str:
    """A type hint for people: ``a number``, ``a list of a string``, ``a string or ...``."""
    simple = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in simple:
        return simple[hint]
    if hint is type(None):
        return "absent"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (list, tuple, collections.abc.Sequence):
        inner = [a for a in args if a is not Ellipsis]
        return "a list" + (f" of ({_describe(inner[0])})" if len(inner) == 1 else "")
    return getattr(hint, "__name__", str(hint))


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with every plugin of the ``kdbench`` entry-point group loaded."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT)
    pm.check_pending()  # a misspelled hook implementation fails here, not silently
    return pm


def registry(pm: pluggy.PluginManager | None = None) -> dict[str, Method]:
    """All registered methods by name."""
    pm = pm or plugin_manager()
    found: dict[str, Method] = {}
    for impl in pm.hook.kdbench_methods.get_hookimpls():
        plugin_name = impl.plugin_name
        for method in impl.function():
            if method.name in found:
                raise MethodError(
                    f"method {method.name!r} is registered twice: by "
                    f"{found[method.name].plugin} and {plugin_name}"
                )
            found[method.name] = dataclasses.replace(method, plugin=plugin_name)
    return dict(sorted(found.items()))


def resolve(names: list[str] | tuple[str, ...], known: dict[str, Method]) -> list[Method]:
    """The methods named (all of them when ``names`` is empty), with "did you mean" errors."""
    if not names:
        return list(known.values())
    out = []
    for name in names:
        if name not in known:
            raise MethodError(
                f"unknown method {name!r}{_did_you_mean(name, list(known))}; "
                f"registered: {', '.join(known)}"
            )
        out.append(known[name])
    return out


def plugin_versions() -> dict[str, str]:
    """The distribution and version behind each ``kdbench`` entry point (for provenance)."""
    out = {}
    for ep in importlib.metadata.entry_points(group=PROJECT):
        dist = ep.dist
        out[ep.name] = f"{dist.name}=={dist.version}" if dist else "unknown"
    return out
