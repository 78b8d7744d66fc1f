"""The run folder: Parquet tables written in chunks, a manifest, and checkpoints.

    RUN/manifest.json            config, seed, versions, git hash, timings, status, summary
    RUN/homes.parquet            one row per household: connection, bus, market, retailer,
                                 MAHTM type (kind, kind_label) and device sizes: pv_kwp,
                                 battery_capacity_kwh, battery_power_kw, ev_capacity_kwh,
                                 ev_charge_kw, ev_v2g, heat_pump_rating_kw, flexible_share,
                                 generator_rating_kw (what does not change with the step)
    RUN/<table>/part-<first>-<last>-<actor>.parquet   steps first..last written by one actor
    RUN/checkpoint.pkl           actor states after the last flushed step

Each actor encodes its own rows to Parquet (in parallel, on the Ray backend, where they
live) and the driver only writes the bytes. Tables are flushed together with each
checkpoint, so after a crash the folder holds every step up to the checkpoint and nothing
beyond it; a resume continues from there. Files sort into a deterministic row order: by
step range, then by actor name. Read a
table with pandas (`pd.read_parquet(RUN / "households")`), polars
(`pl.read_parquet(RUN / "households" / "*.parquet")`) or duckdb
(`SELECT * FROM 'RUN/households/*.parquet'`).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_PART = re.compile(r"part-(\d+)-(\d+)(-[^/]+)?\.parquet$")


def encode_table(columns: dict[str, np.ndarray], first: int, last: int,
                 time: np.ndarray) -> bytes | None:
    """Steps first..last of a table (which needs a `step` column) as Parquet bytes, with a
    `time` column (UTC) from the run's step times; None if no row falls in the range."""
    table = pa.table(columns)
    steps = table.column("step").to_numpy()
    if len(steps) and (steps.min() < first or steps.max() > last):
        keep = (steps >= first) & (steps <= last)
        table, steps = table.filter(pa.array(keep)), steps[keep]
    if table.num_rows == 0:
        return None
    table = table.add_column(1, "time", pa.array(
        np.asarray(time)[steps].astype("datetime64[s]"), type=pa.timestamp("s", tz="UTC")))
    sink = pa.BufferOutputStream()
    # lz4 without dictionaries: about three times faster to write than the defaults
    pq.write_table(table, sink, compression="lz4", use_dictionary=False)
    return sink.getvalue().to_pybytes()


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- tables ---------------------------------------------------------------------
    def write(self, parts: dict[tuple[str, str], bytes], first: int, last: int) -> None:
        """Write encoded parts, keyed by (table, actor), for steps first..last."""
        for (table, owner), data in parts.items():
            folder = self.path / table
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"part-{first:08d}-{last:08d}-{owner}.parquet"
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # a crash never leaves half a part behind

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
        return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None

    # -- checkpoint -----------------------------------------------------------------
    def save_checkpoint(self, step: int, states: dict[str, object]) -> None:
        tmp = self.path / "checkpoint.tmp"
        with tmp.open("wb") as f:
            pickle.dump({"step": step, "states": states}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path / "checkpoint.pkl")

    def load_checkpoint(self) -> tuple[int, dict[str, object]] | None:
        path = self.path / "checkpoint.pkl"
        if not path.exists():
            return None
        with path.open("rb") as f:
            data = pickle.load(f)  # our own file, written by save_checkpoint
        return data["step"], data["states"]

    # -- manifest -------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.path / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def update_manifest(self, **fields: object) -> None:
        data = self.manifest() | fields
        tmp = self.path / "manifest.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, self.path / "manifest.json")
