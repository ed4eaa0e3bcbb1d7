"""The leaderboard table's columns: which are shown, their headers, formats and help."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from kdbench import leaderboard as lb
from kdbench import stats
from kdbench.app.urls import run_url

RETENTION_HELP = (
    "Arithmetic mean over tasks of student score / teacher score on each task's primary "
    "metric (teacher / student where lm-eval declares the metric lower-is-better), then the "
    "mean over seeds. The bar is full at 100% (or at the best row when it beats the teacher)."
)


def column_config(tasks: Sequence[str], task_meta: pd.DataFrame) -> dict[str, object]:
    """``st.dataframe`` column configuration for a display frame of the board."""
    cc = st.column_config
    config: dict[str, object] = {
        "rank_label": cc.TextColumn(
            "rank",
            help="Shared ranks: a method's 95% interval of retention overlaps those of the "
            "methods it shares ranks with (e.g. 2–4). The teacher is not ranked.",
        ),
        "method": cc.TextColumn("method", help="Distillation method (plugin name)."),
        "family": cc.TextColumn("family", help="Method family."),
        "student": cc.TextColumn(
            "student", help="Student model; on the teacher row, the teacher model."
        ),
        "role": cc.TextColumn(
            "role", help="teacher = reference; baseline = sft, no distillation; method."
        ),
        "submitter": cc.TextColumn(
            "submitter",
            help="Who submitted the row's runs in a result bundle (kdbench import); local: "
            "runs made in this database itself. Each submitter's seeds are a row of their own.",
        ),
        "division": cc.TextColumn(
            "division",
            help="closed: the suite is one shipped in leaderboards/ (same recipe for everyone, "
            "every method and seed required); open: any other suite.",
        ),
        "verified": cc.CheckboxColumn(
            "verified",
            help="Imported through kdbench import, which checks each bundle (hashes, budget, "
            "metrics recomputed from the samples) first; local runs are not verified.",
        ),
        "retention_avg": cc.ProgressColumn(
            "retention", help=RETENTION_HELP, min_value=0.0, max_value=1.0, format="percent"
        ),
        "retention_ci": cc.NumberColumn(
            "± 95% CI",
            help="Half-width of the 95% confidence interval over seeds (Student t), in "
            "percentage points. Empty with one seed: no interval.",
            format="± %.1f pts",
        ),
        "gain_vs_sft": cc.NumberColumn(
            "gain vs sft",
            help="Retention minus that of sft on the same student, in percentage points.",
            format="%+.1f pts",
        ),
        "gain_ci": cc.NumberColumn(
            "± gain CI",
            help="Welch 95% interval of the gain, in points; empty unless both have 2+ seeds.",
            format="± %.1f",
        ),
        "params": cc.NumberColumn("params", help="Parameter count.", format="compact"),
        "param_ratio": cc.NumberColumn(
            "size vs teacher", help="Parameters relative to the teacher.", format="percent"
        ),
        "bytes": cc.NumberColumn(
            "bytes", help="Size of the saved weights (safetensors).", format="compact"
        ),
        "train_wall_s": cc.NumberColumn(
            "train time", help="Mean training wall-clock seconds over seeds.", format="%.1f s"
        ),
        "generation_s": cc.NumberColumn(
            "sampling time",
            help="On-policy methods: mean seconds spent sampling the student during training "
            "(part of the training time; its FLOPs are in FLOPs).",
            format="%.1f s",
        ),
        "generation_share": cc.NumberColumn(
            "sampling share",
            help="On-policy methods: the share of the training time spent sampling the "
            "student (sampling time / train time of each seed, mean over seeds).",
            format="percent",
        ),
        "generated_tokens": cc.NumberColumn(
            "sampled tokens",
            help="On-policy methods: mean tokens the student sampled during training, all "
            "workers (2 x params FLOPs each, in FLOPs).",
            format="%.0f",
        ),
        "device_hours": cc.NumberColumn(
            "device-h",
            help="Measured device-hours of the run (GPU-h, or CPU core-h).",
            format="%.4f",
        ),
        "price_usd": cc.NumberColumn(
            "price", help="device-hours x $/device-hour from the price table.", format="$%.4f"
        ),
        "total_flops": cc.NumberColumn(
            "FLOPs",
            help="Analytic FLOPs: student training incl. live teacher passes, plus this "
            "run's share of the teacher's cache building and generation.",
            format="%.3e",
        ),
        "infer_tokens_per_s": cc.NumberColumn(
            "tokens/s", help="Measured inference throughput.", format="%.0f"
        ),
        "infer_latency_ms": cc.NumberColumn(
            "latency", help="Measured ms per query at batch 1.", format="%.1f ms"
        ),
        "speedup": cc.NumberColumn(
            "speed-up",
            help="Tokens/s relative to the teacher on the same hardware.",
            format="%.2fx",
        ),
        "usd_per_mtok": cc.NumberColumn(
            "$/M tokens",
            help="$/device-hour / (tokens/s x 3600) x 1e6: one device at its throughput.",
            format="$%.4f",
        ),
        "seeds": cc.NumberColumn("seeds", help="Successful runs (seeds) averaged over."),
        "failed": cc.NumberColumn("failed", help="Failed runs; listed below the table."),
        "run": cc.LinkColumn(
            "run", help="The run page (lowest seed) with full provenance.", display_text="open"
        ),
        **fidelity_config(tasks),
    }
    config.update(paired_column_config())
    config.update(budget_column_config())
    # one row per task (a task whose runs disagree on the primary metric shows the first)
    meta = task_meta.drop_duplicates("task").set_index("task")
    for task in tasks:
        declared = ""
        if task in meta.index:
            m = meta.loc[task]
            direction = "higher is better" if m["higher_is_better"] else "lower is better"
            agg = m["aggregation"] if isinstance(m["aggregation"], str) else "not recorded"
            declared = f" Metric {m['metric']}, {direction}, aggregation {agg} (lm-eval)."
        config[f"retention_{task}"] = cc.NumberColumn(
            f"ret. {task}", help=f"Student / teacher on {task}.{declared}", format="percent"
        )
        config[f"retention_ci_{task}"] = cc.NumberColumn(
            f"± {task}",
            help=f"95% CI half-width of retention on {task}, points.",
            format="± %.1f",
        )
        config[f"score_{task}"] = cc.NumberColumn(
            f"score {task}",
            help=f"Primary metric on {task}, mean over seeds.{declared}",
            format="%.4f",
        )
    return config


def paired_column_config() -> dict[str, object]:
    """Headers and help of the paired test against sft (:data:`PAIRED_DISPLAY`)."""
    cc = st.column_config
    return {
        "p_vs_sft": cc.NumberColumn(
            "p vs sft",
            help="Paired bootstrap over questions (seeds pooled, one shared resample of each "
            "task's questions for both methods) of the retention difference to sft on the "
            f"same student, {stats.RESAMPLES} resamples; Holm-adjusted over every method of "
            "the suite against sft. Empty without per-question samples (older runs).",
            format="%.4f",
        ),
        "sig_vs_sft": cc.TextColumn(
            "sig",
            help=f"better / worse than sft: Holm-adjusted p < {stats.ALPHA}; n.s. otherwise. "
            "Empty for sft, the teacher and runs without per-question samples.",
        ),
    }


def budget_column_config() -> dict[str, object]:
    """Header and help of the budget audit (:data:`BUDGET_DISPLAY`)."""
    cc = st.column_config
    return {
        "budget_note": cc.TextColumn(
            "budget",
            help="Empty when every seed trained on the suite's [budget] (steps and steps x "
            "batch size sequences, as recorded); else which run differs and by how much.",
        ),
    }


AGREEMENT_HELP = (
    "Top-1 agreement with the teacher: the fraction of evaluation tokens (the gold answer of a "
    "multiple-choice task, the teacher's own answer of a generation task) where the model's "
    "most likely next token is the teacher's. Mean over tasks and seeds; not used in ranking."
)
KL_HELP = (
    "KL(teacher || model) in nats per evaluation token (top-k plus a rest bucket for large "
    "vocabularies, a lower bound then). 0 = the teacher's distribution. Mean over tasks and "
    "seeds; not used in ranking."
)
ECE_HELP = (
    "Expected calibration error (Guo et al. 2017, 10 equal-width confidence bins) of the "
    "model's answers: 0 = its confidence matches its accuracy. Mean over tasks and seeds."
)


def fidelity_config(tasks: Sequence[str]) -> dict[str, object]:
    """Column configuration of the board's fidelity columns (:data:`lb.FIDELITY_COLUMNS` and
    their per-task versions)."""
    cc = st.column_config
    config: dict[str, object] = {
        "fidelity_top1": cc.NumberColumn("agreement", help=AGREEMENT_HELP, format="percent"),
        "fidelity_kl": cc.NumberColumn("KL", help=KL_HELP, format="%.4f"),
        "ece": cc.NumberColumn("ECE", help=ECE_HELP, format="%.3f"),
        "teacher_ece": cc.NumberColumn(
            "teacher ECE", help="The teacher's ECE, to read the model's against.", format="%.3f"
        ),
    }
    for task in tasks:
        config[f"fidelity_top1_{task}"] = cc.NumberColumn(
            f"agree. {task}", help=f"Top-1 agreement with the teacher on {task}.", format="percent"
        )
        config[f"fidelity_kl_{task}"] = cc.NumberColumn(
            f"KL {task}", help=f"KL(teacher || model) per token on {task}.", format="%.4f"
        )
        config[f"ece_{task}"] = cc.NumberColumn(
            f"ECE {task}", help=f"Expected calibration error on {task}.", format="%.3f"
        )
    return config


def fidelity_display(tasks: Sequence[str], per_task: bool) -> list[str]:
    """The fidelity columns shown: the means, and each task's when per-task columns are on."""
    cols = list(lb.FIDELITY_COLUMNS)
    if per_task:
        cols += [f"{p}{t}" for t in tasks for p in lb.FIDELITY_TASK_PREFIXES]
    return cols


# the board's identifying and ranking columns, the rank shown as its label ("2–4")
DISPLAY_COLUMNS = tuple(c for c in lb.BASE_COLUMNS if c not in ("rank", "rank_worst"))
# the board's size and cost columns, without the FLOP parts and the identifiers
COST_DISPLAY = tuple(
    c for c in lb.TAIL_COLUMNS if c not in ("train_flops", "teacher_flops", "run_id", "gpu")
)


def cost_display(view: pd.DataFrame) -> list[str]:
    """The cost columns shown for a view: :data:`COST_DISPLAY`, without the sampling columns
    (:data:`kdbench.leaderboard.GENERATION_COLUMNS`) unless a row of the view sampled the
    student (:func:`kdbench.leaderboard.generated`): off-policy boards do not show them."""
    sampled = lb.generated(view)
    return [c for c in COST_DISPLAY if sampled or c not in lb.GENERATION_COLUMNS]


_POINTS = ("retention_ci", "gain_vs_sft", "gain_ci")  # shown x100, in points
SUBMISSION_DISPLAY = ("submitter", "division", "verified")  # who, which division, checked
PAIRED_DISPLAY = ("p_vs_sft", "sig_vs_sft")  # after the gain: the paired test against sft
BUDGET_DISPLAY = ("budget_note",)  # last: the budget audit


def display_frame(
    view: pd.DataFrame, tasks: Sequence[str], per_task: bool, fidelity: bool = False
) -> pd.DataFrame:
    """The on-screen table: chosen columns (with ``fidelity``, the fidelity columns after the
    scores; the sampling columns when a row sampled, :func:`cost_display`), interval columns
    in percentage points, a link."""
    task_cols = []
    if per_task:
        for t in tasks:
            task_cols += [f"retention_{t}", f"retention_ci_{t}", f"score_{t}"]
    fid_cols = [c for c in fidelity_display(tasks, per_task) if c in view] if fidelity else []
    shown = view[
        [
            *DISPLAY_COLUMNS,
            *(c for c in SUBMISSION_DISPLAY if c in view),
            *PAIRED_DISPLAY,
            *task_cols,
            *fid_cols,
            *cost_display(view),
            *BUDGET_DISPLAY,
        ]
    ].copy()
    shown["budget_note"] = [
        f"⚠️ {n.removeprefix('budget differs: ')}" if isinstance(n, str) else None
        for n in shown["budget_note"]
    ]
    for col in (*_POINTS, *(c for c in task_cols if c.startswith("retention_ci_"))):
        shown[col] = shown[col].astype(float) * 100
    shown.insert(shown.columns.get_loc("role") + 1, "run", [run_url(r) for r in view["run_id"]])
    return shown
