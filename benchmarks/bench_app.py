"""App targets on the cache `make app` leaves (prepare, train, warm: the default request's retrain,
circuits, groups and reference views).

0. after `make app`, in headless Chromium: the Circuits page of the default request until its
   graph shows, and a CURE run from the lab until it finishes, with the progress bar sampled
   every 0.2 s (it must never go back);
1. first page: seconds from `streamlit run` until the Overview's model card is visible in
   headless Chromium (Playwright; skipped with a note when no browser is installed);
2. server time of every page switch and of moving the Circuits edge slider (AppTest runs
   the script in this process, so its wall time is the server's time);
3. one CURE run from the Unlearning lab at the default budget, its circuits cached and
   nothing else (the run itself is not cached: the cache is a fresh copy without runs/).

Prints a table and writes benchmarks/results/app.json.

    .venv/bin/python benchmarks/bench_app.py
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).parent.parent
OUT = Path(__file__).parent / "results" / "app.json"
CHROMIUM = "/usr/bin/chromium"


def warm_cache() -> tuple[Path, float]:
    """What `make app` does before serving: prepare, train, warm (the default request); timed."""
    from analysis.cache import cache_root

    start = time.perf_counter()
    for command in ("prepare", "train", "warm"):
        subprocess.run([sys.executable, "-m", "analysis.cli", command], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return cache_root(None), time.perf_counter() - start


def browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@contextlib.contextmanager
def served_app(cache: Path, env: dict | None = None):
    """`streamlit run` on `cache` (plus `env`); yields its URL once the server answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                             "--server.port", str(port), "--server.headless", "true"], cwd=ROOT,
                            env={**os.environ, "CURE_CACHE": str(cache), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic"]


@contextlib.contextmanager
def served_page(cache: Path, env: dict | None = None, viewport: dict | None = None):
    """`served_app` and a headless Chromium page opened on it; callers time what they measure (the first
    page's clock starts before the server does)."""
    from playwright.sync_api import sync_playwright

    with served_app(cache, env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        page = browser.new_page(**({"viewport": viewport} if viewport else {}))
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


def first_page_seconds(cache: Path) -> float | None:
    if not browser_available():
        return None
    from playwright.sync_api import expect

    start = time.perf_counter()
    with served_page(cache) as page:
        page.set_default_timeout(120_000)
        expect(page.get_by_text("Layers x heads")).to_be_visible(timeout=120_000)
        return time.perf_counter() - start


def after_make_app(cache: Path) -> dict | None:
    """In Chromium, on the cache `make app` left: the Circuits page of the default request until its graph
    shows, then a CURE run of it from the lab at the default budget until its finish message, sampling the
    progress bar every 0.2 s (it must never go back)."""
    if not browser_available():
        return None
    from playwright.sync_api import expect

    out: dict = {}
    with served_page(cache, {"OMP_WAIT_POLICY": "PASSIVE"},  # as make app serves it
                     viewport={"width": 1400, "height": 2000}) as page:
        page.set_default_timeout(600_000)
        expect(page.get_by_text("Layers x heads")).to_be_visible(timeout=120_000)
        start = time.perf_counter()
        page.get_by_role("link", name="Circuits", exact=True).click()
        expect(page.get_by_text("Groups on this request")).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        out["circuits_page_seconds"] = time.perf_counter() - start
        page.get_by_role("link", name="Unlearning lab", exact=True).click()
        expect(page.get_by_role("button", name="Run")).to_be_visible()
        expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0)
        start = time.perf_counter()
        page.get_by_role("button", name="Run").click()
        done, samples = page.get_by_text("cure finished"), []
        while not (done.count() and done.first.is_visible()):
            samples.append(page.eval_on_selector_all(
                "[role='progressbar']", "els => els.map(e => Number(e.getAttribute('aria-valuenow')))"))
            time.sleep(0.2)
        out["cure_run_seconds"] = time.perf_counter() - start
        out["cure_run_message"] = done.first.inner_text()
        columns = [[row[i] for row in samples if len(row) > i] for i in range(max(map(len, samples), default=0))]
        out["progress_samples"] = len(samples)
        out["progress_never_decreased"] = all(all(b >= a for a, b in zip(c, c[1:])) for c in columns)
    return out


def timed_run(at) -> float:
    start = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    return time.perf_counter() - start


def server_times(cache: Path) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ["CURE_CACHE"] = str(cache)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=900)
    out = {"first_run_in_process": timed_run(at)}
    for page in ("trace", "circuits", "lab", "compare", "tour", "overview"):
        at.switch_page(f"app/pages/{page}.py")
        out[f"switch_to_{page}"] = timed_run(at)
        if page == "circuits":
            at.slider(key="circ_edges").set_value(40)
            out["circuits_edge_slider"] = timed_run(at)
            at.slider(key="circ_tau").set_value(3.0)
            out["circuits_tau_slider"] = timed_run(at)
        if page == "trace":
            at.selectbox(key="trace_head").select(2)
            out["trace_head_select"] = timed_run(at)
    at.switch_page("app/pages/lab.py")
    timed_run(at)
    # the reference views (retrain and original scores, top-10 lists) are cached by the first run of a
    # request; time a first run (cold references) and a second configuration (warm), both new runs
    at.button(key="lab_run").click()
    out["cure_run_from_lab_first_of_request"] = timed_run(at)
    at.number_input(key="lab_steps").set_value(31)
    timed_run(at)
    at.button(key="lab_run").click()
    out["cure_run_from_lab"] = timed_run(at)
    out["cure_run_message"] = at.success[0].value if at.success else None
    at.switch_page("app/pages/compare.py")
    out["switch_to_compare_with_a_run"] = timed_run(at)
    at.selectbox(key="cmp_ru").select_index(1)
    out["compare_pick_another_user"] = timed_run(at)
    return out


def main() -> None:
    warm, warm_seconds = warm_cache()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        shutil.copytree(warm, cache, ignore=shutil.ignore_patterns("runs", "quarantine", "locks"))
        after = after_make_app(cache)
        shutil.rmtree(cache / "runs", ignore_errors=True)  # the server-time runs below are new runs too
        first = first_page_seconds(cache)
        times = server_times(cache)
    result = {"make_app_prepare_seconds_warm_cache": warm_seconds, "after_make_app": after,
              "first_page_seconds_in_chromium": first, "server_seconds": times}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print("\n| target | measured | met |\n|---|---|---|")
    print(f"| first page within 15 s of `streamlit run` | "
          f"{'no browser here' if first is None else f'{first:.1f} s'} | {first is not None and first <= 15} |")
    switches = {k: v for k, v in times.items()
                if isinstance(v, float) and not k.startswith(("cure_run", "first_run"))}
    worst = max(switches, key=switches.get)
    print(f"| page switch / slider < 1 s server time | worst {worst} {switches[worst]:.2f} s | {switches[worst] < 1} |")
    print(f"| CURE run from the lab <= 30 s | {times['cure_run_from_lab']:.1f} s (first run of the request, "
          f"scoring retrain and original too: {times['cure_run_from_lab_first_of_request']:.1f} s) | "
          f"{times['cure_run_from_lab'] <= 30} |")
    if after:
        print(f"| after make app: Circuits page graph <= 20 s | {after['circuits_page_seconds']:.1f} s | "
              f"{after['circuits_page_seconds'] <= 20} |")
        print(f"| after make app: CURE run from the lab <= 30 s | {after['cure_run_seconds']:.1f} s | "
              f"{after['cure_run_seconds'] <= 30} |")
        print(f"| no progress bar decreased ({after['progress_samples']} samples) | "
              f"{after['progress_never_decreased']} | {after['progress_never_decreased']} |")
    print(json.dumps(times, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
