"""The Run page: full provenance of one run (``?page=Run&run=<run_id>``)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench import store
from kdbench.app.columns import AGREEMENT_HELP, ECE_HELP, KL_HELP
from kdbench.app.context import AppContext
from kdbench.app.formatting import MISSING, fmt
from kdbench.app.urls import QP, run_url


def render(ctx: AppContext) -> None:
    """Full provenance of one run: config, versions, git commit, hardware, seed, status,
    error of a failed run, costs, metrics, samples and its sibling seeds."""
    run_id = st.text_input(
        "run id", key="run", bind=QP, help="Open a run from the 'run' links of other pages."
    ).strip()
    if not run_id:
        st.info("Pick a run from the leaderboard's 'run' column, or paste its id.")
        return
    detail = lb.run_detail(ctx.db, run_id)
    if detail is None:
        st.error(f"No run {run_id!r} in {ctx.db}.")
        return
    run = detail["run"]
    st.subheader(f"Run {run_id}: {run['method']} · {run['student']} · seed {fmt(run['seed'])}")
    if str(run["suite_name"] or "").startswith(lb.SYNTHETIC_PREFIX):
        st.warning("Synthetic run (benchmark data), not a real result.")
    if run["status"] == "failed":
        st.error("This run failed. Its error:")
        st.code(
            run["error"] if isinstance(run["error"], str) else "(no error recorded)", language=None
        )
    elif run["status"] == "ok":
        st.success("status: ok")
    else:
        st.warning(f"status: {fmt(run['status'])} (neither ok nor failed: not on the boards)")
    fields = [
        ("suite", f"{run['suite_name']} ({run['suite_hash']})"),
        ("suite file", run["suite_path"]),
        *((c, run[c]) for c in ("role", "method", "family", "student", "seed", "status")),
        *((c, run[c]) for c in ("started_at", "finished_at", "kdbench_version", "git_commit")),
    ]
    st.table(
        pd.DataFrame([(k, fmt(v)) for k, v in fields], columns=["field", "value"]),
        hide_index=True,
    )
    costs = [(c, fmt(run[c])) for c in store.COST_COLUMNS]
    st.markdown("**Costs** (— = not recorded for this run)")
    st.table(pd.DataFrame(costs, columns=["cost", "value"]), hide_index=True)
    c1, c2, c3 = st.columns(3)
    for col, name in ((c1, "method_config"), (c2, "hardware"), (c3, "versions")):
        col.markdown(f"**{name}**")
        show_json(col, run[name], expanded=True)
    st.markdown("**Metrics** (from lm-eval)")
    st.dataframe(detail["metrics"], hide_index=True, placeholder=MISSING, key="run_metrics")
    show_fidelity(ctx, run_id)
    if not detail["samples"].empty:
        st.markdown("**Per-question samples**")
        st.dataframe(detail["samples"], hide_index=True, placeholder=MISSING, key="run_samples")
    sib = detail["siblings"]
    st.markdown("**Runs of this group (seeds)**")
    st.dataframe(
        sib.assign(page=[run_url(r) for r in sib["run_id"]]),
        hide_index=True,
        placeholder=MISSING,
        key="siblings",
        column_config={"page": st.column_config.LinkColumn(display_text="open")},
    )
    with st.expander("suite config"):
        show_json(st, run["suite_config"])


def show_fidelity(ctx: AppContext, run_id: str) -> None:
    """The run's fidelity to the teacher and calibration per task, next to the teacher's ECE
    (nothing for a run stored without them)."""
    table = lb.run_fidelity(ctx.db, run_id)
    if table.empty:
        return
    st.markdown(
        "**Fidelity to the teacher** (agreement and KL on the evaluation tokens; expected "
        "calibration error, 10 bins; not used in ranking)"
    )
    st.dataframe(
        table,
        hide_index=True,
        placeholder=MISSING,
        key="run_fidelity",
        column_config={
            "fidelity_top1": st.column_config.NumberColumn(
                "agreement", help=AGREEMENT_HELP, format="percent"
            ),
            "fidelity_kl": st.column_config.NumberColumn("KL", help=KL_HELP, format="%.4f"),
            "ece": st.column_config.NumberColumn("ECE", help=ECE_HELP, format="%.3f"),
            "teacher_ece": st.column_config.NumberColumn("teacher ECE", format="%.3f"),
        },
    )


def show_json(where: Any, text: object, *, expanded: bool = False) -> None:
    """Stored JSON text as a JSON view; text that is not JSON as plain text, said so."""
    if not isinstance(text, str) or not text:
        where.json({}, expanded=expanded)
        return
    try:
        value = json.loads(text)
    except ValueError:
        where.caption("not valid JSON:")
        where.code(text, language=None)
        return
    where.json(value, expanded=expanded)
