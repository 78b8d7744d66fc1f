"""households.size_factor makes every home that many times its size in every respect: with
a factor of 0.1 each home's energy flows are a tenth of those at full size, and its states
of charge and indoor temperatures are the same."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.households import Households
from agents.households.composition import HouseholdInputs
from agents.policies.rule_based import self_consumption_setpoints
from cosim.scenario import build

from .conftest import scenario_config, synthetic_profiles

FACTOR = 0.1
STEPS = 12
IMPORT, EXPORT = 0.30, 0.08  # currency/kWh, the rule's prices (the tariff's defaults)


def _scenario(size_factor: float):
    """Every device common, a cold start (heat pumps work), cars leaving in the run."""
    config = scenario_config(
        run={"seed": 3, "steps": STEPS, "start": "2026-06-01T05:00:00Z"},
        grid={"feeder": "ieee13"},
        households={"count": 40, "shard_size": 40, "size_factor": size_factor,
                    "battery": {"share": 0.5}, "pv": {"share": 0.6},
                    "ev": {"share": 0.5, "v2g_share": 0.5, "soc_initial": 0.5},
                    "heat_pump": {"share": 0.5, "indoor_initial_c": 17.0},
                    "flexible_load": {"share": 0.3},
                    "generator": {"share": 0.3, "cost_linear": 0.1, "cost_quadratic": 0.05}})
    return build(config, synthetic_profiles(homes=30, steps=STEPS + 24))


@pytest.fixture(scope="module")
def shards():
    """(full size, a tenth) pairs of each shard's household arrays."""
    def homes(scenario):
        return [spec.kwargs["homes"] for spec in scenario.actors if "homes" in spec.kwargs]

    return list(zip(homes(_scenario(1.0)), homes(_scenario(FACTOR)), strict=True))


def _run(homes, heat_off: bool = False) -> dict[str, torch.Tensor]:
    """Step one shard's households with the self-consumption rule (the heat pumps off if
    `heat_off`): setpoints, net draw, device flows and states, stacked over steps."""
    dt_h = 0.25
    fleet = Households.create(homes.household.tolist(), **homes.devices)
    state = fleet.initial_state(dt_h, **homes.initial)
    n = len(homes.household)

    def per_home(x: np.ndarray | None, t: int, fill: float) -> torch.Tensor:
        return torch.full((n,), fill, dtype=torch.float64) if x is None else \
            torch.as_tensor(x[:, t], dtype=torch.float64)

    out: dict[str, list[torch.Tensor]] = {}
    for t in range(STEPS):
        x = HouseholdInputs(
            load_kw=per_home(homes.load_kw, t, 0.0), pv_kw=per_home(homes.pv_kw, t, 0.0),
            ev_at_home=per_home(homes.ev_at_home, t, 0.0),
            ev_trip_kwh=per_home(homes.ev_trip_kwh, t, 0.0),
            ev_steps_left=per_home(homes.ev_steps_left, t, math.inf),
            outdoor_c=float(homes.outdoor_c[t]), hour=float(homes.hour[t]),
            weekend=float(homes.weekend[t]))
        sp = self_consumption_setpoints(fleet, state, x, dt_h, IMPORT, EXPORT)
        if heat_off:
            sp = sp._replace(heat_pump_kw=torch.zeros(n, dtype=torch.float64))
        flows = fleet.flows(state, sp, x, dt_h)
        state = fleet.step(state, sp, x, dt_h)
        row = {**{f"setpoint.{k}": v for k, v in sp._asdict().items()},
               "net_kw": fleet.net_kw(sp, x), "cost": fleet.cost(sp, x, IMPORT, EXPORT, dt_h),
               **{f"{device}.{k}": v for device, f in flows.items()
                  for k, v in f._asdict().items()},
               "state.battery_kwh": state.battery_kwh, "state.ev_kwh": state.ev_kwh,
               "state.indoor_c": state.indoor_c, "state.backlog_kwh": state.backlog_kwh.sum(-1),
               "battery_soc": _soc(state.battery_kwh, fleet.battery.capacity_kwh),
               "ev_soc": _soc(state.ev_kwh, fleet.ev.capacity_kwh)}
        for k, v in row.items():  # some flows are scalars where nobody has the device
            out.setdefault(k, []).append(torch.broadcast_to(torch.as_tensor(v), (n,)))
    return {k: torch.stack(v) for k, v in out.items()}


def _soc(kwh: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
    return torch.where(capacity > 0, kwh / torch.where(capacity > 0, capacity, 1.0), 0.0)


def test_inputs_and_devices_scale_by_the_factor(shards):
    for full, small in shards:
        for name in ("load_kw", "pv_kw", "ev_trip_kwh"):
            np.testing.assert_allclose(getattr(small, name), FACTOR * getattr(full, name),
                                       rtol=1e-12, err_msg=name)
        assert full.ev_trip_kwh.sum() > 0  # the cars drive
        hp_full, hp_small = full.devices["heat_pump"], small.devices["heat_pump"]
        assert hp_small["resistance_k_per_kw"] == pytest.approx(
            hp_full["resistance_k_per_kw"] / FACTOR)
        assert hp_small["capacitance_kwh_per_k"] == pytest.approx(
            hp_full["capacitance_kwh_per_k"] * FACTOR)
        for device, key in (("battery", "capacity_kwh"), ("battery", "power_kw"),
                            ("ev", "capacity_kwh"), ("ev", "charge_kw"),
                            ("heat_pump", "power_kw"), ("generator", "max_kw")):
            np.testing.assert_allclose(small.devices[device][key],
                                       FACTOR * full.devices[device][key], rtol=1e-12)


def test_a_tenth_size_home_has_a_tenth_of_the_flows_and_the_same_states(shards):
    same = {"state.indoor_c", "battery_soc", "ev_soc"}
    for full, small in shards:
        a, b = _run(full), _run(small)
        assert (a["setpoint.heat_pump_kw"] > 0).any() and (a["setpoint.ev_kw"] > 0).any()
        assert (a["setpoint.generator_kw"] > 0).any() and (a["ev.source_kwh"] >= 0).all()
        for key in a:
            expected = a[key] if key in same else FACTOR * a[key]
            torch.testing.assert_close(b[key], expected, rtol=1e-9, atol=1e-12, msg=key)


def test_a_tenth_size_house_warms_and_cools_as_the_full_size_one(shards):
    """Indoor temperature trajectories with the heat pumps off (the house alone) and under
    the rule (heat pump and house together) are the same at either size."""
    for full, small in shards:
        for heat_off in (True, False):
            a, b = _run(full, heat_off), _run(small, heat_off)
            torch.testing.assert_close(b["state.indoor_c"], a["state.indoor_c"], rtol=1e-12,
                                       atol=1e-9)
        assert not torch.allclose(a["state.indoor_c"][0], a["state.indoor_c"][-1])
