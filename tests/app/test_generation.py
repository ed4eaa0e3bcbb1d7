"""The sampling columns of the Leaderboard page (``kdbench.leaderboard.GENERATION_COLUMNS``):
shown, labelled and filled over a store with an on-policy method (tests/appdata.py's
database plus :func:`tests.appdata.add_on_policy`), absent from a board where no row sampled
(the off-policy database alone, or a filter that leaves out the on-policy method)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from statistics import mean

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench.leaderboard import GENERATION_COLUMNS, leaderboard

from .. import appdata
from ..appdata import SEEDS, STUDENTS, SUITE

APP = Path(__file__).resolve().parents[2] / "app.py"
METHOD = appdata.ON_POLICY[0]


@pytest.fixture(autouse=True)
def _clean_app_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["app.py"])  # not pytest's own arguments
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    st.cache_data.clear()


def _copy(factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "kdbench.duckdb"
    shutil.copyfile(appdata.template(factory), path)
    monkeypatch.setenv("KDBENCH_DB", str(path))
    return path


@pytest.fixture
def on_policy(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """tests/appdata.py's database with an on-policy method added, through KDBENCH_DB."""
    return appdata.add_on_policy(_copy(tmp_path_factory, tmp_path, monkeypatch))


@pytest.fixture
def off_policy(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """tests/appdata.py's database as it is: off-policy methods only."""
    return _copy(tmp_path_factory, tmp_path, monkeypatch)


def run_app(**params: str | list[str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def board_element(at: AppTest):
    """The leaderboard table (the st.dataframe with the gain column)."""
    return next(d for d in at.dataframe if "gain_vs_sft" in d.value.columns)


def test_sampling_columns_appear_with_their_values(on_policy: Path) -> None:
    at = run_app()
    element = board_element(at)
    df = element.value
    assert set(GENERATION_COLUMNS) <= set(df.columns)
    cols = list(df.columns)
    start = cols.index("train_wall_s") + 1  # right after the training time
    assert cols[start : start + len(GENERATION_COLUMNS)] == list(GENERATION_COLUMNS)

    rows = df.set_index(["method", "student"])
    for student in STUDENTS:
        row = rows.loc[(METHOD, student)]
        assert row["generation_s"] == pytest.approx(mean(appdata.generation_s(s) for s in SEEDS))
        assert row["generation_share"] == pytest.approx(
            mean(appdata.generation_s(s) / (40.0 + s) for s in SEEDS)
        )
        assert row["generated_tokens"] == pytest.approx(
            mean(appdata.generated_tokens(s) for s in SEEDS)
        )
    # the off-policy rows and the teacher sampled nothing: empty cells
    others = rows.drop(index=METHOD, level="method")
    assert others[list(GENERATION_COLUMNS)].isna().all().all()
    # the same numbers as the board the CLI reads
    expected = leaderboard(on_policy, SUITE).set_index(["method", "student"])
    assert rows["generation_share"].tolist() == pytest.approx(
        expected.loc[rows.index, "generation_share"].tolist(), nan_ok=True
    )

    config = json.loads(element.proto.columns)
    assert config["generation_s"]["label"] == "sampling time"
    share = config["generation_share"]
    assert share["label"] == "sampling share" and share["help"]
    assert share["type_config"]["format"] == "percent"
    assert config["param_ratio"]["type_config"]["format"] == "percent"  # like the others
    assert config["generated_tokens"]["label"] == "sampled tokens"
    assert config["generated_tokens"]["help"]


def test_off_policy_board_has_no_sampling_columns(off_policy: Path) -> None:
    df = board_element(run_app()).value
    assert not set(GENERATION_COLUMNS) & set(df.columns)
    assert "train_wall_s" in df.columns and "device_hours" in df.columns  # the other costs stay


def test_filtering_out_the_on_policy_method_hides_them(on_policy: Path) -> None:
    at = run_app()
    assert "generation_share" in board_element(at).value.columns
    at.multiselect(key="method").set_value(["kd", "sft"]).run()
    df = board_element(at).value
    assert sorted(set(df["method"])) == ["kd", "sft", "teacher"]
    assert not set(GENERATION_COLUMNS) & set(df.columns)
    at.multiselect(key="method").set_value([METHOD]).run()
    assert set(GENERATION_COLUMNS) <= set(board_element(at).value.columns)


@pytest.mark.parametrize("sampled", [True, False])
def test_export_follows_the_table(
    sampled: bool,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CSV download has the sampling columns (raw values) exactly when the table does."""
    path = _copy(tmp_path_factory, tmp_path, monkeypatch)
    if sampled:
        appdata.add_on_policy(path)
    served = appdata.served_downloads(monkeypatch)
    at = run_app()
    csv = pd.read_csv(io.BytesIO(served[f"kdbench-{SUITE[:8]}.csv"]))
    assert (set(GENERATION_COLUMNS) <= set(csv.columns)) is sampled
    if sampled:
        shown = board_element(at).value
        assert csv["generation_share"].tolist() == pytest.approx(
            shown["generation_share"].tolist(), nan_ok=True
        )
    else:
        assert not set(GENERATION_COLUMNS) & set(csv.columns)
