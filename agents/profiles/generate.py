"""`cosim data generate`: write a data set of households and their exogenous inputs.

The output folder holds the four files described in `agents.profiles` (homes, households,
exogenous, manifest). Homes are generated in chunks of `CHUNK_HOMES`, each written as one
Parquet row group, so memory stays bounded for thousands of homes over a year.

Random streams: every component draws from its own generator seeded from (config seed,
component[, chunk]), so changing, say, the EV share leaves the weather and loads unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from agents.profiles import mahtm
from agents.profiles.config import GenerateConfig, SeriesConfig, TemperatureConfig
from agents.profiles.csvinput import align_to_grid, read_series_csv
from agents.profiles.ev import draw_tours, ev_fleet, tours_on_grid
from agents.profiles.heat import balance_temperature, heat_demand, heat_fleet
from agents.profiles.loadmodel import DEFAULT_PATH, LoadModel
from agents.profiles.prices import synthetic_series
from agents.profiles.pv import PVFleet, pv_fleet, pv_power
from agents.profiles.timegrid import TimeGrid, make_grid, resample_days, to_grid
from agents.profiles.weather import Weather, make_weather

CHUNK_HOMES = 256
STREAMS = ("homes", "weather", "price", "carbon", "load", "ev", "mahtm")
UNITS = {
    "load_kw": "kW", "pv_kw": "kW", "ev_at_home": "bool", "ev_trip_kwh": "kWh per step",
    "heat_demand_kw": "kW thermal", "outdoor_temp_c": "degC", "ghi_w_m2": "W/m2",
    "dni_w_m2": "W/m2", "dhi_w_m2": "W/m2", "clear_sky_index": "1",
    "wholesale_price_per_kwh": "currency/kWh", "carbon_kg_per_kwh": "kgCO2/kWh",
}


def _seed(cfg: GenerateConfig, stream: str, chunk: int | None = None) -> np.random.SeedSequence:
    key = [cfg.seed, STREAMS.index(stream)] + ([] if chunk is None else [chunk])
    return np.random.SeedSequence(key)


def _rng(cfg: GenerateConfig, stream: str, chunk: int | None = None) -> np.random.Generator:
    return np.random.default_rng(_seed(cfg, stream, chunk))


def _series(source: SeriesConfig | TemperatureConfig, quantity: str, grid: TimeGrid
            ) -> np.ndarray:
    """A user CSV series on the grid (the caller checked that `source.csv` is set)."""
    units = source.units or {"price": "per_kwh", "carbon": "kg_per_kwh",
                             "temperature": "C"}[quantity]
    table, step_s = read_series_csv(source.csv, [source.column], quantity, units,
                                    fill=source.fill, max_gap_s=source.max_gap_s,
                                    time_column=source.time_column, timezone=source.timezone)
    return align_to_grid(source.csv, table[source.column], step_s, grid.times, grid.dt_s)


def exogenous(cfg: GenerateConfig, grid: TimeGrid) -> tuple[Weather, pd.DataFrame]:
    """(weather, exogenous table): weather for PV and heat, and the per-step table."""
    weather = make_weather(grid, cfg.location, cfg.clouds, cfg.temperature,
                           _rng(cfg, "weather"))
    if cfg.temperature.csv is not None:
        temp = _series(cfg.temperature, "temperature", grid)
        weather.temp_c = temp
        weather.sub_temp_c = np.repeat(temp[:, None], weather.sub_temp_c.shape[1], axis=1)
    price = (_series(cfg.price, "price", grid) if cfg.price.csv is not None
             else synthetic_series(grid, weather.ghi, cfg.price, _rng(cfg, "price")))
    carbon = (_series(cfg.carbon, "carbon", grid) if cfg.carbon.csv is not None
              else synthetic_series(grid, weather.ghi, cfg.carbon, _rng(cfg, "carbon")))
    table = pd.DataFrame({
        "time": grid.times, "outdoor_temp_c": weather.temp_c, "ghi_w_m2": weather.ghi,
        "dni_w_m2": weather.dni, "dhi_w_m2": weather.dhi,
        "clear_sky_index": weather.clear_sky_index,
        "wholesale_price_per_kwh": price, "carbon_kg_per_kwh": carbon,
    })
    return weather, table


def generate(cfg: GenerateConfig, out: str | Path, config_file: str | Path | None = None,
             progress: bool = True) -> dict:
    """Generate the data set of `cfg` into folder `out`; returns the manifest."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = make_grid(cfg.start, cfg.days, cfg.dt_s, cfg.timezone)
    weather, exo = exogenous(cfg, grid)
    n = cfg.homes
    rng = _rng(cfg, "homes")
    trained = cfg.load.model == "trained"
    if trained:
        model_path = cfg.load.weights or DEFAULT_PATH
        model = LoadModel.load(model_path)
        homes = pd.DataFrame({"home": np.arange(n, dtype=np.int32)})
        fleet = pv_fleet(n, cfg.pv.share, cfg.pv.kwp, cfg.pv.tilt_deg, cfg.pv.azimuth_deg, rng)
    else:
        model_path = None
        homes = mahtm.homes_table(cfg.mahtm, n)
        kwp = homes["pv_kwp"].to_numpy()
        fleet = PVFleet(kwp > 0, kwp, np.zeros(n), np.zeros(n))
    evs = ev_fleet(n, cfg.ev.share, cfg.ev.battery_kwh, cfg.ev.kwh_per_km, cfg.ev.charger_kw, rng)
    heat = heat_fleet(n, cfg.heat.heat_pump_share, cfg.heat.loss_kw_per_k, rng)
    base_c = balance_temperature(grid, cfg.heat.day_base_c, cfg.heat.night_base_c,
                                 cfg.heat.night_from_h, cfg.heat.night_to_h)

    behaviour, mean_kwh = np.empty(n, dtype=object), np.empty(n)
    chunks = range(0, n, CHUNK_HOMES)
    writer = None
    try:
        for chunk, lo in enumerate(tqdm(chunks, desc="generate homes", disable=not progress)):
            ids = np.arange(lo, min(lo + CHUNK_HOMES, n))
            if trained:
                sample = model.sample(len(ids), grid.weekend, _seed(cfg, "load", chunk))
                load = to_grid(resample_days(sample.kw, 86_400 // grid.dt_s), grid)
                cluster = sample.cluster[:, grid.day]
                pv = pv_power(fleet, weather, ids, cfg.pv.losses, cfg.pv.gamma_per_k)
                behaviour[ids] = _main_behaviour(model, sample.cluster, grid.weekend)
                mean_kwh[ids] = sample.scale
            else:
                load, pv = mahtm.load_and_pv(homes.iloc[ids], grid, cfg.mahtm,
                                             _rng(cfg, "mahtm", chunk))
                cluster = np.repeat([[mahtm.PROFILES.index(p)] for p in
                                     homes["behaviour"].iloc[ids]], grid.n_steps, axis=1)
            tours = draw_tours(evs, ids, grid.weekend, cfg.ev, _rng(cfg, "ev", chunk))
            at_home, trip = tours_on_grid(tours, len(ids), grid)
            at_home &= evs.has_ev[ids, None]
            table = _households_table(grid, ids, load, pv, at_home, trip,
                                      heat_demand(heat, ids, weather.temp_c, base_c), cluster)
            if writer is None:
                writer = pq.ParquetWriter(out / "households.parquet", table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()

    if trained:
        homes["behaviour"] = behaviour.astype(str)
        homes["mean_daily_kwh"] = mean_kwh
    homes = homes.assign(
        has_pv=fleet.has_pv, pv_kwp=fleet.kwp, pv_tilt_deg=fleet.tilt_deg,
        pv_azimuth_deg=fleet.azimuth_deg, has_ev=evs.has_ev, ev_battery_kwh=evs.battery_kwh,
        ev_kwh_per_km=evs.kwh_per_km, ev_charger_kw=evs.charger_kw,
        has_heat_pump=heat.has_heat_pump, heat_loss_kw_per_k=heat.loss_kw_per_k)
    if not trained:
        homes = homes.drop(columns=["pv_tilt_deg", "pv_azimuth_deg"])  # the sine has no geometry
    _check_finite("exogenous", exo)
    _check_finite("homes", homes)
    exo_table = pa.Table.from_pandas(exo, preserve_index=False)
    pq.write_table(_with_meta(exo_table, grid), out / "exogenous.parquet")
    pq.write_table(pa.Table.from_pandas(homes, preserve_index=False), out / "homes.parquet")
    manifest = _manifest(cfg, grid, config_file, model_path, time.perf_counter() - start, homes,
                         exo, pq.read_schema(out / "households.parquet").names)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _main_behaviour(model: LoadModel, cluster: np.ndarray, weekend: np.ndarray) -> list[str]:
    """Each home's most frequent weekday cluster (weekend when the run has no weekday)."""
    kind = "weekday" if (~weekend).any() else "weekend"
    cols = cluster[:, weekend == (kind == "weekend")]
    names = model.cluster_names()[kind]
    counts = np.stack([(cols == k).sum(axis=1) for k in range(len(names))], axis=1)
    return [f"{kind}: {names[k]}" for k in counts.argmax(axis=1)]


def _households_table(grid: TimeGrid, ids: np.ndarray, load: np.ndarray, pv: np.ndarray,
                      at_home: np.ndarray, trip: np.ndarray, heat_kw: np.ndarray,
                      cluster: np.ndarray) -> pa.Table:
    columns = {"load_kw": load, "pv_kw": pv, "ev_trip_kwh": trip, "heat_demand_kw": heat_kw}
    for name, values in columns.items():
        if not np.isfinite(values).all():
            raise RuntimeError(f"generated {name} has non-finite values (homes {ids[0]}..)")
    times = grid.times.as_unit("us").asi8
    table = pa.table({
        "home": pa.array(np.repeat(ids.astype(np.int32), grid.n_steps)),
        "time": pa.array(np.tile(times, len(ids)), type=pa.timestamp("us", tz="UTC")),
        "load_kw": load.ravel(), "pv_kw": pv.ravel(),
        "ev_at_home": at_home.ravel(), "ev_trip_kwh": trip.ravel(),
        "heat_demand_kw": heat_kw.ravel(),
        "cluster": pa.array(cluster.ravel().astype(np.int8)),
    })
    return _with_meta(table, grid)


def _with_meta(table: pa.Table, grid: TimeGrid) -> pa.Table:
    units = {k: v for k, v in UNITS.items() if k in table.column_names}
    meta = {b"dt_s": str(grid.dt_s).encode(), b"units": json.dumps(units).encode()}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})


def _check_finite(name: str, frame: pd.DataFrame) -> None:
    numeric = frame.select_dtypes("number")
    bad = [c for c in numeric if not np.isfinite(numeric[c].to_numpy(float)).all()]
    if bad:
        raise RuntimeError(f"generated {name} table has non-finite values in {bad}")


def _manifest(cfg: GenerateConfig, grid: TimeGrid, config_file, model_path, wall_s: float,
              homes: pd.DataFrame, exo: pd.DataFrame, household_columns: list[str]) -> dict:
    model = None
    if model_path is not None:
        model = {"path": str(model_path),
                 "sha256": hashlib.sha256(Path(model_path).read_bytes()).hexdigest()}
    return {
        "generator": "agents.profiles",
        "config_file": str(config_file) if config_file else None,
        "config": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "homes": cfg.homes,
        "days": cfg.days,
        "dt_s": grid.dt_s,
        "steps": grid.n_steps,
        "timezone": grid.timezone,
        "start_utc": grid.times[0].isoformat(),
        "end_utc": (grid.times[-1] + pd.Timedelta(seconds=grid.dt_s)).isoformat(),
        "load_model": model,
        "tables": {
            "homes.parquet": {"rows": len(homes), "columns": list(homes.columns)},
            "households.parquet": {"rows": cfg.homes * grid.n_steps,
                                   "columns": household_columns},
            "exogenous.parquet": {"rows": len(exo), "columns": list(exo.columns)},
        },
        "units": UNITS,
        "versions": _versions(),
        "git": _git_hash(),
        "wall_s": round(wall_s, 3),
    }


def _versions() -> dict[str, str]:
    import pvlib
    import torch

    try:
        ours = importlib.metadata.version("gridedge-cosim")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    return {"gridedge-cosim": ours, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "pyarrow": pa.__version__, "pvlib": pvlib.__version__,
            "torch": torch.__version__}


def _git_hash() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def read_dataset(folder: str | Path) -> dict:
    """The tables of a generated folder: {"homes", "households", "exogenous": DataFrame,
    "manifest": dict}."""
    folder = Path(folder)
    return {
        "homes": pd.read_parquet(folder / "homes.parquet"),
        "households": pd.read_parquet(folder / "households.parquet"),
        "exogenous": pd.read_parquet(folder / "exogenous.parquet"),
        "manifest": json.loads((folder / "manifest.json").read_text()),
    }
