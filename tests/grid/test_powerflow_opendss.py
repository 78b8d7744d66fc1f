"""The batched Z-bus power flow against OpenDSS on the same cases and load models.

Acceptance: max node-voltage difference <= 1e-6 p.u. at base load and on 50 random load
scenarios per feeder (each load scaled independently; on IEEE 13 that drives nodes below
0.95 p.u., where OpenDSS's loads leave their nominal model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grid import PowerFlow, load_feeder
from grid.reference import OpenDSSReference

FEEDERS = ["ieee13", "ieee123", "eulv"]
TOL_PU = 1e-6


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


@pytest.mark.parametrize("name", FEEDERS)
def test_base_case_matches_opendss(feeder_cache, name):
    feeder = feeder_cache(name)
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


@pytest.mark.parametrize("name", FEEDERS)
def test_random_load_scenarios_match_opendss(feeder_cache, name):
    feeder = feeder_cache(name)
    rng = np.random.default_rng(2026)
    scale = rng.uniform(0.5, 1.5, (50, len(feeder.loads)))
    result = PowerFlow(feeder).solve(load_scale=scale)
    assert bool(result.converged.all())
    ref = OpenDSSReference(feeder)
    worst = 0.0
    for k in range(len(scale)):
        v_ref, ok = ref.solve_case(scale[k])
        assert ok
        worst = max(worst, _error_pu(feeder, result.voltages[k].numpy(), v_ref))
    assert worst <= TOL_PU


def test_low_voltage_load_regions_are_exercised_and_match(feeder_cache):
    """IEEE 13 at 1.6x load: loads below vminpu follow OpenDSS's interpolated model."""
    feeder = feeder_cache("ieee13")
    result = PowerFlow(feeder).solve(load_scale=1.6)
    assert bool(result.undervoltage.any())
    v_ref, ok = OpenDSSReference(feeder).solve_case(1.6)
    assert ok and _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU


@pytest.mark.parametrize("name", FEEDERS)
def test_injections_powers_and_losses_match_opendss(feeder_cache, name):
    feeder = feeder_cache(name)
    # one wye connection per load phase of the first loads, plus a phase-to-phase one
    conns = [feeder.nodes[ld.nodes[0]] for ld in feeder.loads[:6]]
    three_phase = [b for b in feeder.buses if len(feeder.bus_phases(b)) == 3]
    conns.append(f"{three_phase[-1]}.1.2")
    rng = np.random.default_rng(7)
    size = 0.05 * sum(ld.kw for ld in feeder.loads) / len(feeder.loads)
    p = rng.uniform(-3, 3, (6, len(conns))) * size
    q = rng.uniform(-1, 1, (6, len(conns))) * size
    scale = rng.uniform(0.7, 1.3, (6, len(feeder.loads)))
    result = PowerFlow(feeder, conns).solve(p, q, load_scale=scale)
    ref = OpenDSSReference(feeder, conns)
    for k in range(len(p)):
        v_ref, ok = ref.solve_case(scale[k], p[k], q[k])
        assert ok
        assert _error_pu(feeder, result.voltages[k].numpy(), v_ref) <= TOL_PU
        s_sub, losses, caps = ref.powers()
        ours_sub = complex(result.substation_power[k])
        assert abs(ours_sub - s_sub) <= 1e-6 * abs(s_sub) + 1e-6
        # our losses include the capacitors' reactive output, OpenDSS reports it apart
        assert abs(complex(result.losses[k]) - (losses + caps)) <= 1e-6 * abs(s_sub) + 1e-6
        # energy balance: sources + injections = loads + losses
        balance = (result.substation_power[k] + result.injection_power[k]
                   - result.load_power[k] - result.losses[k])
        assert abs(complex(balance)) <= 1e-9 * abs(s_sub)
        conn_v = result.connection_voltages[k].numpy()
        first = feeder.node_index(conns[0])
        assert abs(conn_v[0] - v_ref[first]) / (feeder.node_base_kv[first] * 1e3) <= TOL_PU


def test_line_currents_match_opendss(feeder_cache):
    feeder = feeder_cache("ieee123")
    result = PowerFlow(feeder).solve(load_scale=1.2)
    ref = OpenDSSReference(feeder)
    ref.solve_case(1.2)
    ctx = ref.ctx
    worst = 0.0
    for li, line in enumerate(feeder.lines):
        ctx.Circuit.SetActiveElement(f"Line.{line.name}")
        amps = np.asarray(ctx.CktElement.Currents()).view(complex)[: line.phases]
        ours = result.line_currents[0, li, : line.phases].numpy()
        worst = max(worst, float(np.max(np.abs(ours - amps))) / line.norm_amps)
    assert worst <= 1e-6
    loading = result.line_loading[0].numpy()
    assert np.isfinite(loading).all() and (loading > 0).any()


def test_zip_loads_match_opendss(tmp_path):
    """Model 8 (ZIP) on IEEE 13, loaded until voltages reach the 0.93 p.u. cutoff where
    OpenDSS fades loads out along a steep tanh. Where OpenDSS converges the answers agree;
    where it does not, ours must still satisfy Kirchhoff's current law at every node."""
    from grid.feeder import FEEDER_DIR

    master = tmp_path / "zip13.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
        "batchedit load..* model=8 zipv=[0.3 0.3 0.4 0.5 0.2 0.3 0.93]\n"
    )
    feeder = load_feeder(master)
    assert {ld.model for ld in feeder.loads} == {8}
    scale = np.random.default_rng(3).uniform(0.8, 1.7, (10, len(feeder.loads)))
    pf = PowerFlow(feeder)
    result = pf.solve(load_scale=scale)
    assert bool(result.converged.all())
    ref = OpenDSSReference(feeder)
    matched = 0
    for k in range(len(scale)):
        v_ref, ok = ref.solve_case(scale[k])
        if ok:
            assert _error_pu(feeder, result.voltages[k].numpy(), v_ref) <= TOL_PU
            matched += 1
    assert matched >= 4
    # Kirchhoff: Y V = source Norton currents - load currents, from the node voltages alone.
    v = result.voltages.numpy()
    u = torch.as_tensor(np.stack([v[:, a] - (v[:, b] if b >= 0 else 0)
                                  for a, b in _port_pairs(feeder)], 1))
    r = u.abs()
    sr, si, _, _ = pf.load_model.power(r)
    scale_t = torch.as_tensor(scale)[:, pf.t_load]
    c = (torch.complex(sr, si) * scale_t).conj() / u.conj()
    injected = np.zeros_like(v)
    for t, (a, b) in enumerate(_port_pairs(feeder)):
        injected[:, a] -= c[:, t].numpy()
        if b >= 0:
            injected[:, b] += c[:, t].numpy()
    src = feeder.source_nodes
    injected[:, src] += (feeder.y @ feeder.v_noload)[src]
    mismatch = np.abs((feeder.y @ v.T).T - injected)
    assert mismatch.max() <= 1e-6 * np.abs(injected[:, src]).max()


def _port_pairs(feeder):
    return [(a, b) for ld in feeder.loads for a, b, _ in ld.branches()]


def test_batched_equals_one_by_one(feeder_cache):
    feeder = feeder_cache("ieee123")
    pf = PowerFlow(feeder)
    scale = torch.as_tensor(np.random.default_rng(0).uniform(0.5, 1.5, (8, len(feeder.loads))))
    batched = pf.solve(load_scale=scale).voltages
    single = torch.cat([pf.solve(load_scale=scale[k: k + 1]).voltages for k in range(8)])
    assert torch.allclose(batched, single, rtol=0, atol=1e-9 * 2400)


def test_warm_start_converges_faster_to_the_same_answer(feeder_cache):
    feeder = feeder_cache("ieee123")
    pf = PowerFlow(feeder)
    scale = np.random.default_rng(1).uniform(0.8, 1.2, (16, len(feeder.loads)))
    cold = pf.solve(load_scale=scale)
    warm = pf.solve(load_scale=scale * 1.01, initial=cold)
    again = pf.solve(load_scale=scale * 1.01)
    assert warm.iterations.float().mean() < again.iterations.float().mean()
    assert torch.allclose(warm.voltages, again.voltages, rtol=0, atol=1e-6 * 2400)


@pytest.mark.slow
def test_ieee8500_solves_at_the_opendss_operating_point(feeder_cache):
    feeder = feeder_cache("ieee8500")
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU
    s_sub = complex(result.substation_power[0])
    assert 10_000 < s_sub.real < 13_000  # 10.8 MW of load plus losses


def test_loads_sharing_a_node_pair_match_opendss(tmp_path):
    """Two loads of different models on one node pair share a port (the gather path)."""
    from grid.feeder import FEEDER_DIR

    master = tmp_path / "shared13.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
        "new load.extra bus1=675.1 phases=1 conn=wye kv=2.4 kw=150 kvar=40 model=2\n"
        "new load.extra2 bus1=611.3 phases=1 conn=wye kv=2.4 kw=60 kvar=10 model=5\n"
    )
    feeder = load_feeder(master)
    pf = PowerFlow(feeder, ["675.1", "633.2"])
    assert not pf.terms_first
    scale = np.random.default_rng(4).uniform(0.6, 1.5, (5, len(feeder.loads)))
    p = np.random.default_rng(5).uniform(-100, 100, (5, 2))
    result = pf.solve(p, load_scale=scale)
    ref = OpenDSSReference(feeder, ["675.1", "633.2"])
    for k in range(5):
        v_ref, ok = ref.solve_case(scale[k], p[k])
        assert ok and _error_pu(feeder, result.voltages[k].numpy(), v_ref) <= TOL_PU


def test_float32_coarse_steps_do_not_change_the_answer(feeder_cache):
    feeder = feeder_cache("ieee123")
    scale = np.random.default_rng(6).uniform(0.5, 1.5, (32, len(feeder.loads)))
    mixed = PowerFlow(feeder, mixed=True).solve(load_scale=scale).voltages
    plain = PowerFlow(feeder, mixed=False).solve(load_scale=scale).voltages
    assert torch.allclose(mixed, plain, rtol=0, atol=1e-8 * 2400)


@pytest.mark.slow
def test_compiled_iteration_agrees_with_eager(feeder_cache):
    feeder = feeder_cache("ieee13")
    conns = ["675.1", "692.3.1"]
    rng = np.random.default_rng(8)
    scale = rng.uniform(0.6, 1.6, (16, len(feeder.loads)))
    p = rng.uniform(-80, 80, (16, 2))
    eager = PowerFlow(feeder, conns).solve(p, load_scale=scale)
    compiled = PowerFlow(feeder, conns, compile=True).solve(p, load_scale=scale)
    assert bool(compiled.undervoltage.any())  # the low-voltage regions are exercised
    assert torch.equal(eager.converged, compiled.converged)
    assert torch.allclose(eager.voltages, compiled.voltages, rtol=0, atol=1e-8 * 2400)


def test_controls_set_at_light_load_match_opendss(feeder_cache):
    """Regulators tapped for a tenth of IEEE 123's design load boost far less, and the power
    flow with those taps is still OpenDSS's answer, at the light load and at the design load."""
    full, light = feeder_cache("ieee123"), load_feeder("ieee123", controls_load_scale=0.1)
    peak = lambda f: np.nanmax(np.abs(f.v_noload) / (f.node_base_kv * 1e3))  # noqa: E731
    assert peak(full) > 1.1 and peak(light) < 1.05
    scale = np.array([0.1, 1.0])
    result = PowerFlow(light).solve(load_scale=scale[:, None] * np.ones(len(light.loads)))
    assert _error_pu(light, result.voltages[1].numpy(), light.v_solved) <= TOL_PU
    ref = OpenDSSReference(light)
    for k, s in enumerate(scale):
        v_ref, ok = ref.solve_case(s)
        assert ok and _error_pu(light, result.voltages[k].numpy(), v_ref) <= TOL_PU
