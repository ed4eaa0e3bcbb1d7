"""The quantised rows in the app: the Leaderboard page's checkbox and the Pareto page's
retention-vs-bytes chart, on the hand-written store of tests/test_quant_board.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench import store

from ..test_quant_board import SUITE, add
from ..test_quant_board import db as quant_db  # noqa: F401 - the fixture

APP = Path(__file__).resolve().parents[2] / "app.py"


@pytest.fixture(autouse=True)
def _app(quant_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.setenv("KDBENCH_DB", str(quant_db))
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    st.cache_data.clear()


def run(**params: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_quantised_rows_are_shown_on_demand() -> None:
    at = run()
    assert len(at.dataframe) == 1  # the board alone
    assert sorted(at.dataframe[0].value["method"]) == ["sft", "teacher"]
    at.checkbox(key="quantized").check().run()
    assert [h.value for h in at.subheader][0] == "Quantised rows"
    rows = at.dataframe[1].value
    assert rows[["method", "quant", "failed"]].values.tolist() == [
        ["teacher", "int8", 0],
        ["sft", "int8", 0],
        ["sft", "int4", 1],
    ]
    assert rows["bytes"].tolist()[:2] == [1100, 300]
    assert set(rows["run_id"]) == {f"?page=Run&run={r}" for r in ("t-int8", "s0-int8", "s0-int4")}
    # bound to the URL: a link opens the view with the rows shown
    assert at.checkbox(key="quantized").proto.query_param_key == "quantized"
    assert run(quantized="true").checkbox(key="quantized").value is True


def test_pareto_plots_quantised_groups_with_their_own_marker() -> None:
    at = run(page="Pareto")
    assert [h.value for h in at.subheader][-1] == "Retention vs bytes on disk, quantised"
    chart = list(at.get("vega_lite_chart"))[-1]
    spec = json.loads(chart.proto.spec)
    shapes = spec["encoding"]["shape"]["scale"]
    assert shapes == {"domain": ["full precision", "int8"], "range": ["circle", "square"]}
    data = [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]
    points = max(data, key=len)
    assert sorted(zip(points["method"], points["variant"], points["bytes"], strict=True)) == [
        ("sft", "full precision", 1000.0),
        ("sft", "int8", 300.0),
        ("teacher", "full precision", 4000.0),
        ("teacher", "int8", 1100.0),
    ]


def test_a_suite_without_quantised_runs_has_no_bytes_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "plain.duckdb"
    store.write_suite(other, SUITE, "q", "q.toml", {})
    add(other, "t", "teacher", {"qa": 0.8, "lm": 10.0}, bytes_=4000)
    add(other, "s0", "sft", {"qa": 0.4, "lm": 20.0}, bytes_=1000)
    monkeypatch.setenv("KDBENCH_DB", str(other))
    at = run(page="Pareto")
    assert "Retention vs bytes on disk, quantised" not in [h.value for h in at.subheader]
    at = run(quantized="true")
    assert any("No quantised runs" in i.value for i in at.info)
