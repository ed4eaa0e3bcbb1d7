"""The leaderboard app in a real browser: `streamlit run app.py` on a free port against the
test database, driven by Debian's headless Chromium through selenium.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`make test` installs Debian's `chromium`
and `chromium-driver` when they are missing); fails, never skips, without them. Set
KDBENCH_SCREENSHOT=docs/leaderboard.png to also write the screenshot there (`make screenshot`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import appdata

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = (
    "install Debian's headless Chromium: `sudo apt-get update && sudo apt-get install -y "
    "chromium chromium-driver` (`make test` does this when /usr/bin/chromedriver is missing)"
)
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"streamlit did not answer at {url} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tests/appdata.py's database (three seeds per method, so intervals show)."""
    path = tmp_path_factory.mktemp("browser") / "kdbench.duckdb"
    shutil.copyfile(appdata.template(tmp_path_factory), path)
    return path


@pytest.fixture(scope="module")
def app_url(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served by a real `streamlit run` on a free port, over ``db``."""
    yield from serve(["--db", str(db)], tmp_path_factory, "streamlit.log")


@pytest.fixture(scope="module")
def merged_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """The app over two submitters' imported bundles (tests/appdata.py): url, db, suite."""
    merged, suite = appdata.merged_submissions(tmp_path_factory.mktemp("merged"))
    for url in serve(["--db", str(merged)], tmp_path_factory, "streamlit-merged.log"):
        yield url, merged, suite


def serve(
    args: list[str], tmp_path_factory: pytest.TempPathFactory, log_name: str
) -> Iterator[str]:
    """Run `streamlit run app.py -- ARGS` on a free port; yield its URL, then stop it."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--client.toolbarMode=viewer",
        "--",
        *args,
    ]
    with running(cmd, ROOT, tmp_path_factory.getbasetemp() / log_name, port) as url:
        yield url


@contextlib.contextmanager
def running(cmd: list[str], cwd: Path, log_path: Path, port: int) -> Iterator[str]:
    """Start the app server ``cmd`` (logging to ``log_path``), wait until it answers on
    ``port``, yield its URL, then stop it."""
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium; fails with the install command when it is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, count: int = 1, timeout: float = 60.0) -> list:
    """The elements matching ``css`` once there are at least ``count`` of them."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if len(found) >= count:
            return found
        time.sleep(0.25)
    raise AssertionError(f"no {count} x {css!r} within {timeout:.0f}s; page: {driver.title}")


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not met within {timeout:.0f}s")


def grid_rows(driver) -> list[list[str]]:
    """The rows of the first st.dataframe, from the accessible table Glide keeps in the DOM."""
    from selenium.webdriver.common.by import By

    grid = wait_for(driver, '[data-testid="stDataFrame"]')[0]
    rows = grid.find_elements(By.CSS_SELECTOR, '[role="row"]')
    return [
        [c.get_attribute("textContent") for c in r.find_elements(By.CSS_SELECTOR, "th, td")]
        for r in rows
    ]


def test_table_rows_in_the_browser(browser, app_url: str, db: Path, tmp_path: Path) -> None:
    from kdbench.leaderboard import leaderboard

    browser.get(app_url)
    expected = leaderboard(db, appdata.SUITE)

    def full_table() -> list[list[str]] | None:
        rows = grid_rows(browser)
        return rows if len(rows) == 1 + len(expected) else None

    rows = wait_until(full_table, what="all leaderboard rows rendered")
    header, *body = rows
    assert header[:6] == ["rank", "method", "family", "student", "role", "run"]
    assert [r[1] for r in body] == list(expected["method"])
    assert [r[3] for r in body] == list(expected["student"])
    assert [r[0] for r in body] == list(expected["rank_label"])  # shared ranks, e.g. 2–4
    assert any("–" in r[0] for r in body)
    assert "SYNTHETIC" not in browser.page_source
    time.sleep(1.0)  # let the progress bars finish drawing
    shot = tmp_path / "leaderboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("KDBENCH_SCREENSHOT")
    if target:
        shutil.copyfile(shot, ROOT / target)


def test_pareto_chart_renders_and_links_to_runs(browser, app_url: str, db: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from kdbench.economics import pareto_front
    from kdbench.leaderboard import leaderboard

    browser.get(app_url)
    wait_for(browser, '[data-testid="stDataFrame"]')
    # switching page with the navigation menu writes it into the URL (a shareable link)
    link = next(
        e
        for e in wait_for(browser, '[data-testid="stTopNavLink"]', count=6)
        if e.text.strip() == "Pareto"
    )
    link.click()
    wait_until(lambda: "page=Pareto" in browser.current_url, what="page=Pareto in the URL")
    charts = wait_for(browser, '[data-testid="stVegaLiteChart"]', count=3)
    expected = leaderboard(db, appdata.SUITE)
    points = wait_until(
        lambda: (
            found
            if len(found := charts[0].find_elements(By.CSS_SELECTOR, "g.layer_1_marks path"))
            == len(expected)
            else None
        ),
        what="one drawn point per leaderboard row",
    )
    labels = [p.get_attribute("aria-label") for p in points]
    students = expected[expected["role"] != "teacher"]
    front = set(students.loc[pareto_front(students["params"], students["retention_avg"]), "run_id"])
    shown_front = {
        part.split(": ", 1)[1]
        for text in labels
        if "front: Pareto front" in text
        for part in text.split("; ")
        if part.startswith("run_id: ")
    }
    assert shown_front == front
    # a point is a link to its run's page
    target = next(p for p, t in zip(points, labels, strict=True) if "front: Pareto front" in t)
    run_id = next(
        x for x in target.get_attribute("aria-label").split("; ") if x.startswith("run_id")
    )
    run_id = run_id.split(": ", 1)[1]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    ActionChains(browser).move_to_element(target).click().perform()
    wait_until(lambda: f"run={run_id}" in browser.current_url, what="the run page URL")
    wait_until(lambda: f"Run {run_id}" in browser.page_source, what="the run page")


def test_shared_link_opens_a_failed_run(browser, app_url: str) -> None:
    browser.get(f"{app_url}/?page=Run&run=kd-0.1M-s9")
    wait_until(
        lambda: "CUDA out of memory" in browser.page_source, what="the run page with its error"
    )
    assert "This run failed" in browser.page_source
    assert "page=Run" in browser.current_url and "run=kd-0.1M-s9" in browser.current_url


def test_merged_board_with_submitters_in_the_browser(browser, merged_url) -> None:
    """Two submitters' bundles merged: a row per method x student x submitter, each with its
    submitter, division and verified mark."""
    from kdbench.leaderboard import LOCAL

    url, merged, suite = merged_url
    browser.get(url)

    def full_table() -> list[list[str]] | None:
        rows = grid_rows(browser)
        return rows if len(rows) == 1 + 9 else None  # the teacher, 4 groups x 2 submitters

    header, *body = wait_until(full_table, what="the merged board's rows rendered")
    assert header[:6] == ["rank", "method", "family", "student", "role", "run"]
    who, division = header.index("submitter"), header.index("division")
    assert sorted(r[who] for r in body) == ["Ann"] * 5 + ["Bob"] * 4
    assert LOCAL not in {r[who] for r in body}
    assert {r[division] for r in body} == {"open"}
    assert "verified" in header
    # the Submissions page lists both bundles with the checker's output
    browser.get(f"{url}/?page=Submissions")
    wait_until(lambda: "submitter: Ann (Lab A)" in browser.page_source, what="Ann's checker output")
    assert "verify: ok" in browser.page_source
    listed = wait_until(
        lambda: rows if len(rows := grid_rows(browser)) == 3 else None, what="both bundles listed"
    )
    assert sorted(r[listed[0].index("submitter")] for r in listed[1:]) == ["Ann", "Bob"]
