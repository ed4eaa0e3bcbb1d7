"""Board snapshots: a suite's board query results, stored beside its runs.

A board is computed from every run of its suite: at 250,000 runs a suite the queries take
over a second, and the leaderboard app would pay that on every visit. A snapshot keeps what
those queries returned (:data:`kdbench.leaderboard.BOARD_PARTS`: one Arrow IPC blob per
part, in the ``board_snapshots`` table, schema 7), not the ranked board: prices, filters,
ranks and the paired tests are applied afterwards, in Python, exactly as on the live path,
so a board read from a snapshot equals the one computed live (a test checks it).

Who writes them:

* ``kdbench run`` (:func:`kdbench.pipeline.run_suite`, at its end) and ``kdbench import``
  (after its transaction) rebuild the snapshot of each suite they wrote to
  (:func:`kdbench.leaderboard.refresh_snapshots`);
* :func:`kdbench.store.write_run` and the import drop a suite's snapshot inside their own
  transaction, so a half-finished run never leaves a stale one;
* ``kdbench export --all`` writes a fresh snapshot of every suite to
  ``board_snapshots.parquet``, whatever the database holds, so a public Parquet
  leaderboard (``kdbench app --parquet``) reads boards without computing them.

A reader uses a snapshot only when its fingerprint (:func:`fingerprints`) still matches: the
SHA-256 of the board queries' SQL (another kdbench version's snapshots are not read), how
runs are grouped (split by submitter or pooled), and the suite's runs as they are now (their
count and a hash over each run's id, status, finish time, role, method, student, seed,
quantisation and hardware). Otherwise, or when there is none, the board is computed live.
A tool other than kdbench that edits a stored metric or cost in place, without touching its
run row, is not seen; ``kdbench snapshot --db PATH`` rebuilds every snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

TABLE = "board_snapshots"

# Per suite: the runs' count and a hash over what identifies each run's content.
_FINGERPRINT_SQL = """
SELECT suite_hash, count(*) AS n,
       coalesce(sum(hash(run_id, status, finished_at, role, method, student, seed, quant,
                         hardware)), 0) AS h
FROM runs WHERE list_contains(?, suite_hash) GROUP BY suite_hash
"""
_LOAD_SQL = f"""
SELECT suite_hash, part, fingerprint, data FROM {TABLE}
WHERE list_contains(?, suite_hash)
"""


def fingerprints(con: Any, hashes: Sequence[str], key: str) -> dict[str, str]:
    """The fingerprint each of ``hashes`` would have now under ``key`` (the board queries'
    version and grouping, :func:`kdbench.leaderboard.snapshot_key`); a suite without runs
    has one too (its board is empty)."""
    found = {h: (n, s) for h, n, s in con.execute(_FINGERPRINT_SQL, [list(hashes)]).fetchall()}
    out = {}
    for h in hashes:
        n, s = found.get(h, (0, 0))
        out[h] = hashlib.sha256(f"{key}|{h}|{n}|{s}".encode()).hexdigest()
    return out


def encode(frame: pd.DataFrame) -> bytes:
    """A frame as Arrow IPC stream bytes (its pandas dtypes kept in the schema metadata)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode(data: bytes) -> pd.DataFrame:
    """The frame :func:`encode` wrote."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_pandas()


def load(
    con: Any, hashes: Sequence[str], key: str, parts: Sequence[str]
) -> dict[str, pd.DataFrame] | None:
    """Every part of the snapshots of ``hashes``, each the rows of all of them (in the order
    of ``hashes``), when every one of them has a current snapshot under ``key`` with every
    part; else None (the caller computes the board live)."""
    if not hashes:
        return None
    want = fingerprints(con, hashes, key)
    stored: dict[tuple[str, str], bytes] = {}
    for h, part, fingerprint, data in con.execute(_LOAD_SQL, [list(hashes)]).fetchall():
        if fingerprint == want.get(h):
            stored[(h, part)] = data
    if any((h, part) not in stored for h in hashes for part in parts):
        return None
    out = {}
    for part in parts:
        frames = [decode(stored[(h, part)]) for h in hashes]
        full = [f for f in frames if not f.empty]  # concat warns on empty frames' dtypes
        out[part] = pd.concat(full, ignore_index=True) if len(full) > 1 else (full or frames)[0]
    return out


def rows(
    frames: Mapping[str, Mapping[str, pd.DataFrame]], fingerprint: Mapping[str, str]
) -> pd.DataFrame:
    """The ``board_snapshots`` rows of ``frames`` (suite hash -> part -> frame)."""
    now = datetime.now()
    records = [
        (h, part, fingerprint[h], now, encode(frame))
        for h, parts in frames.items()
        for part, frame in parts.items()
    ]
    return pd.DataFrame(
        records, columns=["suite_hash", "part", "fingerprint", "written_at", "data"]
    )


def replace(con: Any, snapshot_rows: pd.DataFrame) -> None:
    """Replace the stored snapshots of the suites in ``snapshot_rows`` with them (the caller
    holds the transaction)."""
    hashes = sorted(set(snapshot_rows["suite_hash"]))
    drop(con, hashes)
    con.register("kdbench_snapshot_rows", snapshot_rows)
    try:
        con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM kdbench_snapshot_rows")
    finally:
        con.unregister("kdbench_snapshot_rows")


def drop(con: Any, hashes: Sequence[str]) -> None:
    """Delete the snapshots of ``hashes`` (the caller holds the transaction)."""
    con.execute(f"DELETE FROM {TABLE} WHERE list_contains(?, suite_hash)", [list(hashes)])
