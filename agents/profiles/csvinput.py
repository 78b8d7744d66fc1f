"""User CSV time series: household load profiles, prices, carbon intensity, weather.

Layout: a header row, a time column (ISO 8601; naive timestamps are read in `timezone`,
UTC unless told otherwise) and one numeric column per series. Rows must be evenly spaced.

Every failure names the file, the column and the data row (row 1 is the first line after
the header, so row N is file line N + 1):
- a missing column, an unparseable timestamp or value, times that go backwards or repeat;
- a resolution that is irregular or that the caller cannot use;
- values in the wrong unit, caught by plausibility ranges (a household load in W read as
  kW, a price per MWh read as per kWh, carbon in g/kWh read as kg/kWh);
- gaps: empty cells, and missing timestamps (a jump of several steps).

Gaps are an error unless the caller asks for `fill="linear"`: each gap of at most
`max_gap_s` seconds is then filled by linear interpolation in time between the nearest
valid values before and after it in the same column. Gaps at the start or end of a column,
or longer than `max_gap_s`, stay errors: there is nothing honest to interpolate between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agents.profiles.errors import ProfileError

FILL_METHODS = ("none", "linear")


@dataclass(frozen=True)
class Quantity:
    """A kind of series: accepted units (factor to the canonical unit) and a plausible range."""

    name: str
    canonical: str
    units: dict[str, float]
    plausible: tuple[float, float]  # in the canonical unit, for the column's median of |x|
    hint: str  # what a value outside the range usually means
    non_negative: bool


QUANTITIES = {
    "load": Quantity("household load", "kW", {"kW": 1.0, "W": 1e-3}, (0.005, 20.0),
                     "a household draws 0.05 to 5 kW on average; values in W need units = 'W'",
                     non_negative=True),
    "price": Quantity("price", "per_kwh", {"per_kwh": 1.0, "per_mwh": 1e-3}, (0.0, 5.0),
                      "wholesale prices per MWh need units = 'per_mwh'", non_negative=False),
    "carbon": Quantity("carbon intensity", "kg_per_kwh", {"kg_per_kwh": 1.0, "g_per_kwh": 1e-3},
                       (0.0, 2.0), "carbon intensity in g/kWh needs units = 'g_per_kwh'",
                       non_negative=True),
    "temperature": Quantity("outdoor temperature", "C", {"C": 1.0}, (0.0, 60.0),
                            "temperatures must be in degrees Celsius", non_negative=False),
}


def read_series_csv(
    path: str | Path,
    columns: Sequence[str] | None,
    quantity: str,
    units: str,
    fill: str = "none",
    max_gap_s: float = 3600.0,
    time_column: str = "time",
    timezone: str = "UTC",
    resolution_ok: Callable[[int], str | None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Read, check and convert series from a CSV.

    Args:
        path: the CSV file.
        columns: value columns to read; None reads every column except the time column.
        quantity: one of QUANTITIES ("load", "price", "carbon", "temperature").
        units: the unit the file is in (a key of that quantity's `units`).
        fill: "none" (gaps are errors) or "linear" (see the module docstring).
        max_gap_s: the longest gap, in seconds, that `fill="linear"` may fill.
        time_column: the name of the timestamp column.
        timezone: the zone of naive timestamps.
        resolution_ok: given the step in seconds, returns None or why it cannot be used.

    Returns:
        (table indexed by UTC step start with values in the canonical unit, step in seconds).
    """
    path = Path(path)
    q = QUANTITIES[quantity]
    if units not in q.units:
        raise ProfileError(f"{path}: unknown units {units!r} for {q.name}; "
                           f"use one of {', '.join(q.units)}")
    if fill not in FILL_METHODS:
        raise ProfileError(f"{path}: unknown fill method {fill!r}; use one of "
                           f"{', '.join(FILL_METHODS)}")
    raw = _read_raw(path)
    if time_column not in raw.columns:
        raise ProfileError(f"{path}: no time column {time_column!r}; "
                           f"columns are {', '.join(map(repr, raw.columns))}")
    names = [c for c in raw.columns if c != time_column] if columns is None else list(columns)
    for name in names:
        if name not in raw.columns:
            raise ProfileError(f"{path}: no column {name!r}; "
                               f"columns are {', '.join(map(repr, raw.columns))}")
    if not names:
        raise ProfileError(f"{path}: no value columns besides {time_column!r}")
    if raw.empty:
        raise ProfileError(f"{path}: no data rows")

    times = _parse_times(path, raw[time_column], time_column, timezone)
    step_s = _resolution(path, times, time_column)
    if resolution_ok is not None and (why := resolution_ok(step_s)):
        raise ProfileError(f"{path}: column {time_column!r}: resolution {step_s} s: {why}")
    values = pd.DataFrame({name: _parse_values(path, raw[name], name).to_numpy()
                           for name in names}, index=times)
    # Missing timestamps become rows of NaN, so they are gaps like empty cells.
    full = pd.date_range(times[0], times[-1], freq=f"{step_s}s")
    row_of = pd.Series(np.arange(1, len(times) + 1), index=times).reindex(full)
    values = values.reindex(full)
    for name in names:
        values[name] = _fill_gaps(path, name, values[name], row_of, fill,
                                  int(max_gap_s // step_s))
    values = values * q.units[units]
    for name in names:
        _check_plausible(path, name, values[name], row_of, q, units)
    return values, step_s


def _read_raw(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise ProfileError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not a readable CSV: {exc}") from None


def _parse_times(path: Path, col: pd.Series, name: str, timezone: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(col.str.strip(), errors="coerce", utc=False, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise ProfileError(f"{path}: column {name!r}, row {row + 1}: cannot read "
                           f"{col.iloc[row]!r} as a timestamp")
    index = pd.DatetimeIndex(parsed)
    if index.tz is None:
        index = index.tz_localize(timezone, ambiguous="raise", nonexistent="raise")
    index = index.tz_convert("UTC")
    diffs = np.diff(index.asi8)
    if (diffs <= 0).any():
        row = int(np.argmax(diffs <= 0)) + 2
        what = "repeats" if diffs[row - 2] == 0 else "goes back from"
        raise ProfileError(f"{path}: column {name!r}, row {row}: time {what} the row before")
    return index


def _resolution(path: Path, times: pd.DatetimeIndex, name: str) -> int:
    """The step: the most common spacing; every other spacing must be a whole number of it."""
    if len(times) < 2:
        raise ProfileError(f"{path}: need at least two rows to know the resolution")
    diffs = np.diff(times.as_unit("ns").asi8) / 1e9
    values, counts = np.unique(diffs, return_counts=True)
    step = float(values[np.argmax(counts)])
    if step != int(step):
        raise ProfileError(f"{path}: column {name!r}: resolution {step} s is not whole seconds")
    off = np.abs(diffs / step - np.round(diffs / step)) > 1e-9
    if off.any():
        row = int(np.argmax(off)) + 2
        raise ProfileError(f"{path}: column {name!r}, row {row}: irregular resolution: "
                           f"{diffs[row - 2]:g} s after the previous row, while the file's "
                           f"step is {step:g} s")
    return int(step)


def _parse_values(path: Path, col: pd.Series, name: str) -> pd.Series:
    text = col.str.strip()
    empty = text.eq("") | text.str.lower().isin(("nan", "na", "null"))
    parsed = pd.to_numeric(text.where(~empty), errors="coerce")
    bad = (parsed.isna() & ~empty).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise ProfileError(f"{path}: column {name!r}, row {row + 1}: cannot read "
                           f"{col.iloc[row]!r} as a number")
    inf = np.isinf(parsed.to_numpy(dtype=float))
    if inf.any():
        row = int(np.argmax(inf))
        raise ProfileError(f"{path}: column {name!r}, row {row + 1}: infinite value")
    return parsed.astype(float)


def _gap_runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where `missing` is True."""
    edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _describe(row_of: pd.Series, start: int, stop: int) -> str:
    """Where a gap is, in the file's rows: empty cells have a row, missing times do not."""
    rows = row_of.iloc[start:stop].dropna()
    when = row_of.index[start]
    if len(rows) == stop - start:
        return f"row {int(rows.iloc[0])}" + (f" to {int(rows.iloc[-1])}" if stop - start > 1
                                             else "")
    before = row_of.iloc[:start].dropna()
    after = row_of.iloc[stop:].dropna()
    where = (f"between row {int(before.iloc[-1])} and row {int(after.iloc[0])}"
             if len(before) and len(after) else "at the edge")
    return f"{where} ({stop - start} missing step(s) from {when.isoformat()})"


def _fill_gaps(path: Path, name: str, col: pd.Series, row_of: pd.Series, fill: str,
               max_gap_steps: int) -> pd.Series:
    missing = col.isna().to_numpy()
    if not missing.any():
        return col
    runs = _gap_runs(missing)
    total = int(missing.sum())
    if fill == "none":
        start, stop = runs[0]
        raise ProfileError(
            f"{path}: column {name!r}, {_describe(row_of, start, stop)}: gap in the data "
            f"({total} missing value(s) in {len(runs)} gap(s) in this column); fill it in the "
            f"file or set fill = 'linear' to interpolate gaps of up to max_gap_s seconds")
    for start, stop in runs:
        if start == 0 or stop == len(col):
            raise ProfileError(f"{path}: column {name!r}, {_describe(row_of, start, stop)}: "
                               "gap at the start or end of the data cannot be interpolated")
        if stop - start > max_gap_steps:
            raise ProfileError(f"{path}: column {name!r}, {_describe(row_of, start, stop)}: "
                               f"gap of {stop - start} steps is longer than max_gap_s allows "
                               f"({max_gap_steps} steps)")
    return col.interpolate(method="time", limit_area="inside")


def _check_plausible(path: Path, name: str, col: pd.Series, row_of: pd.Series, q: Quantity,
                     units: str) -> None:
    values = col.to_numpy()
    if q.non_negative and (values < 0).any():
        at = int(np.argmax(values < 0))
        raise ProfileError(f"{path}: column {name!r}, {_describe(row_of, at, at + 1)}: "
                           f"negative {q.name} {values[at]:g} {q.canonical}")
    level = float(np.median(np.abs(values)))
    lo, hi = q.plausible
    if not lo <= level <= hi:
        raise ProfileError(
            f"{path}: column {name!r}: median |value| is {level:g} {q.canonical} after reading "
            f"it as {units!r}, outside the plausible {lo:g} to {hi:g} for {q.name}: wrong "
            f"units? ({q.hint})")


def align_to_grid(path: str | Path, table: pd.Series, step_s: int, times: pd.DatetimeIndex,
                  dt_s: int) -> np.ndarray:
    """Values of a checked series on the grid steps `times` of length `dt_s`.

    A coarser series is held over each of its steps; a finer one is averaged over each grid
    step. Both are done on the common sub-step gcd(step_s, dt_s), so any two whole-second
    resolutions combine; the series must cover every grid step and share its alignment.
    """
    sub = math.gcd(step_s, dt_s)
    if (times[0] - table.index[0]).total_seconds() % sub:
        raise ProfileError(f"{path}: column {table.name!r}: timestamps are not aligned with "
                           f"the run's {dt_s} s steps starting {times[0].isoformat()}")
    end = times[-1] + pd.Timedelta(seconds=dt_s)
    have_end = table.index[-1] + pd.Timedelta(seconds=step_s)
    if table.index[0] > times[0] or have_end < end:
        raise ProfileError(
            f"{path}: column {table.name!r}: covers {table.index[0].isoformat()} to "
            f"{have_end.isoformat()}, but the run needs {times[0].isoformat()} to "
            f"{end.isoformat()}")
    fine = pd.date_range(times[0], end, freq=f"{sub}s", inclusive="left")
    held = table.reindex(fine, method="ffill").to_numpy()
    return held.reshape(len(times), dt_s // sub).mean(axis=1)
