"""Households as compositions of devices, stepped together and vectorised over households.

Every household has one slot for each device kind; a household without a device has it at
zero size (no capacity, no rating), so one set of tensors covers a mixed population and a
policy sees the same action layout everywhere. The action of a household is a vector in the
order of `ACTIONS`: battery and EV in [-1, 1], the rest in [0, 1]; `from_action` maps it
onto feasible setpoints, `step` advances the state, `net_kw` is what the household draws
from its connection (negative when it exports).

Shapes: parameters `[households]`; states, inputs and setpoints `[..., households]` (a
leading batch for training rollouts), the flexible-load backlog `[..., households, window]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from agents.devices import (
    EV,
    PV,
    Battery,
    DeviceError,
    EnergyFlows,
    EVInputs,
    FlexibleLoad,
    Generator,
    HeatInputs,
    HeatPump,
)
from agents.devices.parameters import to_interval
from agents.households.bill import energy_bill
from agents.households.typology import HouseholdType, classify, has_battery, has_pv

ACTIONS = ("battery", "ev", "heat_pump", "flexible_load", "pv", "generator")
SIGNED_ACTIONS = (True, True, False, False, False, False)  # [-1, 1] or [0, 1]


class HouseholdInputs(NamedTuple):
    """Exogenous inputs of one step, `[..., households]` (scalars broadcast)."""

    load_kw: torch.Tensor  # appliance demand; EV charging and heat pump come on top
    pv_kw: torch.Tensor  # PV power available
    ev_at_home: torch.Tensor  # 1 while the car is plugged in for the whole step
    ev_trip_kwh: torch.Tensor  # energy driven during the step
    ev_steps_left: torch.Tensor  # at-home steps before departure, this one included
    outdoor_c: torch.Tensor | float
    hour: torch.Tensor | float  # local clock hour at the start of the step
    gains_kw: torch.Tensor | float = 0.0  # internal and solar heat gains of the house
    weekend: torch.Tensor | float = 0.0  # 1 on Saturdays and Sundays

    def ev(self) -> EVInputs:
        return EVInputs(self.ev_at_home, self.ev_trip_kwh, self.ev_steps_left)

    def heat(self, dt_h: float) -> HeatInputs:
        return HeatInputs(self.outdoor_c, self.hour + dt_h, self.gains_kw)


class HouseholdState(NamedTuple):
    battery_kwh: torch.Tensor
    ev_kwh: torch.Tensor
    indoor_c: torch.Tensor
    backlog_kwh: torch.Tensor  # [..., households, window]


class Setpoints(NamedTuple):
    """Physical setpoints in kW (signs as in agents.devices), in `ACTIONS` order."""

    battery_kw: torch.Tensor
    ev_kw: torch.Tensor
    heat_pump_kw: torch.Tensor
    flexible_kw: torch.Tensor
    pv_kw: torch.Tensor
    generator_kw: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """`[..., households, len(ACTIONS)]`."""
        return torch.stack(torch.broadcast_tensors(*self), dim=-1)

    @classmethod
    def unstacked(cls, values: torch.Tensor) -> Setpoints:
        return cls(*values.unbind(-1))


def _absent(battery: Battery, ev: EV, heat_pump: HeatPump, generator: Generator,
            flexible_load: FlexibleLoad) -> frozenset[str]:
    """The devices no household of a fleet owns."""
    owned = {"battery": battery.capacity_kwh > 0, "ev": ev.capacity_kwh > 0,
             "heat_pump": heat_pump.power_kw > 0, "generator": generator.max_kw > 0,
             "flexible_load": flexible_load.share > 0}
    return frozenset(name for name, has in owned.items() if not bool(has.any()))


@dataclass(frozen=True)
class Households:
    ids: tuple[object, ...]
    kind: np.ndarray  # HouseholdType codes
    battery: Battery
    ev: EV
    heat_pump: HeatPump
    pv: PV
    generator: Generator
    flexible_load: FlexibleLoad
    # devices no household here owns: their limits are zero and their state stays as it is
    # (except the house temperature, which drifts with the weather with or without a heat
    # pump), so a fleet of battery-and-PV homes does not pay for cars and heat pumps
    absent: frozenset[str] = frozenset()

    @classmethod
    def create(
        cls,
        ids: Sequence[object],
        kind: object | None = None,
        *,
        battery: Mapping[str, object] | None = None,
        ev: Mapping[str, object] | None = None,
        heat_pump: Mapping[str, object] | None = None,
        pv: Mapping[str, object] | None = None,
        generator: Mapping[str, object] | None = None,
        flexible_load: Mapping[str, object] | None = None,
    ) -> Households:
        """Households `ids` with the devices given as keyword arguments of each device's
        `create` (a missing device is absent everywhere; flexible load defaults to none).

        `kind` (HouseholdType codes, one per household) decides who owns PV and a battery:
        PV is switched off and battery ratings zeroed for the types without them, and a
        type that needs a battery or PV without one given is an error; with `kind` and no
        `pv`, PV owners deliver whatever `pv_kw` their inputs say (no inverter limit).
        Without `kind` the type is read off the devices (PV: `inverter_kw` > 0; battery:
        capacity and power > 0), and no `pv` means no PV.
        """
        ids = tuple(ids)
        n = len(ids)
        bat = Battery.create(ids, **(battery or {"capacity_kwh": 0.0, "power_kw": 0.0}))
        panel = PV.create(ids, **(pv if pv is not None else
                                  {"inverter_kw": float("inf") if kind is not None else 0.0}))
        if kind is None:
            kinds = classify(panel.inverter_kw.numpy() > 0,
                             (bat.capacity_kwh * bat.power_kw).numpy() > 0)
        else:
            kinds = np.broadcast_to(np.asarray(kind, dtype=int), (n,)).copy()
            unknown = ~np.isin(kinds, [t.value for t in HouseholdType])
            if unknown.any():
                k = int(np.flatnonzero(unknown)[0])
                raise DeviceError(f"household {ids[k]}: kind {kinds[k]} is not a HouseholdType")
            needs = has_battery(kinds)
            missing = needs & ((bat.capacity_kwh * bat.power_kw).numpy() <= 0)
            if missing.any():
                k = int(np.flatnonzero(missing)[0])
                raise DeviceError(f"household {ids[k]}: type {HouseholdType(kinds[k]).label} "
                                  f"needs a battery, but battery capacity_kwh "
                                  f"{float(bat.capacity_kwh[k])} and power_kw "
                                  f"{float(bat.power_kw[k])}")
            sunny = has_pv(kinds)
            missing = sunny & (panel.inverter_kw.numpy() <= 0)
            if missing.any():
                k = int(np.flatnonzero(missing)[0])
                raise DeviceError(f"household {ids[k]}: type {HouseholdType(kinds[k]).label} "
                                  f"needs PV, but pv inverter_kw is 0")
            keep = torch.as_tensor(needs, dtype=torch.float64)
            bat = replace(bat, capacity_kwh=bat.capacity_kwh * keep, power_kw=bat.power_kw * keep)
            panel = replace(panel, inverter_kw=torch.where(torch.as_tensor(sunny),
                                                           panel.inverter_kw, 0.0))
        car = EV.create(ids, **(ev or {"capacity_kwh": 0.0, "charge_kw": 0.0,
                                       "target_soc": 0.0}))
        heat = HeatPump.create(ids, **(heat_pump or {"power_kw": 0.0}))
        gen = Generator.create(ids, **(generator or {"max_kw": 0.0}))
        flex = FlexibleLoad.create(ids, **(flexible_load or {"share": 0.0, "window_h": 0.0}))
        return cls(
            ids=ids, kind=kinds, battery=bat, ev=car, heat_pump=heat, pv=panel, generator=gen,
            flexible_load=flex, absent=_absent(bat, car, heat, gen, flex))

    @property
    def size(self) -> int:
        return len(self.ids)

    def initial_state(self, dt_h: float, batch: tuple[int, ...] = (), battery_soc: float = 0.5,
                      ev_soc: float = 0.8, indoor_c: float = 20.0) -> HouseholdState:
        """Batteries and cars at the given state of charge (within their bounds), houses at
        `indoor_c`, no flexible backlog."""
        shape = (*batch, self.size)
        e_min, e_max = self.battery.energy_bounds()
        bat = torch.clamp(battery_soc * self.battery.capacity_kwh, e_min, e_max)
        car = torch.clamp(ev_soc * self.ev.capacity_kwh, max=self.ev.energy_bounds()[1])
        return HouseholdState(bat.expand(shape).clone(), car.expand(shape).clone(),
                              torch.full(shape, float(indoor_c), dtype=torch.float64,
                                         device=bat.device),
                              self.flexible_load.initial_state(dt_h, batch))

    def select(self, rows: Sequence[int] | np.ndarray) -> Households:
        """The households at positions `rows`, in that order, with their devices."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        devices = {name: getattr(self, name).select(index) for name in (
            "battery", "ev", "heat_pump", "pv", "generator", "flexible_load")}
        absent = _absent(*(devices[name] for name in (
            "battery", "ev", "heat_pump", "generator", "flexible_load")))
        return replace(self, ids=tuple(self.ids[int(k)] for k in index),
                       kind=self.kind[index.numpy()], absent=absent, **devices)

    def to(self, device: torch.device | str) -> Households:
        """The same households with every device's parameters on `device`."""
        return replace(self, **{name: getattr(self, name).to(device) for name in (
            "battery", "ev", "heat_pump", "pv", "generator", "flexible_load")})

    def limits(self, state: HouseholdState, inputs: HouseholdInputs,
               dt_h: float) -> tuple[Setpoints, Setpoints]:
        """(lowest, highest) feasible setpoints of every device for this step."""
        zero = torch.zeros((), dtype=torch.float64, device=state.indoor_c.device)
        none = self.absent
        pairs = (
            (zero, zero) if "battery" in none else self.battery.limits(state.battery_kwh, dt_h),
            (zero, zero) if "ev" in none else self.ev.limits(state.ev_kwh, dt_h, inputs.ev()),
            (zero, zero) if "heat_pump" in none else self.heat_pump.limits(
                state.indoor_c, dt_h, inputs.heat(dt_h)),
            (zero, zero) if "flexible_load" in none else self.flexible_load.limits(
                state.backlog_kwh, dt_h, inputs.load_kw),
            self.pv.limits(inputs.pv_kw),
            (zero, zero) if "generator" in none else self.generator.limits(),
        )
        shape = state.indoor_c.shape
        lo = Setpoints(*(torch.broadcast_to(p[0], shape) for p in pairs))
        hi = Setpoints(*(torch.broadcast_to(p[1], shape) for p in pairs))
        return lo, hi

    def from_action(self, action: torch.Tensor, state: HouseholdState,
                    inputs: HouseholdInputs, dt_h: float) -> Setpoints:
        """Raw actions `[..., households, len(ACTIONS)]` to feasible setpoints."""
        lo, hi = self.limits(state, inputs, dt_h)
        return Setpoints(*(to_interval(action[..., k], lo[k], hi[k], signed)
                           for k, signed in enumerate(SIGNED_ACTIONS)))

    def clip(self, setpoints: Setpoints, state: HouseholdState, inputs: HouseholdInputs,
             dt_h: float) -> Setpoints:
        """The feasible setpoints closest to the requested ones (e.g. a plan's first step)."""
        lo, hi = self.limits(state, inputs, dt_h)
        return Setpoints(*(torch.minimum(torch.maximum(s, a), b)
                           for s, a, b in zip(setpoints, lo, hi)))

    def step(self, state: HouseholdState, setpoints: Setpoints, inputs: HouseholdInputs,
             dt_h: float) -> HouseholdState:
        """The state after one step at `setpoints` (which must be feasible)."""
        none = self.absent
        return HouseholdState(
            state.battery_kwh if "battery" in none else
            self.battery.step(state.battery_kwh, setpoints.battery_kw, dt_h),
            state.ev_kwh if "ev" in none else
            self.ev.step(state.ev_kwh, setpoints.ev_kw, dt_h, inputs.ev()),
            self.heat_pump.step(state.indoor_c, setpoints.heat_pump_kw, dt_h, inputs.heat(dt_h)),
            state.backlog_kwh if "flexible_load" in none else
            self.flexible_load.step(state.backlog_kwh, setpoints.flexible_kw, dt_h,
                                    inputs.load_kw))

    def net_kw(self, setpoints: Setpoints, inputs: HouseholdInputs) -> torch.Tensor:
        """Power drawn from the connection, kW (negative when exporting)."""
        return (self.flexible_load.inflexible_kw(inputs.load_kw) + setpoints.flexible_kw
                + setpoints.battery_kw + setpoints.ev_kw + setpoints.heat_pump_kw
                - setpoints.pv_kw - setpoints.generator_kw)

    def operating_cost(self, setpoints: Setpoints, dt_h: float) -> torch.Tensor:
        """Wear and fuel of the step, currency: battery and EV degradation, generator."""
        return (self.battery.degradation(setpoints.battery_kw, dt_h)
                + self.ev.degradation(setpoints.ev_kw, dt_h)
                + self.generator.cost(setpoints.generator_kw, dt_h))

    def cost(self, setpoints: Setpoints, inputs: HouseholdInputs, buy_price: torch.Tensor,
             sell_price: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Cost of the step, currency: imports at `buy_price`, minus exports at
        `sell_price` (currency/kWh), plus the operating cost."""
        bill = energy_bill(self.net_kw(setpoints, inputs) * dt_h, buy_price, sell_price)
        return bill + self.operating_cost(setpoints, dt_h)

    def discomfort_kh(self, next_state: HouseholdState, inputs: HouseholdInputs,
                      dt_h: float) -> torch.Tensor:
        """Degree-hours outside the comfort band over the step."""
        return self.heat_pump.discomfort_kh(next_state.indoor_c, inputs.hour + dt_h, dt_h)

    def flows(self, state: HouseholdState, setpoints: Setpoints, inputs: HouseholdInputs,
              dt_h: float) -> dict[str, EnergyFlows]:
        """Energy bookkeeping of each device over the step."""
        return {
            "battery": self.battery.flows(state.battery_kwh, setpoints.battery_kw, dt_h),
            "ev": self.ev.flows(state.ev_kwh, setpoints.ev_kw, dt_h, inputs.ev()),
            "heat_pump": self.heat_pump.flows(state.indoor_c, setpoints.heat_pump_kw, dt_h,
                                              inputs.heat(dt_h)),
            "flexible_load": self.flexible_load.flows(state.backlog_kwh, setpoints.flexible_kw,
                                                      dt_h, inputs.load_kw),
            "pv": self.pv.flows(inputs.pv_kw, setpoints.pv_kw, dt_h),
            "generator": self.generator.flows(setpoints.generator_kw, dt_h),
        }
