"""Regulators and capacitors in the loop against OpenDSS's own daily simulation.

The same 24 hourly cases (feeder loads along a daily curve with a morning and an evening
peak, PV injections peaking at noon) run through `Controls` + `PowerFlow` and through
OpenDSS in `mode=daily` with `controlmode=static`, each step starting from the last one's
taps: the shipped IEEE 123, and variants of it with reversible, cogeneration and
reverse-neutral regulators, other regulator settings, and CapControls of every kind.
Acceptance: every tap position and capacitor state equal at every step, the number of
control iterations equal, node voltages within 1e-6 p.u. (measured: 8.5e-9, the power
flow's own tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest

from grid import load_feeder
from grid.controls import Controls
from grid.errors import FeederError
from grid.feeder import FEEDER_DIR
from grid.reference import OpenDSSReference

TOL_PU = 1e-6
HOURS = np.arange(24)
# PV at the ends of regulated laterals: behind reg2a (bus 14), reg3c (bus 32), reg4 (66)
CONNECTIONS = ["14.1", "32.3", "66.1", "66.2", "66.3", "300.1.2"]
PV_KW = np.array([250.0, 150.0, 300.0, 300.0, 300.0, 200.0])


def _day(feeder, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load scale per hour and load (a morning and an evening peak, light at noon) and PV
    injections per hour and connection (kW)."""
    curve = 0.35 + 0.85 * np.exp(-((HOURS - 19) / 3.0) ** 2) + 0.25 * np.exp(
        -((HOURS - 8) / 2.0) ** 2)
    rng = np.random.default_rng(seed)
    scale = curve[:, None] * rng.uniform(0.8, 1.2, (24, len(feeder.loads)))
    sun = np.clip(np.sin((HOURS - 6) / 12 * np.pi), 0.0, None)
    return scale, sun[:, None] * PV_KW[None]


def _run_day(feeder):
    """Both simulations of the day: per hour, (our positions, OpenDSS's positions, worst
    voltage difference in p.u.), and per hour our regulators' (reverse, cogen) modes."""
    scale, p = _day(feeder)
    controls = Controls(feeder, CONNECTIONS)
    ref = _daily_reference(feeder, CONNECTIONS)
    ctx = ref.ctx
    out, modes = [], []
    for h in HOURS:
        step = controls.step((h + 1) * 3600.0, p[h], None, load_scale=scale[h][None])
        assert step.settled
        ref.set_case(scale[h], p[h], None)
        ctx.Solution.Solve()
        assert ctx.Solution.Converged()
        assert ctx.Solution.ControlIterations() == step.iterations
        v_ref = np.asarray(ctx.Circuit.YNodeVArray()).view(complex)[ref._node_order()]
        v = step.result.voltages[0].numpy()
        err = float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))
        out.append((controls.positions(), _opendss_positions(ctx), err))
        modes.append({r.s.name: (r.in_reverse, r.in_cogen) for r in controls.regulators})
    return out, modes


def _daily_reference(feeder, connections) -> OpenDSSReference:
    """OpenDSS at the frozen feeder's state, set for hourly daily-mode steps with its
    controls in static mode (the first step solves at 1 h: OpenDSS advances its clock
    before it solves)."""
    ref = OpenDSSReference(feeder, connections)
    ctx, cmd = ref.ctx, ref.ctx.Text.Command
    cmd("set mode=daily stepsize=1h number=1")
    cmd("set controlmode=static maxcontroliter=100")
    # `set mode` resets every CapControl, which recloses its capacitor's terminal but
    # leaves no step in service: open those again, as the frozen feeder has them
    for name in ctx.Capacitors.AllNames() or []:
        ctx.Capacitors.Name(name)
        if not any(ctx.Capacitors.States()):
            ctx.Circuit.SetActiveElement(f"capacitor.{name}")
            ctx.CktElement.Open(1, 0)
    ctx.Solution.Hour(0)
    ctx.Solution.Seconds(0)
    return ref


def _opendss_positions(ctx) -> dict[str, int]:
    """Tap number per RegControl and steps in service (0 when open) per CapControl."""
    out = {}
    for name in ctx.RegControls.AllNames() or []:
        ctx.RegControls.Name(name)
        out[name.lower()] = ctx.RegControls.TapNumber()
    for name in ctx.CapControls.AllNames() or []:
        ctx.CapControls.Name(name)
        cap = ctx.CapControls.Capacitor()
        ctx.Capacitors.Name(cap)
        ctx.Circuit.SetActiveElement(f"capacitor.{cap}")
        closed = not ctx.CktElement.IsOpen(1, 0)
        out[name.lower()] = sum(ctx.Capacitors.States()) if closed else 0
    return out


def _assert_day_matches(day) -> None:
    for hour, (ours, theirs, err) in enumerate(day):
        assert ours == theirs, f"hour {hour}: ours {ours}, OpenDSS {theirs}"
        assert err <= TOL_PU, f"hour {hour}: voltages differ by {err:.2e} p.u."


def _variant(tmp_path, name: str, commands: str):
    master = tmp_path / f"{name}.dss"
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee123' / 'IEEE123Master.dss'}\"\n"
                      + commands)
    return load_feeder(master)


def test_ieee123_day_matches_opendss_daily(feeder_cache):
    """The shipped IEEE 123 (seven forward-only regulators with line-drop compensation)."""
    day, _ = _run_day(feeder_cache("ieee123"))
    _assert_day_matches(day)
    taps = np.array([[v for k, v in ours.items()] for ours, _, _ in day])
    assert (np.ptp(taps, axis=0) >= 2).all()  # every regulator moved over the day


def test_reverse_and_cogen_regulators_match_opendss(tmp_path):
    """Noon PV reverses the power through reg2a (reversible) and reg3c (cogen mode)."""
    feeder = _variant(tmp_path, "reverse", (
        "regcontrol.creg2a.reversible=yes revvreg=121 revband=2 revR=0.2 revX=0.2 "
        "revthreshold=20 revdelay=30\n"
        "regcontrol.creg3c.cogen=yes revvreg=118 revband=2 revthreshold=20 revdelay=30\n"))
    day, modes = _run_day(feeder)
    _assert_day_matches(day)
    assert any(m["creg2a"][0] for m in modes) and not modes[-1]["creg2a"][0]
    assert any(m["creg3c"][1] for m in modes) and not modes[-1]["creg3c"][1]


def test_other_regulator_settings_match_opendss(tmp_path):
    """Highest/lowest phase, Beckwith LDC, a voltage limit, inverse time, a tap limit per
    action, the tap on the other winding, an unequal delay."""
    feeder = _variant(tmp_path, "settings", (
        "regcontrol.creg1a.ptphase=max ldc_z=4 R=0 X=0 vlimit=126 inversetime=yes "
        "maxtapchange=2\n"
        "regcontrol.creg4a.tapwinding=1\n"
        "regcontrol.creg3a.ptphase=min delay=45\n"))
    day, _ = _run_day(feeder)
    _assert_day_matches(day)
    for name in ("creg1a", "creg4a", "creg3a"):
        assert len({ours[name] for ours, _, _ in day}) >= 3, name


def test_reverse_neutral_matches_opendss(tmp_path):
    feeder = _variant(tmp_path, "neutral", (
        "regcontrol.creg2a.reversible=yes revneutral=yes revthreshold=20 revdelay=30\n"))
    day, _ = _run_day(feeder)
    _assert_day_matches(day)
    reg2a = [ours["creg2a"] for ours, _, _ in day]
    assert 0 in reg2a[10:15] and any(reg2a)  # at the neutral tap around noon only


def test_capacitor_controls_match_opendss(tmp_path):
    """One CapControl of each kind on IEEE 123's capacitors (which ship without any)."""
    feeder = _variant(tmp_path, "caps", (
        "new capcontrol.cc83 capacitor=c83 element=line.l84 terminal=1 type=voltage "
        "ptratio=20 on=123.3 off=125.8 delay=30 delayoff=45\n"
        "new capcontrol.cc88 capacitor=c88a element=line.l86 terminal=1 type=kvar "
        "on=30 off=-28 delay=60 delayoff=60 voltoverride=yes vmin=115 vmax=126.5 ptratio=20\n"
        "new capcontrol.cc90 capacitor=c90b element=line.l86 terminal=1 type=current "
        "ctratio=1 ctphase=2 on=45 off=30 delay=20 delayoff=20\n"
        "new capcontrol.cc92 capacitor=c92c element=line.l86 terminal=1 type=pf "
        "on=0.995 off=-0.99 pctminkvar=60 delay=40 delayoff=40\n"))
    day, _ = _run_day(feeder)
    _assert_day_matches(day)
    for name in ("cc83", "cc88", "cc90", "cc92"):
        states = {ours[name] for ours, _, _ in day}
        assert states == {0, 1}, f"{name} never switched: {states}"


def test_multi_step_capacitor_matches_opendss(tmp_path):
    """A three-step bank switches one step per action."""
    feeder = _variant(tmp_path, "steps", (
        "capacitor.c83.numsteps=3\ncapacitor.c83.kvar=[200 200 200]\n"
        "new capcontrol.cc83 capacitor=c83 element=line.l84 terminal=1 type=voltage "
        "ptratio=20 on=123.5 off=125.5 delay=30 delayoff=45\n"))
    day, _ = _run_day(feeder)
    _assert_day_matches(day)
    assert {ours["cc83"] for ours, _, _ in day} == {1, 2}


def test_time_capacitor_control_matches_opendss(tmp_path):
    feeder = _variant(tmp_path, "timecap", (
        "new capcontrol.cc83 capacitor=c83 type=time on=7.5 off=21.5 delay=10 delayoff=10\n"))
    day, _ = _run_day(feeder)
    _assert_day_matches(day)
    assert [ours["cc83"] for ours, _, _ in day] == [0] * 7 + [1] * 14 + [0] * 3


@pytest.mark.slow
def test_ieee8500_regulators_and_kvar_capacitors_match_opendss(feeder_cache):
    """Twelve regulators and nine kvar-controlled banks with voltage override, over a few
    hours from light to heavy load (each new tap state costs a power-flow build here)."""
    feeder = feeder_cache("ieee8500")
    controls = Controls(feeder)
    ref = _daily_reference(feeder, ())
    rng = np.random.default_rng(1)
    for hour, level in enumerate([0.3, 0.8, 1.2, 0.6]):
        scale = level * rng.uniform(0.9, 1.1, len(feeder.loads))
        step = controls.step((hour + 1) * 3600.0, load_scale=scale[None])
        ref.set_case(scale)
        ref.ctx.Solution.Solve()
        assert ref.ctx.Solution.ControlIterations() == step.iterations
        assert controls.positions() == _opendss_positions(ref.ctx)
        v_ref = np.asarray(ref.ctx.Circuit.YNodeVArray()).view(complex)[ref._node_order()]
        v = step.result.voltages[0].numpy()
        assert np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)) <= TOL_PU


def test_initial_state_is_the_frozen_feeder(feeder_cache):
    feeder = feeder_cache("ieee123")
    controls = Controls(feeder)
    assert controls.powerflow.feeder is feeder
    # built again, the frozen state is the feeder's: the no-load voltages come back from
    # the sources' Norton currents alone
    pf, _ = controls._build_state()
    assert abs(pf.feeder.y - feeder.y).max() <= 1e-9 * abs(feeder.y).max()
    # two factorisations of the same Y agree to about cond(Y) x eps, not to the last bit
    # (1.2e-9 relative on IEEE 123 on some CPUs): 1e-8 p.u. of the 2.4 kV base
    assert np.abs(pf.feeder.v_noload - feeder.v_noload).max() <= 1e-8 * 2400


def test_state_round_trips(feeder_cache):
    feeder = feeder_cache("ieee123")
    controls = Controls(feeder)
    controls.step(3600.0, load_scale=0.3)
    saved, positions = controls.state_dict(), controls.positions()
    fresh = Controls(feeder)
    fresh.load_state_dict(saved)
    assert fresh.positions() == positions


def test_unsupported_control_is_named(tmp_path):
    feeder = _variant(tmp_path, "remote", "regcontrol.creg2a.bus=14\n")
    with pytest.raises(FeederError, match="creg2a.*regulated bus"):
        Controls(feeder)
