"""The teacher-signal cache: the teacher runs once over the transfer set, and every method's
training jobs read its signals from disk instead of running the teacher again.

What is cached (the suite's ``[cache]`` table, :class:`kdbench.config.CacheSpec`):

- ``logits``: the top-k logits per token with their ids and the full log-normaliser
  (``topk_logits``, ``topk_indices``, ``logsumexp``: the keys :func:`kdbench.losses.topk_signals`
  makes and every logit loss accepts), or the full distribution with ``topk = 0``;
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
entry. :func:`ensure` checks every checksum before handing an entry out and rebuilds a damaged
one; :func:`open_cache` (in each job) checks the manifest and every file's size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.config import CACHEABLE, DataSpec
from kdbench.disk_cache import atomic_entry, sha256_file
from kdbench.generations import teacher_fingerprint
from kdbench.models import job_device, load_pretrained, prepare_models
from kdbench.records import SignalCacheInfo
from kdbench.signals import TeacherSignals, live_outputs
from kdbench.transfer import transfer_batch

FORMAT = 1  # bump when the layout changes: older entries are then never read
PER_TOKEN = {
    "logits": ("topk_logits", "topk_indices", "logsumexp"),
    "hidden_states": ("hidden_states",),
    "qkv": ("q", "k", "v"),
}


class CacheError(RuntimeError):
    """A cache entry is missing, incomplete or damaged."""


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
    """Open an entry; raises :class:`CacheError` when its manifest is missing or a file's size
    (with ``verify``, its SHA-256 too) differs from what the manifest recorded."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CacheError(f"teacher-signal cache {folder}: no readable manifest ({e})") from None
    arrays = {}
    for name, meta in manifest["files"].items():
        path = folder / f"{name}.npy"
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            raise CacheError(f"teacher-signal cache {folder}: {path.name} is missing or truncated")
        if verify and sha256_file(path) != meta["sha256"]:
            raise CacheError(f"teacher-signal cache {folder}: {path.name} is damaged (checksum)")
        arrays[name] = np.load(path, mmap_mode="r")
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
                values, ids = logits.topk(topk, dim=-1)
                put("topk_logits", values, np.float32)
                put("topk_indices", ids, np.int16 if vocab < 2**15 else np.int32)
                put("logsumexp", logits.logsumexp(-1), np.float32)
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
    if folder.exists():
        try:
            return _info(open_cache(folder, verify=True).manifest, folder, built=False)
        except CacheError as e:
            print(f"{e}: rebuilding it")
            shutil.rmtree(folder, ignore_errors=True)
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
