"""Benchmark: a long run through the normal engine, watching its memory (issue 16, item 8).

The issue: "A year of 15-minute steps for 1,000 households on IEEE 123 runs with flat memory
and its time in BENCHMARKS.md." What is run: experiments/configs/ieee123_1000.toml (or
`--config`) with `run.steps` set to `--days` days of its step (default 365 days of 15 min,
35,040 steps), through `cosim.Simulation.run` on the local backend with every record written
to the run folder (Parquet parts and a checkpoint every `run.checkpoint_every` steps), and
profiles from the scenario's own generator config for the whole horizon (`--profiles
synthetic`: the engine's synthetic family instead, for quick checks).

What is measured:
- wall time: building the simulation (profiles generated, scenario built), stepping (the
  engine's own `wall["total"]`, from which steps/s and household-steps/s), and in all;
- resident memory (RSS) of this process and of its child processes (Ray's, on the ray
  backend) every `--sample-every` steps (psutil, else /proc), and the process's peak (the
  kernel's high-water mark, which catches the profile generator's transient peak too);
- RSS at the start (before the simulation is built), after building, after the warm-up (the
  first simulated day), at the end, the largest sample, and the slope of RSS over the second
  half of the steps (a least-squares line, MB per 1,000 steps). "Flat" means that slope,
  projected over a year of steps, stays under `FLAT_MB_PER_YEAR`.

The run folder (default runs/bench-longrun-<time>) holds the records, memory.csv (the
samples, written as they are taken), memory.png (RSS over the steps) and the benchmark's
table.md and results.json. A run that stops (a power flow that does not converge, a failed
actor, Ctrl-C or SIGTERM) is reported as such, with the step it reached; its records up to the last
checkpoint stay in the folder (`cosim run --resume` goes on).

    cosim bench longrun [--days 365] [--households N] [--sample-every 96]
                        [--update-benchmarks BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cosim.commands.run import _positive as positive
from experiments.bench.common import add_output_arguments, machine_info, save

MARK = "<!-- bench:longrun -->"
END = "<!-- /bench:longrun -->"
CONFIG = Path("experiments/configs/ieee123_1000.toml")
YEAR_DAYS = 365
# growth, MB over a year of 15-minute steps at the second half's slope, below which memory
# counts as flat: allocator noise (arenas, Parquet buffers) moves RSS by tens of MB
FLAT_MB_PER_YEAR = 50.0
MIN_JUDGED_STEPS = 1000


@dataclass
class Config:
    config: str = str(CONFIG)  # scenario TOML
    days: float = YEAR_DAYS  # simulated days
    households: int | None = None  # None: the scenario's count
    sample_every: int = 96  # steps between memory samples
    profiles: str = "generator"  # the scenario's own ("generator"), or "synthetic"
    backend: str = "local"


@dataclass
class Sample:
    step: int  # steps completed
    wall_s: float  # since the simulation was built
    rss_mb: float  # this process
    children_mb: float  # its child processes (Ray's), 0 when there are none
    # live buffers of Arrow's memory pool in this process (the records' Parquet encoding):
    # RSS growing while this stays put is memory the allocator keeps, not buffers held
    arrow_mb: float = 0.0


@dataclass
class Result:
    config: Config
    machine: dict[str, str]
    folder: str
    households: int = 0
    steps: int = 0  # asked for
    steps_done: int = 0
    dt_s: int = 900
    status: str = "running"  # the run folder's status: complete, failed, nonconverged
    error: str = ""
    build_s: float = 0.0  # profiles and scenario
    stepping_s: float = 0.0  # the engine's own stepping time
    total_s: float = 0.0  # build, steps, records drained, summary
    rss_start_mb: float = 0.0
    rss_built_mb: float = 0.0
    rss_warm_mb: float = 0.0
    warmup_steps: int = 0
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0  # largest sample (process and children)
    peak_mb: float = 0.0  # the process's high-water mark (ru_maxrss)
    slope_mb_per_1000: float | None = None  # second half, process and children
    flat: bool | None = None
    memory_source: str = ""
    records_mb: float = 0.0
    load_average: list[list[float]] = field(default_factory=list)  # at start and end
    samples: list[Sample] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.stepping_s if self.stepping_s else float("nan")


# -- memory ---------------------------------------------------------------------------------

def _proc_rss_mb(pid: int | str) -> float:
    """VmRSS of /proc/<pid>/status, MB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _proc_children(pid: int) -> list[int]:
    """Every descendant of `pid`, from the parent ids in /proc/<pid>/stat."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the command name (2nd field) may hold spaces: split after its ')'
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def memory_mb() -> tuple[float, float, str]:
    """(RSS of this process, summed RSS of its descendants, source), MB: psutil when it is
    installed, else /proc. Processes that exit while being read count as 0."""
    try:
        import psutil
    except ImportError:
        own = _proc_rss_mb("self")
        return own, sum(_proc_rss_mb(p) for p in _proc_children(os.getpid())), "/proc"
    me = psutil.Process()
    kids = 0.0
    for child in me.children(recursive=True):
        try:
            kids += child.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return me.memory_info().rss / 2**20, kids, "psutil"


def peak_mb() -> float:
    """This process's RSS high-water mark, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def slope_per_1000(samples: list[Sample], total_steps: int) -> float | None:
    """Least-squares slope of RSS (process and children, MB) against steps over the second
    half of the run, per 1,000 steps; None with fewer than 3 samples there."""
    late = [s for s in samples if s.step >= total_steps / 2]
    if len(late) < 3:
        return None
    x = np.array([s.step for s in late], dtype=float)
    y = np.array([s.rss_mb + s.children_mb for s in late])
    return float(np.polyfit(x, y, 1)[0] * 1000)


def is_flat(slope: float | None, dt_s: int, steps: int) -> bool | None:
    """Flat: the slope, projected over a year of steps of `dt_s`, adds less than
    FLAT_MB_PER_YEAR. None (no verdict) without a slope or for runs shorter than
    MIN_JUDGED_STEPS, whose second half is too short to tell a trend from noise."""
    if slope is None or steps < MIN_JUDGED_STEPS:
        return None
    return abs(slope) * YEAR_DAYS * 86400 / dt_s / 1000 < FLAT_MB_PER_YEAR


# -- the run --------------------------------------------------------------------------------

def run(cfg: Config, folder: Path, progress: bool = True) -> Result:
    """Build and run the long scenario in `folder`, sampling memory; a run that stops early
    is returned with its status and error, not raised."""
    from cosim.backends import PhaseError
    from cosim.config import load_config
    from cosim.profiles import synthetic
    from cosim.simulation import NotConverged, Simulation

    base = load_config(cfg.config)
    steps = max(1, round(cfg.days * 86400 / base.run.dt_s))
    count = cfg.households or base.households.count
    overrides: dict[str, object] = {
        "run.steps": steps, "run.name": "longrun", "households.count": count,
        "households.shard_size": min(count, base.households.shard_size)}
    config = load_config(cfg.config, overrides)
    profiles = None
    if cfg.profiles == "synthetic":
        start = config.run.start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")
        profiles = synthetic(homes=min(count, 1000), steps=steps + 96, dt_s=config.run.dt_s,
                             start=start, seed=config.run.seed)

    result = Result(config=cfg, machine=machine_info("cpu"), folder=str(folder),
                    households=count, steps=steps, dt_s=config.run.dt_s)
    result.load_average.append([round(x, 2) for x in os.getloadavg()])
    t0 = time.perf_counter()
    own, kids, result.memory_source = memory_mb()
    result.rss_start_mb = own + kids
    sim = Simulation.from_config(config, cfg.backend, record=True, out=folder,
                                 profiles=profiles)
    result.build_s = time.perf_counter() - t0
    own, kids, _ = memory_mb()
    result.rss_built_mb = own + kids
    # the warm-up: the first simulated day (caches, the allocator's arenas, the first
    # checkpoints), or the first half of a shorter run
    result.warmup_steps = min(max(1, round(86400 / config.run.dt_s)), max(1, steps // 2))
    built = time.perf_counter()
    # the samples also go to memory.csv as they are taken, so a run stopped from outside
    # (or one that takes longer than its watcher waits) still shows its memory so far
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "memory.csv").open("w", buffering=1)
    log.write("step,wall_s,rss_mb,children_mb,arrow_mb\n")

    def sample(sim: Simulation, step: int) -> None:
        done = step + 1
        if done % cfg.sample_every and done not in (result.warmup_steps, steps):
            return
        own, kids, _ = memory_mb()
        arrow = pa.total_allocated_bytes() / 2**20
        result.samples.append(Sample(done, time.perf_counter() - built, own, kids, arrow))
        log.write(f"{done},{result.samples[-1].wall_s:.2f},{own:.1f},{kids:.1f},{arrow:.1f}\n")
        if done == result.warmup_steps:
            result.rss_warm_mb = own + kids

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum} after {sim.step_index} steps")

    # a run in the background ignores Ctrl-C; SIGTERM stops it the same way
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        result.summary = sim.run(progress=progress, after_step=sample) or {}
    except (NotConverged, PhaseError, KeyboardInterrupt) as exc:
        # the engine has written every step up to the last checkpoint and the failure to
        # the manifest (an interrupted run is closed as "partial"); report it with the
        # memory seen so far
        sim.close()
        result.error = str(exc) or type(exc).__name__
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.close()
    result.total_s = time.perf_counter() - t0
    manifest = sim.recorder.folder.manifest()
    result.status = manifest.get("status", "unknown")
    result.steps_done = sim.step_index or 0
    result.stepping_s = sim.wall.get("total", 0.0)
    if result.samples:
        last = result.samples[-1]
        result.rss_end_mb = last.rss_mb + last.children_mb
        result.rss_max_mb = max(s.rss_mb + s.children_mb for s in result.samples)
    result.peak_mb = peak_mb()
    result.slope_mb_per_1000 = slope_per_1000(result.samples, result.steps_done)
    result.flat = is_flat(result.slope_mb_per_1000, config.run.dt_s, result.steps_done)
    result.records_mb = sum(p.stat().st_size for p in folder.rglob("*.parquet")
                            if p.parent.name != "profiles") / 2**20
    result.load_average.append([round(x, 2) for x in os.getloadavg()])
    return result


def plot(result: Result, path: Path) -> None:
    """RSS over the steps: the process, with its children, the warm-up and the second
    half's fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([s.step for s in result.samples])
    own = np.array([s.rss_mb for s in result.samples])
    both = own + np.array([s.children_mb for s in result.samples])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(steps, own, label="this process")
    if (both > own).any():
        ax.plot(steps, both, label="with child processes")
    ax.axvline(result.warmup_steps, color="grey", ls=":", label="end of warm-up")
    if result.slope_mb_per_1000 is not None:
        late = steps >= result.steps_done / 2
        fit = np.polyfit(steps[late], both[late], 1)
        ax.plot(steps[late], np.polyval(fit, steps[late]), "k--",
                label=f"second half: {result.slope_mb_per_1000:+.2f} MB / 1,000 steps")
    ax.set_xlabel(f"steps of {result.dt_s} s")
    ax.set_ylabel("resident memory (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{result.households:,} households, {result.steps_done:,} steps: "
                 f"{result.status}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the report -----------------------------------------------------------------------------

def verdict(result: Result) -> str:
    """One sentence on memory, honest about what the run covers."""
    if result.status not in ("complete",):
        head = (f"**Run {result.status}** after {result.steps_done:,} of {result.steps:,} "
                f"steps" + (f": {result.error}" if result.error else "") + ". ")
    else:
        head = ""
    slope = result.slope_mb_per_1000
    if slope is None:
        return head + "Too few memory samples in the second half to fit a slope."
    per_year = slope * YEAR_DAYS * 86400 / result.dt_s / 1000
    word = {True: "flat", False: "not flat",
            None: f"not judged (under {MIN_JUDGED_STEPS:,} steps)"}[result.flat]
    return (head + f"**Memory {word}**: over the second half RSS moves "
            f"{slope:+.2f} MB per 1,000 steps, {per_year:+.0f} MB over a year of steps "
            f"(flat: under {FLAT_MB_PER_YEAR:.0f} MB a year); from {result.rss_warm_mb:,.0f} "
            f"MB after the warm-up to {result.rss_end_mb:,.0f} MB at the end.")


def _duration(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


def markdown(result: Result) -> str:
    cfg, m = result.config, result.machine
    days = result.steps * result.dt_s / 86400
    rate = result.steps_per_s
    load = " at the start, ".join(", ".join(f"{v:.2f}" for v in la)
                                  for la in result.load_average) + " at the end"
    command = "cosim bench longrun" + ("" if cfg.days == YEAR_DAYS else f" --days {cfg.days:g}")
    if cfg.households is not None:
        command += f" --households {cfg.households}"
    if cfg.profiles != "generator":
        command += f" --profiles {cfg.profiles}"
    if cfg.config != str(CONFIG):
        command += f" --config {cfg.config}"
    lines = [
        MARK,
        "## Year-long run (issue 16 item 8)",
        "",
        "Target from the issue: a year of 15-minute steps for 1,000 households on IEEE 123 "
        "runs with flat memory, and its time is recorded here.",
        "",
        f"### {result.households:,} households, {days:g} days ({m['date']})",
        "",
        f"Machine: {m['cpu']}, shared with other work (load average {load}; 1, 5, 15 "
        f"min), so the times are those of a busy machine; torch {m['torch']} "
        f"({m['torch_threads']} threads); Python {m['python']}. Command: `{command}`. "
        f"Scenario: `{cfg.config}` with {result.steps:,} steps of {result.dt_s} s, "
        f"{cfg.profiles} profiles, `cosim.Simulation.run` on the {cfg.backend} backend, every "
        "record written (Parquet parts and a checkpoint every `run.checkpoint_every` "
        f"steps). Memory: resident set size ({result.memory_source}) of the process and its "
        f"child processes, sampled every {cfg.sample_every} steps.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| status | {result.status} ({result.steps_done:,} of {result.steps:,} steps) |",
        f"| build: profiles and scenario | {result.build_s:,.0f} s |",
        f"| stepping | {_duration(result.stepping_s)} |",
        f"| in all | {_duration(result.total_s)} |",
        f"| steps/s | {rate:,.1f} |",
        f"| household-steps/s | {rate * result.households:,.0f} |",
        f"| records written (Parquet, without profiles) | {result.records_mb:,.0f} MB |",
        f"| RSS at the start (before building) | {result.rss_start_mb:,.0f} MB |",
        f"| RSS after building | {result.rss_built_mb:,.0f} MB |",
        f"| RSS after the warm-up ({result.warmup_steps:,} steps) | "
        f"{result.rss_warm_mb:,.0f} MB |",
        f"| RSS at the end | {result.rss_end_mb:,.0f} MB |",
        f"| largest RSS sample | {result.rss_max_mb:,.0f} MB |",
        f"| live Arrow buffers at the end (records' memory pool) | "
        f"{result.samples[-1].arrow_mb if result.samples else float('nan'):,.1f} MB |",
        f"| the process's peak RSS (high-water mark, building included) | "
        f"{result.peak_mb:,.0f} MB |",
        "| RSS slope over the second half | "
        + ("n/a" if result.slope_mb_per_1000 is None
           else f"{result.slope_mb_per_1000:+.2f} MB per 1,000 steps") + " |",
        "",
        verdict(result),
    ]
    year = YEAR_DAYS * 86400 / result.dt_s
    if result.steps_done < year and math.isfinite(rate) and rate > 0:
        lines += ["", f"Extrapolated, not measured: a year ({year:,.0f} steps) of these "
                      f"{result.households:,} households at this rate steps in "
                      f"{year / rate / 60:,.0f} min."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Config()
    parser.add_argument("--config", type=Path, default=d.config, help="scenario TOML")
    parser.add_argument("--days", type=float, default=d.days,
                        help="simulated days (steps of the scenario's run.dt_s)")
    parser.add_argument("--households", type=positive, default=None,
                        help="households (default: the scenario's count)")
    parser.add_argument("--sample-every", type=positive, default=d.sample_every,
                        help="steps between memory samples")
    parser.add_argument("--profiles", choices=("generator", "synthetic"), default=d.profiles,
                        help="the scenario's own profiles, or cosim.profiles.synthetic")
    parser.add_argument("--backend", choices=("local", "ray"), default=d.backend)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from cosim.config import ConfigError

    if not args.days > 0:
        print(f"error: --days must be above 0, got {args.days:g}", file=sys.stderr)
        return 2
    cfg = Config(config=str(args.config), days=args.days, households=args.households,
                 sample_every=args.sample_every, profiles=args.profiles, backend=args.backend)
    args.out = args.out or Path("runs") / f"bench-longrun-{dt.datetime.now():%Y%m%d-%H%M%S}"
    try:
        result = run(cfg, args.out, progress=not args.no_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.samples:
        plot(result, args.out / "memory.png")
    save("longrun", args, markdown(result), asdict(result), MARK, END)
    print(f"memory plot: {args.out / 'memory.png'}")
    return 0 if result.status == "complete" else 3 if result.status == "nonconverged" else 1
