"""The step loop: six phases per step, records and checkpoints.

Each phase is a barrier: an actor sees only what earlier phases (or the previous step)
published. Routing is decided once, from what each actor class says it publishes and
subscribes to: in phase p an actor receives the outputs of the actors publishing its
topics, from this step if they published in an earlier phase, else from the previous step.
Sources are ordered by sender name, so delivery is deterministic on every backend. The
driver only waits on tiny statuses; it fetches the settle ledgers (a few numbers per actor)
every step and the records at each checkpoint, which a writer thread encodes and writes
while the next steps run.

Each step is checked: money (the sum of every party's net receipts) must be zero, every
household's traded plus grid energy must equal what it drew, and the power flow must
satisfy Kirchhoff's current law; the residuals go to the `system` table.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosim.actors.base import PHASES
from cosim.backends import ActorDied
from cosim.records import RunFolder, encode_table
from cosim.scenario import Scenario


class Engine:
    def __init__(self, scenario: Scenario, backend: object, folder: str | Path) -> None:
        self.scenario = scenario
        self.backend = backend
        self.folder = RunFolder(folder)
        self.config = scenario.config
        specs = {spec.name: spec for spec in scenario.actors}
        self.names = sorted(specs)
        self.participants = {p: [n for n in self.names if p in specs[n].cls.phases()]
                             for p in PHASES}
        publishers: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for name in self.names:
            for phase, topics in specs[name].cls.PUBLISHES.items():
                for topic in topics:
                    publishers[topic].append((name, phase))
        # (actor, phase) -> [(source actor, source phase, from this step?)]
        self.routes: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        order = {p: i for i, p in enumerate(PHASES)}
        for name in self.names:
            for phase, topics in specs[name].cls.SUBSCRIBES.items():
                sources = {(src, src_phase, order[src_phase] < order[phase])
                           for topic in topics for src, src_phase in publishers[topic]}
                self.routes[(name, phase)] = sorted(sources)
        self.wall: dict[str, float] = defaultdict(float)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosim-records")
        self._pending: list[Future] = []
        feed = next(spec for spec in scenario.actors if spec.name == "feed")
        self._carbon = np.asarray(feed.kwargs["carbon_intensity"], dtype=float)
        self._messages: dict[str, list] = defaultdict(list)

    # ------------------------------------------------------------------ running
    def run(self, steps: int | None = None, resume: bool = False, progress: bool = True,
            after_step: Callable[[Engine, int], None] | None = None) -> dict:
        """Run (or resume) the scenario; returns the summary. `after_step(engine, step)`
        is called after each completed step (tests use it to kill an actor)."""
        run = self.config.run
        total = run.steps if steps is None else min(steps, run.steps)
        self.folder.path.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.backend.start(self.scenario.actors)
        self.wall["start_actors"] += time.perf_counter() - t0
        first = 0
        if resume:
            first = self._restore()
        else:
            self.folder.truncate(-1)
            self._manifest_start()
            homes = dict(self.scenario.households)
            homes["connection_name"] = np.array(self.scenario.connections)[homes["connection"]]
            self.folder.write_static("homes", homes)
        self.folder.update_manifest(status="running", backend=self.backend.name)
        previous: dict[tuple[str, str], object] = {}
        balance: list[dict[str, float]] = []
        flushed = first - 1
        bar = tqdm(range(first, total), desc=run.name, unit="step", disable=not progress,
                   initial=first, total=total)
        step = first
        try:
            for step in bar:
                current = self._step(step, previous)
                balance.append(self._system_row(step, current))
                previous = current
                if (step + 1) % run.checkpoint_every == 0 or step == total - 1:
                    self._flush(flushed + 1, step, balance)
                    balance, flushed = [], step
                if after_step is not None:
                    after_step(self, step)
        except ActorDied as exc:
            # the dead actor's buffered records are gone: keep what the checkpoint holds
            self._drain_writer()
            self.folder.update_manifest(status="failed", error=str(exc), failed_step=step)
            raise
        except Exception as exc:
            # keep every completed step, then report
            self._flush(flushed + 1, step - 1, balance, checkpoint=False)
            self._drain_writer()
            self.folder.update_manifest(status="failed", error=str(exc), failed_step=step,
                                        traceback=getattr(exc, "detail", ""))
            raise
        finally:
            bar.close()
            self.backend.shutdown()
        self._drain_writer()
        self._pool.shutdown()
        self.wall["total"] += time.perf_counter() - t0
        summary = summarize(self.folder, self.scenario, self.wall)
        self.folder.update_manifest(status="complete", steps_done=total, summary=summary,
                                    wall_s=dict(self.wall))
        return summary

    def _step(self, step: int, previous: dict) -> dict[tuple[str, str], object]:
        plan = [(phase, [(name, self.routes.get((name, phase), []))
                         for name in self.participants[phase]]) for phase in PHASES]
        current = self.backend.run_step(step, plan, previous, self.config.run.phase_timeout_s,
                                        self.wall)
        if self.config.run.record_messages:
            self._record_messages(step, current)
        return current

    def _system_row(self, step: int, current: dict) -> dict[str, float]:
        """One row of the `system` table: balances, totals and the grid's summary."""
        names = self.participants["settle"]
        *settled, grid = self.backend.fetch(
            [current[(n, "settle")] for n in names] + [current[("grid", "physics")]])
        state = grid.messages[0]
        ledger: dict[str, float] = defaultdict(float)
        totals: dict[str, float] = defaultdict(float)
        checks: dict[str, float] = defaultdict(float)
        for out in settled:
            for key, value in out.ledger.items():
                ledger[key] += value
            for key, value in out.totals.items():
                totals[key] += value
            for key, value in out.checks.items():
                checks[key] = max(checks[key], value)
        dt_h = self.config.run.dt_s / 3600.0
        return {
            "step": step, "money_balance": float(sum(ledger.values())),
            "household_energy_mismatch_kwh": checks.get("household_energy_kwh", 0.0),
            "kcl_mismatch_kw": state.balance_kw, "converged": state.converged,
            "iterations": state.iterations, "substation_kwh": state.substation_kw * dt_h,
            "losses_kwh": state.losses_kw * dt_h, "v_min_pu": state.v_min_pu,
            "v_max_pu": state.v_max_pu, "violations": state.violations,
            "emissions_kg": max(state.substation_kw * dt_h, 0.0) * self._carbon[step],
            **totals, **{f"money_{party}": value for party, value in sorted(ledger.items())},
        }

    # ------------------------------------------------------------------ records
    def _flush(self, first: int, last: int, balance: list[dict], checkpoint: bool = True) -> None:
        """Drain every actor's records for steps first..last and hand them, with the actor
        states, to the writer thread: Parquet encoding and disk writes overlap the next
        steps (pyarrow releases the GIL). The writer keeps order, so a checkpoint is only
        written after the records it covers."""
        if last < first:
            return
        t = time.perf_counter()
        remote = self.backend.encodes_records
        drained = self.backend.call_all(self.names, "drain_records", first, last,
                                        self.scenario.time, remote)
        parts = {(table, name): data for name, tables in drained.items()
                 for table, data in tables.items()}
        if balance:
            parts[("system", "engine")] = {k: np.array([row.get(k, 0.0) for row in balance])
                                           for k in balance[0]}
        if self._messages:
            parts[("messages", "engine")] = self.messages_table()
            self._messages = defaultdict(list)
        states = self.backend.call_all(self.names, "state_dict") if checkpoint else None
        self.wall["records"] += time.perf_counter() - t
        self._pending.append(self._pool.submit(self._write, parts, first, last, states))

    def _write(self, parts: dict, first: int, last: int, states: dict | None) -> None:
        t = time.perf_counter()
        encoded = {key: data if isinstance(data, bytes)
                   else encode_table(data, first, last, self.scenario.time)
                   for key, data in parts.items()}
        self.folder.write({k: v for k, v in encoded.items() if v is not None}, first, last)
        if states is not None:
            self.folder.save_checkpoint(last, states)
        self.folder.update_manifest(steps_recorded=last + 1)
        self.wall["records_writer"] += time.perf_counter() - t

    def _drain_writer(self) -> None:
        """Wait for every pending write; re-raise a write error here."""
        for future in self._pending:
            future.result()
        self._pending.clear()

    def _record_messages(self, step: int, current: dict) -> None:
        keys = sorted(current)
        outputs = self.backend.fetch([current[k] for k in keys])
        for (_, phase), out in zip(keys, outputs):
            for m in out.messages:
                for column, value in (("step", step), ("phase", phase),
                                      ("type", type(m).__name__), ("topic", m.topic),
                                      ("sender", m.sender), ("recipient", m.recipient),
                                      ("rows", m.rows)):
                    self._messages[column].append(value)

    def messages_table(self) -> dict[str, np.ndarray]:
        """Messages since the last flush (with record_messages on): step, phase, type,
        topic, sender, recipient and rows of each; flushed to the `messages` table."""
        return {k: np.array(v) for k, v in self._messages.items()}

    # ------------------------------------------------------------------ resume
    def _restore(self) -> int:
        saved = self.folder.load_checkpoint()
        if saved is None:
            self.folder.truncate(-1)
            return 0
        step, states = saved
        for name in self.names:
            self.backend.call_all([name], "load_state_dict", states[name])
        self.folder.truncate(step)
        return step + 1

    def _manifest_start(self) -> None:
        versions = {"python": platform.python_version()}
        for package in ("gridedge-cosim", "numpy", "torch", "ray", "opendssdirect.py",
                        "pyarrow"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                pass
        self.folder.update_manifest(
            created=dt.datetime.now(dt.UTC).isoformat(),
            config=self.config.model_dump(mode="json"), seed=self.config.run.seed,
            versions=versions, git=_git_hash(), actors=self.names,
            households=int(len(self.scenario.households["household"])),
            connections=len(self.scenario.connections), markets=self.scenario.n_markets)


def summarize(folder: RunFolder, scenario: Scenario, wall: dict[str, float]) -> dict:
    """Headline numbers of a run, from its per-step `system` table."""
    system = folder.read("system").to_pandas()
    n = len(scenario.households["household"])
    steps = len(system)
    sums = ("load_kwh", "pv_kwh", "curtailed_kwh", "battery_kwh", "ev_kwh", "heat_pump_kwh",
            "generator_kwh", "import_kwh", "export_kwh", "p2p_kwh", "substation_kwh",
            "losses_kwh", "household_cost", "operating_cost", "household_emissions_kg",
            "emissions_kg", "discomfort_kh", "ev_shortfall_kwh")
    out = {"households": n, "steps": steps}
    out |= {key: float(system[key].sum()) for key in sums if key in system}
    out |= {
        "voltage_violations": int(system["violations"].sum()),
        "v_min_pu": float(system["v_min_pu"].min()),
        "v_max_pu": float(system["v_max_pu"].max()),
        "nonconverged_steps": int((~system["converged"].astype(bool)).sum()),
        "max_money_imbalance": float(system["money_balance"].abs().max()),
        "max_household_energy_mismatch_kwh": float(
            system["household_energy_mismatch_kwh"].max()),
        "max_kcl_mismatch_kw": float(system["kcl_mismatch_kw"].abs().max()),
        "wall_s": float(wall.get("total", 0.0)),
        "household_steps_per_s": float(n * steps / max(wall.get("total", 0.0), 1e-9)),
    }
    return out


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
