"""A dialogue's result as a scenario entry: a `[[households.homes]]` table in TOML.

The device sizes become the keys of `cosim.config.HomeConfig` (so the entry pastes into a
scenario's `households.homes` list and loads with `cosim.config.load_config`); the HEMS
preferences that have no scenario key yet (the car's times and target, the comfort band,
the appliances' window) follow as comments, and the parameters that stayed unknown are
listed, so nothing guessed passes for an answer.
"""

from __future__ import annotations

import datetime as dt

from agents.hems.schema import SPECS, HouseholdParameters

# schema field -> HomeConfig key (the same names, except where the scenario says less)
HOME_KEYS = ("pv_kwp", "battery_kwh", "battery_kw", "ev_kwh", "ev_kw", "ev_v2g",
             "heat_pump_kw", "flexible_share", "generator_kw")


def _toml(value: float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(round(float(value), 6))


def home_entry(params: HouseholdParameters, profile: int) -> dict[str, object]:
    """The `HomeConfig` keys of these parameters for the home of profile index `profile`."""
    entry: dict[str, object] = {"profile": profile}
    for key in HOME_KEYS:
        entry[key] = getattr(params, key)
    return entry


def home_toml(params: HouseholdParameters, profile: int, unknown: list[str] | None = None,
              source: str = "cosim hems interview") -> str:
    """TOML text: one `[[households.homes]]` table and the preferences as comments."""
    unknown = unknown or []
    lines = [f"# {source}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    if unknown:
        lines.append("# not known after asking (device sizes left at 0, details at typical "
                     "values): " + ", ".join(unknown))
    lines.append("[[households.homes]]")
    lines += [f"{key} = {_toml(v) if not isinstance(v, int) or isinstance(v, bool) else v}"
              for key, v in home_entry(params, profile).items()]
    rest = [spec for spec in SPECS if spec.name not in HOME_KEYS]
    lines.append("# HEMS preferences (no scenario key yet; units as in agents.hems.schema):")
    lines += [f"#   {spec.name} = {_toml(getattr(params, spec.name))}  # {spec.unit}"
              for spec in rest]
    return "\n".join(lines) + "\n"
