"""The demo in a real headless browser: the pages load, a label map is painted and uploaded, Generate shows samples,
bad input shows a message, and the PIDM page generates too.

Needs Chromium (Debian's ``chromium``) and Playwright (the ``dev`` extra); without them the tests are skipped with
the reason, unless ``CONDIFF_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the skip into a failure.
"""

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from experiments.demo.__main__ import DemoOptions, build
from experiments.demo.app import launch

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
TIMEOUT_MS = 120_000


def browser_or_skip():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if CHROMIUM is None:
        missing.append("a chromium executable (apt-get install chromium)")
    if missing:
        reason = f"browser test needs {' and '.join(missing)}"
        if os.environ.get("CONDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}; CONDIFF_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    return sync_playwright


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(ckpt: Path) -> tuple[object, str]:
    port = free_port()
    app = build(DemoOptions(ckpt_path=ckpt, accelerator="cpu", num_examples=3))
    launch(app, "127.0.0.1", port, block=False)
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture
def page() -> Iterator:
    sync_playwright = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def status_text(page, contains: str) -> str:
    page.wait_for_function("text => document.querySelector('#status').innerText.includes(text)", arg=contains)
    return page.locator("#status").inner_text()


@pytest.mark.slow
def test_paint_upload_and_generate_on_the_sdm_page(page, sdm_run, tmp_path):
    app, url = serve(sdm_run)
    try:
        page.goto(url)
        page.locator("#steps input").fill("3")
        # Paint a stroke across the canvas with the first class colour, then generate: the layout was painted over.
        canvas = page.locator("#label_canvas canvas").first
        canvas.wait_for()
        box = canvas.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        for fraction in np.linspace(0.3, 0.7, 12):
            page.mouse.move(box["x"] + box["width"] * fraction, y)
        page.mouse.up()
        page.click("#generate")
        page.locator("#gallery img").first.wait_for()
        assert "the layout was painted over" in status_text(page, "sample(s)")
        # A label PNG of raw ids: an upload replaces the canvas and samples as it is.
        raw = np.full((16, 16), 2, dtype=np.uint8)
        raw[:8] = 1
        cv2.imwrite(str(tmp_path / "two_bands.png"), raw)
        page.locator("#label_upload input[type=file]").set_input_files(str(tmp_path / "two_bands.png"))
        page.locator("#num_samples input").fill("2")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#gallery img').length >= 2")
        assert "2 sample(s), ddim 3 steps" in status_text(page, "2 sample(s)")
        # Stop ends a long run at its next step: a message in the page, and the next request runs.
        page.locator("#steps input").fill("100")
        page.locator("#num_samples input").fill("16")
        page.click("#generate")
        page.get_by_text("denoising steps").first.wait_for()
        page.click("#generate_stop")
        status_text(page, "Stopped: the run ends at its next denoising step")
        page.locator("#steps input").fill("3")
        page.locator("#num_samples input").fill("2")
        # Ids that are no class of the model: a message in the page, and the server keeps serving.
        cv2.imwrite(str(tmp_path / "bad.png"), np.full((16, 16), 40, dtype=np.uint8))
        page.locator("#label_upload input[type=file]").set_input_files(str(tmp_path / "bad.png"))
        page.get_by_text("no class of this model").first.wait_for()
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status').innerText.includes('2 sample(s)')")
    finally:
        app.close()


@pytest.mark.slow
def test_generate_on_the_pidm_page(page, pidm_run):
    app, url = serve(pidm_run)
    try:
        page.goto(url)
        page.locator("#steps input").fill("2")
        page.click("#skeleton img")  # moves the selected joint (right wrist) to the clicked point
        page.click("#generate")
        page.locator("#gallery img").first.wait_for()
        assert "1 sample(s)" in status_text(page, "sample(s)")
    finally:
        app.close()


def test_a_missing_browser_is_reported_not_hidden(monkeypatch):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", None)
    monkeypatch.setenv("CONDIFF_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="needs a chromium executable"):
        browser_or_skip()
    monkeypatch.delenv("CONDIFF_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="needs a chromium executable"):
        browser_or_skip()
