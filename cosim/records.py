"""The run folder: Parquet tables written in chunks, a manifest, and checkpoints.

    RUN/manifest.json            config, seed, versions, git hash, timings, status, summary
    RUN/homes.parquet            one row per household: connection, bus, market, retailer,
                                 MAHTM type (kind, kind_label) and device sizes: pv_kwp,
                                 battery_capacity_kwh, battery_power_kw, ev_capacity_kwh,
                                 ev_charge_kw, ev_v2g, heat_pump_rating_kw, flexible_share,
                                 generator_rating_kw (what does not change with the step)
    RUN/<table>/part-<first>-<last>-<actor>.parquet   steps first..last written by one actor
    RUN/checkpoint.pkl           actor states after the last flushed step, and the messages
                                 of that step the next one reads (the grid state households
                                 observe)

Actors buffer their rows; at each checkpoint a writer thread encodes them to Parquet and
writes them beside the next steps: the driver's (local backend), each Ray host's own on
the driver's machine, or, for hosts on other machines, the driver's after the hosts
encoded theirs where they live (`records_later`). Tables are flushed together
with each checkpoint, and the checkpoint is written after them, so after a crash the
folder holds every step up to the checkpoint (and perhaps parts beyond it, which a resume
removes); a resume continues from there. Files sort into a deterministic row order: by
step range, then by actor name. Read a
table with pandas (`pd.read_parquet(RUN / "households")`), polars
(`pl.read_parquet(RUN / "households" / "*.parquet")`) or duckdb
(`SELECT * FROM 'RUN/households/*.parquet'`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import pickle
import platform
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.config import usable_cpus

if TYPE_CHECKING:
    from cosim.scenario import Scenario

_PART = re.compile(r"part-(\d+)-(\d+)(-[^/]+)?\.parquet$")


Chunks = list[dict[str, np.ndarray]]
"""A table's rows as buffered: chunks (one per `Actor.record` call) of equal-length
columns, each with a `step` column."""

def chunk(**columns: object) -> dict[str, np.ndarray]:
    """One chunk of a table's rows: scalars (and 0-d arrays) repeated to the length of the
    array columns (one row if there are none)."""
    # (one pass that leaves arrays alone: a 100-household run makes ~770 chunks, most of
    # them all arrays but `step`; two comprehensions over every column took twice as long)
    scalars = [k for k, v in columns.items() if not (isinstance(v, np.ndarray) and v.ndim)]
    if scalars:
        n = next((len(v) for v in columns.values() if isinstance(v, np.ndarray) and v.ndim), 1)
        for k in scalars:
            columns[k] = np.full(n, columns[k])
    return columns


# lz4 without dictionaries: about three times faster to write than the defaults
PARQUET = {"compression": "lz4", "use_dictionary": False}
JOIN_BYTES = 8 << 20  # a table's chunks below this are joined into one before encoding


def arrow_table(chunks: Chunks, first: int, last: int, time: np.ndarray) -> pa.Table | None:
    """Steps first..last of a table's chunks as one Arrow table, with a `time` column
    (UTC) from the run's step times; None if no row falls in the range. Chunks of over
    `JOIN_BYTES` in all are not copied (Arrow reads the numpy arrays in place); column types
    are promoted where chunks differ, an int in one step and a float in the next."""
    if len(chunks) == 1:
        table = pa.table(chunks[0])
    elif _nbytes(chunks) < JOIN_BYTES and _alike(chunks):
        # small chunks joined by numpy into one table: a table per chunk cost ~35 us, most
        # of a small run's flush (24 steps of 6 tables); big ones are not copied
        table = pa.table({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})
    else:
        table = pa.concat_tables([pa.table(c) for c in chunks], promote_options="permissive")
    steps = table.column("step").to_numpy()
    if len(steps) and (steps.min() < first or steps.max() > last):
        keep = (steps >= first) & (steps <= last)
        table, steps = table.filter(pa.array(keep)), steps[keep]
    if table.num_rows == 0:
        return None
    return table.add_column(1, "time", pa.array(
        np.asarray(time)[steps].astype("datetime64[s]"), type=pa.timestamp("s", tz="UTC")))


def _alike(chunks: Chunks) -> bool:
    """Whether the chunks have the same columns, in order, of the same dtypes (strings of
    any length): then numpy joins them as Arrow would."""
    first = chunks[0]
    keys, dtypes = list(first), [v.dtype for v in first.values()]
    for c in chunks[1:]:
        if list(c) != keys:
            return False
        # (a list compared whole: a 96-step households part, 31 columns, in 0.2 ms
        # rather than 1 ms column by column; only strings' widths need a second look)
        if [v.dtype for v in c.values()] != dtypes and any(
                a != b.dtype and not (a.kind == b.dtype.kind == "U")
                for a, b in zip(dtypes, c.values())):
            return False
    return True


def encode_table(chunks: Chunks, first: int, last: int, time: np.ndarray
                 ) -> pa.Buffer | None:
    """`arrow_table` as Parquet bytes (an Arrow buffer), for records that travel before
    they are written (from a Ray host); None if no row falls in the range."""
    table = arrow_table(chunks, first, last, time)
    return None if table is None else _parquet(table)


def _nbytes(data: object) -> int:
    """Bytes of a part as `RunFolder.write` takes it: chunks (about: the first chunk's
    bytes per row times the rows, which decides no more than where a table is copied and
    which part goes first; summing every array of a 96-step households part took 0.3 ms),
    or encoded Parquet."""
    if isinstance(data, list):
        first = data[0]
        rows = sum(len(c["step"]) for c in data)
        return sum(v.nbytes for v in first.values()) * rows // max(1, len(first["step"]))
    return data.size if isinstance(data, pa.Buffer) else len(data)


def _parquet(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET)
    return sink.getvalue()


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- tables ---------------------------------------------------------------------
    def write(self, parts: dict[tuple[str, str], object], first: int, last: int,
              time: np.ndarray, threads: int = 1) -> None:
        """Write parts, keyed by (table, actor), for steps first..last: Parquet already
        encoded (bytes-like), or a table's chunks (`Chunks`), encoded straight into the
        file when big (through a buffer and a copy of it, the 100,000-household
        benchmark's 600 MB per flush took several times as long, most of it in the
        kernel), through a buffer when small (pyarrow's file writer costs ~1 ms a file).
        `threads` > 1 writes that many parts at once, the biggest first."""
        def one(item: tuple[tuple[str, str], object]) -> None:
            (table, owner), data = item
            folder = self.path / table
            target = folder / f"part-{first:08d}-{last:08d}-{owner}.parquet"
            tmp = target.with_suffix(".tmp")
            if isinstance(data, list) and (data := arrow_table(data, first, last, time)) is None:
                return
            folder.mkdir(parents=True, exist_ok=True)
            if isinstance(data, pa.Table) and data.nbytes >= JOIN_BYTES:
                pq.write_table(data, tmp, **PARQUET)
            else:
                data = _parquet(data) if isinstance(data, pa.Table) else data
                tmp.write_bytes(data)
            os.replace(tmp, target)  # a crash never leaves half a part behind

        if threads <= 1 or len(parts) <= 1:
            for item in parts.items():
                one(item)
            return
        biggest = sorted(parts.items(), key=lambda item: -_nbytes(item[1]))
        with ThreadPoolExecutor(min(threads, len(parts)),
                                thread_name_prefix="cosim-parts") as pool:
            list(pool.map(one, biggest))  # (re-raises the first error)

    def write_static(self, name: str, columns: dict[str, np.ndarray]) -> None:
        """A table that does not change with the step, as RUN/<name>.parquet."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f"{name}.tmp"
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, self.path / f"{name}.parquet")

    def truncate(self, last: int) -> None:
        """Remove parts holding steps after `last` (written after the checkpoint we resume
        from, so they are recomputed rather than duplicated)."""
        for part in self.path.glob("*/part-*.parquet"):
            match = _PART.search(part.name)
            if match and int(match.group(1)) > last:
                part.unlink()

    def read(self, table: str) -> pa.Table | None:
        folder = self.path / table
        parts = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
        # (ParquetFile: half of read_table's time for a small part, without its datasets)
        return pa.concat_tables([pq.ParquetFile(p).read() for p in parts]) if parts else None

    # -- checkpoint -----------------------------------------------------------------
    def save_checkpoint(self, step: int, states: dict[str, object],
                        carried: dict[tuple[str, str], object]) -> None:
        """Actor states after `step`, and the outputs of `step` that step + 1 reads."""
        tmp = self.path / "checkpoint.tmp"
        with tmp.open("wb") as f:
            pickle.dump({"step": step, "states": states, "carried": carried}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path / "checkpoint.pkl")

    def load_checkpoint(self) -> tuple[int, dict[str, object], dict] | None:
        path = self.path / "checkpoint.pkl"
        if not path.exists():
            return None
        with path.open("rb") as f:
            data = pickle.load(f)  # our own file, written by save_checkpoint
        return data["step"], data["states"], data["carried"]

    def remove_checkpoint(self) -> None:
        (self.path / "checkpoint.pkl").unlink(missing_ok=True)

    # -- manifest -------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.path / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def update_manifest(self, drop: Sequence[str] = (), **fields: object) -> None:
        """Merge `fields` into the manifest, removing the keys in `drop`."""
        data = {k: v for k, v in self.manifest().items() if k not in drop} | fields
        tmp = self.path / "manifest.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, self.path / "manifest.json")


class Writer:
    """One thread running writes in the order they were handed over (the driver's, or a
    Ray host's), beside the stepping; `wait` re-raises the first write that failed."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosim-records")
        self._pending: list[Future] = []

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        """Wait for every write handed over so far (others may be handed over meanwhile,
        from another thread); a failed one stays, to be re-raised again."""
        waiting = list(self._pending)
        for future in waiting:
            future.result()
        done = set(waiting)
        self._pending = [f for f in self._pending if f not in done]

    def close(self) -> None:
        self.wait()
        # every write is done: the idle thread ends on its own (waiting for it to let go
        # of the last flush's arrays cost a 100-household run ~4 ms)
        self._pool.shutdown(wait=False)


class Recorder:
    """A run folder being written while the simulation steps: the per-step `system` rows,
    the optional `messages` log, and every actor's records, drained at each checkpoint and
    handed with the actor states to a writer thread that encodes and writes them while the
    next steps run (pyarrow releases the GIL). The writer keeps order, so a checkpoint is
    only written after the records it covers."""

    def __init__(self, folder: str | Path, scenario: Scenario) -> None:
        self.folder = RunFolder(folder)
        self.scenario = scenario
        self.wall: dict[str, float] = defaultdict(float)
        self._writer = Writer()
        self._system: list[dict[str, float]] = []  # `system` rows not yet flushed
        # this session's flushed `system` rows, as the columns written, kept for the
        # summary (~300 bytes a step: a year of 15-minute steps is about 10 MB)
        self._written: list[dict[str, np.ndarray]] = []
        self._resumed = False  # the steps before this session's are on disk only
        self._messages: list[tuple] = []  # (step, phase, type, topic, sender, recipient, rows)
        self.flushed = -1  # last step on disk

    def begin(self, backend: str) -> None:
        """A fresh run: no parts, a new manifest, the static homes table."""
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.folder.truncate(-1)
        self.folder.remove_checkpoint()
        self._system.clear()
        self._written.clear()
        self._resumed = False
        self._messages.clear()
        self.flushed = -1
        scenario = self.scenario
        self.folder.update_manifest(
            drop=("error", "failed_step", "traceback", "summary", "steps_recorded"),
            created=dt.datetime.now(dt.UTC).isoformat(),
            config=scenario.config.model_dump(mode="json"), seed=scenario.config.run.seed,
            versions=_versions(), git=_git_hash(), actors=sorted(s.name for s in scenario.actors),
            households=int(len(scenario.households["household"])),
            connections=len(scenario.connections), markets=scenario.n_markets,
            status="running", backend=backend, steps_total=scenario.config.run.steps)
        homes = dict(scenario.households)
        homes["connection_name"] = np.array(scenario.connections)[homes["connection"]]
        self.folder.write_static("homes", homes)

    def resumed(self, step: int, backend: str) -> None:
        """Continuing after `step` (the last checkpoint): later parts go, the manifest
        forgets the failure it recorded."""
        self.folder.truncate(step)
        self.flushed = step
        self._system.clear()
        self._written.clear()
        self._resumed = True
        self.folder.update_manifest(drop=("error", "failed_step", "traceback", "summary"),
                                    status="running", backend=backend)

    def add(self, row: dict[str, float]) -> None:
        """One step's `system` row."""
        self._system.append(row)

    def add_messages(self, messages: list[tuple[int, str, object]]) -> None:
        """Messages sent, as (step, phase, message), for the `messages` table."""
        self._messages += [(step, phase, type(m).__name__, m.topic, m.sender, m.recipient,
                            m.rows) for step, phase, m in messages]

    def flush(self, last: int, backend: object, names: Sequence[str],
              checkpoint: dict[tuple[str, str], object] | None, final: bool = False
              ) -> None:
        """Drain every actor's records up to step `last` and queue them for writing, with a
        checkpoint (actor states and `checkpoint`, the carried outputs) unless None.
        `final`: no step runs beside this write, so it writes a part per CPU at once (a
        100-household run's one flush of 96 steps, ten parts, took 0.73x the time on its
        own, 0.87x at the end of the run); the caller then drains and writes
        `steps_recorded` (`self.flushed + 1`) to the manifest with its status."""
        first = self.flushed + 1
        if last < first:
            return
        t = time.perf_counter()
        # asked now, answered on the writer thread: on Ray the driver goes on stepping
        # while the hosts hand over their records (the hosts do it before the next step),
        # or write them themselves (`hosts_written` waits for that)
        threads = usable_cpus() if final else 1  # parts written at once
        # (absolute: a host process's working directory need not be ours)
        drained, hosts_written = backend.records_later(
            names, str(self.folder.path.resolve()), first, last, self.scenario.time, threads)
        parts: dict = {}
        rows = [r for r in self._system if r["step"] <= last]
        self._system = [r for r in self._system if r["step"] > last]
        if rows:
            self._written.append(_columns(rows))
            parts[("system", "engine")] = [self._written[-1]]
        logged = [m for m in self._messages if m[0] <= last]
        self._messages = [m for m in self._messages if m[0] > last]
        if logged:
            columns = ("step", "phase", "type", "topic", "sender", "recipient", "rows")
            parts[("messages", "engine")] = [{c: np.array(v) for c, v in zip(columns,
                                                                            zip(*logged))}]
        states = None
        if checkpoint is not None:
            states = backend.call_all_later(names, "state_dict")
        self.flushed = last
        self.wall["records"] += time.perf_counter() - t
        self._writer.submit(self._write, drained, parts, first, last, states, checkpoint,
                            final, threads, hosts_written)

    def _write(self, drained: Callable[[], dict], parts: dict, first: int, last: int,
               states: Callable[[], dict] | None, carried: dict | None, final: bool,
               threads: int, hosts_written: Callable[[], None] | None) -> None:
        t = time.perf_counter()
        parts = {(table, name): data for name, tables in drained().items()
                 for table, data in tables.items()} | parts
        states = None if states is None else states()
        self.folder.write(parts, first, last, self.scenario.time, threads)
        if hosts_written is not None:
            hosts_written()  # (before the checkpoint, which says these steps are on disk)
        if states is not None:
            self.folder.save_checkpoint(last, states, carried)
        if not final:  # (the last flush's caller writes the manifest once it is done)
            self.folder.update_manifest(steps_recorded=last + 1)
        self.wall["records_writer"] += time.perf_counter() - t

    def system(self) -> dict[str, np.ndarray] | None:
        """Every `system` row of the run so far, as columns (None if there is none): from
        memory, or after a resume (when the steps before it are on disk only) from the run
        folder once every pending write is done."""
        if not self._resumed:
            chunks = self._written + ([_columns(self._system)] if self._system else [])
            if not chunks:
                return None
            names = list(dict.fromkeys(k for c in chunks for k in c))
            return {k: np.concatenate([c.get(k, np.full(len(c["step"]), np.nan))
                                       for c in chunks]) for k in names}
        self.drain()
        table = self.folder.read("system")
        return None if table is None else {
            name: table.column(name).to_numpy() for name in table.column_names}

    def drain(self) -> None:
        """Wait for every pending write; re-raise a write error here."""
        self._writer.wait()

    def close(self) -> None:
        self._writer.close()


def _columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """`system` rows as columns (NaN where a row lacks the first row's key)."""
    return {k: np.array([r.get(k, np.nan) for r in rows]) for k in rows[0]}


def summarize(system: dict[str, np.ndarray] | None, households: int, wall_s: float
              ) -> dict:
    """Headline numbers of a run, from its per-step `system` table's columns
    (`Recorder.system`). A step whose power flow did not converge has no network
    quantities: sums that need them are NaN rather than sums over the other steps, and the
    count of such steps is part of the summary. (numpy, not pandas: a third of the time,
    which a 100-household run of 96 steps paid as 4% of its stepping.)"""
    if system is None:
        return {"households": households, "steps": 0, "nonconverged_steps": 0}
    steps = len(system["step"])
    sums = ("load_kwh", "pv_kwh", "curtailed_kwh", "battery_kwh", "ev_kwh", "heat_pump_kwh",
            "generator_kwh", "import_kwh", "export_kwh", "p2p_kwh", "substation_kwh",
            "losses_kwh", "household_cost", "operating_cost", "household_emissions_kg",
            "emissions_kg", "discomfort_kh", "ev_shortfall_kwh")
    failed = ~system["converged"].astype(bool)
    out = {"households": households, "steps": steps}
    # sums carry a NaN through; extremes and balance residuals are over the converged
    # steps, ignoring NaNs (fmin, fmax: NaN if there are none): the summary says how many
    # steps that leaves out
    out |= {key: float(np.sum(system[key])) for key in sums if key in system}

    def over_ok(reduce: np.ufunc, key: str, f: Callable = np.asarray) -> float:
        values = f(system[key][~failed])
        return float(reduce.reduce(values)) if len(values) else float("nan")

    out |= {
        "voltage_violations": int(np.nansum(system["violations"])),
        "v_min_pu": over_ok(np.fmin, "v_min_pu"),
        "v_max_pu": over_ok(np.fmax, "v_max_pu"),
        "nonconverged_steps": int(failed.sum()),
        "first_nonconverged_step": int(system["step"][failed].min()) if failed.any() else None,
        "max_money_imbalance": over_ok(np.fmax, "money_balance", np.abs),
        "max_market_imbalance_kwh": float(np.max(system["market_imbalance_kwh"])),
        "max_market_money_imbalance": float(np.max(system["market_money_imbalance"]))
        if "market_money_imbalance" in system else 0.0,
        "max_kcl_mismatch_kw": over_ok(np.fmax, "kcl_mismatch_kw", np.abs),
        "wall_s": wall_s,
        "household_steps_per_s": float(households * steps / max(wall_s, 1e-9)),
    }
    return out


# Both are asked once per process: a run's set-up paid ~10 ms for them (a 100-household
# run of 96 steps takes 0.2-0.3 s), and they describe the code this process imported.
@functools.cache
def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("gridedge-cosim", "numpy", "torch", "ray", "opendssdirect.py", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


@functools.cache
def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
