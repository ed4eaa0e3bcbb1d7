"""The economics of distilling: hardware prices, training and inference cost, break-even,
a confidence-routed cascade, and Pareto fronts.

Every function states its formula. Units: prices in USD, time in hours unless a name says
otherwise, throughput in tokens per second.

* Price table: a TOML file (default :data:`DEFAULT_PRICES`) of ``[devices.NAME]`` entries with
  ``usd_per_hour``, ``match`` (substrings of the GPU name) and ``source``; the entry named
  ``cpu`` prices runs without a GPU, per CPU core. See :func:`load_prices`.
* Training price = device-hours x USD per device-hour (:func:`training_price`).
* Inference cost per million tokens = USD per hour / (tokens/s x 3600) x 1e6
  (:func:`cost_per_million_tokens`): one device serving at its measured throughput.
* Break-even of distilling (:func:`break_even`): saving per query s = c_teacher - c_student;
  monthly saving = s x queries per month; break-even after D / s queries, i.e.
  D / (s x queries per month) months, where D is the one-off distillation cost.
* Cascade (:func:`routing_curve`): the student answers every query; the share p of queries
  it is least confident about also goes to the teacher, whose answer is used.
* Pareto front (:func:`pareto_front`): the points no other point beats on both axes.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kdbench_leaderboards
import numpy as np
import pandas as pd

#: The bundled price table (``leaderboards/prices/default.toml``, package data).
DEFAULT_PRICES = kdbench_leaderboards.path("prices", "default.toml")
CPU_DEVICE = "cpu"
"""The price-table entry that prices runs without a GPU (per CPU core-hour)."""

_DEVICE_KEYS = ("usd_per_hour", "match", "source")
_TOP_KEYS = ("currency", "devices")


class PriceError(ValueError):
    """A malformed price table; the message is one line naming the file, field and fix."""


@dataclass(frozen=True)
class Device:
    """One row of the price table."""

    name: str
    usd_per_hour: float
    match: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class PriceTable:
    """Hardware prices in USD per device-hour, loaded by :func:`load_prices`."""

    path: Path
    devices: Mapping[str, Device]
    currency: str = "USD"

    def device_for(self, hardware: Mapping[str, Any] | str | None) -> Device | None:
        """The entry pricing a run's ``hardware`` (the store's JSON, as text or a dict).

        A run with a ``gpu`` name is priced by the first entry (in file order) one of whose
        ``match`` substrings occurs in that name, ignoring case; a run without a GPU by the
        ``cpu`` entry. None when nothing matches or ``hardware`` is missing.
        """
        hw = _hardware(hardware)
        if hw is None:
            return None
        gpu = hw.get("gpu")
        if not gpu:
            return self.devices.get(CPU_DEVICE)
        return self.device_for_gpu(str(gpu))

    def device_for_gpu(self, gpu: str | None) -> Device | None:
        """The entry for a GPU name (``None`` or empty: the ``cpu`` entry)."""
        if not gpu:
            return self.devices.get(CPU_DEVICE)
        name = gpu.lower()
        for device in self.devices.values():
            if any(m.lower() in name for m in device.match):
                return device
        return None

    def rate(self, gpu: str | None) -> float:
        """USD per device-hour for a GPU name (``None``: CPU); NaN when unpriced."""
        device = self.device_for_gpu(gpu)
        return math.nan if device is None else device.usd_per_hour


def _hardware(hardware: Mapping[str, Any] | str | None) -> Mapping[str, Any] | None:
    if hardware is None or (isinstance(hardware, float) and math.isnan(hardware)):
        return None
    if isinstance(hardware, str):
        try:
            value = json.loads(hardware)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return hardware


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read and validate a price table (default :data:`DEFAULT_PRICES`).

    Raises :class:`PriceError` with one line naming the file, the field and what is allowed:
    a missing file, a folder, an unreadable or binary file, invalid TOML, an unknown key, a ``usd_per_hour`` that is not a number
    >= 0, a ``match`` that is not a list of strings, or a ``cpu`` entry with a ``match``.
    """
    path = Path(path) if path is not None else DEFAULT_PRICES
    if path.is_dir():
        raise PriceError(f"{path}: a folder, not a price table (a TOML file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriceError(f"{path}: no such price table") from None
    except UnicodeDecodeError as exc:
        raise PriceError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a price table is TOML"
        ) from None
    except OSError as exc:
        raise PriceError(f"{path}: cannot read the price table: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise PriceError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}")
    currency = data.get("currency", "USD")
    if not isinstance(currency, str):
        raise PriceError(f"{path}: currency: must be a string such as 'USD', got {currency!r}")
    entries = data.get("devices")
    if not isinstance(entries, dict) or not entries:
        raise PriceError(
            f"{path}: devices: at least one [devices.NAME] table with usd_per_hour is required"
        )
    devices: dict[str, Device] = {}
    for name, entry in entries.items():
        field = f"devices.{name}"
        if not isinstance(entry, dict):
            raise PriceError(f"{path}: {field}: must be a table with {', '.join(_DEVICE_KEYS)}")
        unknown = sorted(set(entry) - set(_DEVICE_KEYS))
        if unknown:
            raise PriceError(
                f"{path}: {field}.{unknown[0]}: unknown key; allowed: {', '.join(_DEVICE_KEYS)}"
            )
        rate = entry.get("usd_per_hour")
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not (rate >= 0 and math.isfinite(rate))
        ):
            raise PriceError(
                f"{path}: {field}.usd_per_hour: must be a finite number >= 0 (USD per "
                "device-hour), "
                f"got {rate!r}"
            )
        match = entry.get("match", [])
        if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
            raise PriceError(
                f"{path}: {field}.match: must be a list of non-empty strings (parts of GPU "
                f'names, e.g. ["H100"]), got {match!r}'
            )
        if name == CPU_DEVICE and match:
            raise PriceError(
                f"{path}: {field}.match: the cpu entry prices runs without a GPU and takes no "
                f"match, got {match!r}"
            )
        source = entry.get("source", "")
        if not isinstance(source, str):
            raise PriceError(f"{path}: {field}.source: must be a string, got {source!r}")
        devices[name] = Device(name, float(rate), tuple(match), source)
    return PriceTable(path=path, devices=devices, currency=currency)


# --------------------------------------------------------------------------- cost formulas


def training_price(device_hours: float, usd_per_hour: float) -> float:
    """Price of a training run: ``device_hours x usd_per_hour``."""
    return device_hours * usd_per_hour


def cost_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """Serving cost of one million tokens on one device at a measured throughput:
    ``usd_per_hour / (tokens_per_s x 3600) x 1e6``. NaN when the throughput is not > 0, or
    the cost is not a finite number (a throughput so small the division overflows)."""
    if not tokens_per_s > 0:
        return math.nan
    cost = float(usd_per_hour) / (float(tokens_per_s) * 3600.0) * 1e6  # Python floats: no warning
    return cost if math.isfinite(cost) else math.nan


def cost_per_query(usd_per_million_tokens: float, tokens_per_query: float) -> float:
    """``usd_per_million_tokens x tokens_per_query / 1e6``."""
    return usd_per_million_tokens * tokens_per_query / 1e6


@dataclass(frozen=True)
class BreakEven:
    """The outcome of :func:`break_even`; ``inf`` where distilling never pays off."""

    saving_per_query: float
    monthly_saving: float
    queries_to_break_even: float
    months_to_break_even: float


def break_even(
    one_off_cost: float,
    teacher_cost_per_query: float,
    student_cost_per_query: float,
    queries_per_month: float,
) -> BreakEven:
    """When does serving the student instead of the teacher repay the distillation?

    ``s = teacher_cost_per_query - student_cost_per_query`` (saving per query);
    ``monthly_saving = s x queries_per_month``;
    ``queries_to_break_even = one_off_cost / s``;
    ``months_to_break_even = one_off_cost / monthly_saving``.
    With ``s <= 0`` (or no queries) distilling never breaks even: both counts are ``inf``
    (and the monthly saving is <= 0). A zero one-off cost breaks even at once (0).
    """
    for name, value in (
        ("one_off_cost", one_off_cost),
        ("teacher_cost_per_query", teacher_cost_per_query),
        ("student_cost_per_query", student_cost_per_query),
        ("queries_per_month", queries_per_month),
    ):
        if not value >= 0:
            raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
    saving = teacher_cost_per_query - student_cost_per_query
    monthly = saving * queries_per_month
    queries = one_off_cost / saving if saving > 0 else math.inf
    months = one_off_cost / monthly if monthly > 0 else math.inf
    if one_off_cost == 0 and saving > 0:
        queries = months = 0.0
    return BreakEven(saving, monthly, queries, months)


# --------------------------------------------------------------------------- routing


def routing_curve(
    student: pd.DataFrame,
    teacher: pd.DataFrame,
    student_cost: float,
    teacher_cost: float,
    shares: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Quality and cost of a cascade that sends the student's least confident questions to
    the teacher, as the routed share goes from 0 to 1.

    ``student`` and ``teacher`` hold per-question results (columns ``task``, ``doc_id``,
    ``correct`` in [0, 1]; the student's also ``confidence``), from the store's samples
    table. Questions are matched on (task, doc_id); those either model lacks, or whose
    ``correct`` is missing, infinite or NaN for either model (:func:`finite`), are left out.
    The N matched questions are sorted by student confidence, ascending (a missing or NaN
    confidence counts as least confident; ties broken by task, doc_id); routing a share p
    sends the first ``k = round(p x N)`` of them to the teacher:

    * ``quality(p) = (sum of teacher correct over the k routed + sum of student correct over
      the N - k kept) / N``;
    * ``cost_per_query(p) = student_cost + (k / N) x teacher_cost`` (the student always runs,
      to know its confidence);
    * ``retention(p) = quality(p) / teacher quality`` (the teacher's mean correct on the same
      questions).

    ``shares`` defaults to 0, 0.05, ..., 1. Returns columns ``share`` (= k / N), ``routed``
    (k), ``quality``, ``cost_per_query``, ``retention``; empty when nothing matches.
    Quality is a mean over questions, so it is the task's metric only for metrics that
    lm-eval aggregates by mean.
    """
    cols = ["share", "routed", "quality", "cost_per_query", "retention"]
    if shares is None:
        shares = np.linspace(0.0, 1.0, 21)
    if any(not 0.0 <= p <= 1.0 for p in shares):
        raise ValueError(f"shares: every share must be in [0, 1], got {list(shares)}")
    joined = student[["task", "doc_id", "correct", "confidence"]].merge(
        teacher[["task", "doc_id", "correct"]],
        on=["task", "doc_id"],
        suffixes=("_s", "_t"),
    )
    joined = joined[finite(joined["correct_s"]) & finite(joined["correct_t"])]
    n = len(joined)
    if n == 0:
        return pd.DataFrame(columns=cols)
    joined = joined.sort_values(
        ["confidence", "task", "doc_id"], na_position="first", kind="stable"
    )
    routed_gain = np.concatenate(
        [[0.0], np.cumsum(joined["correct_t"].to_numpy() - joined["correct_s"].to_numpy())]
    )
    student_total = float(joined["correct_s"].sum())
    teacher_quality = float(joined["correct_t"].mean())
    ks = np.array([round(p * n) for p in shares], dtype=int)
    quality = (student_total + routed_gain[ks]) / n
    out = pd.DataFrame(
        {
            "share": ks / n,
            "routed": ks,
            "quality": quality,
            "cost_per_query": student_cost + ks / n * teacher_cost,
            "retention": quality / teacher_quality if teacher_quality > 0 else np.nan,
        }
    )
    return out[cols]


def finite(values: Sequence[object] | pd.Series) -> np.ndarray:
    """A boolean mask of the values that are finite numbers (not None, NaN or infinite)."""
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    return np.isfinite(x)


# --------------------------------------------------------------------------- Pareto


def pareto_front(
    x: Sequence[float] | pd.Series, y: Sequence[float] | pd.Series, *, minimize_x: bool = True
) -> np.ndarray:
    """A boolean mask of the Pareto-optimal points: maximise ``y`` and minimise ``x`` (or
    maximise it with ``minimize_x=False``).

    A point is on the front when no other point is at least as good on both axes and better
    on one. Identical points are all on the front; a point with a NaN coordinate never is.
    O(n log n): sort by x (best first), sweep keeping the best y seen.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in length: {xs.shape} vs {ys.shape}")
    mask = np.zeros(len(xs), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))
    if valid.size == 0:
        return mask
    key = xs[valid] if minimize_x else -xs[valid]
    order = valid[np.lexsort((-ys[valid], key))]  # by x best first, then y high first
    best = -np.inf
    i = 0
    while i < len(order):
        j = i
        group_x = xs[order[i]]
        while j < len(order) and xs[order[j]] == group_x:
            j += 1
        top = ys[order[i]]  # the group's highest y (sorted high first)
        if top > best:
            mask[[k for k in order[i:j] if ys[k] == top]] = True
            best = top
        i = j
    return mask
