"""A live run for the viewer: a `cosim.Simulation` on the local backend, stepped on demand,
whose records are flushed after every step so the viewer reads them as it reads any run
folder (one reader for replay and live, no second path through the engine's outputs)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from cosim.commands.run import refuse_external
from cosim.config import load_config
from cosim.scenario import ProfileData
from cosim.simulation import Simulation


class LiveRun:
    """`config` (a scenario TOML file) run step by step into `folder` (default
    runs/<name>-live-<time>). Refuses scenarios with "external" households: their actions
    would have to come from Python. `profiles` replaces the scenario's profile source (tests,
    benchmarks)."""

    def __init__(self, config: str | Path, folder: str | Path | None = None,
                 profiles: ProfileData | None = None) -> None:
        # a checkpoint after each step is what flushes that step's records to disk
        parsed = load_config(config, {"run.checkpoint_every": 1})
        refuse_external(parsed, Path(config), "the live viewer (it runs the households' "
                        "own policies)")
        self.folder = Path(folder) if folder is not None else Path("runs") / (
            f"{parsed.run.name}-live-{dt.datetime.now():%Y%m%d-%H%M%S}")
        self.sim = Simulation.from_config(parsed, "local", record=True, out=self.folder,
                                          profiles=profiles)
        self.sim.reset()  # makes the folder
        shutil.copy(config, self.folder / "scenario.toml")

    @property
    def done(self) -> bool:
        return self.sim.step_index >= self.sim.total

    def advance(self) -> None:
        """Run one step and wait until its records are on disk."""
        self.sim.step()
        self.sim.recorder.drain()

    def close(self) -> None:
        self.sim.close()
