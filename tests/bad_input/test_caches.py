"""The bad-input corpus, damaged caches (issue 11): each case is a real cache entry, built once
by the code under test from a tiny teacher, then damaged in a copy. A damaged teacher-signal
entry is one :class:`~kdbench.signal_cache.CacheError` line from ``open_cache`` (naming the
entry and what is wrong; some damage only verification's checksums see) and ``ensure()``
rebuilds it to arrays equal to the undamaged entry's. A damaged generations file or built
teacher is never read: it is generated or trained again, the same as before the damage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from kdbench import signal_cache
from kdbench.config import DataSpec, load_suite
from kdbench.generations import cached_generations, is_complete, load_generations
from kdbench.signal_cache import CacheError, open_cache
from kdbench.teacher import build_teacher, cached_teacher, recipe_hash

from ..conftest import DELETE, SHRINK, edit_suite, tiny_raw
from ..test_generations import noisy_teacher

DATA = DataSpec(tasks=("addition", "compare"), n_per_task=4, max_length=32)
SIGNALS = frozenset({"logits", "hidden_states", "attentions", "qkv"})
TOPK = 8
LAYERS = (1, 2)  # of the 2-layer teacher's 3 hidden states: the manifest records the choice


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return noisy_teacher(tmp_path_factory.mktemp("teacher") / "t")


# --- the teacher-signal cache ---------------------------------------------------------------


def _manifest(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """Edit the parsed manifest in place (or replace it by what ``edit`` returns)."""

    def damage(folder: Path) -> None:
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        out = edit(manifest)
        path.write_text(json.dumps(manifest if out is None else out))

    return damage


def _forget(name: str) -> Callable[[Path], None]:
    """A signal file removed together with its manifest entry."""

    def damage(folder: Path) -> None:
        (folder / f"{name}.npy").unlink()
        _manifest(lambda m: m["files"].pop(name) and None)(folder)

    return damage


def _bytes(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(edit(path.read_bytes()))

    return damage


def _flip(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[-3] ^= 0xFF  # same size, a valid header: only the checksum sees it
    return bytes(out)


def _replace_by_folder(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return damage


def _entry_is_a_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("not an entry")


def _edit_files(name: str, field: str, value: Any = DELETE) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        if value is DELETE:
            del m["files"][name][field]
        else:
            m["files"][name][field] = value

    return edit


@dataclass(frozen=True)
class Damage:
    name: str
    damage: Callable[[Path], None]
    verified: str  # words of open_cache(verify=True)'s message
    opened: str | None  # words of open_cache()'s message; None: only the checksums see it


SIGNAL_CASES = [
    Damage("manifest {}", _bytes("manifest.json", lambda _: b"{}"), "signals must be", "signals"),
    Damage("manifest []", _bytes("manifest.json", lambda _: b"[]"), "JSON array", "JSON array"),
    Damage(
        "manifest a list of its files",
        _manifest(lambda m: list(m["files"].items())),
        "not an object",
        "not an object",
    ),
    Damage("manifest null", _bytes("manifest.json", lambda _: b"null"), "JSON null", "JSON null"),
    Damage(
        "manifest not JSON",
        _bytes("manifest.json", lambda raw: raw[: len(raw) // 2]),
        "no readable manifest",
        "no readable manifest",
    ),
    Damage(
        "manifest not UTF-8",
        _bytes("manifest.json", lambda raw: b"\xff\xfe" + raw),
        "no readable manifest",
        "no readable manifest",
    ),
    Damage(
        "manifest missing",
        lambda f: (f / "manifest.json").unlink(),
        "no readable manifest",
        "no readable manifest",
    ),
    Damage(
        "manifest a folder",
        _replace_by_folder("manifest.json"),
        "no readable manifest",
        "no readable manifest",
    ),
    Damage(
        "an entry without its checksum",
        _manifest(_edit_files("hidden_states", "sha256")),
        "hidden_states.npy has no SHA-256",
        "hidden_states.npy has no SHA-256",
    ),
    Damage(
        "an entry without its size",
        _manifest(_edit_files("q", "bytes")),
        "q.npy has no integer size",
        "q.npy has no integer size",
    ),
    Damage(
        "a size as a string",
        _manifest(_edit_files("lengths", "bytes", "192")),
        "lengths.npy has no integer size",
        "no integer size",
    ),
    Damage(
        "a checksum that is not hex",
        _manifest(_edit_files("k", "sha256", "x" * 64)),
        "k.npy has no SHA-256",
        "no SHA-256",
    ),
    Damage(
        "an entry that is a number",
        _manifest(lambda m: m["files"].update(v=7)),
        "v.npy has no integer size",
        "no integer size",
    ),
    Damage(
        "files a list",
        _manifest(lambda m: m.update(files=list(m["files"]))),
        "files must be an object",
        "files must be an object",
    ),
    Damage(
        "signals a string",
        _manifest(lambda m: m.update(signals="logits")),
        "signals must be a list",
        "signals must be a list",
    ),
    Damage(
        "an unknown signal",
        _manifest(lambda m: m["signals"].append("logitz")),
        "signals must be",
        "signals must be",
    ),
    Damage("topk true", _manifest(lambda m: m.update(topk=True)), "topk must be", "topk must be"),
    Damage(
        "n_tokens a float",
        _manifest(lambda m: m.update(n_tokens=1.5)),
        "n_tokens must be an integer",
        "n_tokens must be an integer",
    ),
    Damage(
        "n_tokens off by one",
        _manifest(lambda m: m.update(n_tokens=m["n_tokens"] + 1)),
        "do not lay out n_tokens",
        "do not lay out n_tokens",
    ),
    Damage(
        "hidden_layers out of range",
        _manifest(lambda m: m.update(hidden_layers=[1, 7])),
        "hidden_layers must be",
        "hidden_layers must be",
    ),
    Damage(
        "attention_shape missing",
        _manifest(lambda m: m.pop("attention_shape") and None),
        "attention_shape must be",
        "attention_shape must be",
    ),
    Damage(
        "a file not of the entry listed",
        _manifest(lambda m: m["files"].update({"../../outside": m["files"]["lengths"]})),
        "not a file of this entry",
        "not a file of this entry",
    ),
    Damage(
        "bytes not the sum of the files",
        _manifest(lambda m: m.update(bytes=m["bytes"] + 1)),
        "not the sum",
        "not the sum",
    ),
    Damage(
        "q.npy removed with its entry",
        _forget("q"),
        "lists no q.npy (signal qkv needs it)",
        "lists no q.npy (signal qkv needs it)",
    ),
    Damage(
        "topk_indices.npy removed with its entry",
        _forget("topk_indices"),
        "lists no topk_indices.npy (signal logits",
        "lists no topk_indices.npy",
    ),
    Damage(
        "att_offsets.npy removed with its entry",
        _forget("att_offsets"),
        "lists no att_offsets.npy (signal attentions",
        "lists no att_offsets.npy",
    ),
    Damage(
        "lengths.npy removed with its entry",
        _forget("lengths"),
        "lists no lengths.npy (the layout",
        "lists no lengths.npy",
    ),
    Damage(
        "a signal file deleted",
        lambda f: (f / "v.npy").unlink(),
        "v.npy is missing",
        "v.npy is missing",
    ),
    Damage(
        "a signal file truncated",
        _bytes("hidden_states.npy", lambda raw: raw[:-100]),
        "hidden_states.npy is missing or truncated",
        "truncated",
    ),
    Damage(
        "a signal file replaced by a folder",
        _replace_by_folder("logsumexp.npy"),
        "logsumexp.npy is missing",
        "logsumexp.npy is missing",
    ),
    Damage(
        ".npy header zeroed",
        _bytes("topk_logits.npy", lambda raw: b"\0" * 8 + raw[8:]),
        "topk_logits.npy is damaged (checksum)",
        "topk_logits.npy has a damaged header",
    ),
    Damage(
        ".npy header overwritten",
        _bytes("q.npy", lambda raw: raw[:12] + b"x" * 40 + raw[52:]),
        "q.npy is damaged (checksum)",
        "q.npy has a damaged header",
    ),
    Damage(
        ".npy header with another dtype",
        _bytes("hidden_states.npy", lambda raw: raw.replace(b"'<f2'", b"'<f4'", 1)),
        "hidden_states.npy is damaged (checksum)",
        "hidden_states.npy has a damaged header",
    ),
    Damage(
        ".npy header with another shape",
        _bytes("lengths.npy", lambda raw: raw.replace(b"(8,)", b"(4,)", 1)),
        "lengths.npy is damaged (checksum)",
        "lengths.npy is not an integer array of shape (8,)",
    ),
    Damage(
        "a flipped byte",
        _bytes("hidden_states.npy", _flip),
        "hidden_states.npy is damaged (checksum)",
        None,
    ),
    Damage("the entry a file", _entry_is_a_file, "no readable manifest", "no readable manifest"),
]


@dataclass(frozen=True)
class Entry:
    root: Path
    folder: Path  # relative to root
    arrays: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def entry(teacher, tmp_path_factory) -> Entry:
    root = tmp_path_factory.mktemp("cache")
    info = signal_cache.ensure(teacher, DATA, SIGNALS, TOPK, root, hidden_layers=LAYERS)
    cache = open_cache(info.path, verify=True)
    arrays = {name: np.array(arr) for name, arr in cache.arrays.items()}
    return Entry(root, Path(info.path).relative_to(root), arrays)


def test_the_corpus_entry_has_every_file_kind(entry) -> None:
    """Every case above damages a file the entry really has."""
    assert set(entry.arrays) == set(signal_cache.files_needed(SIGNALS, TOPK))
    assert {"q", "topk_indices", "att_offsets", "lengths", "hidden_states"} <= set(entry.arrays)
    assert b"(8,)" in (entry.root / entry.folder / "lengths.npy").read_bytes()[:128]


@pytest.mark.parametrize("case", SIGNAL_CASES, ids=[c.name for c in SIGNAL_CASES])
def test_a_damaged_signal_entry_is_one_line_and_rebuilt(
    case: Damage, teacher, entry, tmp_path, capsys
) -> None:
    root = tmp_path / "cache"
    shutil.copytree(entry.root, root)
    folder = root / entry.folder
    case.damage(folder)

    checks = [(True, case.verified)] + ([(False, case.opened)] if case.opened else [])
    for verify, words in checks:
        with pytest.raises(CacheError) as caught:
            open_cache(folder, verify=verify)
        message = str(caught.value)
        assert "\n" not in message and "Traceback" not in message, message
        assert message.startswith(f"teacher-signal cache {folder}: "), message
        assert words in message, message
    if case.opened is None:
        open_cache(folder)  # only the checksums see it (the stage's check: ensure verifies)

    info = signal_cache.ensure(teacher, DATA, SIGNALS, TOPK, root, hidden_layers=LAYERS)
    assert info.built and info.path == str(folder)
    assert "rebuilding it" in capsys.readouterr().out
    rebuilt = open_cache(folder, verify=True)
    assert set(rebuilt.arrays) == set(entry.arrays)
    for name, want in entry.arrays.items():
        assert np.array_equal(rebuilt.arrays[name], want), name


# --- the generations cache ------------------------------------------------------------------


def _marker(text: bytes | Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        marker = path.with_suffix(".done")
        if isinstance(text, bytes):
            marker.write_bytes(text)
        else:
            meta = json.loads(marker.read_text())
            out = text(meta)
            marker.write_text(json.dumps(meta if out is None else out))

    return damage


def _forged(path: Path) -> None:
    """A line that is not a record, under a marker made to match the file."""
    from kdbench.disk_cache import sha256_file

    lines = path.read_text().split("\n")
    lines[0] = "[1, 2]"
    path.write_text("\n".join(lines))
    marker = path.with_suffix(".done")
    meta = json.loads(marker.read_text())
    marker.write_text(json.dumps({**meta, "sha256": sha256_file(path)}))


def _as_folder(suffix: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        target = path.with_suffix(suffix)
        target.unlink()
        target.mkdir()

    return damage


GENERATION_CASES = {
    "marker {}": _marker(b"{}"),
    "marker []": _marker(b"[]"),
    "marker not JSON": _marker(b'{"count": 8, "sha'),
    "marker not UTF-8": _marker(b"\xff\xfe{}"),
    "marker with a wrong count": _marker(lambda m: m.update(count=m["count"] + 1)),
    "marker with a count true": _marker(lambda m: m.update(count=True)),
    "marker with a count as a string": _marker(lambda m: m.update(count=str(m["count"]))),
    "marker with another checksum": _marker(lambda m: m.update(sha256="0" * 64)),
    "marker a folder": _as_folder(".done"),
    "generations file a folder": _as_folder(".jsonl"),
    "a line not a record under a matching marker": _forged,
}


@pytest.fixture(scope="module")
def generations(teacher, tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("gen")
    path = cached_generations(teacher, DATA, root, max_new_tokens=6)
    return root, path.relative_to(root), path.read_text()


@pytest.mark.parametrize("damage", GENERATION_CASES.values(), ids=list(GENERATION_CASES))
def test_a_damaged_generations_file_is_generated_again(damage, teacher, generations, tmp_path):
    pristine_root, relative, good = generations
    root = tmp_path / "cache"
    shutil.copytree(pristine_root, root)
    path = root / relative
    damage(path)
    assert not is_complete(path)
    with pytest.raises(FileNotFoundError) as caught:
        load_generations(path)
    assert "\n" not in str(caught.value) and "no complete generations file" in str(caught.value)
    assert cached_generations(teacher, DATA, root, max_new_tokens=6) == path
    assert path.read_text() == good and is_complete(path)
    assert len(load_generations(path)) == 2 * DATA.n_per_task


# --- a built teacher ------------------------------------------------------------------------


def _weights(edit: Callable[[bytes], bytes] | None) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "model.safetensors"
        if edit is None:
            path.unlink()
        else:
            path.write_bytes(edit(path.read_bytes()))

    return damage


def _teacher_entry_is_a_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("not a teacher")


TEACHER_CASES = {
    "kdbench_teacher.json not JSON": (
        _bytes("kdbench_teacher.json", lambda raw: raw[:10]),
        "kdbench_teacher.json is unreadable",
    ),
    "kdbench_teacher.json not UTF-8": (
        _bytes("kdbench_teacher.json", lambda raw: b"\xff" + raw),
        "kdbench_teacher.json is unreadable",
    ),
    "kdbench_teacher.json []": (
        _bytes("kdbench_teacher.json", lambda _: b"[]"),
        "kdbench_teacher.json is not a JSON object",
    ),
    "kdbench_teacher.json missing (a partial build)": (
        lambda f: (f / "kdbench_teacher.json").unlink(),
        "no kdbench_teacher.json",
    ),
    "config.json missing": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "weights missing": (_weights(None), "no weights"),
    "weights truncated": (
        _weights(lambda raw: raw[: len(raw) // 2]),
        "model.safetensors is damaged (Error while deserializing header",
    ),
    "weights header overwritten": (
        _weights(lambda raw: raw[:8] + b"x" * 20 + raw[28:]),
        "model.safetensors is damaged",
    ),
    "the teacher's folder a file": (_teacher_entry_is_a_file, "not a folder"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A trained teacher (one step, no gate) in a cache root, and its suite."""
    folder = tmp_path_factory.mktemp("suite")
    edits = {
        **SHRINK,
        "teacher.gate": DELETE,
        "teacher.train_steps": 1,
        "teacher.max_steps": 1,
        "data.n_per_task": 4,
    }
    (folder / "suite.toml").write_text(tomli_w.dumps(edit_suite(tiny_raw(), edits)))
    suite = load_suite(folder / "suite.toml")
    teacher = build_teacher(suite, folder / "cache")
    assert teacher.trained
    return suite, folder / "cache", (Path(teacher.path) / "model.safetensors").read_bytes()


@pytest.mark.parametrize("case", TEACHER_CASES.values(), ids=list(TEACHER_CASES))
def test_a_damaged_built_teacher_is_trained_again(case, built, tmp_path, capsys) -> None:
    damage, words = case
    suite, pristine_root, weights = built
    root = tmp_path / "cache"
    shutil.copytree(pristine_root, root)
    folder = root / "teachers" / recipe_hash(suite)
    damage(folder)
    meta, problem = cached_teacher(folder)
    assert meta is None and words in problem and "\n" not in problem
    teacher = build_teacher(suite, root)
    assert teacher.trained and not teacher.cached and teacher.path == str(folder)
    assert f"cached teacher {folder}: {problem}: rebuilding it" in capsys.readouterr().out
    assert (folder / "model.safetensors").read_bytes() == weights
    assert cached_teacher(folder)[0] is not None and build_teacher(suite, root).cached
