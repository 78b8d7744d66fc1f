"""Benchmark: how responsive the viewer is, as time per rendered step at 100 and 1,000
households on IEEE 123 (the issue's target: under 0.5 s on 2 cores).

The runs: experiments/configs/ieee123_1000.toml with `households.count` set to each size and
`run.steps` to --steps (from 10:00, so PV, trades and batteries are busy), on synthetic
profiles (cosim.profiles.synthetic: what is timed is the viewer, not the profiles), recorded
into runs/bench-viz-*/n<households>.

Two timings per size, each over --steps - 1 steps from step 0:

- server: `FeederModel.step()` and drawing the three pictures of the page (the feeder map,
  the time series, the household inspector's history) to PNG, as the page does on a step;
- browser: `cosim viz` of the run served and opened in headless Chromium (Debian's
  `chromium`); from the click on Step until the page shows the new step counter and the new
  map and household value: what a user waits for. Left out (and said so) without chromium.

Reported: median and 90th percentile per step; the first step is counted (it is not a
warm-up: the page draws its figures' backgrounds once, when it is first shown).

    cosim bench viz [--sizes 100 1000] [--steps 24] [--update-benchmarks MD]
    python -m experiments.bench.viz --quick
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cosim.profiles import synthetic
from cosim.simulation import Simulation
from experiments.bench.common import add_output_arguments, machine_info, save

MARK = "<!-- bench:viz -->"
END = "<!-- /bench:viz -->"
TARGET_S = 0.5
CONFIG = Path(__file__).parents[1] / "configs" / "ieee123_1000.toml"
START = "2026-06-01T10:00:00Z"


@dataclass
class Row:
    households: int
    steps: int
    server_median_s: float
    server_p90_s: float
    browser_median_s: float | None = None
    browser_p90_s: float | None = None


@dataclass
class Result:
    machine: dict[str, str]
    command: str
    rows: list[Row] = field(default_factory=list)
    browser_note: str = ""


def make_run(households: int, steps: int, folder: Path) -> Path:
    """The IEEE 123 scenario with `households` homes and `steps` steps, recorded."""
    overrides = {"households.count": households, "run.steps": steps, "run.start": START,
                 "households.shard_size": min(households, 250)}
    profiles = synthetic(homes=households, steps=steps + 96, start=START[:16], seed=1)
    Simulation.from_config(CONFIG, record=True, out=folder, profiles=profiles,
                           overrides=overrides).run(progress=False)
    return folder


def time_server(folder: Path) -> list[float]:
    """Seconds per step: the model's step and the page's three pictures."""
    from cosim.viz.figures import HouseholdFigure, MapFigure, SeriesFigure
    from cosim.viz.model import FeederModel

    model = FeederModel(folder)
    pictures = (MapFigure(model.layout, model.records), SeriesFigure(model.records),
                HouseholdFigure(model.records))
    times = []
    while model.running:
        t = time.perf_counter()
        model.step()
        pictures[0].draw(model.frame, model.frame.soc)
        pictures[1].draw(model.frame.step)
        pictures[2].draw(0, model.frame.step)
        times.append(time.perf_counter() - t)
    return times


def chromium() -> str | None:
    return os.environ.get("COSIM_CHROMIUM") or shutil.which("chromium")


# the page shows a step: its counter, and a map other than the one before
SHOWN = """([counter, before]) => {
    const map = document.querySelector("img.cosim-map");
    return map !== null && map.src !== before && document.body.innerText.includes(counter);
}"""


def time_browser(folder: Path, steps: int) -> list[float]:
    """Seconds from a click on Step to the page showing the step's counter and map."""
    from playwright.sync_api import expect, sync_playwright

    proc = subprocess.Popen([sys.executable, "-m", "cosim.cli", "viz", str(folder), "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = None
        while url is None and proc.poll() is None:
            found = re.search(r"viewer at (http://\S+)", proc.stdout.readline())
            url = found.group(1) if found else None
        if url is None:
            raise RuntimeError(f"cosim viz {folder} did not start")
        times = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(url, timeout=120_000)
            feeder_map = page.locator("img.cosim-map")
            expect(feeder_map).to_be_visible(timeout=120_000)
            expect(page.get_by_text("Step: 0")).to_be_visible(timeout=120_000)
            button = page.get_by_role("button", name="Step")
            for step in range(1, steps):
                before = feeder_map.get_attribute("src")
                t = time.perf_counter()
                button.click()
                # checked at each animation frame: Playwright's `expect` polls at 100 ms and
                # more, which would round the times up
                page.wait_for_function(SHOWN, arg=[f"Step: {step}", before], polling="raf",
                                       timeout=60_000)
                times.append(time.perf_counter() - t)
            browser.close()
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(sizes: list[int], steps: int, root: Path, command: str) -> Result:
    result = Result(machine_info("cpu"), command)
    browser = chromium()
    if browser is None:
        result.browser_note = "no chromium on this machine: browser timings left out"
    for households in sizes:
        folder = make_run(households, steps, root / f"n{households}")
        server = time_server(folder)
        row = Row(households, steps - 1, float(np.median(server)),
                  float(np.percentile(server, 90)))
        if browser is not None:
            clicks = time_browser(folder, steps)
            row.browser_median_s = float(np.median(clicks))
            row.browser_p90_s = float(np.percentile(clicks, 90))
        result.rows.append(row)
        print(row, flush=True)
    return result


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(result: Result) -> str:
    m = result.machine
    lines = [
        MARK,
        "## Viewer responsiveness: time per rendered step",
        "",
        f"Target from the issue (13, deliverable 5): under {TARGET_S} s per rendered step at "
        "100 and 1,000 households on IEEE 123, on 2 cores.",
        "",
        f"### IEEE 123, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']}; Python {m['python']}; torch {m['torch']}. Command: "
        f"`{result.command}`. Runs: experiments/configs/ieee123_1000.toml at each size from "
        "10:00 (synthetic profiles). Server: `FeederModel.step()` plus the page's three "
        "pictures (map, time series, household history) to PNG. Browser: `cosim viz` in "
        "headless Chromium, from the click on Step to the new step counter and map on the "
        "page. Medians and 90th percentiles over the steps (the first included).",
        "",
        "| households | steps | server median s | server p90 s | browser median s | "
        "browser p90 s | target |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result.rows:
        worst = row.browser_p90_s if row.browser_p90_s is not None else row.server_p90_s
        lines.append(f"| {row.households:,} | {row.steps} | {_s(row.server_median_s)} | "
                     f"{_s(row.server_p90_s)} | {_s(row.browser_median_s)} | "
                     f"{_s(row.browser_p90_s)} | "
                     f"{'met' if worst < TARGET_S else 'missed'} (p90) |")
    if result.browser_note:
        lines += ["", result.browser_note]
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000],
                        help="households per run")
    parser.add_argument("--steps", type=int, default=24, help="steps per run (>= 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 households, 4 steps")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    import datetime as dt

    sizes, steps = ([100], 4) if args.quick else (args.sizes, max(args.steps, 2))
    out = args.out or Path("runs") / f"bench-viz-{dt.datetime.now():%Y%m%d-%H%M%S}"
    args.out = out
    command = "cosim bench viz " + " ".join(
        ["--quick"] if args.quick else
        ["--sizes", *map(str, sizes), "--steps", str(steps)])
    result = run(sizes, steps, out, command)
    save("viz", args, markdown(result), asdict(result), MARK, END)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
