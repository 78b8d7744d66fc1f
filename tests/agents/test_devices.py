"""Devices: limits never violated over random action sequences (property tests), exact
energy bookkeeping, physics against independent solutions, gradients, bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.devices import (
    EV,
    PV,
    Battery,
    DeviceError,
    EVInputs,
    FlexibleLoad,
    Generator,
    HeatInputs,
    HeatPump,
    steps_to_departure,
)
from agents.devices.heat_pump import PREHEAT_H

PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
EPS = 1e-9
dts = st.sampled_from([0.25, 0.5, 1.0, 1 / 60])
actions = st.floats(-3.0, 3.0, allow_nan=False)  # beyond [-1, 1] on purpose: must be clamped


def t64(x: object) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def within(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, scale: float = 1.0) -> bool:
    tol = EPS * max(scale, 1.0)
    return bool(((x >= lo - tol) & (x <= hi + tol)).all())


# -- battery ----------------------------------------------------------------------------

batteries = st.lists(st.tuples(st.floats(0, 30), st.floats(0, 15), st.floats(0.5, 1),
                               st.floats(0.5, 1), st.floats(0, 0.5), st.floats(0, 0.5),
                               st.floats(0, 1)), min_size=1, max_size=6)


@PROPERTY
@given(batteries, dts, st.data())
def test_battery_limits_and_balance_hold_for_any_actions(params, dt, data):
    cap, p, ec, ed, lo_frac, span, start = map(list, zip(*params))
    soc_max = [min(a + b, 1.0) for a, b in zip(lo_frac, span)]
    b = Battery.create(range(len(cap)), cap, p, ec, ed, lo_frac, soc_max, degradation_cost=0.02)
    e_min, e_max = b.energy_bounds()
    e = e_min + t64(start) * (e_max - e_min)
    for _ in range(data.draw(st.integers(1, 12))):
        a = t64(data.draw(st.lists(actions, min_size=len(cap), max_size=len(cap))))
        lo, hi = b.limits(e, dt)
        power = b.from_action(a, e, dt)
        assert within(power, lo, hi, 15) and within(power, -b.power_kw, b.power_kw, 15)
        flows = b.flows(e, power, dt)
        e_next = b.step(e, power, dt)
        assert within(e_next, e_min, e_max, 30)
        assert torch.allclose(flows.residual(), torch.zeros_like(e), atol=1e-12)
        assert torch.allclose(flows.stored_kwh, e_next - e, atol=1e-12)
        assert (flows.losses_kwh >= -EPS).all()
        assert torch.allclose(b.degradation(power, dt), 0.02 * power.abs() * dt)
        e = e_next


def test_battery_bookkeeping_by_hand():
    b = Battery.create(["a"], 10, 4, eta_charge=0.9, eta_discharge=0.8, soc_min=0, soc_max=1)
    e = t64([5.0])
    f = b.flows(e, t64([4.0]), 0.5)  # 2 kWh in, 1.8 stored, 0.2 lost
    assert f.electric_kwh.item() == pytest.approx(2.0)
    assert f.stored_kwh.item() == pytest.approx(1.8)
    assert f.losses_kwh.item() == pytest.approx(0.2)
    f = b.flows(e, t64([-4.0]), 0.5)  # 2 kWh out needs 2.5 from storage
    assert f.stored_kwh.item() == pytest.approx(-2.5)
    assert f.losses_kwh.item() == pytest.approx(0.5)


# -- EV -------------------------------------------------------------------------------------

@PROPERTY
@given(st.integers(1, 5), dts, st.booleans(), st.data())
def test_ev_never_leaves_its_limits_and_meets_a_reachable_target(n, dt, v2g, data):
    cap = t64(data.draw(st.lists(st.floats(10, 80), min_size=n, max_size=n)))
    charge = t64(data.draw(st.lists(st.floats(1, 22), min_size=n, max_size=n)))
    ev = EV.create(range(n), cap, charge, v2g=v2g, soc_min=0.2, soc_max=0.95, target_soc=0.8,
                   degradation_cost=0.015)
    steps = 16
    home = t64(data.draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                  min_size=n, max_size=n)))
    trip = (1 - home) * t64(data.draw(st.floats(0, 30)))
    left = steps_to_departure(home)
    e = cap * t64(data.draw(st.lists(st.floats(0, 0.95), min_size=n, max_size=n)))
    e_min, e_max = ev.energy_bounds()
    arrived_with, home_steps = e.clone(), torch.zeros(n, dtype=torch.float64)
    for t in range(steps):
        inputs = EVInputs(home[:, t], trip[:, t], left[:, t])
        a = t64(data.draw(st.lists(actions, min_size=n, max_size=n)))
        lo, hi = ev.limits(e, dt, inputs)
        p = ev.from_action(a, e, dt, inputs)
        assert within(p, lo, hi, 22)
        assert within(p, -ev.discharge_kw * home[:, t], ev.charge_kw * home[:, t], 22)
        if not v2g:
            assert (p >= 0).all()
        flows = ev.flows(e, p, dt, inputs)
        nxt = ev.step(e, p, dt, inputs)
        assert torch.allclose(flows.residual(), torch.zeros(n, dtype=torch.float64), atol=1e-9)
        assert (nxt >= 0).all() and within(nxt, torch.zeros(n), torch.maximum(e_max, e), 80)
        # V2G never takes a car below its reserve
        was_above = (e >= e_min) & (p < 0)
        assert (nxt[was_above] >= e_min[was_above] - 1e-9).all()
        # a departure target reachable since arrival is met
        arriving = (home[:, t] > 0) & ((t == 0) | (home[:, t - 1 if t else 0] == 0))
        arrived_with = torch.where(arriving, e, arrived_with)
        home_steps = torch.where(arriving, left[:, t], home_steps)
        reachable = arrived_with + home_steps * ev.eta_charge * charge * dt >= ev.target_kwh()
        leaving = (left[:, t] == 1) & (home[:, t] > 0) & reachable
        assert (nxt[leaving] >= ev.target_kwh()[leaving] - 1e-7).all()
        shortfall = ev.departure_shortfall_kwh(nxt, inputs)
        assert (shortfall[leaving] <= 1e-7).all()
        e = nxt


def test_ev_trip_larger_than_the_battery_is_topped_up_away():
    ev = EV.create(["h"], 40, 7)
    inputs = EVInputs(t64([0.0]), t64([12.0]), t64([math.inf]))
    f = ev.flows(t64([10.0]), t64([0.0]), 0.25, inputs)
    assert ev.step(t64([10.0]), t64([0.0]), 0.25, inputs).item() == 0.0
    assert f.source_kwh.item() == pytest.approx(2.0)
    assert f.delivered_kwh.item() == pytest.approx(12.0)
    assert f.residual().abs().item() < 1e-12


def test_steps_to_departure_counts_home_steps_until_the_car_leaves():
    home = torch.tensor([[1, 1, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 1, 0]])
    left = steps_to_departure(home)
    assert left[0].tolist() == [2, 1, math.inf, math.inf, 3, 2, 1]
    assert left[1].tolist() == [math.inf, 3, 2, 1, math.inf, 1, math.inf]
    assert steps_to_departure(home, end_is_departure=False)[0, 4:].isinf().all()


# -- heat pump -------------------------------------------------------------------------------

@PROPERTY
@given(st.integers(1, 5), dts, st.data())
def test_heat_pump_holds_the_band_whenever_it_can(n, dt, data):
    draw = lambda s: t64(data.draw(st.lists(s, min_size=n, max_size=n)))  # noqa: E731
    hp = HeatPump.create(range(n), power_kw=draw(st.floats(0, 6)),
                         resistance_k_per_kw=draw(st.floats(1, 20)),
                         capacitance_kwh_per_k=draw(st.floats(1, 20)),
                         cop=draw(st.floats(1, 5)), cop_slope=draw(st.floats(0, 0.1)))
    temp = draw(st.floats(10, 26))
    hour = data.draw(st.floats(0, 24))
    for t in range(12):
        inputs = HeatInputs(t64(data.draw(st.floats(-15, 30))), hour + (t + 1) * dt,
                            draw(st.floats(0, 1)))
        lo, hi = hp.limits(temp, dt, inputs)
        p = hp.from_action(t64(data.draw(st.lists(actions, min_size=n, max_size=n))), temp, dt,
                           inputs)
        assert within(p, lo, hi, 6) and within(p, torch.zeros(n), hp.power_kw, 6)
        low, high = hp.band(inputs.hour_end)
        off = hp.step(temp, torch.zeros(n, dtype=torch.float64), dt, inputs)
        full = hp.step(temp, hp.power_kw, dt, inputs)
        reachable = (off <= high) & (full >= low)
        nxt = hp.step(temp, p, dt, inputs)
        assert (nxt[reachable] >= low[reachable] - 1e-7).all()
        assert (nxt[reachable] <= high[reachable] + 1e-7).all()
        discomfort = hp.discomfort_kh(nxt, inputs.hour_end, dt)
        owns = hp.power_kw > 0
        assert (discomfort[reachable & owns] <= 1e-7 * dt).all()
        assert (discomfort[~reachable & owns] > 0).all()
        assert torch.allclose(hp.flows(temp, p, dt, inputs).residual(),
                              torch.zeros(n, dtype=torch.float64), atol=1e-9)
        temp = nxt


def test_heat_pump_step_is_the_exact_solution_of_the_1r1c_ode():
    hp = HeatPump.create(["h"], 4.0, resistance_k_per_kw=6.0, capacitance_kwh_per_k=3.0,
                         cop=2.5, cop_slope=0.05)
    inputs = HeatInputs(t64(-3.0), 8.0, t64(0.4))
    t0, p, dt = 17.0, 2.0, 0.5
    exact = hp.step(t64([t0]), t64([p]), dt, inputs).item()
    # C dT/dt = -(T - T_out) / R + COP p + gains, by fine explicit Euler
    cop = 2.5 + 0.05 * (-3.0 - 7.0)
    temp, h = t0, dt / 200_000
    for _ in range(200_000):
        temp += h * (-(temp + 3.0) / 6.0 + cop * p + 0.4) / 3.0
    assert exact == pytest.approx(temp, abs=1e-5)
    flows = hp.flows(t64([t0]), t64([p]), dt, inputs)
    assert flows.electric_kwh.item() == pytest.approx(p * dt)
    assert flows.source_kwh.item() == pytest.approx(((cop - 1) * p + 0.4) * dt)
    assert flows.stored_kwh.item() == pytest.approx(3.0 * (exact - t0))


@pytest.mark.parametrize("dt", [0.25, 1.0])
def test_heat_pump_at_its_least_power_preheats_for_the_morning_band(dt):
    # a cold night: the set-back floor (16 C) alone would leave the house 2 K short at 07:00
    hp = HeatPump.create(["a", "b"], t64([3.0, 5.0]), resistance_k_per_kw=t64([5.0, 3.0]))
    temp, hour, least = t64([16.0, 16.5]), 0.0, []
    while hour < 12.0:
        inputs = HeatInputs(t64(-2.0), hour + dt)
        p = hp.from_action(torch.zeros(2, dtype=torch.float64), temp, dt, inputs)
        temp, hour = hp.step(temp, p, dt, inputs), hour + dt
        least.append((hour, p.clone(), temp.clone()))
    for hour, p, temp in least:
        assert (temp >= (18.0 if 7.0 <= hour < 10.0 else 16.0) - 1e-9).all()
    # and it waits: in the small hours it does not yet run flat out
    assert all((p < hp.power_kw).all() for hour, p, _ in least if hour <= 3.0)


@PROPERTY
@given(st.integers(1, 6), st.sampled_from([0.25, 0.5, 1.0]), st.data())
def test_preheat_equals_the_maximum_over_every_step_ahead(n, dt, data):
    draw = lambda s: t64(data.draw(st.lists(s, min_size=n, max_size=n)))  # noqa: E731
    hp = HeatPump.create(range(n), power_kw=draw(st.floats(0, 6)),
                         resistance_k_per_kw=draw(st.floats(1, 20)),
                         capacitance_kwh_per_k=draw(st.floats(1, 20)),
                         comfort_low_c=draw(st.floats(17, 21)),
                         setback_low_c=draw(st.floats(12, 17)))
    per_home = data.draw(st.booleans())  # one clock for all, or one per household
    hour = draw(st.floats(0, 24)) if per_home else t64(data.draw(st.floats(0, 24)))
    inputs = HeatInputs(t64(data.draw(st.floats(-20, 30))), hour, draw(st.floats(0, 1)))
    r = hp.resistance_k_per_kw
    a = torch.exp(-dt / (r * hp.capacitance_kwh_per_k))
    full = inputs.outdoor_c + r * (hp.coefficient(inputs.outdoor_c) * hp.power_kw
                                   + inputs.gains_kw)
    k = torch.arange(1, round(PREHEAT_H / dt) + 1, dtype=torch.float64)[:, None]
    low, _ = hp.band(inputs.hour_end + k * dt)
    brute = ((low - (1 - a ** k) * full) / a ** k).amax(0)
    assert torch.allclose(hp.preheat_c(dt, inputs), brute, rtol=1e-12, atol=1e-9)


def test_a_clock_hours_band_and_preheat_are_kept_and_never_stale():
    """One clock hour's band and pre-heat schedule are kept (`HeatPump._per_hour`); asked
    again, in any order, they equal a fresh heat pump's, and a changed heat pump (another
    comfort band, another step length) does not read the kept ones."""
    def make() -> HeatPump:
        return HeatPump.create(range(3), power_kw=t64([2.0, 3.0, 4.0]),
                               comfort_low_c=t64([18.0, 19.0, 20.0]))

    hp = make()
    for hour, dt in ((6.0, 0.25), (7.0, 0.25), (6.0, 0.25), (21.75, 1.0), (6.0, 1.0),
                     (7.0, 0.25)):
        inputs = HeatInputs(t64(5.0), t64(hour), t64([0.1, 0.2, 0.3]))
        fresh = make()
        for a, b in zip(hp.band(t64(hour)), fresh.band(t64(hour))):
            assert torch.equal(a, b)
        assert torch.equal(hp.preheat_c(dt, inputs), fresh.preheat_c(dt, inputs))
    warmer = dataclasses.replace(hp, comfort_low_c=hp.comfort_low_c + 1.0)
    assert torch.equal(warmer.band(t64(7.0))[0], hp.band(t64(7.0))[0] + 1.0)
    assert (warmer.preheat_c(0.25, inputs) > hp.preheat_c(0.25, inputs)).all()


def test_heat_pump_comfort_band_follows_the_clock():
    hp = HeatPump.create(["h"], 3.0)  # FACMAC: 20 +/- 2 C during 07-10 and 17-22 h
    low, high = hp.band(t64([6.9, 7.0, 9.99, 10.0, 18.0, 23.0]))
    assert low.tolist() == [16, 18, 18, 16, 18, 16]
    assert high.tolist() == [24, 22, 22, 24, 22, 24]
    night = HeatPump.create(["h"], 3.0, comfort_hours=[(22, 6)])
    assert night.band(t64([23.0, 3.0, 12.0]))[0].tolist() == [18, 18, 16]


# -- PV, generator --------------------------------------------------------------------------

@PROPERTY
@given(st.integers(1, 6), st.data())
def test_pv_output_within_what_is_available(n, data):
    draw = lambda s: data.draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    pv = PV.create(range(n), inverter_kw=draw(st.floats(0, 10)), curtailable=draw(st.booleans()))
    available = t64(draw(st.floats(-0.1, 12)))
    out = pv.from_action(t64(draw(actions)), available)
    cap = torch.minimum(available.clamp(min=0), pv.inverter_kw)
    assert within(out, torch.zeros(n), cap, 12)
    fixed = pv.curtailable == 0
    assert torch.allclose(out[fixed], cap[fixed])
    f = pv.flows(available, out, 0.25)
    assert (f.losses_kwh >= -EPS).all() and f.residual().abs().max() < 1e-12


@PROPERTY
@given(st.integers(1, 6), st.data())
def test_generator_output_within_its_limits_and_cost_convex(n, data):
    draw = lambda s: t64(data.draw(st.lists(s, min_size=n, max_size=n)))  # noqa: E731
    low = draw(st.floats(0, 3))
    g = Generator.create(range(n), max_kw=low + draw(st.floats(0, 5)), min_kw=low,
                         cost_linear=draw(st.floats(0, 0.5)),
                         cost_quadratic=draw(st.floats(0, 0.1)))
    a, b = draw(actions), draw(actions)
    pa, pb = g.from_action(a), g.from_action(b)
    assert within(pa, g.min_kw, g.max_kw, 8)
    mid = g.cost((pa + pb) / 2, 1.0)
    assert (mid <= (g.cost(pa, 1.0) + g.cost(pb, 1.0)) / 2 + 1e-12).all()
    f = g.flows(pa, 0.5)
    assert torch.allclose(f.source_kwh * g.efficiency, pa * 0.5)


# -- flexible load --------------------------------------------------------------------------

@PROPERTY
@given(st.integers(1, 5), dts, st.data())
def test_flexible_load_serves_everything_within_its_window(n, dt, data):
    draw = lambda s: t64(data.draw(st.lists(s, min_size=n, max_size=n)))  # noqa: E731
    flex = FlexibleLoad.create(range(n), share=draw(st.floats(0, 1)),
                               window_h=draw(st.floats(0, 3)))
    window = flex.window_steps(dt)
    backlog = flex.initial_state(dt)
    arrived = served = torch.zeros(n, dtype=torch.float64)
    for _ in range(10):
        load = draw(st.floats(0, 5))
        lo, hi = flex.limits(backlog, dt, load)
        p = flex.from_action(draw(actions), backlog, dt, load)
        assert within(p, lo, hi, 5) and (p >= 0).all()
        f = flex.flows(backlog, p, dt, load)
        assert f.residual().abs().max() < 1e-12
        backlog = flex.step(backlog, p, dt, load)
        assert (backlog >= -1e-12).all()
        # nothing is older than its window: entry j waited j + 1 steps
        ages = torch.arange(backlog.shape[-1]) + 1
        assert (backlog[ages[None] > window[:, None]].abs() < 1e-12).all()
        arrived, served = arrived + flex.share * load * dt, served + p * dt
        assert torch.allclose(arrived - served, backlog.sum(-1), atol=1e-9)


def test_flexible_load_serves_oldest_first():
    flex = FlexibleLoad.create(["h"], share=1.0, window_h=2.0)
    backlog = flex.initial_state(1.0)
    backlog = flex.step(backlog, t64([0.0]), 1.0, t64([1.0]))  # 1 kWh waits
    backlog = flex.step(backlog, t64([0.0]), 1.0, t64([2.0]))  # 2 more, 1 is due next step
    lo, hi = flex.limits(backlog, 1.0, t64([0.0]))
    assert lo.item() == pytest.approx(1.0) and hi.item() == pytest.approx(3.0)
    after = flex.step(backlog, t64([1.5]), 1.0, t64([0.0]))
    assert after[0].tolist() == pytest.approx([0.0, 1.5])  # the oldest went first


# -- all devices: batches and gradients ------------------------------------------------------

def test_batched_states_step_like_each_row_alone():
    b = Battery.create(range(3), [10, 5, 8], [5, 2, 3])
    e = t64([[2.0, 3.0, 4.0], [6.0, 1.0, 7.0]])
    a = t64([[0.3, -0.5, 1.0], [-1.0, 0.2, 0.0]])
    together = b.step(e, b.from_action(a, e, 0.25), 0.25)
    for k in range(2):
        alone = b.step(e[k], b.from_action(a[k], e[k], 0.25), 0.25)
        assert torch.equal(together[k], alone)


def test_rollout_gradients_match_finite_differences():
    torch.manual_seed(0)
    n, dt = 3, 0.25
    b = Battery.create(range(n), 10, 4, 0.95, 0.9)
    hp = HeatPump.create(range(n), 3.0)
    ev = EV.create(range(n), 40, 7, v2g=True)
    inputs = HeatInputs(t64(2.0), 8.0)
    home = EVInputs(t64([1.0] * n), t64([0.0] * n), t64([10.0] * n))

    def cost(a: torch.Tensor) -> torch.Tensor:
        e, temp, car = t64([4.0, 5.0, 6.0]), t64([19.0, 20.0, 21.0]), t64([20.0, 25.0, 30.0])
        total = torch.zeros((), dtype=torch.float64)
        for t in range(3):
            pb = b.from_action(a[t, :, 0], e, dt)
            ph = hp.from_action((a[t, :, 1] + 1) / 2, temp, dt, inputs)
            pe = ev.from_action(a[t, :, 2], car, dt, home)
            total = total + (0.3 * (pb + ph + pe) + (temp - 20) ** 2).sum()
            e, temp = b.step(e, pb, dt), hp.step(temp, ph, dt, inputs)
            car = ev.step(car, pe, dt, home)
        return total + e.sum() + temp.sum() + car.sum()

    a = (torch.rand(3, n, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(cost, (a,), eps=1e-6, atol=1e-6)
    cost(a).backward()
    assert a.grad.abs().sum() > 0


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: Battery.create(["h1", "h2"], [10, 5], 3, soc_min=[0.1, 0.9], soc_max=[0.9, 0.2]),
     "household h2: battery soc_min 0.9 exceeds soc_max 0.2"),
    (lambda: Battery.create(["h1", "h2"], [10, -5], 3), "household h2: battery capacity_kwh -5"),
    (lambda: Battery.create(["a"], 10, 3, eta_charge=0), "household a: battery eta_charge 0"),
    (lambda: Battery.create(["a", "b"], [1, 2, 3], 3), "battery capacity_kwh: \\(3,\\) values"),
    (lambda: Battery.create(["a"], "big", 3), "battery capacity_kwh: 'big' is not a number"),
    (lambda: EV.create(["x"], float("nan"), 7), "household x: ev capacity_kwh nan is not finite"),
    (lambda: EV.create(["x"], 40, 7, target_soc=0.9, soc_max=0.8),
     "household x: ev target_soc 0.9 exceeds soc_max 0.8"),
    (lambda: HeatPump.create(["hp"], 3, comfort_low_c=22, comfort_high_c=18),
     "household hp: heat_pump comfort_low_c 22.0 exceeds comfort_high_c 18.0"),
    (lambda: HeatPump.create(["hp"], 3, setback_low_c=25), "household hp: heat_pump setback_low_c"),
    (lambda: HeatPump.create(["hp"], 3, resistance_k_per_kw=0), "resistance_k_per_kw 0.0 must be"),
    (lambda: HeatPump.create(["hp"], 3, cop=0.5), "household hp: heat_pump cop 0.5 must be at"),
    (lambda: HeatPump.create(["hp"], 3, comfort_hours=[(7, 7)]), "comfort_hours: window"),
    (lambda: PV.create(["p"], inverter_kw=-1), "household p: pv inverter_kw -1.0 is negative"),
    (lambda: Generator.create(["g"], max_kw=2, min_kw=3), "household g: generator min_kw 3.0"),
    (lambda: FlexibleLoad.create(["f"], share=1.5), "household f: flexible_load share 1.5"),
    (lambda: FlexibleLoad.create(["f"], window_h=-1), "household f: flexible_load window_h"),
])
def test_inconsistent_parameters_name_household_and_field(make, match):
    with pytest.raises(DeviceError, match=match):
        make()


def test_zero_sized_devices_do_nothing():
    n = 4
    ev = EV.create(range(n), 0, 0, target_soc=0.0)
    inputs = EVInputs(t64([1.0] * n), t64([0.0] * n), t64([1.0] * n))
    lo, hi = ev.limits(torch.zeros(n, dtype=torch.float64), 0.25, inputs)
    assert lo.abs().max() == 0 and hi.abs().max() == 0
    assert np.isfinite(lo.numpy()).all()
