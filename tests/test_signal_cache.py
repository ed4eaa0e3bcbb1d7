"""The teacher-signal cache: one teacher pass, signals read back equal to a live pass, damaged
or half-written entries never read, and training from the cache runs no teacher at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdbench import signal_cache
from kdbench.config import Budget, DataSpec
from kdbench.losses import topk_signals
from kdbench.methods import registry
from kdbench.models import load_pretrained
from kdbench.signals import live_outputs as teacher_signals
from kdbench.train import train
from kdbench.transfer import transfer_batch

from .test_generations import noisy_teacher

DATA = DataSpec(tasks=("addition", "compare"), n_per_task=12, max_length=48)
ALL = frozenset({"logits", "hidden_states", "attentions", "qkv"})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return noisy_teacher(tmp_path_factory.mktemp("teacher") / "t")


@pytest.fixture(scope="module")
def entry(teacher, tmp_path_factory) -> dict:
    return signal_cache.ensure(teacher, DATA, ALL, 8, tmp_path_factory.mktemp("cache"))


def _live(teacher: Path, idx: torch.Tensor):
    model, tok = load_pretrained(str(teacher))
    model.set_attn_implementation("eager")
    data = transfer_batch(DATA, tok)
    width = int(data.attention_mask[idx].sum(1).max())
    batch = {
        "input_ids": data.input_ids[idx, :width],
        "attention_mask": data.attention_mask[idx, :width],
    }
    return teacher_signals(model.eval(), ALL, batch), batch["attention_mask"].bool(), width


def test_cached_signals_equal_a_live_teacher_pass(teacher, entry) -> None:
    assert (
        entry.built
        and signal_cache.open_cache(entry.path).manifest["teacher_forwards"] == 2 * DATA.n_per_task
    )
    cache = signal_cache.open_cache(entry.path)
    idx = torch.tensor([5, 0, 17, 3])  # shuffled, mixed tasks and lengths
    live, mask, width = _live(teacher, idx)
    got = cache.batch(idx, width)

    want = topk_signals(live["logits"], 8)
    assert torch.equal(got["topk_indices"][mask], want["topk_indices"][mask])
    torch.testing.assert_close(got["topk_logits"][mask], want["topk_logits"][mask])
    torch.testing.assert_close(got["logsumexp"][mask], want["logsumexp"][mask])
    torch.testing.assert_close(got["rest_logprob"][mask], want["rest_logprob"][mask])
    assert "logits" not in got and got.is_topk  # top-k form: the losses take the k + 1 buckets
    for name in ("hidden_states", "qkv"):
        assert len(got[name]) == len(live[name])
        for a, b in zip(got[name], live[name], strict=True):
            torch.testing.assert_close(a[mask], b[mask], atol=2e-2, rtol=2e-3)  # float16
    assert len(got["attentions"]) == len(live["attentions"])
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    for a, b in zip(got["attentions"], live["attentions"], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(
            a.masked_fill(~pair, 0), b.masked_fill(~pair, 0), atol=1e-3, rtol=0
        )
    assert entry.bytes_per_token > 0


def test_an_entry_is_reused_and_a_damaged_one_rebuilt(teacher, entry, tmp_path) -> None:
    root = Path(entry.path).parent.parent
    again = signal_cache.ensure(teacher, DATA, ALL, 8, root)
    assert again.path == entry.path and not again.built

    hidden = Path(entry.path) / "hidden_states.npy"
    raw = bytearray(hidden.read_bytes())
    raw[-3] ^= 0xFF  # one flipped byte, same size: only the checksum sees it
    hidden.write_bytes(bytes(raw))
    signal_cache.open_cache(entry.path)  # a size check alone would pass...
    with pytest.raises(signal_cache.CacheError, match="damaged"):
        signal_cache.open_cache(entry.path, verify=True)
    rebuilt = signal_cache.ensure(teacher, DATA, ALL, 8, root)  # ...the stage's check does not
    assert rebuilt.built and rebuilt.path == entry.path
    signal_cache.open_cache(rebuilt.path, verify=True)

    with hidden.open("r+b") as f:  # truncated, as by a full disk
        f.truncate(hidden.stat().st_size - 100)
    with pytest.raises(signal_cache.CacheError, match="truncated"):
        signal_cache.open_cache(entry.path)
    assert signal_cache.ensure(teacher, DATA, ALL, 8, root).built


def test_a_build_that_dies_leaves_no_entry(teacher, tmp_path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(signal_cache, "sha256_file", boom)  # dies before the manifest is written
    with pytest.raises(OSError):
        signal_cache.ensure(teacher, DATA, frozenset({"logits"}), 4, tmp_path)
    monkeypatch.undo()
    folder = tmp_path / "signals"
    assert [p for p in folder.iterdir() if ".tmp-" not in p.name] == []
    assert signal_cache.ensure(teacher, DATA, frozenset({"logits"}), 4, tmp_path).built


def test_full_logits_when_k_is_zero(teacher, tmp_path) -> None:
    e = signal_cache.ensure(teacher, DATA, frozenset({"logits"}), 0, tmp_path)
    cache = signal_cache.open_cache(e.path)
    idx = torch.tensor([1, 2])
    live, mask, width = _live(teacher, idx)
    got = cache.batch(idx, width)["logits"][mask]
    torch.testing.assert_close(got, live["logits"][mask], atol=1e-4, rtol=1e-5)  # batching


def test_training_from_the_cache_runs_no_teacher_and_matches_live_training(
    teacher, entry, tmp_path
) -> None:
    """kd from a full-logits cache reaches the weights of kd with the teacher run live; kd from
    the top-k entry trains too, and neither touches the teacher."""
    from kdbench.models import build_llama

    model, tok = load_pretrained(str(teacher))
    data = transfer_batch(DATA, tok)
    method = registry()["kd"]
    cfg = method.make_config()
    budget = Budget(steps=3, batch_size=4, lr=1e-3, warmup=0.0)
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 48}
    full = signal_cache.open_cache(
        signal_cache.ensure(teacher, DATA, frozenset({"logits"}), 0, tmp_path).path
    )
    assert full.covers(method) and not full.covers(registry()["fitnets"])

    def run(**kw):
        student = build_llama(arch, tok, seed=1)
        return student, train(student, method, cfg, data, budget, 3, seed=0, **kw)

    a, cached = run(cache=full, teacher_config=model.config)
    b, live = run(teacher=model)
    assert cached["teacher_forwards"] == 0 and live["teacher_forwards"] == 3 * budget.batch_size
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)
    _, topk = run(cache=signal_cache.open_cache(entry.path), teacher_config=model.config)
    assert topk["teacher_forwards"] == 0 and np.isfinite(topk["final_loss"])


def test_only_the_hidden_layers_the_methods_read_are_cached(teacher, tmp_path) -> None:
    """fitnets with its uniform pairs reads teacher layers 1..L of a 2-layer teacher for a
    1-layer student (and hidden_cosine the last): the embeddings are not stored, the kept
    layers read back as in the full entry, and fitnets trains to the same weights from both."""
    from kdbench.models import build_llama

    model, tok = load_pretrained(str(teacher))
    depth = model.config.num_hidden_layers
    methods = [registry()[m] for m in ("fitnets", "hidden_cosine", "kd", "seqkd")]
    kept = signal_cache.hidden_layers_for(methods, {}, [1], depth)
    assert kept == (depth,)
    assert signal_cache.hidden_layers_for(methods, {}, [1, None], depth) is None  # unknown depth
    both = signal_cache.hidden_layers_for(
        methods, {"hidden_cosine": {"layers": [[0, 0]]}}, [1], depth
    )
    assert both == (0, depth)
    info = signal_cache.ensure(
        teacher, DATA, frozenset({"hidden_states"}), 8, tmp_path, hidden_layers=kept
    )
    every = signal_cache.ensure(teacher, DATA, frozenset({"hidden_states"}), 8, tmp_path)
    assert every.path != info.path
    small, whole = signal_cache.open_cache(info.path), signal_cache.open_cache(every.path)
    assert small.hidden_layers == kept and whole.hidden_layers is None
    assert small.manifest["files"]["hidden_states"]["bytes"] < (
        whole.manifest["files"]["hidden_states"]["bytes"] * 2 / (depth + 1) + 1024
    )
    idx = torch.tensor([3, 1])
    a, b = small.batch(idx, 20)["hidden_states"], whole.batch(idx, 20)["hidden_states"]
    assert len(a) == len(b) == depth + 1 and a[0].shape[-1] == 0
    assert torch.equal(a[depth], b[depth])

    fitnets = registry()["fitnets"]
    data = transfer_batch(DATA, tok)
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 48}
    students = []
    for cache in (small, whole):
        students.append(build_llama(arch, tok, seed=1))
        train(
            students[-1],
            fitnets,
            fitnets.make_config(),
            data,
            Budget(steps=2, batch_size=4, lr=1e-3, warmup=0.0),
            2,
            seed=0,
            cache=cache,
            teacher_config=model.config,
        )
    for pa, pb in zip(students[0].parameters(), students[1].parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_the_manifest_must_list_what_the_signals_need(teacher, entry, tmp_path) -> None:
    """A signal file removed together with its manifest entry, a manifest without a checksum,
    or a damaged ``.npy`` header is a damaged entry (one CacheError line), rebuilt by ensure();
    the full corpus is tests/bad_input/test_caches.py."""
    assert signal_cache.files_needed({"qkv", "attentions"}, 8) == {
        "lengths": "the layout",
        "offsets": "the layout",
        "attentions": "signal attentions",
        "att_offsets": "signal attentions",
        "q": "signal qkv",
        "k": "signal qkv",
        "v": "signal qkv",
    }
    assert list(signal_cache.files_needed({"logits"}, 0)) == ["lengths", "offsets", "logits"]
    root = tmp_path / "cache"
    shutil.copytree(Path(entry.path).parent.parent, root)
    folder = root / "signals" / Path(entry.path).name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert signal_cache.manifest_problem(manifest) is None

    (folder / "q.npy").unlink()
    del manifest["files"]["q"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(signal_cache.CacheError, match=r"lists no q\.npy \(signal qkv needs it\)"):
        signal_cache.open_cache(folder, verify=True)
    assert signal_cache.ensure(teacher, DATA, ALL, 8, root).built
    assert "q" in signal_cache.open_cache(folder, verify=True).arrays

    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["k"]["sha256"]
    assert signal_cache.manifest_problem(manifest) == (
        "manifest.json: k.npy has no SHA-256 checksum (sha256)"
    )
    for bad in ({}, [], [manifest], {**manifest, "files": []}, {**manifest, "topk": "8"}):
        assert signal_cache.manifest_problem(bad)

    raw = (folder / "offsets.npy").read_bytes()
    (folder / "offsets.npy").write_bytes(b"\0" * 10 + raw[10:])  # same size: the header gone
    with pytest.raises(signal_cache.CacheError, match="offsets.npy has a damaged header") as e:
        signal_cache.open_cache(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(signal_cache.CacheError, match=r"offsets\.npy is damaged \(checksum\)"):
        signal_cache.open_cache(folder, verify=True)
    assert signal_cache.ensure(teacher, DATA, ALL, 8, root).built
    signal_cache.open_cache(folder, verify=True)
