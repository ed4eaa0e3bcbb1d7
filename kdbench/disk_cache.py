"""Atomic on-disk cache entries, shared by the teacher, generations and teacher-signal caches.

An entry (a file or a folder) is built under a temporary sibling name and renamed into place in
one step, so a reader sees a complete entry or none: a build that dies leaves only a temporary
``*.tmp-*`` name behind, which nothing reads. When two processes build the same folder entry at
once, the first rename wins and the other build is discarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def creation_problem(path: str | Path, writable: bool = True) -> str | None:
    """Why ``path`` could not be created (its nearest existing ancestor is a file, or, with
    ``writable``, is not writable), or None when it can. Creates nothing."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if writable and not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def remove_entry(path: Path) -> None:
    """Remove a cache entry, whatever is at its path: a folder, a file or a link."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_entry(final: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``final`` (nothing exists there yet); when the block
    ends without an exception, rename it to ``final``.

    A file replaces an existing ``final``. A folder replaces one only with ``replace=True``
    (the old folder is removed first); otherwise, if ``final`` appeared meanwhile (another
    process built the same entry), that entry is kept and this build discarded. On an
    exception the temporary path is removed and nothing is renamed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.is_dir():
            if replace:
                remove_entry(final)
            try:
                os.rename(tmp, final)
            except OSError:  # a complete entry of another build is there: keep it
                if not final.exists():
                    raise
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            remove_entry(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Write a text file in one step (temporary file, fsync, rename)."""
    with atomic_entry(Path(path)) as tmp, tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
