"""A run folder's tables, read once and indexed by step for the viewer and the report.

Every per-step table is held as numpy columns sorted by step (households also by household,
so row `h` of a step is household `h`), with the offsets where each step starts: a step's
rows are slices, not copies. A folder that is being written (the live viewer) is read again
part by part with `refresh`, so only the new parts are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# What the viewer reads, per table: a folder written before a column existed is refused
# with the names of what it lacks, rather than failing somewhere in a drawing.
REQUIRED: dict[str, tuple[str, ...]] = {
    "households": ("step", "household", "net_kw", "battery_energy_kwh", "ev_energy_kwh",
                   "bid_kwh", "limit_price", "traded_kwh", "price", "cost", "voltage_pu"),
    "buses": ("step", "node", "v_pu"),
    "lines": ("step", "line", "loading"),
    "grid": ("step", "converged", "substation_kw", "losses_kw", "violations"),
}
# Present only when something happened: no trade in the whole run writes no trades table.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "trades": ("step", "household", "market", "kwh", "price", "payment"),
    "markets": ("step", "market", "price", "volume_kwh"),
    "prices": ("step", "source", "import_price", "export_price"),
}
HOMES = ("household", "connection_name", "market", "retailer", "pv_kwp",
         "battery_capacity_kwh", "ev_capacity_kwh")


class RunFolderError(ValueError):
    """A folder the viewer cannot show; the message names the folder and what is missing."""


@dataclass
class StepTable:
    """One table's columns (numpy, sorted by step) and where each step's rows begin."""

    columns: dict[str, np.ndarray]
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    @classmethod
    def from_arrow(cls, table: pa.Table, order: tuple[str, ...] = ("step",)) -> StepTable:
        frame = table.to_pandas().sort_values(list(order), kind="stable")
        columns = {name: frame[name].to_numpy() for name in frame.columns if name != "time"}
        return cls(columns, _starts(columns["step"]))

    @property
    def n_steps(self) -> int:
        """Steps 0..n_steps-1 have rows (a step with none still counts if a later one has)."""
        return len(self.starts) - 1

    def at(self, step: int) -> dict[str, np.ndarray]:
        """The rows of `step`, column by column (views; empty past the last step)."""
        if step >= self.n_steps:
            return {name: values[:0] for name, values in self.columns.items()}
        a, b = self.starts[step], self.starts[step + 1]
        return {name: values[a:b] for name, values in self.columns.items()}

    def per_step(self, column: str, how: str = "sum") -> np.ndarray:
        """`column` reduced over each step's rows (sum, min, max or mean), [n_steps]."""
        series = pd.Series(self.columns[column].astype(float))
        reduced = series.groupby(self.columns["step"]).agg(how)
        return reduced.reindex(range(self.n_steps)).to_numpy()

    def extend(self, other: StepTable) -> None:
        """Append the rows of later steps (a live run's new parts)."""
        if not self.columns:
            self.columns, self.starts = other.columns, other.starts
            return
        self.columns = {k: np.concatenate([v, other.columns[k]]) for k, v in
                        self.columns.items()}
        self.starts = _starts(self.columns["step"])


def _starts(steps: np.ndarray) -> np.ndarray:
    """Row offsets of steps 0..max(steps)+1 in a step-sorted column."""
    n = int(steps.max()) + 1 if len(steps) else 0
    return np.searchsorted(steps, np.arange(n + 1), side="left").astype(np.int64)


class RunRecords:
    """The records of one run folder (module docstring). Raises RunFolderError naming what
    is missing when the folder lacks a manifest, the homes table, a required table or a
    required column."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: no such run folder")
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            raise RunFolderError(f"{self.path}: not a run folder (no manifest.json); make one "
                                 "with `cosim run CONFIG`")
        self.manifest: dict = json.loads(manifest.read_text())
        if "config" not in self.manifest:
            raise RunFolderError(f"{manifest}: has no scenario config; it was written by an "
                                 "older version: run the scenario again")
        self.config: dict = self.manifest["config"]
        self.homes = self._homes()
        self.tables: dict[str, StepTable] = {}
        self._seen: set[Path] = set()
        self.refresh(initial=True)

    # -- reading ------------------------------------------------------------------------
    def _homes(self) -> pd.DataFrame:
        path = self.path / "homes.parquet"
        if not path.exists():
            raise RunFolderError(f"{self.path}: homes.parquet is missing (the static table of "
                                 "households); the run folder is incomplete or from an older "
                                 "version")
        homes = pd.read_parquet(path).sort_values("household").reset_index(drop=True)
        _require_columns("homes.parquet", homes.columns, HOMES, self.path)
        return homes

    def refresh(self, initial: bool = False) -> int:
        """Read the parts written since the last call; returns the number of steps now
        complete (every required table has them)."""
        for name in (*REQUIRED, *OPTIONAL):
            folder = self.path / name
            parts = sorted(p for p in folder.glob("part-*.parquet") if p not in self._seen) \
                if folder.is_dir() else []
            if not parts:
                if initial and name in REQUIRED:
                    raise RunFolderError(
                        f"{self.path}: the {name!r} table is missing (no {name}/part-*.parquet)"
                        "; the run wrote no step yet, or the folder is from an older version")
                continue
            table = pa.concat_tables([pq.read_table(p) for p in parts],
                                     promote_options="default")
            needed = REQUIRED.get(name) or OPTIONAL[name]
            _require_columns(f"the {name!r} table", table.column_names, needed, self.path)
            order = ("step", "household") if name == "households" else ("step",)
            new = StepTable.from_arrow(table, order)
            if name in self.tables:
                self.tables[name].extend(new)
            else:
                self.tables[name] = new
            self._seen.update(parts)
        return self.n_steps

    # -- facts ----------------------------------------------------------------------------
    @property
    def n_households(self) -> int:
        return len(self.homes)

    @property
    def n_steps(self) -> int:
        """Steps recorded in every required table."""
        return min(self.tables[name].n_steps for name in REQUIRED)

    @property
    def steps_total(self) -> int:
        """Steps the scenario has (more than n_steps while a run is partial or live)."""
        return int(self.manifest.get("steps_total", self.config["run"]["steps"]))

    @property
    def dt_s(self) -> int:
        return int(self.config["run"]["dt_s"])

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.config["run"]["start"])

    def time(self, step: int) -> pd.Timestamp:
        """Start of `step` (UTC)."""
        return self.start + pd.Timedelta(seconds=step * self.dt_s)

    def table(self, name: str) -> StepTable | None:
        """A table by name (None for an optional table the run did not write)."""
        return self.tables.get(name)

    def households_at(self, step: int) -> dict[str, np.ndarray]:
        """Every household's row of `step`, row h = household h (NaN where one is absent:
        a shard that had not reported)."""
        rows = self.tables["households"].at(step)
        if len(rows["household"]) == self.n_households:
            return rows
        full = {}
        for name, values in rows.items():
            column = np.full(self.n_households, np.nan) if values.dtype.kind == "f" else \
                np.zeros(self.n_households, dtype=values.dtype)
            column[rows["household"]] = values
            full[name] = column
        full["household"] = np.arange(self.n_households)
        return full

    def household_series(self, household: int, column: str) -> np.ndarray:
        """One household's `column` at every recorded step, [n_steps] (NaN if absent)."""
        table = self.tables["households"]
        ids = table.columns["household"]
        out = np.full(table.n_steps, np.nan)
        rows = np.flatnonzero(ids == household)
        out[table.columns["step"][rows]] = table.columns[column][rows]
        return out

    def soc(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """State of charge of each household's battery (0..1; NaN without a battery)."""
        capacity = self.homes["battery_capacity_kwh"].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(capacity > 0, rows["battery_energy_kwh"] / capacity, np.nan)


def _require_columns(what: str, have: list[str] | pd.Index, needed: tuple[str, ...],
                     folder: Path) -> None:
    missing = [c for c in needed if c not in set(have)]
    if missing:
        raise RunFolderError(f"{folder}: {what} lacks the column(s) {', '.join(missing)}; the "
                             "run was written by an older version: run the scenario again")
