"""Households: composition by MAHTM type, stepping all devices together, bookkeeping,
placement on feeders, local observations, and the profile data set as input."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.devices import DeviceError
from agents.households import (
    ACTIONS,
    FIELDS,
    HouseholdInputs,
    Households,
    HouseholdSeries,
    HouseholdType,
    PlacementError,
    classify,
    draw_types,
    households_from_homes,
    observe,
    place,
)
from grid import PowerFlow

DT = 0.25


def full_fleet(n: int = 8, seed: int = 0) -> Households:
    """Every device everywhere the type allows, with varied sizes."""
    rng = np.random.default_rng(seed)
    return Households.create(
        [f"h{k}" for k in range(n)], draw_types(n, [1, 1, 1, 1], seed),
        battery=dict(capacity_kwh=rng.uniform(2, 15, n), power_kw=rng.uniform(1, 5, n),
                     degradation_cost=0.02),
        ev=dict(capacity_kwh=rng.uniform(30, 70, n), charge_kw=7.0, v2g=rng.random(n) < 0.5),
        heat_pump=dict(power_kw=rng.uniform(0, 4, n)),
        generator=dict(max_kw=rng.uniform(0, 2, n), cost_quadratic=0.05),
        flexible_load=dict(share=0.1, window_h=2.0))


def random_inputs(n: int, rng: np.random.Generator, hour: float = 8.0) -> HouseholdInputs:
    home = torch.as_tensor((rng.random(n) < 0.7).astype(float))
    return HouseholdInputs(
        load_kw=torch.as_tensor(rng.uniform(0, 3, n)), pv_kw=torch.as_tensor(rng.uniform(0, 4, n)),
        ev_at_home=home, ev_trip_kwh=(1 - home) * torch.as_tensor(rng.uniform(0, 3, n)),
        ev_steps_left=torch.where(home > 0, torch.as_tensor(rng.integers(1, 20, n)).double(),
                                  torch.tensor(math.inf, dtype=torch.float64)),
        outdoor_c=torch.tensor(rng.uniform(-5, 15)), hour=hour)


def test_types_decide_pv_and_battery():
    kinds = [HouseholdType.PASSIVE_CONSUMER, HouseholdType.PASSIVE_PROSUMER,
             HouseholdType.ACTIVE_PROSUMER, HouseholdType.ACTIVE_CONSUMER]
    hh = Households.create("abcd", kinds, battery=dict(capacity_kwh=5, power_kw=2))
    assert hh.battery.capacity_kwh.tolist() == [0, 0, 5, 5]
    assert hh.pv.inverter_kw.tolist() == [0, math.inf, math.inf, 0]
    inputs = random_inputs(4, np.random.default_rng(1))
    lo, hi = hh.limits(hh.initial_state(DT), inputs, DT)
    assert hi.pv_kw[[0, 3]].abs().sum() == 0 and (hi.pv_kw[[1, 2]] == inputs.pv_kw[[1, 2]]).all()
    assert hi.battery_kw[:2].abs().sum() == 0 and (hi.battery_kw[2:] > 0).all()
    # without types, they are read off the devices
    guess = Households.create("abcd", battery=dict(capacity_kwh=[0, 0, 5, 5], power_kw=2),
                              pv=dict(inverter_kw=[0, 5, 5, 0]))
    assert guess.kind.tolist() == [int(k) for k in kinds]


def test_devices_nobody_owns_are_skipped_with_the_same_result():
    rng = np.random.default_rng(4)
    hh = Households.create(range(6), battery=dict(capacity_kwh=[5, 0, 0, 8, 0, 0], power_kw=3),
                           pv=dict(inverter_kw=[4, 4, 0, 0, 4, 0]),
                           heat_pump=dict(power_kw=[0, 2, 0, 0, 3, 0]))
    assert hh.absent == {"ev", "generator", "flexible_load"}
    unheated = Households.create(range(6), battery=dict(capacity_kwh=5, power_kw=3))
    assert unheated.absent == {"ev", "heat_pump", "generator", "flexible_load"}
    for fleet in (hh, unheated):
        every = dataclasses.replace(fleet, absent=frozenset())  # computes every device
        state = fleet.initial_state(DT)
        for t in range(8):
            x = random_inputs(6, rng, hour=5.0 + t * DT)
            action = torch.as_tensor(rng.uniform(-1, 1, (6, len(ACTIONS))))
            for a, b in zip(fleet.limits(state, x, DT), every.limits(state, x, DT)):
                assert all(torch.equal(p, q) for p, q in zip(a, b))
            sp = fleet.from_action(action, state, x, DT)
            nxt = fleet.step(state, sp, x, DT)
            assert all(torch.equal(p, q) for p, q in zip(nxt, every.step(state, sp, x, DT)))
            state = nxt


def test_a_type_that_needs_a_device_it_lacks_is_an_error():
    with pytest.raises(DeviceError, match="household b: type active consumer needs a battery"):
        Households.create("ab", [0, 3], battery=dict(capacity_kwh=[5, 0], power_kw=2))
    with pytest.raises(DeviceError, match="household a: type passive prosumer needs PV"):
        Households.create("a", [1], pv=dict(inverter_kw=0))
    with pytest.raises(DeviceError, match="household a: kind 7"):
        Households.create("a", [7])


def test_draw_types_gives_exact_shares_and_classify_inverts():
    kinds = draw_types(1000, {"passive consumer": 0.4, HouseholdType.ACTIVE_PROSUMER: 0.35,
                              "passive prosumer": 0.25}, seed=3)
    count = Counter(kinds.tolist())
    assert count == {0: 400, 2: 350, 1: 250}
    assert not np.array_equal(kinds, draw_types(1000, [0.4, 0.25, 0.35, 0], seed=4))
    pv, bat = np.isin(kinds, [1, 2]), np.isin(kinds, [2, 3])
    assert np.array_equal(classify(pv, bat), kinds)
    with pytest.raises(ValueError, match="four non-negative"):
        draw_types(3, [1, -1, 0, 0], 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.sampled_from([0.25, 1.0]))
def test_any_action_gives_feasible_setpoints_and_exact_energy_balance(seed, dt):
    rng = np.random.default_rng(seed)
    hh = full_fleet(8, seed)
    state = hh.initial_state(dt, battery_soc=rng.random(), ev_soc=rng.random(),
                             indoor_c=rng.uniform(15, 23))
    for t in range(6):
        inputs = random_inputs(8, rng, hour=(7 + t * dt) % 24)
        action = torch.as_tensor(rng.uniform(-2, 2, (8, len(ACTIONS))))
        lo, hi = hh.limits(state, inputs, dt)
        sp = hh.from_action(action, state, inputs, dt)
        for k, name in enumerate(ACTIONS):
            assert (sp[k] >= lo[k] - 1e-9).all() and (sp[k] <= hi[k] + 1e-9).all(), name
        assert torch.allclose(hh.clip(sp, state, inputs, dt).stacked(), sp.stacked(), atol=1e-12)
        flows = hh.flows(state, sp, inputs, dt)
        for name, f in flows.items():
            assert f.residual().abs().max() < 1e-9, name
        # what the household draws is its inflexible load plus what its devices draw
        drawn = hh.flexible_load.inflexible_kw(inputs.load_kw) * dt + sum(
            f.electric_kwh for f in flows.values())
        assert torch.allclose(hh.net_kw(sp, inputs) * dt, drawn, atol=1e-12)
        nxt = hh.step(state, sp, inputs, dt)
        e_min, e_max = hh.battery.energy_bounds()
        assert ((nxt.battery_kwh >= e_min - 1e-9) & (nxt.battery_kwh <= e_max + 1e-9)).all()
        state = nxt


def test_actions_in_batches_and_gradients_through_a_household_step():
    hh = full_fleet(5)
    rng = np.random.default_rng(2)
    inputs = random_inputs(5, rng)
    state = hh.initial_state(DT, batch=(3,))
    assert state.backlog_kwh.shape[:2] == (3, 5)
    action = torch.as_tensor(rng.uniform(-0.9, 0.9, (3, 5, len(ACTIONS))), dtype=torch.float64)
    action.requires_grad_()
    sp = hh.from_action(action, state, inputs, DT)
    cost = hh.cost(sp, inputs, torch.tensor(0.3), torch.tensor(0.05), DT)
    assert cost.shape == (3, 5)
    cost.sum().backward()
    assert torch.isfinite(action.grad).all() and action.grad.abs().sum() > 0
    row = hh.from_action(action[1].detach(), hh.initial_state(DT), inputs, DT)
    assert torch.allclose(row.stacked(), sp.stacked()[1].detach())


def test_cost_books_bill_wear_and_fuel():
    hh = Households.create("a", [HouseholdType.ACTIVE_CONSUMER],
                           battery=dict(capacity_kwh=10, power_kw=4, degradation_cost=0.1),
                           generator=dict(max_kw=2, cost_linear=0.2, cost_quadratic=0.05))
    inputs = HouseholdInputs(*(torch.tensor([v], dtype=torch.float64)
                               for v in (1.0, 0.0, 0.0, 0.0, math.inf)), 10.0, 12.0)
    sp = hh.from_action(torch.tensor([[1.0, 0, 0, 0, 0, 1.0]]), hh.initial_state(1.0), inputs, 1.0)
    # battery charges 4 kW, generator makes 2: net 1 + 4 - 2 = 3 kW bought at 0.3
    assert hh.net_kw(sp, inputs).item() == pytest.approx(3.0)
    expected = 3 * 0.3 + 0.1 * 4 + (0.2 * 2 + 0.05 * 4)
    assert hh.cost(sp, inputs, 0.3, 0.1, 1.0).item() == pytest.approx(expected)


# -- placement ---------------------------------------------------------------------------

def test_one_per_load_follows_the_feeders_loads(feeder_cache):
    feeder = feeder_cache("ieee13")
    p = place(feeder, len(feeder.loads), mode="one_per_load")
    assert p.load == tuple(ld.name for ld in feeder.loads)
    for spec, ld, bus in zip(p.connection, feeder.loads, p.bus):
        assert bus == ld.bus.split(".")[0]
        assert spec.split(".")[1] in {n.rsplit(".", 1)[1] for n in feeder.nodes
                                      if n.startswith(bus + ".")}
    PowerFlow(feeder, connections=sorted(set(p.connection)))  # the power flow accepts them
    with pytest.raises(PlacementError, match="ieee13 has 15 loads, too few for 16"):
        place(feeder, 16, mode="one_per_load")
    with pytest.raises(PlacementError, match="placement mode"):
        place(feeder, 3, mode="nearest")


def test_by_load_placement_is_seeded_and_follows_load_size(feeder_cache):
    feeder = feeder_cache("ieee123")
    a, b = place(feeder, 4000, seed=1), place(feeder, 4000, seed=1)
    assert a == b and a != place(feeder, 4000, seed=2)
    kw = {ld.name: ld.kw for ld in feeder.loads}
    counts = Counter(a.load)
    big = max(kw, key=kw.get)
    expected = 4000 * kw[big] / sum(kw.values())
    assert abs(counts[big] - expected) < 5 * math.sqrt(expected)
    PowerFlow(feeder, connections=sorted(set(a.connection)))
    assert all(ph.split(".")[0] in "123" for ph in a.phases)


# -- observation ---------------------------------------------------------------------------

def test_observation_is_local_and_means_what_it_says():
    hh = full_fleet(6)
    rng = np.random.default_rng(5)
    inputs = random_inputs(6, rng, hour=18.0)
    state = hh.initial_state(DT, battery_soc=0.5, indoor_c=19.0)
    obs = observe(hh, state, inputs, 0.3, torch.full((6,), 0.05), torch.full((6,), 1.02), DT)
    assert obs.shape == (6, len(FIELDS))
    col = {name: obs[:, k] for k, name in enumerate(FIELDS)}
    assert torch.allclose(col["hour_sin"], torch.full((6,), math.sin(2 * math.pi * 18 / 24),
                                                       dtype=torch.float64))
    has = hh.battery.capacity_kwh > 0
    assert torch.allclose(col["battery_soc"][has], state.battery_kwh[has]
                          / hh.battery.capacity_kwh[has])
    assert (col["battery_soc"][~has] == 0).all()
    assert torch.allclose(col["voltage"], torch.full((6,), 0.4, dtype=torch.float64))
    assert torch.allclose(col["load"], inputs.load_kw / 5)
    # changing household 0's state and voltage leaves everyone else's observation alone
    other = state._replace(battery_kwh=state.battery_kwh * torch.tensor([0.0] + [1.0] * 5),
                           indoor_c=state.indoor_c + torch.tensor([5.0] + [0.0] * 5))
    volts = torch.tensor([0.9] + [1.02] * 5)
    moved = observe(hh, other, inputs, 0.3, torch.full((6,), 0.05), volts, DT)
    assert torch.equal(moved[1:], obs[1:]) and not torch.equal(moved[0], obs[0])


# -- the profile data set as input -------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from agents.profiles import GenerateConfig, generate, read_dataset
    out = tmp_path_factory.mktemp("homes")
    cfg = GenerateConfig(homes=6, days=2, seed=1, pv={"share": 0.5}, ev={"share": 1.0},
                         heat={"heat_pump_share": 0.5})
    generate(cfg, out, progress=False)
    return read_dataset(out)


def test_households_run_on_a_generated_data_set(dataset):
    homes = dataset["homes"]
    hh = households_from_homes(homes, battery=dict(capacity_kwh=5.0, power_kw=2.5),
                               flexible_load=dict(share=0.1, window_h=3))
    assert hh.ev.capacity_kwh.tolist() == homes["ev_battery_kwh"].tolist()
    assert ((hh.heat_pump.power_kw > 0).numpy() == homes["has_heat_pump"].to_numpy()).all()
    assert ((hh.pv.inverter_kw > 0).numpy() == homes["has_pv"].to_numpy()).all()
    series = HouseholdSeries.from_dataset(dataset)
    assert series.load_kw.shape == (6, dataset["manifest"]["steps"])
    assert series.dt_h == 0.25
    per = dataset["households"]
    assert series.load_kw[2, 5].item() == per[per.home == 2].load_kw.iloc[5]
    assert series.hour[0].item() == 0.0  # local midnight (Europe/London in January)
    state = hh.initial_state(series.dt_h, ev_soc=0.9, indoor_c=20.0)
    discomfort = 0.0
    for t in range(series.steps):
        inputs = series.at(t)
        # mid-range actions: heat pumps sit mid-band, so the morning band is reachable
        sp = hh.from_action(torch.full((hh.size, len(ACTIONS)), 0.5), state, inputs,
                            series.dt_h)
        nxt = hh.step(state, sp, inputs, series.dt_h)
        assert (hh.ev.departure_shortfall_kwh(nxt.ev_kwh, inputs.ev()) < 1e-7).all()
        discomfort += float(hh.discomfort_kh(nxt, inputs, series.dt_h).sum())
        state = nxt
    # cars met every departure target above; heat pumps kept their homes in band
    assert (state.ev_kwh > 0).all()
    assert discomfort < 0.1


def test_mahtm_houses_become_their_four_types():
    from agents.profiles.config import MahtmConfig
    from agents.profiles.mahtm import homes_table

    homes = homes_table(MahtmConfig(houses="testing"), 10)
    hh = households_from_homes(homes.assign(has_pv=homes.pv_kwp > 0))
    # the paper's testing houses: every one has a battery, PV where pv_peak > 0
    expected = np.where(homes.pv_kwp > 0, HouseholdType.ACTIVE_PROSUMER,
                        HouseholdType.ACTIVE_CONSUMER)
    assert hh.kind.tolist() == expected.tolist()
    assert hh.battery.capacity_kwh.tolist() == homes.battery_kwh.tolist()
    assert torch.allclose(hh.battery.power_kw, 0.8 * hh.battery.capacity_kwh)
    assert (hh.battery.soc_min == 0.1).all() and (hh.battery.eta_charge == 1.0).all()

# -- devices other than the CPU ----------------------------------------------------------

def _moved(hh: Households, device: str) -> tuple:
    state = hh.initial_state(DT)
    inputs = random_inputs(hh.size, np.random.default_rng(9))
    return (hh.to(device), type(state)(*(v.to(device) for v in state)),
            HouseholdInputs(*(v.to(device) if isinstance(v, torch.Tensor) else v
                              for v in inputs)))


def test_a_step_creates_no_tensor_off_the_households_device():
    """On the meta device any CPU tensor made mid-step (other than a scalar) is an error,
    as it would be on a GPU; nothing is computed."""
    hh, state, inputs = _moved(full_fleet(4), "meta")
    action = torch.zeros(4, len(ACTIONS), dtype=torch.float64, device="meta")
    sp = hh.from_action(action, state, inputs, DT)
    nxt = hh.step(state, sp, inputs, DT)
    outputs = [*sp, *nxt, hh.net_kw(sp, inputs), hh.cost(sp, inputs, 0.3, 0.05, DT),
               hh.discomfort_kh(nxt, inputs, DT), observe(hh, state, inputs, 0.3, 0.05, 1.0, DT),
               *hh.flows(state, sp, inputs, DT)["ev"]]
    assert all(t.device.type == "meta" for t in outputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_households_step_alike_on_cuda():
    cpu = full_fleet(16)
    hh, state, inputs = _moved(cpu, "cuda")
    action = torch.rand(16, len(ACTIONS), dtype=torch.float64) * 2 - 1
    nxt = hh.step(state, hh.from_action(action.cuda(), state, inputs, DT), inputs, DT)
    _, state_cpu, inputs_cpu = _moved(cpu, "cpu")
    ref = cpu.step(state_cpu, cpu.from_action(action, state_cpu, inputs_cpu, DT), inputs_cpu, DT)
    for a, b in zip(nxt, ref):
        assert torch.allclose(a.cpu(), b)
