"""The app's typed context (kdbench/app/context.py): built from what one rerun read, without
Streamlit; the page-level behaviour is in tests/test_app.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kdbench import economics
from kdbench import leaderboard as lb
from kdbench.app.context import AppContext, Filters, make_context

from .. import appdata
from ..appdata import SUITE, TASKS


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return appdata.template(tmp_path_factory)


def context(db: Path, **kwargs: Any) -> AppContext:
    """The context of suite tiny, as the app builds it after reading that suite."""
    suites = lb.suites(db)
    suite = suites[suites["suite_hash"] == SUITE].iloc[0]
    return make_context(db, suites, suite, lb.suite_data(db, (SUITE,)), **kwargs)


def test_filters_from_widget_values() -> None:
    assert Filters.of([], None, ()) == Filters()
    chosen = Filters.of(["kd", "fkl"], None, ["student-0.1M"])
    assert chosen.methods == ("kd", "fkl") and chosen.students == ("student-0.1M",)
    assert chosen.as_kwargs() == {
        "methods": ("kd", "fkl"),
        "families": None,
        "students": ("student-0.1M",),
    }


def test_context_of_a_suite(db: Path) -> None:
    ctx = context(db)
    assert ctx.db == db and ctx.suite_hash == SUITE and ctx.teacher is None
    assert ctx.tasks == TASKS and ctx.has_runs
    expected = lb.leaderboard(db, SUITE)
    assert list(ctx.view["method"]) == list(expected["method"])
    assert list(ctx.view["rank_label"]) == list(expected["rank_label"])
    assert set(ctx.task_meta["task"]) == set(TASKS) and "suite_hash" not in ctx.task_meta
    assert list(ctx.failed["run_id"]) == ["kd-0.1M-s9"]
    assert ctx.prices is None and ctx.priced_with is None  # no table: boards are unpriced
    assert ctx.prices_path == economics.DEFAULT_PRICES


def test_filters_rank_the_view_again(db: Path) -> None:
    ctx = context(db, filters=Filters.of(["kd", "seqkd"], None, ["student-0.1M"]))
    assert list(ctx.view["method"]) == ["teacher", "kd", "seqkd"]
    assert list(ctx.view["rank_label"]) == ["-", "1", "2"]
    assert len(ctx.board) > len(ctx.view)  # the board stays unfiltered


def test_prices_path_is_the_cache_key_only_with_prices(db: Path) -> None:
    table = economics.load_prices()
    ctx = context(db, prices=table, prices_path=economics.DEFAULT_PRICES)
    assert ctx.priced_with == str(economics.DEFAULT_PRICES)


def test_context_is_frozen(db: Path) -> None:
    ctx = context(db)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.view = pd.DataFrame()  # type: ignore[misc]


def test_suite_without_successful_runs() -> None:
    suites = pd.DataFrame({"suite_hash": ["s1"], "label": ["empty (s1)"], "teacher": [None]})
    data = lb.SuiteData(
        boards={"s1": pd.DataFrame()},
        tasks=pd.DataFrame(columns=["suite_hash", "task"]),
        failed=pd.DataFrame(columns=["run_id"]),
    )
    ctx = make_context(Path("x.duckdb"), suites, suites.iloc[0], data)
    assert not ctx.has_runs and ctx.tasks == () and ctx.view.empty
    assert ctx.filters == Filters()
