"""Tests for kdbench.economics: price table, cost formulas, break-even, routing, Pareto."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdbench import store
from kdbench.economics import (
    DEFAULT_PRICES,
    PriceError,
    break_even,
    cost_per_million_tokens,
    cost_per_query,
    load_prices,
    pareto_front,
    routing_curve,
    training_price,
)

from . import appdata


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- price table


def test_shipped_table_loads_and_names_sources() -> None:
    table = load_prices()
    assert table.path == DEFAULT_PRICES and table.currency == "USD"
    assert {"cpu", "a100", "h100"} <= set(table.devices)
    for device in table.devices.values():
        assert device.usd_per_hour > 0
        assert "example list price" in device.source  # says what the figures are
    assert table.device_for({"gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 8}).name == "h100"
    assert table.device_for('{"gpu": "NVIDIA A100-SXM4-40GB"}').name == "a100"
    assert table.device_for({"platform": "Linux", "cpu_count": 2}).name == "cpu"
    assert table.device_for({"gpu": "Tesla T4"}) is None  # not priced: no guess
    assert table.device_for(None) is None
    assert math.isnan(table.rate("Tesla T4"))
    assert table.rate(None) == table.devices["cpu"].usd_per_hour


def test_custom_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'currency = "EUR"\n[devices.l4]\nusd_per_hour = 0.8\nmatch = ["L4"]\nsource = "quote"\n',
    )
    table = load_prices(path)
    assert table.currency == "EUR"
    assert table.device_for({"gpu": "NVIDIA L4"}).usd_per_hour == 0.8
    assert table.device_for({"cpu_count": 4}) is None  # no cpu entry: CPU runs unpriced


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[devices.h100\n", "not valid TOML"),
        ('curency = "USD"\n[devices.cpu]\nusd_per_hour = 1\n', "unknown key 'curency'"),
        ("currency = 1\n[devices.cpu]\nusd_per_hour = 1\n", "currency: must be a string"),
        ('currency = "USD"\n', "devices: at least one"),
        ('[devices.h100]\nusd_per_hour = "cheap"\n', "devices.h100.usd_per_hour: must be a finite"),
        ("[devices.h100]\nusd_per_hour = -1\n", "devices.h100.usd_per_hour: must be a finite number >= 0"),
        ("[devices.h100]\nusd_per_hour = inf\n", "devices.h100.usd_per_hour: must be a finite"),
        ("[devices.h100]\nusd_per_hour = nan\n", "devices.h100.usd_per_hour: must be a finite"),
        ("[devices.h100]\nusd_per_hour = true\n", "devices.h100.usd_per_hour"),
        ('[devices.h100]\nusd_per_hour = 1\nmatch = "H100"\n', "devices.h100.match: must be a list"),
        ("[devices.h100]\nusd_per_hour = 1\nprice = 2\n", "devices.h100.price: unknown key"),
        ('[devices.cpu]\nusd_per_hour = 1\nmatch = ["Xeon"]\n', "devices.cpu.match: the cpu entry"),
        ("[devices]\nh100 = 3\n", "devices.h100: must be a table"),
        ("[devices.h100]\nusd_per_hour = 1\nsource = 3\n", "devices.h100.source: must be a string"),
    ],
)  # fmt: skip
def test_malformed_table_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PriceError) as err:
        load_prices(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert needle in message


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(PriceError, match="no such price table"):
        load_prices(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- formulas


def test_cost_formulas() -> None:
    assert training_price(2.5, 4.0) == 10.0
    # 3600 tokens/s for an hour = 12.96M tokens for $6.48: $0.5 per million
    assert cost_per_million_tokens(6.48, 3600.0) == pytest.approx(0.5)
    assert math.isnan(cost_per_million_tokens(6.48, 0.0))
    assert cost_per_query(0.5, 2_000) == pytest.approx(0.001)


def test_break_even() -> None:
    r = break_even(100.0, 0.003, 0.001, 10_000)
    assert r.saving_per_query == pytest.approx(0.002)
    assert r.monthly_saving == pytest.approx(20.0)
    assert r.queries_to_break_even == pytest.approx(50_000)
    assert r.months_to_break_even == pytest.approx(5.0)
    never = break_even(100.0, 0.001, 0.002, 10_000)
    assert math.isinf(never.months_to_break_even) and math.isinf(never.queries_to_break_even)
    assert never.monthly_saving == pytest.approx(-10.0)
    assert math.isinf(break_even(100.0, 0.003, 0.001, 0).months_to_break_even)
    free = break_even(0.0, 0.003, 0.001, 10)
    assert free.months_to_break_even == 0.0 and free.queries_to_break_even == 0.0
    with pytest.raises(ValueError, match="queries_per_month"):
        break_even(1.0, 0.1, 0.0, -5)


# --------------------------------------------------------------------------- routing


def test_routing_curve_by_hand() -> None:
    student = pd.DataFrame(
        {"task": "t", "doc_id": [0, 1, 2, 3],
         "correct": [1.0, 0.0, 1.0, 0.0], "confidence": [0.9, 0.2, 0.6, None]}
    )  # fmt: skip
    teacher = pd.DataFrame({"task": "t", "doc_id": [0, 1, 2, 3], "correct": [1.0, 1.0, 0.0, 1.0]})
    curve = routing_curve(student, teacher, 1.0, 10.0, shares=[0, 0.25, 0.5, 0.75, 1.0])
    # confidence order: doc 3 (missing = least), doc 1 (0.2), doc 2 (0.6), doc 0 (0.9)
    assert list(curve["routed"]) == [0, 1, 2, 3, 4]
    assert list(curve["quality"]) == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.75])
    assert list(curve["cost_per_query"]) == pytest.approx([1.0, 3.5, 6.0, 8.5, 11.0])
    assert list(curve["retention"]) == pytest.approx(np.array([0.5, 0.75, 1.0, 0.75, 0.75]) / 0.75)
    # the endpoints are the student alone and the teacher alone
    assert curve["quality"].iloc[0] == student["correct"].mean()
    assert curve["quality"].iloc[-1] == teacher["correct"].mean()


def test_routing_matches_on_task_and_doc() -> None:
    student = pd.DataFrame(
        {"task": ["a", "a", "b"], "doc_id": [0, 1, 0], "correct": [0.0, 1.0, 1.0],
         "confidence": [0.1, 0.9, 0.5]}
    )  # fmt: skip
    teacher = pd.DataFrame({"task": ["a", "b", "c"], "doc_id": [0, 0, 0], "correct": [1.0] * 3})
    curve = routing_curve(student, teacher, 0.0, 1.0, shares=[0.0, 0.5, 1.0])
    assert list(curve["routed"]) == [0, 1, 2]  # two matched questions: (a, 0), (b, 0)
    assert list(curve["quality"]) == [0.5, 1.0, 1.0]
    assert routing_curve(student, teacher.assign(task="z"), 0.0, 1.0).empty
    with pytest.raises(ValueError, match="shares"):
        routing_curve(student, teacher, 0.0, 1.0, shares=[1.5])


def test_routing_on_stored_samples(tmp_path_factory: pytest.TempPathFactory, tmp_path) -> None:
    db = tmp_path / "k.duckdb"
    shutil.copyfile(appdata.template(tmp_path_factory), db)
    student = store.read_samples(db, run_id="kd-0.1M-s0")
    teacher = store.read_samples(db, run_id="teacher-s0")
    curve = routing_curve(student, teacher, 0.001, 0.01)
    assert len(curve) == 21 and curve["share"].iloc[-1] == 1.0
    assert curve["routed"].iloc[-1] == len(student) == 2 * appdata.QUESTIONS
    assert curve["quality"].iloc[0] == pytest.approx(student["correct"].mean())
    assert curve["quality"].iloc[-1] == pytest.approx(teacher["correct"].mean())
    # the builder's student is least confident where it is wrong: routing those helps first
    assert curve["quality"].iloc[5] > curve["quality"].iloc[0]
    assert curve["cost_per_query"].is_monotonic_increasing


# --------------------------------------------------------------------------- Pareto


def test_pareto_front_minimise_x() -> None:
    params = [1, 2, 3, 3, 4, 5, np.nan]
    retention = [0.5, 0.4, 0.7, 0.7, 0.6, 0.9, 1.0]
    front = pareto_front(params, retention)
    # (2, .4) is beaten by (1, .5); (4, .6) by (3, .7); identical (3, .7) both stay; NaN never
    assert list(front) == [True, False, True, True, False, True, False]


def test_pareto_front_maximise_x_and_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 200).astype(float)
    y = rng.integers(0, 20, 200).astype(float)
    for minimize in (True, False):
        front = pareto_front(x, y, minimize_x=minimize)
        sx = x if minimize else -x
        for i in range(len(x)):
            dominated = np.any((sx <= sx[i]) & (y >= y[i]) & ((sx < sx[i]) | (y > y[i])))
            assert front[i] == (not dominated)
    assert not pareto_front([], []).any()
    with pytest.raises(ValueError):
        pareto_front([1, 2], [1])
