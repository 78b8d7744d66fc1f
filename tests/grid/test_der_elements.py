"""Generators, PV systems and storage elements of a DSS file are fixed injections of the
power flow (loads of negative power) that reproduce OpenDSS's snapshot solution, inside
their vminpu-vmaxpu band and outside it.

The feeder is IEEE 13 with the elements of tests/grid/data/ieee13_der.dss: PV systems at a
power factor, clipped by their kVA rating, below cut-in, absorbing vars and on a daily
loadshape; storage discharging, charging and idling; a constant-PQ and a constant-impedance
generator. Some sit outside their voltage band at nominal load, others only at other loads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from grid import FeederError, PowerFlow, load_feeder
from grid.feeder import compile_circuit, freeze_controls, new_dss_engine

DER = Path(__file__).parent / "data" / "ieee13_der.dss"
IEEE13_LOADS = 15
TOL_PU = 1e-6


@pytest.fixture(scope="module")
def feeder():
    return load_feeder(DER)


def _generating(feeder):
    return {ld.name: ld for ld in feeder.loads if ld.kind != "load"}


def _opendss(feeder, loadmult: float) -> tuple[np.ndarray, bool]:
    """OpenDSS's own solution of the feeder, controls frozen as in `load_feeder`, with its
    loads (not its generation) scaled by `loadmult`."""
    ctx = new_dss_engine()
    compile_circuit(ctx, feeder.path, feeder.commands)
    freeze_controls(ctx, feeder.controls_load_scale)
    ctx.Text.Command(f"set loadmult={loadmult} tolerance=1e-12 maxiterations=1000")
    ctx.Solution.SolveNoControl()
    names = [n.lower() for n in ctx.Circuit.YNodeOrder()]
    volts = dict(zip(names, np.asarray(ctx.Circuit.YNodeVArray()).view(complex)))
    return np.array([volts[n] for n in feeder.nodes]), bool(ctx.Solution.Converged())


def _outside_band(feeder, v) -> set[str]:
    """Generating elements with a branch voltage outside their vminpu-vmaxpu band."""
    out = set()
    for name, ld in _generating(feeder).items():
        for a, b, vn in ld.branches():
            x = abs((v[a] if a >= 0 else 0) - (v[b] if b >= 0 else 0)) / vn
            if x <= ld.vminpu or x > ld.vmaxpu:
                out.add(name)
    return out


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


def test_elements_follow_their_opendss_parameters(feeder):
    """Snapshot outputs as the OpenDSS documentation defines them (kW, kvar consumed)."""
    assert [ld.kind for ld in feeder.loads[:IEEE13_LOADS]] == ["load"] * IEEE13_LOADS
    gen = _generating(feeder)
    assert len(feeder.loads) == IEEE13_LOADS + len(gen) == IEEE13_LOADS + 10
    tan = lambda pf: math.tan(math.acos(pf))  # noqa: E731
    expected = {
        "pvsystem.roof": (-280 * 0.9, -280 * 0.9 * tan(0.95)),  # Pmpp x irradiance, pf
        "pvsystem.clipped": (-50.0, 0.0),  # 60 kW of panel through a 50 kVA inverter
        "pvsystem.dim": (0.0, 0.0),  # 2.25 kW is below the 10 % cut-in
        "pvsystem.absorbing": (-45 * 0.8, 10.0),
        "pvsystem.shaped": (-20.0, 0.0),  # a snapshot does not follow the loadshape
        "storage.discharging": (-100.0, None),  # 50 % of 200 kW
        "storage.charging": (20.0, 0.0),  # 40 % of 50 kW
        "generator.diesel": (-300.0, -300 * tan(0.92)),
        "generator.fixedz": (-40.0, -10.0),
    }
    for name, (kw, kvar) in expected.items():
        assert gen[name].kw == pytest.approx(kw, abs=1e-9), name
        if kvar is not None:
            assert gen[name].kvar == pytest.approx(kvar, abs=1e-9), name
    assert 0 < gen["storage.idle"].kw <= 1.0 + 1e-9  # idling losses, 1 % of 100 kW
    assert gen["generator.fixedz"].model == 2
    assert {ld.model for n, ld in gen.items() if n != "generator.fixedz"} == {1}
    assert gen["pvsystem.shaped"].daily == "solar"
    shape = feeder.daily_shapes["solar"]  # npts=3 interval=8 mult=[0 1 0.2]
    assert shape.hours.tolist() == [0.0, 8.0, 16.0] and shape.mult.tolist() == [0.0, 1.0, 0.2]
    assert shape.interval == 8.0 and not shape.qmult and not shape.actual
    assert all(ld.vlowpu == 0.0 for ld in gen.values())
    summary = feeder.summary()
    assert summary["loads"] == IEEE13_LOADS and summary["generating_elements"] == 10
    assert summary["total_load_kw"] == pytest.approx(3466.0)


def test_outputs_equal_opendss_present_output(feeder):
    """The output read back from the solved snapshot is OpenDSS's own present kW and kvar."""
    ctx = new_dss_engine()
    compile_circuit(ctx, feeder.path, feeder.commands)
    ctx.Solution.Solve()
    gen = _generating(feeder)
    for api, cls in ((ctx.PVsystems, "pvsystem"), (ctx.Generators, "generator")):
        for name in api.AllNames():
            api.Name(name)
            ld = gen[f"{cls}.{name}"]
            assert -ld.kw == pytest.approx(api.kW(), rel=1e-9, abs=1e-9)
            assert -ld.kvar == pytest.approx(api.kvar(), rel=1e-9, abs=1e-9)


def test_admittance_matrix_leaves_generation_out(feeder):
    injected = np.abs(feeder.y @ feeder.v_noload)
    others = np.setdiff1d(np.arange(len(feeder.nodes)), feeder.source_nodes)
    assert injected[others].max() < 1e-6 * injected[feeder.source_nodes].max()


def test_snapshot_matches_opendss(feeder):
    assert {"generator.diesel", "pvsystem.absorbing"} <= _outside_band(feeder, feeder.v_solved)
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


@pytest.mark.parametrize("loadmult", [0.5, 1.4])
def test_other_loadings_match_opendss(feeder, loadmult):
    """Loads scaled, generation as it was: the elements move through their voltage regions
    (the absorbing PV back into its band at light load, the shaped PV below vminpu at heavy
    load) and the voltages still match OpenDSS."""
    v_ref, ok = _opendss(feeder, loadmult)
    assert ok
    outside = _outside_band(feeder, v_ref)
    assert ("pvsystem.absorbing" in outside) is (loadmult > 1)
    assert ("pvsystem.shaped" in outside) is (loadmult > 1)
    scale = np.array([[loadmult if ld.kind == "load" else 1.0 for ld in feeder.loads]])
    result = PowerFlow(feeder).solve(load_scale=scale)
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU


def test_disabled_elements_are_left_out(tmp_path):
    path = tmp_path / "some_off.dss"
    path.write_text(f'redirect "{DER}"\npvsystem.roof.enabled=no\ngenerator.diesel.enabled=no\n')
    feeder = load_feeder(path)
    assert {"pvsystem.roof", "generator.diesel"}.isdisjoint(_generating(feeder))
    assert len(_generating(feeder)) == 8
    result = PowerFlow(feeder).solve()
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


@pytest.mark.parametrize(
    ("element", "pattern"),
    [
        ("new generator.pv bus1=675 phases=3 kv=4.16 kw=100 model=3", "Generator.pv uses model=3"),
        ("new generator.ll bus1=675.1.2 phases=1 conn=delta kv=4.16 kw=50",
         "Generator.ll: 1-phase delta"),
        ("new pvsystem.bal bus1=675 phases=3 kv=4.16 kva=50 pmpp=40 balanced=yes",
         "PVSystem.bal: Balanced=yes"),
    ],
)
def test_unsupported_generating_elements_are_named(tmp_path, element, pattern):
    path = tmp_path / "bad_der.dss"
    path.write_text(f'redirect "{DER}"\n{element}\n')
    with pytest.raises(FeederError, match=f"bad_der.dss: {pattern}"):
        load_feeder(path)


def test_the_opendss_reference_scales_loads_and_keeps_generation(feeder):
    """grid.reference on a feeder with generation: loads scaled, generating elements left
    at the file's output (the same case as OpenDSS's own loadmult solve above)."""
    from grid.reference import OpenDSSReference

    ref = OpenDSSReference(feeder)
    scale = np.array([1.4 if ld.kind == "load" else 1.0 for ld in feeder.loads])
    v_ref, ok = _opendss(feeder, 1.4)
    v, converged = ref.solve_case(scale)
    assert ok and converged
    assert _error_pu(feeder, v, v_ref) <= TOL_PU
    with pytest.raises(ValueError, match="generating elements"):
        ref.set_case(np.full(len(feeder.loads), 2.0))


def test_households_are_placed_at_loads_not_at_generation(feeder):
    from agents.households.placement import load_branches, place

    names = {name for name, *_ in load_branches(feeder)}
    assert len(names) == IEEE13_LOADS and not names & set(_generating(feeder))
    placed = place(feeder, IEEE13_LOADS, "one_per_load")
    assert set(placed.load) == names


def test_a_scalar_load_scale_scales_loads_and_leaves_generation(feeder):
    """The co-simulation's `feeder_load_scale` is a scalar: it must scale the feeder's loads
    proper, not the PV, storage and generators of its file (compared against OpenDSS with
    the loads at 1.4x, and with no loads at all at 0)."""
    pf = PowerFlow(feeder)
    v_ref, _ = _opendss(feeder, 1.4)
    result = pf.solve(load_scale=1.4)
    assert _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU
    v_ref, ok = _opendss(feeder, 0.0)
    assert ok
    result = pf.solve(load_scale=torch.zeros(2))
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[1].numpy(), v_ref) <= TOL_PU
