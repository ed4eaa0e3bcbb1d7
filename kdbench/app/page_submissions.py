"""The Submissions page: the result bundles merged into the database by ``kdbench import``
(who, when, what runs, methods and seeds) and, for the chosen one, its runs, its manifest
and what the checker (``kdbench verify``) said of it at import."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from kdbench.app.context import AppContext
from kdbench.app.data import load_bundle_runs, load_submissions
from kdbench.app.formatting import MISSING
from kdbench.app.urls import QP, run_url

LIST_COLUMNS = (
    "bundle_sha256",
    "submitter",
    "organisation",
    "imported_at",
    "runs",
    "methods",
    "seeds",
)


def bundle_label(row: pd.Series) -> str:
    """``<first 12 hex digits> · <submitter>``: a bundle in the picker."""
    return f"{str(row['bundle_sha256'])[:12]} · {row['submitter']}"


def render(ctx: AppContext) -> None:
    """The list of imported bundles, then the chosen bundle's runs, manifest and checker."""
    bundles = load_submissions(str(ctx.db))
    st.subheader("Submissions")
    if bundles.empty:
        st.info(
            f"No result bundles were imported into `{ctx.db}`: every run is local. Merge one "
            "with `kdbench import BUNDLE --db PATH` (it verifies the bundle first)."
        )
        return
    st.caption(
        "Result bundles merged by `kdbench import`, which verifies each one first (hashes, "
        "budget, metrics recomputed from the per-question samples). runs: the runs it added."
    )
    st.dataframe(
        bundles[list(LIST_COLUMNS)],
        hide_index=True,
        placeholder=MISSING,
        key="bundles",
        column_config={
            "bundle_sha256": st.column_config.TextColumn(
                "bundle", help="SHA-256 of the bundle's manifest.json"
            )
        },
    )
    labels = [bundle_label(r) for _, r in bundles.iterrows()]
    label = st.selectbox("bundle", labels, key="bundle", bind=QP)
    row = bundles.iloc[labels.index(label)]
    sha = str(row["bundle_sha256"])
    st.markdown(
        f"**{row['submitter']}**"
        + (f" ({row['organisation']})" if isinstance(row["organisation"], str) else "")
        + f" · imported {row['imported_at']} · bundle `{sha}`"
    )
    manifest = _manifest(row["manifest"])
    if manifest:
        suite = manifest.get("suite") or {}
        hardware = manifest.get("hardware") or {}
        st.caption(
            f"suite {suite.get('name') or '?'} ({suite.get('suite_hash')}) · kdbench "
            f"{manifest.get('kdbench_version')} · exported {manifest.get('created_at')} · "
            f"{hardware.get('platform')}" + (f", {hardware['gpu']}" if hardware.get("gpu") else "")
        )
    st.markdown("**Checker output** (`kdbench verify`, at import)")
    checker = row["checker"]
    if isinstance(checker, str) and checker:
        st.code(checker, language=None)
    else:
        st.info(
            "Not recorded: this bundle was imported before kdbench stored the checker's output."
        )
    runs = load_bundle_runs(str(ctx.db), sha)
    st.markdown(f"**Runs it added** ({len(runs)})")
    runs = runs.assign(run=[run_url(r) for r in runs["run_id"]])
    st.dataframe(
        runs,
        hide_index=True,
        placeholder=MISSING,
        key="bundle_runs",
        column_config={"run": st.column_config.LinkColumn("run", display_text="open")},
    )
    if manifest:
        with st.expander("manifest.json"):
            st.json(manifest, expanded=False)


def _manifest(text: object) -> dict:
    """The stored manifest as a dict ({} when missing or unreadable)."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
