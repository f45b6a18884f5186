"""End to end in real headless Chromium: serve the app, open every page, run one short job, screenshot.

Needs Debian's chromium (/usr/bin/chromium) and Playwright for Python (never `playwright
install`). Without them the test is skipped locally; `.ci/run` installs both and sets
CURE_REQUIRE_BROWSER=1, which turns a missing browser into a failure. Screenshots go to
test-output/screenshots/.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_app import app_files  # noqa: F401  (the shared tiny data and cache)

ROOT = Path(__file__).parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("CURE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT = 300_000  # ms; the first page trains the tiny default model, Circuits computes the tiny circuits
PAGES = [  # (sidebar link, page heading, screenshot name)
    ("Overview", "CURE Explorer", "overview"), ("Trace", "Trace one recommendation", "trace"),
    ("Circuits", "Circuits of a deletion request", "circuits"), ("Unlearning lab", "Unlearning lab", "lab"),
    ("Compare", "Compare before and after", "compare"), ("Evidence", "Evidence", "evidence"),
    ("Guided tour", "Guided tour", "tour")]


def _browser_available() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found"
    return None


missing = _browser_available()
if missing and os.environ.get("CURE_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"the browser test is required here but {missing}")
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(app_files, tmp_path):
    port = _free_port()
    env = {**os.environ, **app_files}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                             "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"streamlit did not come up: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_every_page_renders_and_a_short_unlearning_job_runs(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS, viewport={"width": 1400, "height": 2400})
        page = browser.new_page()
        page.set_default_timeout(WAIT)
        page.goto(server)
        for link, title, name in PAGES:  # through the sidebar, as a user would: one browser session throughout
            page.get_by_role("link", name=link, exact=True).click()
            expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=WAIT)
            expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=WAIT)  # done running
            if name == "circuits":
                expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=WAIT)
                expect(page.get_by_text("module group")).to_be_visible(timeout=WAIT)  # the graph's legend
                expect(page.get_by_text("Groups on this request")).to_be_visible(timeout=WAIT)
                expect(page.get_by_role("heading", name="Specificity: forget importance vs retain importance")
                       ).to_be_visible(timeout=WAIT)
                expect(page.get_by_text("Selected item rows")).to_be_visible(timeout=WAIT)
            if name == "overview":
                expect(page.get_by_text("Layers x heads")).to_be_visible(timeout=WAIT)
            if name == "trace":
                expect(page.get_by_text("P(like)")).to_be_visible(timeout=WAIT)
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        page.get_by_role("link", name="Unlearning lab", exact=True).click()
        expect(page.get_by_role("heading", name="Unlearning lab").first).to_be_visible(timeout=WAIT)
        steps = page.get_by_label("Steps")
        steps.fill("2")
        steps.press("Enter")
        idle = page.locator("[data-testid='stStatusWidget']")
        expect(idle).to_have_count(0, timeout=WAIT)  # the rerun for the new value is over
        page.get_by_role("button", name="Run").click()
        try:
            expect(page.get_by_text("cure finished")).to_be_visible(timeout=WAIT)
        except AssertionError:
            page.screenshot(path=str(SHOTS / "lab-failure.png"), full_page=True)
            raise
        page.screenshot(path=str(SHOTS / "lab-after-run.png"), full_page=True)
        page.get_by_role("link", name="Compare", exact=True).click()
        expect(page.get_by_role("heading", name="A forgotten user")).to_be_visible(timeout=WAIT)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=WAIT)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / "compare-after-run.png"), full_page=True)
        browser.close()
    assert len(list(SHOTS.glob("*.png"))) >= 9
