"""Submitters in the app: the merged board of two submitters' imported bundles (submitter,
division, verified columns; the submitter and division filters), the Submissions page with
each bundle's checker output, and the same app served read-only from Parquet
(``kdbench export --all``, ``kdbench app --parquet``)."""

from __future__ import annotations

import hashlib
import shutil
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdbench import leaderboard as lb
from kdbench import store
from kdbench.app.context import with_submissions
from kdbench.bundle import MANIFEST, sha256_file
from kdbench.cli import main
from tests import appdata
from tests.test_browser import free_port, running

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return appdata.merged_submissions(tmp_path_factory.mktemp("submissions"))


@pytest.fixture(scope="module")
def parquet(merged: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "board"
    assert main(["export", "--all", "--db", str(merged[0]), "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDBENCH_PRICES", raising=False)
    monkeypatch.delenv("KDBENCH_PARQUET", raising=False)
    monkeypatch.delenv("KDBENCH_DB", raising=False)
    st.cache_data.clear()


def run_app(monkeypatch: pytest.MonkeyPatch, *argv: str, **params: str | list[str]) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", *argv])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def board(at: AppTest) -> pd.DataFrame:
    return next(e.value for e in at.dataframe if "gain_vs_sft" in e.value.columns)


def test_merged_board_has_a_row_per_submitter(merged, monkeypatch) -> None:
    db, _ = merged
    df = board(run_app(monkeypatch, "--db", str(db)))
    assert list(df.columns[:10])[-4:] == ["retention_avg", "retention_ci", "gain_vs_sft", "gain_ci"]
    assert {"submitter", "division", "verified"} <= set(df.columns)
    students = df[df["role"] != "teacher"]
    # each (method, student) once per submitter: Ann's seed 0 and Bob's seed 1 apart
    assert sorted(students.groupby("submitter").size().items()) == [("Ann", 4), ("Bob", 4)]
    assert (students["seeds"] == 1).all()
    assert set(df.loc[df["role"] == "teacher", "submitter"]) == {"Ann"}
    assert set(df["division"]) == {"open"} and df["verified"].all()


def test_submitter_and_division_filters(merged, monkeypatch) -> None:
    db, _ = merged
    at = run_app(monkeypatch, "--db", str(db), submitter="Bob")
    df = board(at)
    assert set(df.loc[df["role"] != "teacher", "submitter"]) == {"Bob"}
    assert len(df) == 1 + 4  # the teacher stays
    assert at.multiselect(key="submitter").options == ["Ann", "Bob"]
    assert at.selectbox(key="division").options == ["all", "open"]
    at.multiselect(key="submitter").set_value([]).run()
    assert len(board(at)) == 9


def test_a_local_database_is_local_and_not_verified(tmp_path_factory, monkeypatch) -> None:
    df = board(run_app(monkeypatch, "--db", str(appdata.template(tmp_path_factory))))
    assert set(df["submitter"]) == {lb.LOCAL} and not df["verified"].any()


def test_division_is_closed_for_a_shipped_suite() -> None:
    from tests.test_bundle import tiny

    view = pd.DataFrame({"method": ["kd"], "submitter": ["Ann"]})
    assert with_submissions(view, tiny().hash)["division"].tolist() == ["closed"]
    assert with_submissions(view.drop(columns="submitter"), "0" * 16).to_dict("records") == [
        {"method": "kd", "submitter": "local", "division": "open", "verified": False}
    ]


def test_submissions_page_lists_both_bundles_with_their_checker(merged, monkeypatch) -> None:
    db, _ = merged
    folder = db.parent
    at = run_app(monkeypatch, "--db", str(db), page="Submissions")
    listed = next(e.value for e in at.dataframe if "bundle_sha256" in e.value.columns)
    shas = [sha256_file(folder / who / MANIFEST) for who in ("ann", "bob")]
    assert set(listed["bundle_sha256"]) == set(shas)
    assert dict(zip(listed["submitter"], listed["runs"], strict=True)) == {"Ann": 5, "Bob": 4}
    assert dict(zip(listed["submitter"], listed["seeds"], strict=True)) == {"Ann": "0", "Bob": "1"}
    assert set(listed["methods"]) == {"kd, sft, teacher", "kd, sft"}
    checker = at.code[0].value
    assert checker.startswith("verify: ok") and "submitter: Ann (Lab A)" in checker
    assert "open division" in checker and "seeds: 0" in checker
    picker = at.selectbox(key="bundle")
    picker.select(next(o for o in picker.options if o.endswith("Bob"))).run()
    assert "submitter: Bob (Lab B)" in at.code[0].value
    runs = next(e.value for e in at.dataframe if "run_id" in e.value.columns)
    assert len(runs) == 4 and set(runs["seed"]) == {1}


def test_the_parquet_export_serves_the_same_board(merged, parquet, monkeypatch) -> None:
    db, suite = merged
    assert sorted(p.name for p in parquet.iterdir()) == sorted(
        f"{t}.parquet" for t in store.ALL_TABLES
    )
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in parquet.iterdir()}
    from_db = board(run_app(monkeypatch, "--db", str(db)))
    st.cache_data.clear()
    from_parquet = board(run_app(monkeypatch, "--parquet", str(parquet)))
    pd.testing.assert_frame_equal(from_parquet, from_db)
    st.cache_data.clear()
    monkeypatch.setenv("KDBENCH_PARQUET", str(parquet))  # the same through the environment
    at = run_app(monkeypatch, page="Submissions")
    assert "submitter: Ann (Lab A)" in at.code[0].value
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in parquet.iterdir()}
    assert after == before  # nothing written
    with pytest.raises(store.StoreError, match="read-only Parquet export"):
        store.connect(store.parquet_db(parquet))
    with pytest.raises(store.StoreError, match="read-only Parquet export"):
        store.check_writable(store.parquet_db(parquet))
    pd.testing.assert_frame_equal(
        lb.leaderboard(store.parquet_db(parquet), suite), lb.leaderboard(db, suite)
    )


def test_a_bundle_folder_is_served_too_and_bad_folders_are_one_line(merged, tmp_path) -> None:
    db, suite = merged
    ann = lb.leaderboard(store.parquet_db(db.parent / "ann"), suite)  # no provenance: empty
    assert len(ann) == 5
    with pytest.raises(store.StoreError, match="no such folder"):
        store.connect(store.parquet_db(tmp_path / "nowhere"), read_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(store.StoreError, match="has no suites.parquet"):
        store.connect(store.parquet_db(tmp_path / "empty"), read_only=True)


def test_an_https_source_sets_up_httpfs_or_says_why_in_one_line(monkeypatch) -> None:
    url = "https://example.invalid/kdbench/board"
    # pathlib folds the URL's // (the app passes the source through Path): it is restored
    assert store.parquet_source(Path(store.parquet_db(url))) == url
    assert store.is_remote(url) and store.is_remote("s3://bucket/board")
    assert not store.is_remote("/data")
    seen: list[str] = []
    real = store.load_httpfs

    def spy(con, source):  # type: ignore[no-untyped-def]
        seen.append(source)
        return real(con, source)

    monkeypatch.setattr(store, "load_httpfs", spy)
    with pytest.raises(store.StoreError) as caught:  # offline: no extension, or no host
        store.connect(store.parquet_db(url), read_only=True)
    assert seen == [url]
    message = str(caught.value)
    assert "\n" not in message and url in message
    assert "httpfs" in message or "suites.parquet" in message


def test_kdbench_app_serves_the_parquet_folder_over_http(parquet, tmp_path) -> None:
    """What the container runs (deploy/Dockerfile's CMD), on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "kdbench.cli", "app", "--parquet", str(parquet),
           "--port", str(port), "--address", "127.0.0.1"]  # fmt: skip
    with (
        running(cmd, tmp_path, tmp_path / "app.log", port) as url,
        urllib.request.urlopen(url, timeout=10) as r,
    ):
        assert r.status == 200 and b"<html" in r.read().lower()
    assert "leaderboard at http://localhost" in (tmp_path / "app.log").read_text()
    assert main(["app", "--parquet", str(tmp_path / "nowhere")]) == 2


def test_export_all_refuses_bundle_options(merged, tmp_path, capsys) -> None:
    db, _ = merged
    argv = ["export", "--all", "--db", str(db), "--out", str(tmp_path / "x")]
    assert main([*argv, "--submitter", "Ann"]) == 2
    assert "--all writes every table" in capsys.readouterr().err
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "y")]) == 2
    assert "--submitter NAME (or a name in --submitter-file) is required" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and shutil.which("true")
