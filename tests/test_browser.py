"""End to end in real headless Chromium: serve the app, open every page, run one short job, screenshot.

Needs Debian's chromium (/usr/bin/chromium) and Playwright for Python (never `playwright
install`). Without them the test is skipped locally; `.ci/run` installs both and sets
CURE_REQUIRE_BROWSER=1, which turns a missing browser into a failure. Screenshots go to
test-output/screenshots/.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_app import app_env, app_files  # noqa: F401  (the shared tiny data and cache)

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


def _local(url: str) -> bool:
    """Served by this machine (or inline): what a request may be."""
    return url.startswith(("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "data:", "blob:", "about:"))


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


def _sample_progress_until(page, done, seconds: float = WAIT / 1000) -> list[list[tuple[str, float]]]:
    """Every progress bar on the page as (its text, its value), every 0.2 s, until `done` shows."""
    samples, deadline = [], time.time() + seconds
    while time.time() < deadline:
        if done.count() and done.first.is_visible():
            return samples
        samples.append([tuple(bar) for bar in page.eval_on_selector_all(
            "[data-testid='stProgress']", "els => els.map(e => [e.innerText.trim(), "
            "Number(e.querySelector(\"[role='progressbar']\").getAttribute('aria-valuenow'))])")])
        time.sleep(0.2)
    page.screenshot(path=str(SHOTS / "lab-failure.png"), full_page=True)
    raise AssertionError("the run did not finish")


def _cancel_a_run(page) -> None:
    """A long run cancelled from its Cancel button: the page says so and no run is stored."""
    import re

    from playwright.sync_api import expect

    heading = page.get_by_role("heading", name=re.compile(r"^Runs for "))
    before = heading.inner_text()
    steps = page.get_by_label("Max steps (0: the epochs decide)", exact=True)
    steps.fill("2000")
    steps.press("Enter")
    expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=WAIT)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_text("stage 3 of 4: unlearning").first).to_be_visible(timeout=WAIT)
    # while the live chart draws, the progress bar and its stage line stay above the fold of a 1400x900 screen
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=WAIT)  # the live loss chart
    for shown in (page.locator("[role='progressbar']").first, page.get_by_text("stage 3 of 4: unlearning").first):
        box = shown.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, box
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Cancelled: the job stopped at its next step")).to_be_visible(timeout=WAIT)
    expect(page.get_by_text("cure finished")).to_have_count(0)
    assert heading.inner_text() == before  # nothing partial was stored
    page.screenshot(path=str(SHOTS / "lab-cancelled.png"), full_page=True)


def _run_npo(page) -> None:
    """A second method from the same page: uniform NPO, 2 steps, listed beside the CURE run."""
    from playwright.sync_api import expect

    page.locator("[data-testid='stSelectbox']").filter(has_text="Method").first.click()
    page.get_by_role("option", name="npo", exact=True).click()
    idle = page.locator("[data-testid='stStatusWidget']")
    expect(idle).to_have_count(0, timeout=WAIT)
    steps = page.get_by_label("Max steps (0: the epochs decide)", exact=True)
    steps.fill("2")
    steps.press("Enter")
    expect(idle).to_have_count(0, timeout=WAIT)
    page.get_by_role("button", name="Run").click()
    _sample_progress_until(page, page.get_by_text("npo finished"))
    table = page.locator("[data-testid='stDataFrame']").last
    expect(table).to_be_visible(timeout=WAIT)
    page.screenshot(path=str(SHOTS / "lab-after-npo.png"), full_page=True)


def _job_events(cache: Path) -> list[str]:
    """What each top-level lab run's log lines say, in order (start, done, cancelled...)."""
    from analysis.jobs import JobQueue

    return [e.event for e in JobQueue(cache).history() if e.label.startswith("run ") and not e.nested]


def _lab_tab(browser, server: str, steps: str):
    """A new tab (a new session) on the lab, its step count set, ready to Run."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(WAIT)
    page.goto(server)
    page.get_by_role("link", name="Unlearning lab", exact=True).click()
    box = page.get_by_label("Max steps (0: the epochs decide)", exact=True)
    box.fill(steps)
    box.press("Enter")
    expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=WAIT)
    return page


def _closing_a_tab_stops_its_job(browser, server: str, cache: Path) -> None:
    """A tab closed mid-run: its job stops at the next step and the job log says cancelled."""
    from playwright.sync_api import expect

    before = len(_job_events(cache))
    alone = _lab_tab(browser, server, "1999")
    alone.get_by_role("button", name="Run").click()
    expect(alone.get_by_text("stage 3 of 4: unlearning").first).to_be_visible(timeout=WAIT)
    alone.close()
    deadline = time.time() + 120
    while time.time() < deadline and "cancelled" not in _job_events(cache)[before:]:
        time.sleep(0.5)
    assert _job_events(cache)[before:] == ["start", "cancelled"], _job_events(cache)[before:]


def _a_closed_tab_s_job_runs_on_for_a_waiting_tab(browser, server: str, cache: Path) -> None:
    """Two tabs run the same request; the first one's tab closes while the second waits for it: the job is
    not cancelled but runs on, once, and the waiting tab gets its result."""
    from playwright.sync_api import expect

    before = len(_job_events(cache))
    first, second = _lab_tab(browser, server, "150"), _lab_tab(browser, server, "150")  # ~25 s of steps
    first.get_by_role("button", name="Run").click()
    expect(first.get_by_text("stage 3 of 4: unlearning").first).to_be_visible(timeout=WAIT)
    second.get_by_role("button", name="Run").click()
    expect(second.get_by_text("waiting for another run that is building this run").first).to_be_visible(timeout=WAIT)
    first.close()
    expect(second.get_by_text("cure finished")).to_be_visible(timeout=WAIT)
    expect(second.get_by_text("Waited")).to_be_visible(timeout=WAIT)  # it loaded the first tab's result
    assert _job_events(cache)[before:] == ["start", "done"], _job_events(cache)[before:]
    second.close()


CLICK_POINT = """() => {
  // the circuit graph (legend "module group"): pixel position of its first head or MLP node
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const fl = el._fullLayout;
    if (!fl || !fl.legend || !fl.legend.title || fl.legend.title.text !== 'module group') continue;
    for (const tr of el.data) {
      const names = tr.customdata || [];
      for (let i = 0; i < names.length; i++) {
        if (typeof names[i] !== 'string' || !/^[am][0-9]/.test(names[i])) continue;
        el.scrollIntoView();
        const r = el.getBoundingClientRect();
        return [names[i], r.left + fl._size.l + fl.xaxis.l2p(tr.x[i]), r.top + fl._size.t + fl.yaxis.l2p(tr.y[i])];
      }
    }
  }
  return null;
}"""


def _click_a_graph_node(page) -> None:
    """A single click on a head or MLP of the circuit graph puts it in the module picker (no lasso needed)."""
    from playwright.sync_api import expect

    name, x, y = page.evaluate(CLICK_POINT)
    page.mouse.move(x, y)  # plotly picks the clicked point from the hover
    page.mouse.click(x, y)
    picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="Selected roles, heads and MLPs")
    expect(picker).to_contain_text(name, timeout=WAIT)


def _walk_the_tour(page) -> None:
    """Every tour step, its claims checked against the cached results the test reads itself."""
    from playwright.sync_api import expect

    from analysis.circuits.discover import CircuitSettings, cached_circuits
    from analysis.circuits.groups import GroupThresholds
    from analysis.config import DataConfig
    from analysis.model.train import train_recommender
    from analysis.workspace import open_workspace

    ws = open_workspace(DataConfig(source=os.environ["CURE_DATA"], history=int(os.environ["CURE_HISTORY"])),
                        root=os.environ["CURE_CACHE"])
    result = cached_circuits(ws, train_recommender(ws), ws.forget_set("users:0.1"),
                             CircuitSettings(n_prompts=int(os.environ["CURE_N_PROMPTS"]),
                                             stability_seeds=int(os.environ["CURE_STABILITY_SEEDS"]),
                                             retain_samples=int(os.environ["CURE_RETAIN_SAMPLES"])), GroupThresholds())
    assert result is not None  # the Circuits page cached them
    page.get_by_role("link", name="Guided tour", exact=True).click()
    titles = ["1. The recommender", "2. One recommendation, opened up", "3. Circuits of a deletion request",
              "4. Unlearning", "5. Before and after", "6. The evidence"]
    for k, title in enumerate(titles):
        expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=WAIT)
        if k == 2:
            # the heading of a step can be drawn before the rerun has replaced the previous step's text (CI read
            # step 2's sentence under step 3's heading): wait for this step's own paragraph, then read it
            para = page.locator("[data-testid='stMarkdownContainer']").filter(has_text="On this request:")
            expect(para).to_have_count(1, timeout=WAIT)
            text = para.inner_text()
            for group, n in result.node_groups.sizes().items():
                assert re.search(rf"(?<![\d.]){n} {group}\b", text), (group, n, text)
            assert "stable" not in text.lower()
            page.screenshot(path=str(SHOTS / "tour-circuits.png"), full_page=True)
        if k == 3:
            # the chart's own end points, then the averages the trend word is read from
            expect(page.get_by_text("In the last cure run here, the lab's chart drew the forget loss from")
                   ).to_be_visible(timeout=WAIT)
        if k < len(titles) - 1:
            page.get_by_role("button", name="Next").click()


def test_every_page_renders_and_a_short_unlearning_job_runs(server, tmp_path, app_env):
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS, viewport={"width": 1400, "height": 2400})
        page = browser.new_page()
        page.set_default_timeout(WAIT)
        # a classroom may be offline: nothing may leave the machine, and the console stays clean
        outside, errors = [], []
        browser.on("request", lambda r: None if _local(r.url) else outside.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server)
        for link, title, name in PAGES:  # through the sidebar, as a user would: one browser session throughout
            page.get_by_role("link", name=link, exact=True).click()
            expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=WAIT)
            expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=WAIT)  # done running
            if name == "circuits":
                expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=WAIT)
                expect(page.get_by_text("module group")).to_be_visible(timeout=WAIT)  # the graph's legend
                # the rule line above the graph, and the groups' sentences (one starts with each group's name)
                expect(page.get_by_text("Benjamini-Hochberg over").first).to_be_visible(timeout=WAIT)
                expect(page.get_by_text("forget-specific: ").first).to_be_visible(timeout=WAIT)
                expect(page.get_by_role("heading", name="Specificity: forget importance vs retain importance")
                       ).to_be_visible(timeout=WAIT)
                expect(page.get_by_text("Selected item rows")).to_be_visible(timeout=WAIT)
                _click_a_graph_node(page)
            if name == "overview":
                expect(page.get_by_text("Layers x heads")).to_be_visible(timeout=WAIT)
            if name == "trace":
                expect(page.get_by_text("P(like)")).to_be_visible(timeout=WAIT)
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        page.get_by_role("link", name="Unlearning lab", exact=True).click()
        expect(page.get_by_role("heading", name="Unlearning lab").first).to_be_visible(timeout=WAIT)
        steps = page.get_by_label("Max steps (0: the epochs decide)", exact=True)
        steps.fill("2")
        steps.press("Enter")
        idle = page.locator("[data-testid='stStatusWidget']")
        expect(idle).to_have_count(0, timeout=WAIT)  # the rerun for the new value is over
        page.get_by_role("button", name="Run").click()
        samples = _sample_progress_until(page, page.get_by_text("cure finished"))
        page.screenshot(path=str(SHOTS / "lab-after-run.png"), full_page=True)
        # the job's one bar (stage k of n over the whole job) never decreased while it ran. Read by its label: one
        # fresh-clone CI run sampled a bar at 5% and then 0 just after Run was clicked, and which bar that was is
        # unknown (the samples held values only); every bar's text is now in the message when this fails
        seen = [v for row in samples for text, v in row if text.startswith("cure on ")]
        assert any(0 < v < 100 for v in seen), samples
        assert all(b >= a for a, b in zip(seen, seen[1:])), samples
        _cancel_a_run(page)
        _run_npo(page)
        expect(page.get_by_role("heading", name="Runs for users:0.1 (2)")).to_be_visible(timeout=WAIT)
        page.get_by_role("link", name="Compare", exact=True).click()
        expect(page.get_by_role("heading", name="A forgotten user")).to_be_visible(timeout=WAIT)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=WAIT)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / "compare-after-run.png"), full_page=True)
        _walk_the_tour(page)
        assert not outside, sorted(set(outside))
        assert not errors, errors[:10]
        _closing_a_tab_stops_its_job(browser, server, Path(app_env["CURE_CACHE"]))
        _a_closed_tab_s_job_runs_on_for_a_waiting_tab(browser, server, Path(app_env["CURE_CACHE"]))
        browser.close()
    assert len(list(SHOTS.glob("*.png"))) >= 9
