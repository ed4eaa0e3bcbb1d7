"""The teacher-signal cache: the teacher runs once over the transfer set, and every method's
training jobs read its signals from disk instead of running the teacher again.

What is cached (the suite's ``[cache]`` table, :class:`kdbench.config.CacheSpec`):

- ``logits``: the top-k logits per token with their ids, the full log-normaliser and the log
  of the mass outside the top k (``topk_logits``, ``topk_indices``, ``logsumexp``,
  ``rest_logprob``: the keys :func:`kdbench.losses.topk_signals` makes and every logit loss
  accepts), or the full distribution with ``topk = 0``;
- ``hidden_states``: every layer's output (embeddings included), float16; or only the layers
  the suite's methods read (``hidden_layers``, :func:`hidden_layers_for`), the others being
  empty placeholders ``(B, T, 0)`` in the tuple a method gets (reading one fails loudly);
- ``attentions``: every layer's attention maps, float16;
- ``qkv``: the last layer's q/k/v projections (:func:`kdbench.train.capture_qkv`), float16.

Layout: only real (non-padding) tokens are stored, token-major and ragged: example ``i``'s
tokens are rows ``offsets[i] : offsets[i] + lengths[i]`` of each per-token array; attention maps
are flattened per example (``layers x heads x L x L``) at ``att_offsets[i]``. The arrays are
``.npy`` files read through memory maps, so a job touches only the rows of its batches.

Key: the SHA-256 of the teacher's weights and tokenizer files, the transfer set's token ids,
and the signal spec (signals, k, dtypes, format version). A second suite with the same teacher
and data finds the same entry.

Integrity: an entry is built in a temporary folder and renamed into place after its
``manifest.json`` (every file's size and SHA-256) is written, so a build that dies leaves no
entry. :func:`open_cache` (in each job) checks the manifest against what the methods need
(:func:`manifest_problem`: its fields and types, and that it lists every file its signals
require, :func:`files_needed`), every file's size, each ``.npy`` header and the arrays' shapes
against the manifest and each other (:func:`arrays_problem`); with ``verify`` every checksum
too. Whatever is wrong is one :class:`CacheError` line; :func:`ensure` verifies an entry before
handing it out and rebuilds a damaged one (a manifest that is not JSON, ``{}``, a list, lacks a
file's checksum...: all damage).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.config import CACHEABLE, DataSpec
from kdbench.disk_cache import atomic_entry, remove_entry, sha256_file
from kdbench.generations import teacher_fingerprint
from kdbench.losses import topk_signals
from kdbench.models import job_device, load_pretrained, prepare_models
from kdbench.records import SignalCacheInfo
from kdbench.signals import TeacherSignals, live_outputs
from kdbench.transfer import transfer_batch

FORMAT = 2  # bump when the layout changes: older entries are then never read (2: rest_logprob)
PER_TOKEN = {
    "logits": ("topk_logits", "topk_indices", "logsumexp", "rest_logprob"),
    "hidden_states": ("hidden_states",),
    "qkv": ("q", "k", "v"),
}


# the files besides the per-token signal arrays: where each example's tokens and maps start
LAYOUT = ("lengths", "offsets")
ATTENTION_FILES = ("attentions", "att_offsets")
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"
_INTEGER_FIELDS = ("n_examples", "n_tokens", "bytes", "teacher_tokens", "teacher_forwards")


class CacheError(RuntimeError):
    """A cache entry is missing, incomplete or damaged (one line: the entry and what is wrong)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "?"


def files_needed(signals: Iterable[str], topk: int) -> dict[str, str]:
    """The ``.npy`` files (stems) an entry of ``signals`` must hold, each with what needs it:
    the layout (:data:`LAYOUT`), the per-token arrays (:data:`PER_TOKEN`; ``logits`` alone
    when ``topk`` is 0, the full distribution) and the attention maps with their offsets."""
    needed = dict.fromkeys(LAYOUT, "the layout")
    for signal in sorted(signals):
        if signal == "logits" and not topk:
            names: tuple[str, ...] = ("logits",)
        elif signal == "attentions":
            names = ATTENTION_FILES
        else:
            names = PER_TOKEN.get(signal, ())
        needed.update(dict.fromkeys(names, f"signal {signal}"))
    return needed


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed ``manifest.json`` (None: nothing): its fields and their types,
    and its ``files`` against :func:`files_needed` (each with an integer ``bytes`` and a
    SHA-256)."""
    if not isinstance(manifest, dict):
        kind = _JSON_KINDS.get(type(manifest), type(manifest).__name__)
        return f"manifest.json holds a JSON {kind}, not an object"
    signals = manifest.get("signals")
    if (
        not isinstance(signals, list)
        or not all(isinstance(x, str) and x in CACHEABLE for x in signals)
        or len(set(signals)) != len(signals)
    ):
        return f"manifest.json: signals must be a list of distinct names from {list(CACHEABLE)}"
    if not _is_int(manifest.get("topk")):
        return "manifest.json: topk must be an integer >= 0"
    for field in _INTEGER_FIELDS:
        if not _is_int(manifest.get(field)):
            return f"manifest.json: {field} must be an integer >= 0"
    per_token = manifest.get("bytes_per_token")
    if not isinstance(per_token, int | float) or isinstance(per_token, bool) or per_token < 0:
        return "manifest.json: bytes_per_token must be a number >= 0"
    if "hidden_layers" in manifest or "hidden_count" in manifest:
        kept, count = manifest.get("hidden_layers"), manifest.get("hidden_count")
        if not (
            _is_int(count, 1)
            and isinstance(kept, list)
            and kept
            and all(_is_int(i) and i < count for i in kept)
            and kept == sorted(set(kept))
        ):
            return (
                "manifest.json: hidden_layers must be increasing layer numbers below an integer "
                "hidden_count"
            )
    if "attentions" in signals:
        shape = manifest.get("attention_shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(x, 1) for x in shape)):
            return "manifest.json: attention_shape must be [layers, heads], two integers >= 1"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "manifest.json: files must be an object of file name -> {bytes, sha256}"
    needed = files_needed(signals, manifest["topk"])
    for name, by in needed.items():
        if name not in files:
            return f"manifest.json lists no {name}.npy ({by} needs it)"
    for name, meta in files.items():
        if name not in needed:
            return f"manifest.json lists {_one_line(name)!r}, not a file of this entry"
        if not isinstance(meta, dict) or not _is_int(meta.get("bytes")):
            return f"manifest.json: {name}.npy has no integer size (bytes)"
        digest = meta.get("sha256")
        if not (
            isinstance(digest, str)
            and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)
        ):
            return f"manifest.json: {name}.npy has no SHA-256 checksum (sha256)"
    if manifest["bytes"] != sum(meta["bytes"] for meta in files.values()):
        return "manifest.json: bytes is not the sum of its files' sizes"
    return None


def arrays_problem(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str | None:
    """What is wrong with an entry's arrays (opened as memory maps) against its (well-formed)
    manifest and each other (None: nothing): dtypes, shapes, and the offsets that locate each
    example's rows (the small ``lengths``/``offsets`` arrays are read in full)."""
    n, n_tok = manifest["n_examples"], manifest["n_tokens"]
    lengths, offsets = arrays["lengths"], arrays["offsets"]
    for name, want in (("lengths", (n,)), ("offsets", (n + 1,))):
        if arrays[name].shape != want or arrays[name].dtype.kind != "i":
            return f"{name}.npy is not an integer array of shape {want}"
    if (
        (np.asarray(lengths) < 0).any()
        or offsets[0] != 0
        or not np.array_equal(np.diff(offsets), lengths)
        or offsets[-1] != n_tok
    ):
        return "lengths.npy and offsets.npy do not lay out n_tokens tokens"
    for name, arr in arrays.items():
        if name not in LAYOUT + ("att_offsets", "topk_indices") and arr.dtype.kind != "f":
            return f"{name}.npy holds {arr.dtype}, not floating-point values"
        per_token = name in PER_TOKEN["logits"] + PER_TOKEN["qkv"] + ("logits", "hidden_states")
        if per_token and (arr.ndim < 1 or arr.shape[0] != n_tok):
            return f"{name}.npy has shape {arr.shape}, not one row per token ({n_tok})"
    if manifest["topk"] and "topk_logits" in arrays:
        k = manifest["topk"]
        for name in ("topk_logits", "topk_indices"):
            if arrays[name].shape != (n_tok, k):
                return f"{name}.npy has shape {arrays[name].shape}, not (tokens, topk={k})"
        if (
            arrays["topk_indices"].dtype.kind != "i"
            or arrays["logsumexp"].ndim != 1
            or arrays["rest_logprob"].ndim != 1
        ):
            return (
                "topk_indices.npy, logsumexp.npy or rest_logprob.npy has the wrong dtype or shape"
            )
    if "hidden_states" in arrays:
        hs, kept = arrays["hidden_states"], manifest.get("hidden_layers")
        if hs.ndim != 3 or (kept is not None and hs.shape[1] != len(kept)):
            return f"hidden_states.npy has shape {hs.shape}, not (tokens, kept layers, hidden)"
    if "attentions" in arrays:
        layers, heads = manifest["attention_shape"]
        att, att_offsets = arrays["attentions"], arrays["att_offsets"]
        sizes = layers * heads * np.asarray(lengths, dtype=np.int64) ** 2
        if (
            att.ndim != 1
            or att_offsets.shape != (n + 1,)
            or att_offsets.dtype.kind != "i"
            or not np.array_equal(att_offsets, np.concatenate([[0], np.cumsum(sizes)]))
            or att_offsets[-1] != att.shape[0]
        ):
            return "attentions.npy and att_offsets.npy do not hold one map per layer and head"
    return None


def signals_for(methods: Iterable[Any], wanted: tuple[str, ...] | None) -> frozenset[str]:
    """The cacheable signals that some method reads per batch from the transfer set (methods
    with their own training data see other sequences and run the teacher live), restricted to
    the suite's ``cache.signals`` when it lists them."""
    used: set[str] = set()
    for method in methods:
        if method.data is None:
            used |= set(method.signals) & set(CACHEABLE)
    return frozenset(used if wanted is None else used & set(wanted))


def hidden_layers_for(
    methods: Iterable[Any],
    method_config: dict[str, dict[str, Any]],
    student_layers: Iterable[int | None],
    teacher_layers: int | None,
) -> tuple[int, ...] | None:
    """The teacher's hidden-state layers (0 = embeddings, as :mod:`kdbench.layers` numbers
    them) that the methods reading hidden states from the cache use with these students, or
    None (cache every layer) when that is not known up front: a method reading hidden states
    without a ``layers`` config field (:func:`kdbench.layers.check_layers`), or a student or
    teacher whose depth is unknown."""
    from kdbench.layers import layer_pairs

    depths = list(student_layers)
    needed: set[int] = set()
    for method in methods:
        if method.data is not None or "hidden_states" not in method.signals:
            continue
        layers = getattr(method.make_config(method_config.get(method.name)), "layers", None)
        if layers is None or teacher_layers is None or None in depths:
            return None
        for depth in depths:
            try:
                needed |= {t for _, t in layer_pairs(layers, depth, teacher_layers)}
            except ValueError:  # pairs out of range: the training job says so
                return None
    return tuple(sorted(needed)) if needed else None


def cache_key(
    teacher_path: str | Path,
    input_ids: torch.Tensor,
    signals,
    topk: int,
    dtype: torch.dtype = torch.float32,
    hidden_layers: tuple[int, ...] | None = None,
) -> str:
    h = hashlib.sha256()
    spec = {"signals": sorted(signals), "topk": topk, "format": FORMAT, "float": "float16"}
    if hidden_layers is not None and "hidden_states" in signals:  # None: every layer
        spec["hidden_layers"] = list(hidden_layers)
    if dtype != torch.float32:  # a half-precision teacher pass gives other values
        spec["teacher_dtype"] = str(dtype).removeprefix("torch.")
    h.update(json.dumps([teacher_fingerprint(teacher_path), spec], sort_keys=True).encode())
    h.update(input_ids.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:20]


@dataclass
class SignalCache:
    """An opened cache entry; :meth:`batch` gives a method's :class:`TeacherSignals` for a batch
    of examples (rows of the transfer set)."""

    folder: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def signals(self) -> frozenset[str]:
        return frozenset(self.manifest["signals"])

    @property
    def bytes_per_token(self) -> float:
        return self.manifest["bytes_per_token"]

    @property
    def hidden_layers(self) -> tuple[int, ...] | None:
        """The teacher layers whose hidden states are stored (None: every layer)."""
        kept = self.manifest.get("hidden_layers")
        return None if kept is None else tuple(kept)

    def covers(self, method: Any) -> bool:
        """Whether every per-batch teacher signal of ``method`` is in this entry."""
        wanted = set(method.signals) - {"generations"}
        return method.data is None and bool(wanted) and wanted <= self.signals

    def batch(
        self,
        idx: torch.Tensor,
        width: int,
        signals: Iterable[str] | None = None,
        method: str = "(any)",
    ) -> TeacherSignals:
        """The cached ``signals`` (default: all in the entry) of examples ``idx`` as the
        :class:`TeacherSignals` of ``method``, right-padded to ``width`` tokens like the batch
        (padding positions are zeros: losses mask them). Float arrays come back float32. Only
        the rows of these examples are read from disk."""
        declared = self.signals if signals is None else frozenset(signals)
        wanted = self.signals & declared
        idx_np = idx.cpu().numpy()
        lengths = np.minimum(self.arrays["lengths"][idx_np], width)
        starts = self.arrays["offsets"][idx_np]
        b = len(idx_np)
        rows = np.repeat(np.arange(b), lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = np.repeat(starts, lengths) + cols
        order = np.argsort(src, kind="stable")  # memory maps read fastest in file order
        rows, cols, src = rows[order], cols[order], src[order]

        def gather(name: str) -> torch.Tensor:
            arr = self.arrays[name]
            out = np.zeros((b, width, *arr.shape[1:]), dtype=arr.dtype)
            out[rows, cols] = arr[src]
            t = torch.from_numpy(out)
            return t.float() if t.is_floating_point() else t.long()

        out: dict[str, Any] = {}
        if "logits" in wanted:
            if self.manifest["topk"]:
                for name in PER_TOKEN["logits"]:
                    out[name] = gather(name)
            else:
                out["logits"] = gather("logits")
        if "hidden_states" in wanted:
            hs = gather("hidden_states")  # (B, T, kept layers, H)
            kept = self.hidden_layers
            if kept is None:
                out["hidden_states"] = tuple(hs[:, :, i] for i in range(hs.shape[2]))
            else:  # the layers not stored: empty (B, T, 0) placeholders
                where = {layer: j for j, layer in enumerate(kept)}
                empty = hs.new_zeros(b, width, 0)
                out["hidden_states"] = tuple(
                    hs[:, :, where[i]] if i in where else empty
                    for i in range(self.manifest["hidden_count"])
                )
        if "qkv" in wanted:
            out["qkv"] = tuple(gather(name) for name in PER_TOKEN["qkv"])
        if "attentions" in wanted:
            layers, heads = self.manifest["attention_shape"]
            att = np.zeros((layers, b, heads, width, width), dtype=np.float16)
            flat, offs = self.arrays["attentions"], self.arrays["att_offsets"]
            for j, i in enumerate(idx_np):
                n = int(self.arrays["lengths"][i])
                block = flat[offs[i] : offs[i] + layers * heads * n * n]
                att[:, j, :, :n, :n] = block.reshape(layers, heads, n, n)[:, :, :width, :width]
            maps = torch.from_numpy(att).float()
            out["attentions"] = tuple(maps[i] for i in range(layers))
        return TeacherSignals(out, declared, method, "cache")


def open_cache(folder: str | Path, verify: bool = False) -> SignalCache:
    """Open an entry; raises :class:`CacheError` (one line) when its manifest is missing,
    unreadable or malformed (:func:`manifest_problem`), a file is missing or its size differs
    from what the manifest recorded (with ``verify``, its SHA-256 too), a ``.npy`` header is
    unreadable, or the arrays do not fit the manifest (:func:`arrays_problem`)."""
    folder = Path(folder)

    def damaged(what: str) -> CacheError:
        return CacheError(_one_line(f"teacher-signal cache {folder}: {what}"))

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise damaged(f"no readable manifest ({e})") from None
    if problem := manifest_problem(manifest):
        raise damaged(problem)
    files = manifest["files"]
    for name, meta in files.items():
        path = folder / f"{name}.npy"
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            raise damaged(f"{path.name} is missing or truncated")
    if verify:
        for name, meta in files.items():
            try:
                digest = sha256_file(folder / f"{name}.npy")
            except OSError as e:
                raise damaged(f"{name}.npy is unreadable ({e})") from None
            if digest != meta["sha256"]:
                raise damaged(f"{name}.npy is damaged (checksum)")
    arrays = {}
    for name in files:
        try:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
        except Exception as e:  # numpy's header parser raises ValueError, TokenError, ...
            raise damaged(f"{name}.npy has a damaged header ({type(e).__name__}: {e})") from None
    if problem := arrays_problem(manifest, arrays):
        raise damaged(problem)
    return SignalCache(folder, manifest, arrays)


def build(
    teacher: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    signals: frozenset[str],
    topk: int,
    folder: Path,
    batch_size: int = 64,
    progress: Any = None,
    hidden_layers: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """One teacher pass over the transfer set, written to ``folder`` as one atomic entry;
    ``hidden_layers``: the hidden-state layers to keep (None: all)."""
    prepare_models(signals, teacher)  # other kernels than eager return no attention maps
    teacher.eval()
    with atomic_entry(folder) as tmp:
        tmp.mkdir()
        return _fill(
            teacher,
            input_ids,
            attention_mask,
            signals,
            topk,
            tmp,
            batch_size,
            progress,
            hidden_layers,
        )


def _fill(
    teacher: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    signals: frozenset[str],
    topk: int,
    tmp: Path,
    batch_size: int,
    progress: Any,
    hidden_layers: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Write the entry's arrays and manifest into the (new, empty) folder ``tmp``."""
    device = next(teacher.parameters()).device
    lengths = attention_mask.sum(1).numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_tok = int(offsets[-1])
    arrays: dict[str, np.ndarray] = {}
    manifest: dict[str, Any] = {"signals": sorted(signals), "topk": topk}

    def alloc(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shape)
        return arrays[name]

    np.save(tmp / "lengths.npy", lengths)
    np.save(tmp / "offsets.npy", offsets)
    start = time.perf_counter()
    forwards = 0
    for lo in range(0, len(input_ids), batch_size):
        hi = min(lo + batch_size, len(input_ids))
        width = int(lengths[lo:hi].max())
        batch = {
            "input_ids": input_ids[lo:hi, :width].to(device),
            "attention_mask": attention_mask[lo:hi, :width].to(device),
        }
        out = live_outputs(teacher, signals, batch)
        forwards += hi - lo
        mask = batch["attention_mask"].bool().cpu()
        a, b = int(offsets[lo]), int(offsets[hi])

        def put(name: str, value: torch.Tensor, dtype: Any, a=a, b=b, mask=mask) -> None:
            value = value.detach().cpu()[mask]  # (tokens, ...) in example-major order
            if value.is_floating_point():
                value = value.float()  # numpy has no bfloat16
            if name not in arrays:
                alloc(name, (n_tok, *value.shape[1:]), dtype)
            arrays[name][a:b] = value.numpy().astype(dtype)

        if "logits" in signals:
            logits = out["logits"].float()
            if topk and topk < logits.shape[-1]:
                vocab = logits.shape[-1]
                top = topk_signals(logits, topk)
                put("topk_logits", top["topk_logits"], np.float32)
                put("topk_indices", top["topk_indices"], np.int16 if vocab < 2**15 else np.int32)
                put("logsumexp", top["logsumexp"], np.float32)
                put("rest_logprob", top["rest_logprob"], np.float32)
            else:
                put("logits", logits, np.float32)
        if "hidden_states" in signals:
            states = out["hidden_states"]
            if hidden_layers is not None:
                if hidden_layers[-1] >= len(states):
                    raise ValueError(
                        f"hidden layer {hidden_layers[-1]} asked of a teacher with "
                        f"{len(states) - 1} layers"
                    )
                manifest.update(hidden_layers=list(hidden_layers), hidden_count=len(states))
                states = [states[i] for i in hidden_layers]
            put("hidden_states", torch.stack(states, 2), np.float16)
        if "qkv" in signals:
            for name, value in zip(PER_TOKEN["qkv"], out["qkv"], strict=True):
                put(name, value, np.float16)
        if "attentions" in signals:
            maps = torch.stack(out["attentions"], 0).float().cpu()  # (layers, B, heads, T, T)
            layers, _, heads = maps.shape[:3]
            manifest["attention_shape"] = [layers, heads]
            if "attentions" not in arrays:
                sizes = layers * heads * lengths**2
                att_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
                np.save(tmp / "att_offsets.npy", att_offsets)
                alloc("attentions", (int(att_offsets[-1]),), np.float16)
                arrays["_att_offsets"] = att_offsets
            for j in range(hi - lo):
                n = int(lengths[lo + j])
                o = int(arrays["_att_offsets"][lo + j])
                block = maps[:, j, :, :n, :n].reshape(-1).numpy().astype(np.float16)
                arrays["attentions"][o : o + block.size] = block
        if progress is not None:
            progress.update(hi - lo)
    if "logits" in signals and topk and "logits" in arrays:
        manifest["topk"] = 0  # k >= vocabulary: the full distribution was stored
    arrays.pop("_att_offsets", None)
    for arr in arrays.values():
        arr.flush()
    arrays.clear()  # close the memory maps before hashing the files
    files = {}
    for path in sorted(tmp.glob("*.npy")):
        files[path.stem] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    total = sum(f["bytes"] for f in files.values())
    manifest.update(
        files=files,
        n_examples=len(input_ids),
        n_tokens=n_tok,
        bytes=total,
        bytes_per_token=total / max(1, n_tok),
        teacher_forwards=forwards,
        teacher_tokens=n_tok,
        build_s=time.perf_counter() - start,
    )
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def ensure(
    teacher_path: str | Path,
    data: DataSpec,
    signals: frozenset[str],
    topk: int,
    root: str | Path,
    progress_factory: Any = None,
    dtype: str = "auto",
    hidden_layers: tuple[int, ...] | None = None,
) -> SignalCacheInfo:
    """The cache entry for this teacher, transfer set and spec: verified (every checksum) if
    present, (re)built if missing or damaged (a damaged entry is removed, never read). The
    teacher pass runs on the job's GPU when it has one, in the teacher's ``dtype``
    (:func:`kdbench.models.resolve_dtype`; float32 on a CPU), which enters the key, as do
    ``hidden_layers`` (:func:`hidden_layers_for`; None: every layer)."""
    teacher, tokenizer = load_pretrained(str(teacher_path), dtype)
    batch = transfer_batch(data, tokenizer)
    key = cache_key(teacher_path, batch.input_ids, signals, topk, teacher.dtype, hidden_layers)
    folder = Path(root) / "signals" / key
    if folder.exists() or folder.is_symlink():
        try:
            return _info(open_cache(folder, verify=True).manifest, folder, built=False)
        except CacheError as e:
            print(f"{e}: rebuilding it")
            remove_entry(folder)
    bar = (
        progress_factory(total=len(batch.input_ids), desc="teacher signals", unit="seq")
        if progress_factory
        else None
    )
    teacher.to(job_device())
    manifest = build(
        teacher,
        batch.input_ids,
        batch.attention_mask,
        signals,
        topk,
        folder,
        progress=bar,
        hidden_layers=hidden_layers,
    )
    if bar is not None:
        bar.close()
    open_cache(folder)  # the entry now in place (this build's, or a concurrent one's) is sound
    return _info(manifest, folder, built=True)


def _info(manifest: dict[str, Any], folder: Path, built: bool) -> SignalCacheInfo:
    return SignalCacheInfo(
        path=str(folder),
        built=built,
        signals=tuple(manifest["signals"]),
        topk=manifest["topk"],
        bytes=manifest["bytes"],
        bytes_per_token=manifest["bytes_per_token"],
        teacher_tokens=manifest["teacher_tokens"],
    )
