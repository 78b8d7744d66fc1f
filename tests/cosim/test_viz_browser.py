"""The viewer in a real browser: `cosim viz RUN_DIR` served, opened in headless Chromium
(Debian's `chromium`, which `make setup` installs; no browser download), the map awaited,
Step pressed, and the displayed step and a household's value seen to change. The last
screenshot is kept as a test artefact in runs/test-artifacts/ (or $COSIM_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from .test_viz import make_run

ARTIFACTS = Path(os.environ.get("COSIM_TEST_ARTIFACTS",
                                Path(__file__).parents[2] / "runs" / "test-artifacts"))
TIMEOUT_MS = 90_000  # page load is 3-7 s on two idle cores; a busy CI machine is slower


def chromium() -> str:
    path = os.environ.get("COSIM_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on PATH: `make setup` installs Debian's chromium package "
                    "(or set COSIM_CHROMIUM to a Chromium binary)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`cosim viz` of a small run on any free port; yields (url, run folder)."""
    run_dir = make_run(tmp_path_factory.mktemp("viz-browser") / "run")
    proc = subprocess.Popen([sys.executable, "-m", "cosim.cli", "viz", str(run_dir),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url, seen, deadline = None, [], time.monotonic() + 120
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        seen.append(line)
        found = re.search(r"viewer at (http://\S+)", line)
        url = found.group(1) if found else None
    if url is None:
        proc.kill()
        pytest.fail("cosim viz did not start:\n" + "".join(seen))
    try:
        yield url, run_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_step_in_the_browser_changes_the_step_and_a_household(server):
    from playwright.sync_api import expect, sync_playwright

    url, run_dir = server
    homes = pd.read_parquet(run_dir / "households")
    net = homes.pivot(index="household", columns="step", values="net_kw")
    household = int((net[1] - net[0]).abs().idxmax())  # one whose value surely changes
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        try:
            page.goto(url, timeout=TIMEOUT_MS)
            expect(page.get_by_text("Step: 0")).to_be_visible(timeout=TIMEOUT_MS)
            feeder_map = page.locator("img.cosim-map")
            expect(feeder_map).to_be_visible(timeout=TIMEOUT_MS)
            box = page.get_by_label(re.compile(r"household \(0-59\)"))
            box.fill(str(household))
            box.press("Enter")
            value = page.locator(".cosim-net-power")
            expect(value).to_have_text(f"net power {net.loc[household, 0]:.3f} kW",
                                       timeout=TIMEOUT_MS)
            before = feeder_map.get_attribute("src")

            page.get_by_role("button", name="Step").click()
            expect(page.get_by_text("Step: 1")).to_be_visible(timeout=TIMEOUT_MS)
            expect(value).to_have_text(f"net power {net.loc[household, 1]:.3f} kW",
                                       timeout=TIMEOUT_MS)
            expect(feeder_map).not_to_have_attribute("src", before, timeout=TIMEOUT_MS)
            expect(page.locator(".cosim-error")).to_have_count(0)
        finally:
            page.screenshot(path=str(ARTIFACTS / "viz-after-step.png"), full_page=True)
            browser.close()
