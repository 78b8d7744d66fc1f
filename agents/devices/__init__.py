"""Household devices, vectorised over households as torch tensors.

Every device is a frozen dataclass of `[households]` float64 parameter tensors, built by
`create(households, ...)`, which validates and raises `DeviceError` naming the household and
the field. Its state (if any) is passed in and returned, never held, so the same object
steps the co-simulation and a batched, differentiable training rollout (states shaped
`[..., households]`). Each device offers:

- `limits(state, dt_h, inputs)`: the feasible setpoint interval (lo, hi) for this step;
- `from_action(action, state, dt_h, inputs)`: a raw action in [-1, 1] (battery, EV) or
  [0, 1] (the others) mapped affinely onto that interval, so every action is feasible;
- `step(state, setpoint, dt_h, inputs)`: the next state (stateful devices);
- `flows(...)`: energy bookkeeping (`agents.devices.ledger.EnergyFlows`).

Units: kW, kWh, hours (`dt_h`, always explicit), degrees C, currency.
Setpoint signs: battery and EV positive when charging, heat pump and flexible load
consumption, PV and generator output (generation positive).
"""

from agents.devices.battery import Battery
from agents.devices.ev import EV, EVInputs, steps_to_departure
from agents.devices.flexible_load import FlexibleLoad
from agents.devices.generator import Generator
from agents.devices.heat_pump import HeatInputs, HeatPump
from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import DeviceError
from agents.devices.pv import PV

__all__ = ["EV", "PV", "Battery", "DeviceError", "EVInputs", "EnergyFlows", "FlexibleLoad",
           "Generator", "HeatInputs", "HeatPump", "steps_to_departure"]
