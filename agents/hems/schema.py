"""The household parameters a HEMS needs, typed, with units, ranges and defaults.

`HouseholdParameters` is the validated result of a set-up dialogue. Each field carries, in
its `json_schema_extra`, what the dialogue needs to ask for it: the question put to the
resident, the kind of quantity (which validator in `agents.hems.tools` reads it), the
device it belongs to and the tolerance within which a retrieved value counts as right.

Device sizes double as gates: a size of 0 means "no such device", and the questions about
that device (its charger, the car's arrival time, the comfort band) are then not asked.
The device fields map one to one onto `cosim.config.HomeConfig`; the others (times,
comfort band, targets) are HEMS preferences the scenario's per-home entry has no key for
yet, and are kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.households.typology import pairing_error

Kind = Literal["energy", "power", "clock", "temperature", "fraction", "duration", "distance",
               "yes_no"]
Device = Literal["pv", "battery", "ev", "heat_pump", "flexible", "generator"]


def _param(default: float | bool, low: float, high: float, unit: str, kind: Kind,
           device: Device, question: str, tolerance: float, typical: float | bool,
           description: str) -> object:
    """A schema field: [low, high] in `unit`; `typical` is used when the device is present
    but the resident could not say (a size of 0 would mean no device)."""
    ranges = {} if kind == "yes_no" else {"ge": low, "le": high}
    return Field(default, description=f"{description}, {unit}", **ranges, json_schema_extra={
        "unit": unit, "kind": kind, "device": device, "question": question,
        "tolerance": tolerance, "typical": typical, "low": low, "high": high})


class HouseholdParameters(BaseModel):
    """Every parameter our households use, in the units the simulation uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pv_kwp: float = _param(
        0.0, 0, 50, "kWp", "power", "pv",
        "Do you have solar panels? If so, how big is the system (peak power)?", 0.1, 4.0,
        "rooftop PV peak power; 0 = none")
    battery_kwh: float = _param(
        0.0, 0, 100, "kWh", "energy", "battery",
        "Do you have a home battery? If so, how much energy can it store?", 0.1, 10.0,
        "home battery capacity; 0 = none")
    battery_kw: float = _param(
        0.0, 0, 50, "kW", "power", "battery",
        "How much power can your home battery charge or discharge at?", 0.1, 5.0,
        "home battery power rating")
    ev_kwh: float = _param(
        0.0, 0, 200, "kWh", "energy", "ev",
        "Do you have an electric car? If so, how big is its battery?", 0.1, 60.0,
        "electric car battery capacity; 0 = none")
    ev_kw: float = _param(
        0.0, 0, 22, "kW", "power", "ev",
        "How powerful is your home car charger?", 0.1, 7.4, "home charger rating")
    ev_arrival_h: float = _param(
        18.0, 0, 24, "h", "clock", "ev",
        "At what time does the car usually get home?", 0.25, 18.0,
        "usual arrival time, hour of the local day")
    ev_departure_h: float = _param(
        8.0, 0, 24, "h", "clock", "ev",
        "At what time does the car usually leave in the morning?", 0.25, 8.0,
        "usual departure time, hour of the local day")
    ev_target_soc: float = _param(
        0.8, 0.1, 1, "fraction", "fraction", "ev",
        "How full should the car battery be when you leave?", 0.05, 0.8,
        "state of charge wanted at departure, of capacity")
    ev_daily_km: float = _param(
        40.0, 0, 1000, "km", "distance", "ev",
        "How far do you usually drive on a day?", 0.05, 40.0, "usual daily driving distance")
    ev_v2g: bool = _param(
        False, 0, 1, "yes/no", "yes_no", "ev",
        "Can your charger send power from the car back to the house (V2G)?", 0, False,
        "the charger can discharge the car into the home")
    heat_pump_kw: float = _param(
        0.0, 0, 30, "kW", "power", "heat_pump",
        "Do you have a heat pump? If so, what is its electric power rating?", 0.1, 3.0,
        "heat pump electric rating; 0 = none")
    comfort_low_c: float = _param(
        19.0, 10, 30, "degC", "temperature", "heat_pump",
        "What is the lowest indoor temperature you find comfortable?", 0.5, 19.0,
        "low end of the comfort band")
    comfort_high_c: float = _param(
        22.0, 10, 30, "degC", "temperature", "heat_pump",
        "What is the highest indoor temperature you find comfortable?", 0.5, 22.0,
        "high end of the comfort band")
    flexible_share: float = _param(
        0.0, 0, 1, "fraction", "fraction", "flexible",
        "What share of your electricity use (washing, dishwasher) could run later?", 0.05,
        0.2, "share of the load that may wait; 0 = none")
    flexible_window_h: float = _param(
        4.0, 0, 24, "h", "duration", "flexible",
        "How many hours may those appliances wait at most?", 0.25, 4.0,
        "longest delay of the flexible load")
    generator_kw: float = _param(
        0.0, 0, 50, "kW", "power", "generator",
        "Do you have a generator or micro-CHP? If so, what is its rating?", 0.1, 3.0,
        "controllable generator rating; 0 = none")

    @model_validator(mode="after")
    def _consistent(self) -> HouseholdParameters:
        # cosim.config.HomeConfig's pairing rule, so that the entry always loads there
        if (error := pairing_error(self)) is not None:
            raise ValueError(error)
        if self.comfort_low_c > self.comfort_high_c:
            raise ValueError(f"comfort_low_c = {self.comfort_low_c} is above comfort_high_c "
                             f"= {self.comfort_high_c}")
        return self


@dataclass(frozen=True)
class Spec:
    """What the dialogue needs to know about one parameter."""

    name: str
    kind: Kind
    unit: str
    device: Device
    question: str
    low: float
    high: float
    default: float | bool
    typical: float | bool
    tolerance: float  # absolute, in `unit`; relative (x the true value) for sizes
    description: str

    @property
    def is_gate(self) -> bool:
        """A device size: 0 means the household has no such device."""
        return self.name == GATES[self.device]

    def describe(self) -> str:
        """One line for a prompt: name, meaning, unit and range."""
        if self.kind == "yes_no":
            return f"{self.name}: {self.description} (true or false)"
        return f"{self.name}: {self.description} ({self.low:g} to {self.high:g})"

    def close(self, got: float | bool | None, truth: float | bool) -> bool:
        """Whether a retrieved value counts as right: within the tolerance (relative for
        device sizes and distances, which residents round, absolute otherwise)."""
        if got is None:
            return False
        if self.kind == "yes_no":
            return bool(got) == bool(truth)
        relative = self.kind in ("energy", "power", "distance")
        allowed = self.tolerance * abs(float(truth)) if relative else self.tolerance
        return abs(float(got) - float(truth)) <= allowed + 1e-9


GATES: dict[str, str] = {"pv": "pv_kwp", "battery": "battery_kwh", "ev": "ev_kwh",
                         "heat_pump": "heat_pump_kw", "flexible": "flexible_share",
                         "generator": "generator_kw"}


def _specs() -> tuple[Spec, ...]:
    specs = []
    for name, info in HouseholdParameters.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        specs.append(Spec(name=name, kind=extra["kind"], unit=extra["unit"],
                          device=extra["device"], question=extra["question"],
                          low=float(extra["low"]), high=float(extra["high"]),
                          default=info.default, typical=extra["typical"],
                          tolerance=float(extra["tolerance"]),
                          description=(info.description or name).rsplit(",", 1)[0]))
    return tuple(specs)


SPECS: tuple[Spec, ...] = _specs()  # in the order a dialogue asks them
SPEC: dict[str, Spec] = {s.name: s for s in SPECS}


def applicable(values: dict[str, float | bool | None]) -> list[Spec]:
    """The parameters that apply given the device sizes known so far: a device's other
    parameters only once its size is known to be above 0."""
    out = []
    for spec in SPECS:
        gate = values.get(GATES[spec.device])
        if spec.is_gate or (gate is not None and float(gate) > 0):
            out.append(spec)
    return out
