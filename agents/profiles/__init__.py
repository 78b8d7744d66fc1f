"""Household profile generator: many days of consistent, plausible data for many homes.

Load comes from a model trained here (`cosim data train`) on the 100 real daily profiles
shipped with the European LV feeder and on richardsonpy's UK stochastic demand model:
behaviour clusters (K-means on daily-normalised shapes), Markov chains over clusters and
daily-energy brackets for day-to-day consistency of one home, and a small GAN per cluster
(`behaviour`, `gan`, `loadmodel`, `train`). PV comes from
pvlib (clear sky times stochastic clouds, `weather`, `pv`), EV trips from a documented
statistical model (`ev`), heat demand from a degree-hour model (`heat`), wholesale price and
carbon intensity from synthetic series or user CSVs (`prices`, `csvinput`). MAHTM's
family/business/teenagers profiles are an option (`mahtm`). `validate` compares synthetic
with held-out real load (`cosim data validate`).

    from agents.profiles import load_config, generate, read_dataset
    cfg = load_config("experiments/configs/profiles/default.toml", homes=50, days=14)
    generate(cfg, "runs/profiles")
    tables = read_dataset("runs/profiles")

Output folder of `generate` (`cosim data generate CONFIG --homes N --days D --out DIR`):

homes.parquet, one row per home:
    home (int32, 0..N-1); behaviour (str: the home's most frequent weekday cluster, e.g.
    "weekday: evening peak", or the MAHTM profile); mean_daily_kwh (float, the home's
    scale; trained model only); has_pv (bool), pv_kwp (kW DC), pv_tilt_deg, pv_azimuth_deg
    (degrees, 180 = south; pvlib PV only); has_ev (bool), ev_battery_kwh (kWh), ev_kwh_per_km,
    ev_charger_kw (kW); has_heat_pump (bool), heat_loss_kw_per_k (kW/K). Zero where a home
    lacks the device. MAHTM adds peak_load_kw, battery_kwh and the battery_* settings.

households.parquet, one row per home per step, sorted by home then time:
    home (int32); time (timestamp, UTC, step start); load_kw (mean household demand over the
    step, kW: appliances and lighting; EV charging and heat are the columns below);
    pv_kw (mean AC PV output, kW, >= 0, zero at night); ev_at_home (bool: the car is at
    home for the whole step; False without an EV); ev_trip_kwh (energy the car uses
    driving within the step, kWh per step);
    heat_demand_kw (thermal space-heating demand of the building, kW, for every home);
    cluster (int8: the day's behaviour cluster within its day type; the MAHTM profile index).

exogenous.parquet, one row per step:
    time (UTC); outdoor_temp_c (degrees C); ghi_w_m2, dni_w_m2, dhi_w_m2 (W/m2, step means);
    clear_sky_index (1); wholesale_price_per_kwh (currency/kWh); carbon_kg_per_kwh
    (kgCO2/kWh).

manifest.json: the validated config, seed, homes, days, dt_s, steps, timezone, UTC start
and end, the load model file and its sha256, table columns, units, package versions, git
hash and wall time. Both Parquet tables carry `dt_s` and `units` in their schema metadata.

Time: `days` whole local days from local midnight of `start` in `timezone`, steps of `dt_s`
seconds (default 900). Behaviour follows the local clock, physics follows UTC.
"""

from agents.profiles.config import GenerateConfig, load_config
from agents.profiles.errors import ProfileError
from agents.profiles.generate import generate, read_dataset
from agents.profiles.loadmodel import LoadModel

__all__ = ["GenerateConfig", "LoadModel", "ProfileError", "generate", "load_config",
           "read_dataset"]
