"""The compiled CPU path (`grid.single`, numba) against the torch iteration and OpenDSS.

Both iterate the same fixed point from the same start, so on every case they must take the
same number of steps and agree to roundoff; OpenDSS is the independent reference. The cases
cover every load region and model (ZIP drop-out, model 4's power law, models 6 and 7),
caller connections with injections, the sparse path, warm starts that change in place, a
slow case (Anderson mixing) and a case with no solution (handed to Newton)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from grid import PowerFlow, load_feeder
from grid.errors import InjectionError
from grid.feeder import FEEDER_DIR
from grid.reference import OpenDSSReference
from grid.result import PowerFlowResult

TOL_PU = 1e-6

VARIANTS = {
    "default": "",
    "zip": "batchedit load..* model=8 zipv=[0.3 0.3 0.4 0.5 0.2 0.3 0.93]",
    # model 4's power jumps at vminpu and vmaxpu (to constant P outside); with loads near
    # 1.05 p.u. there are two fixed points, one each side, and a warm and a cold start
    # can settle on either (both paths alike), so the band is widened here
    "model4": "batchedit load..* model=4 cvrwatts=0.8 cvrvars=3 vminpu=0.85 vmaxpu=1.2",
    "model6-regions": "batchedit load..* model=6 vminpu=1.0 vlowpu=0.97 vmaxpu=1.02",
    "model7": "batchedit load..* model=7",
}


def _ieee13(tmp_path, name: str):
    master = tmp_path / f"{name}.dss"
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
                      f"{VARIANTS[name]}\n")
    return load_feeder(master)


def _pair(feeder, connections=(), **kwargs) -> tuple[PowerFlow, PowerFlow]:
    """The same power flow with the batch-1 path on and off."""
    return (PowerFlow(feeder, connections, **kwargs),
            PowerFlow(feeder, connections, compiled_cpu=False, **kwargs))


def _same(a, b, rtol: float = 1e-11, steps: int = 0) -> None:
    """Two results of one scenario from the two paths: the same steps (within `steps`),
    the same voltages (within rtol of the largest)."""
    assert bool(a.converged[0]) and bool(b.converged[0])
    assert abs(int(a.iterations[0]) - int(b.iterations[0])) <= steps
    base = float(a.voltages.abs().max())
    assert float((a.voltages - b.voltages).abs().max()) <= rtol * base
    assert float((a.u - b.u).abs().max()) <= rtol * base


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_time_series_matches_torch_and_opendss(tmp_path, variant):
    """Twelve warm-started steps of random load on IEEE 13 with every load model: the same
    iterations and voltages as the torch path, and OpenDSS's voltages to 1e-6 p.u."""
    feeder = _ieee13(tmp_path, variant)
    fast, slow = _pair(feeder)
    # within +-20%: model 6's reactive power steps at vminpu, and with vminpu moved to
    # 1.0 a heavier case has no fixed point for either path (nor for OpenDSS at 1.1)
    scale = np.random.default_rng(5).uniform(0.8, 1.2, (12, len(feeder.loads)))
    ref = OpenDSSReference(feeder, tolerance=1e-12)
    prev_fast = prev_slow = None
    regions_seen = set()
    for k in range(len(scale)):
        prev_fast = fast.solve(load_scale=scale[k: k + 1], initial=prev_fast)
        prev_slow = slow.solve(load_scale=scale[k: k + 1], initial=prev_slow)
        _same(prev_fast, prev_slow)
        v_ref, ok = ref.solve_case(scale[k])
        assert ok
        assert _error_pu(feeder, prev_fast.voltages[0].numpy(), v_ref) <= TOL_PU
        lm = fast.load_model
        r = torch.sqrt(fast._term_voltages(prev_fast.u)[0] ** 2
                       + fast._term_voltages(prev_fast.u)[1] ** 2)[0]
        regions_seen |= {"high" if x > hi else "low" if x <= lo else "mid" if x <= mn
                         else "normal" for x, lo, mn, hi in zip(r, lm.vlow, lm.vmin, lm.vmax)}
    if variant == "model6-regions":  # the moved limits put loads in every region
        assert regions_seen == {"low", "mid", "normal", "high"}


def test_injections_at_connections_and_cold_starts(feeder_cache):
    """IEEE 123 with households at six connections (one delta), injecting and drawing:
    cold and warm starts by Z-bus steps (chord=False) take the torch path's steps to its
    answer; by the default chord steps through the dense Zb' they reach the same answer
    in fewer steps; both agree with OpenDSS."""
    feeder = feeder_cache("ieee123")
    conns = [feeder.nodes[ld.nodes[0]] for ld in feeder.loads[:5]] + ["67.1.2"]
    fast, slow = _pair(feeder, conns, chord=False)
    chord = PowerFlow(feeder, conns)
    rng = np.random.default_rng(8)
    p, q = rng.uniform(-40, 40, (3, len(conns))), rng.uniform(-15, 15, (3, len(conns)))
    ref = OpenDSSReference(feeder, conns, tolerance=1e-12)
    prev = prev_chord = None
    for k in range(3):
        # from no load the torch path takes its first steps in float32: another path to
        # the same point, within the tolerance (1e-9 of a step)
        cold = fast.solve(p[k], q[k], load_scale=0.9)
        _same(cold, slow.solve(p[k], q[k], load_scale=0.9), rtol=1e-8, steps=1)
        _same(chord.solve(p[k], q[k], load_scale=0.9), cold, rtol=1e-8, steps=99)
        warm = fast.solve(p[k], q[k], load_scale=0.9, initial=prev)
        _same(warm, slow.solve(p[k], q[k], load_scale=0.9, initial=prev))
        prev_chord = chord.solve(p[k], q[k], load_scale=0.9, initial=prev_chord)
        _same(prev_chord, warm, rtol=1e-8, steps=99)
        assert int(prev_chord.iterations[0]) < int(warm.iterations[0])
        v_ref, ok = ref.solve_case(0.9, p[k], q[k])
        for result in (warm, prev_chord):
            assert ok and _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU
            assert float(result.injection_power[0].real) == pytest.approx(p[k].sum())
        prev = warm


def test_the_sparse_path_matches_the_dense_one(feeder_cache):
    """Forced onto the sparse LU, the batch-1 path gives the dense answer."""
    feeder = feeder_cache("ieee123")
    scale = np.random.default_rng(2).uniform(0.5, 1.5, (4, len(feeder.loads)))
    sparse = PowerFlow(feeder, sparse=True)
    dense = PowerFlow(feeder, compiled_cpu=False)
    prev_s = prev_d = None
    for k in range(len(scale)):
        prev_s = sparse.solve(load_scale=scale[k: k + 1], initial=prev_s)
        prev_d = dense.solve(load_scale=scale[k: k + 1], initial=prev_d)
        _same(prev_s, prev_d, rtol=1e-9)


def test_a_warm_start_changed_in_place_is_read_again(feeder_cache):
    """The solver keeps its last answer to skip converting it back; a start that was
    changed in place since must be read afresh."""
    feeder = feeder_cache("ieee123")
    fast, slow = _pair(feeder, chord=False)  # (Z-bus steps: the torch path's steps)
    first = fast.solve(load_scale=1.0)
    first.u.mul_(0.97)  # a different start: the iteration takes another path
    again = fast.solve(load_scale=1.1, initial=first)
    _same(again, slow.solve(load_scale=1.1, initial=first))


def test_slow_cases_mix_and_impossible_ones_go_to_newton(tmp_path):
    """Constant impedance at 3x load converges slowly: Anderson mixing takes over after
    `anderson_start` steps, on the same steps as the torch path. Past the nose there is
    no solution: the scenario leaves the compiled loop unconverged, Newton decides, and
    says so."""
    master = tmp_path / "z13.dss"
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
                      "batchedit load..* model=2\n")
    fast, slow = _pair(load_feeder(master))
    a, b = fast.solve(load_scale=3.0), slow.solve(load_scale=3.0)
    assert int(a.iterations[0]) > fast.anderson_start + 2  # it did mix
    _same(a, b, rtol=1e-10)
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n")
    fast, slow = _pair(load_feeder(master))
    a, b = fast.solve(load_scale=30.0), slow.solve(load_scale=30.0)
    assert not bool(a.converged[0]) and not bool(b.converged[0])
    assert int(a.iterations[0]) == int(b.iterations[0])
    assert bool(torch.isnan(a.voltages).all())


def test_gradients_still_flow_at_batch_one(feeder_cache):
    """The batch-1 path only iterates: the implicit gradient is unchanged."""
    feeder = feeder_cache("ieee123")
    fast, slow = _pair(feeder)
    grads = []
    for pf in (fast, slow):
        scale = torch.full((1, len(feeder.loads)), 1.1, dtype=torch.float64,
                           requires_grad=True)
        pf.solve(load_scale=scale).vmag_pu.min().backward()
        grads.append(scale.grad)
    assert float(grads[0].abs().max()) > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)


def test_a_sparse_batch_runs_row_by_row_as_the_dense_batch(feeder_cache):
    """On the sparse path a batch goes through the compiled loop row by row, warm start
    included; its answer is the dense torch batch's, row for row."""
    feeder = feeder_cache("ieee123")
    scale = np.random.default_rng(4).uniform(0.5, 1.5, (2, 3, len(feeder.loads)))
    sparse = PowerFlow(feeder, sparse=True, chord=False)  # (chord steps take fewer)
    dense = PowerFlow(feeder, compiled_cpu=False)
    a, b = sparse.solve(load_scale=scale[0]), dense.solve(load_scale=scale[0])
    assert a.batch == 3 and bool(a.converged.all())
    assert float((a.voltages - b.voltages).abs().max()) <= 1e-8 * float(b.voltages.abs().max())
    a2 = sparse.solve(load_scale=scale[1], initial=a)
    b2 = dense.solve(load_scale=scale[1], initial=b)
    assert torch.equal(a2.iterations, b2.iterations)
    assert float((a2.voltages - b2.voltages).abs().max()) <= 1e-9 * float(b2.voltages.abs().max())


def _lu_only(pf: PowerFlow) -> None:
    """Make pf's compiled loop take Y's LU for every product with Zb and X, as on feeders
    where the dense ones cost more (IEEE 13 is small enough to use them)."""
    solver = pf._cpu()
    empty = np.zeros((0, 0))
    solver.net = solver.net._replace(zbt_re=empty, zbt_im=empty, xt_re=empty, xt_im=empty)
    solver._fixed = (solver.loads, solver.net, *solver._fixed[2:])


@pytest.mark.parametrize("products", ["dense", "lu"])
def test_a_batch_steps_in_lockstep_each_scenario_as_alone(feeder_cache, monkeypatch,
                                                          products):
    """A batch on the CPU runs in chunks of scenarios in lockstep (here chunks of 2, so
    that several run on the threads at once), each scenario stopping on its own: an
    ordinary one, a slow one that mixes, one past the nose (to Newton, unconverged) and
    one at no load, in a mixed order. Each agrees with the torch batch (the same flags
    and voltages) and takes the steps it takes alone, on either path, with the products
    by Zb through the dense Zb or through Y's LU. (The torch batch counts steps
    differently: its float32 first steps run until every row is close.)"""
    from grid.single import CpuSolver

    monkeypatch.setattr(CpuSolver, "CHUNK", 2)
    fast, slow = _pair(feeder_cache("ieee13"))
    if products == "lu":
        _lu_only(fast)
    scale = torch.tensor([1.0, 3.0, 30.0, 0.0, 1.5], dtype=torch.float64)
    a, b = fast.solve(load_scale=scale), slow.solve(load_scale=scale)
    assert a.converged.tolist() == b.converged.tolist() == [True, True, False, True, True]
    assert int(a.iterations[1]) > fast.anderson_start + 2  # it did mix
    assert int(a.iterations[2]) == int(b.iterations[2])  # Newton's steps counted alike
    ok = a.converged
    base = float(b.voltages[ok].abs().max())
    assert float((a.voltages[ok] - b.voltages[ok]).abs().max()) <= 1e-9 * base
    assert bool(torch.isnan(a.voltages[~ok]).all())
    for row in (0, 1, 3, 4):
        alone = fast.solve(load_scale=float(scale[row]))
        assert int(alone.iterations[0]) == int(a.iterations[row])
        if row != 3:  # (at no load torch's float32 first step leaves a roundoff to fix)
            torch_alone = slow.solve(load_scale=float(scale[row]))
            assert int(torch_alone.iterations[0]) == int(a.iterations[row])
        assert float((alone.voltages[0] - a.voltages[row]).abs().max()) <= 1e-9 * base


def test_the_compiled_adjoint_gives_torchs_gradients(feeder_cache, monkeypatch):
    """The implicit gradient's adjoint iteration runs compiled too (Zbᴴ through Y's LU,
    transposed; chunks of 2 here, so several run at once). Injections and load scales get
    torch's gradients in a batch of an ordinary row, a slow one, one only Newton solves
    (where the adjoint iteration does not settle and a direct solve takes over), one at
    no load, another ordinary one and one past the nose (unconverged: the flow passes no
    gradient); and at batch 1."""
    from grid.single import CpuSolver

    monkeypatch.setattr(CpuSolver, "CHUNK", 2)
    feeder = feeder_cache("ieee13")
    fast, slow = _pair(feeder, ["675.1", "692.3.1"])
    rng = np.random.default_rng(5)
    p = torch.as_tensor(rng.uniform(-80, 80, (6, 2)))
    p[5] = 0.0
    scale = torch.as_tensor(rng.uniform(0.8, 1.2, (6, len(feeder.loads))))
    scale[5] = 1.0
    scale *= torch.tensor([1.0, 3.0, 30.0, 0.0, 1.5, 30.0], dtype=torch.float64)[:, None]
    answer = fast.solve(p, load_scale=scale)
    assert answer.converged.tolist() == [True] * 5 + [False]
    assert int(answer.iterations[2]) > fast.max_iter  # Newton's
    weights = torch.as_tensor(rng.uniform(0.5, 1.5, len(feeder.nodes)))
    for rows in (slice(None), slice(4, 5)):
        grads = []
        for pf in (fast, slow):
            xs = [t[rows].clone().requires_grad_(True) for t in (p, scale)]
            result = pf.solve(xs[0], load_scale=xs[1])
            loss = (result.vmag_pu.nan_to_num(0) * weights).sum() + result.losses.real.sum()
            grads.append(torch.autograd.grad(loss, xs))
        for a, b in zip(*grads):
            assert float(b.abs().max()) > 0
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()))
            if rows == slice(None):
                assert bool((a[2] != 0).any())


def test_a_scalar_load_scale_is_reused_only_for_the_same_value(feeder_cache):
    """The scale tensor of a scalar load_scale is kept for the next solve of a batch with
    the same value (copies of a co-simulation with a constant feeder scale); another
    value, or another batch size, builds its own."""
    feeder = feeder_cache("ieee123")
    pf, fresh = PowerFlow(feeder, ["48.1"]), PowerFlow(feeder, ["48.1"])
    for value, batch in ((0.9, 2), (0.9, 2), (1.2, 2), (0.9, 3), (0.9, 2), (1, 2)):
        p = torch.zeros(batch, 1, dtype=torch.float64)
        kept = pf.solve(p, load_scale=value)
        assert pf._scalar_scale[:2] == (value, batch)
        assert torch.equal(kept.voltages,
                           PowerFlow(feeder, ["48.1"]).solve(p, load_scale=value).voltages)
    with pytest.raises(Exception, match="negative"):
        fresh.solve(torch.zeros(2, 1, dtype=torch.float64), load_scale=-1.0)


def test_one_scenario_in_numpy_answers_as_the_general_path(feeder_cache):
    """`solve`'s one-scenario path (`PowerFlow._solve_one`, its inputs kept in numpy)
    takes the co-simulation's calls, tensors or arrays, warm-started from a result or its
    port voltages, and answers each bit for bit as the general path does, derived
    quantities included. What it does not take (a list, float32, a row that needs a
    gradient, a warm start from a batch) the general path answers; what is out of range
    the general path refuses, naming it."""
    feeder = feeder_cache("ieee123")
    conns = ["48.1", "65.2.3", "76.3"]
    pf, general = PowerFlow(feeder, conns), PowerFlow(feeder, conns)
    general._solve_one = lambda *args: None
    one, taken = pf._solve_one, []
    pf._solve_one = lambda *args: taken.append(one(*args)) or taken[-1]
    rng = np.random.default_rng(11)
    p, q = rng.uniform(-40, 40, (4, 1, 3)), rng.uniform(-15, 15, (4, 1, 3))
    rows = rng.uniform(0.5, 1.5, (4, 1, len(feeder.loads)))
    taken_cases = [
        dict(load_scale=torch.as_tensor(rows[0])),
        dict(load_scale=rows[1]),
        dict(p_kw=torch.as_tensor(p[0]), q_kvar=torch.as_tensor(q[0]), load_scale=0.8),
        dict(p_kw=p[1], q_kvar=q[1], load_scale=torch.as_tensor(rows[2])),
        dict(p_kw=p[2], q_kvar=q[2], load_scale=1),
        dict(p_kw=p[3], q_kvar=q[3]),
    ]
    batch = general.solve(load_scale=torch.as_tensor(rows[:2, 0]))
    other_cases = [
        dict(load_scale=rows[3].tolist()),
        dict(load_scale=torch.as_tensor(rows[3], dtype=torch.float32)),
        dict(load_scale=torch.as_tensor(rows[3]).requires_grad_(True)),
        dict(p_kw=p[0], q_kvar=q[0], initial=batch),
    ]
    prev_a = prev_b = None
    for k, case in enumerate(taken_cases + other_cases):
        start_a, start_b = (prev_a, prev_b) if k % 2 else (
            prev_a and prev_a.u, prev_b and prev_b.u)  # a result, or its port voltages
        case = {"initial": start_a, **case}
        a = pf.solve(**case)
        b = general.solve(**{**case, "initial": start_b if case["initial"] is start_a
                             else case["initial"]})
        assert (taken[-1] is not None) == (k < len(taken_cases)), case
        for name in ("voltages", "u", "converged", "iterations", "residual", "vmag_pu",
                     "substation_power", "injection_power", "load_power", "losses",
                     "network_losses", "line_loading", "violations",
                     "connection_voltages"):
            assert torch.equal(getattr(a, name).detach(), getattr(b, name).detach()), name
        prev_a, prev_b = a, b
    assert len(taken) == len(taken_cases + other_cases)
    bad = torch.as_tensor(rows[0]).clone()
    bad[0, 5] = np.nan
    with pytest.raises(InjectionError, match=f"'{feeder.loads[5].name}'"):
        pf.solve(load_scale=bad)
    with pytest.raises(InjectionError, match="negative"):
        pf.solve(load_scale=-0.5)
    with pytest.raises(InjectionError, match="q_kvar.*'65.2.3'"):
        pf.solve(p[0], np.array([[0.0, np.inf, 0.0]]))
    assert taken[-3:] == [None] * 3


def test_derived_quantities_of_a_compiled_batch(feeder_cache):
    """Where the compiled loop solved, one compiled pass gives the derived quantities
    (grid.single.derived): line loading against OpenDSS's own line currents, network
    losses against Kirchhoff (the sources' and connections' power less the loads' must be
    what Y absorbs), and every one against torch's formulas on the same answer, for a
    batch of 20 (chunks of scenarios in lockstep) and of 3 (one at a time). Rows at light
    and heavy load, so that the violation counts differ."""
    feeder = feeder_cache("ieee123")
    fast = PowerFlow(feeder, connections=["48.1", "65.2.3"])
    rng = np.random.default_rng(7)
    p, q = rng.uniform(-5.0, 40.0, (20, 2)), rng.uniform(-4.0, 1.0, (20, 2))
    scale = rng.uniform(0.6, 1.2, 20)
    p[1], q[1], scale[1] = 0.0, 0.0, 1.2  # row 1 as OpenDSS's
    a = fast.solve(p, q, load_scale=scale)
    assert a._derived is not None  # the compiled pass, as meant
    ref = OpenDSSReference(feeder)
    ref.solve_case(1.2)
    ctx = ref.ctx
    amps = np.array([line.norm_amps for line in feeder.lines])
    dss = np.empty(len(feeder.lines))
    for li, line in enumerate(feeder.lines):
        ctx.Circuit.SetActiveElement(f"Line.{line.name}")
        currents = np.asarray(ctx.CktElement.Currents()).view(complex)[: line.phases]
        dss[li] = np.abs(currents).max() / amps[li]
    np.testing.assert_allclose(a.line_loading[1].numpy(), dss, rtol=0, atol=1e-6)
    # to the solver's tolerance (1e-9 of the voltages): 2.5e-9 of the substation's power
    kcl = a.substation_power + a.injection_power - a.load_power - a.network_losses
    assert float(kcl.abs().max()) <= 1e-8 * float(a.substation_power.abs().max())
    assert len(set(a.violations.tolist())) > 1
    for answer in (a, fast.solve(p[:3], q[:3], load_scale=scale[:3])):
        # torch's formulas on the very same voltages
        same = PowerFlowResult(fast, answer.u, None, None, answer._s_conn, answer.converged,
                               answer.iterations, answer.residual,
                               currents=answer._port_currents, voltages=answer.voltages)
        assert same._derived is None
        for name in ("vmag_pu", "line_loading", "network_losses", "substation_power",
                     "load_power", "losses", "violations", "connection_voltages"):
            np.testing.assert_allclose(getattr(answer, name).numpy(),
                                       getattr(same, name).numpy(),
                                       rtol=1e-12, atol=1e-9, err_msg=name)


def test_the_chord_factors_give_the_dense_chord_map(feeder_cache):
    """The chord step's products, through the 2x2 block LU of Y + M K0 Mᵀ (reordered,
    pruned to the ports' paths), and for one scenario through the dense Zb' made from
    them, against the dense reference built from torch's Zb: Zb' = (I + Zb K0)⁻¹ Zb in
    real form, by numpy, at every load level factored. Random currents and iterates, so
    the K0 (u0 - u) term is exercised too."""
    from grid.single import CHORD_LEVELS, chord_map

    pf = PowerFlow(feeder_cache("ieee123"))
    solver = pf._cpu()
    assert solver._chord_ready() and tuple(solver.levels) == CHORD_LEVELS
    net, p = solver.net, pf.n_ports
    z = pf.zr.numpy().T  # the real form of Zb, acting on [re; im]
    rng = np.random.default_rng(3)
    b = 5
    c = rng.normal(size=(p, b)) + 1j * rng.normal(size=(p, b))
    u = solver.u0[:, None] * (1 + 0.05 * (rng.normal(size=(p, b)) + 1j * rng.normal(size=(p, b))))
    d = solver.u0[:, None] - u
    n = len(net.ch_l_ptr) - 1  # the factors' positions
    for lv in range(len(solver.levels)):
        k = net.ch_k0[lv]  # [P, (rr, ri, ir, ii)]
        k0 = np.block([[np.diag(k[:, 0]), np.diag(k[:, 1])],
                       [np.diag(k[:, 2]), np.diag(k[:, 3])]])
        zb_chord = np.linalg.solve(np.eye(2 * p) + z @ k0, z)
        out = np.empty_like(c)
        chord_map(net, lv, c, u, solver.u0, out, np.empty((n, 2, b)), False)
        x = c + (k[:, 0, None] * d.real + k[:, 1, None] * d.imag
                 + 1j * (k[:, 2, None] * d.real + k[:, 3, None] * d.imag))
        y = zb_chord @ np.concatenate([x.real, x.imag])
        want = solver.u0[:, None] - (y[:p] + 1j * y[p:])
        assert np.abs(out - want).max() <= 1e-9 * np.abs(want).max()
        for s in range(b):  # one scenario at a time, through the dense Zb'
            one = np.empty((p, 1), dtype=complex)
            chord_map(net, lv, c[:, s:s + 1].copy(), u[:, s:s + 1].copy(), solver.u0, one,
                      np.empty((n, 2, 1)), True)
            assert np.abs(one[:, 0] - want[:, s]).max() <= 1e-9 * np.abs(want).max()


def test_a_chord_batch_agrees_with_the_z_bus_batch_and_opendss(feeder_cache, monkeypatch):
    """Batches of IEEE 123 iterate by chord steps (`grid.single.iterate_chord`), in chunks
    of 4 here, so that rows stop and the running ones are packed: random loads with
    injections at two connections, and three rows the chord steps do not suit, which go
    on by Z-bus steps: 2.5 times the load (the chord stalls and hands over), no load (the
    chord converges, from its nominal start, in more steps than Z-bus steps from no
    load) and 40 times (Newton's, after the fixed point gives up). Against the Z-bus
    steps of the same power flow (chord=False): the same flags and voltages to 1e-9 of
    the largest, in under 0.75 of the steps on the random rows; and against OpenDSS to
    1e-6 p.u. on the rows it can pose."""
    from grid.single import CpuSolver

    monkeypatch.setattr(CpuSolver, "CHUNK", 4)
    feeder = feeder_cache("ieee123")
    conns = ["48.1", "65.2.3"]
    chord, plain = PowerFlow(feeder, conns), PowerFlow(feeder, conns, chord=False)
    rng = np.random.default_rng(11)
    rows = 14
    scale = rng.uniform(0.5, 1.5, (rows, len(feeder.loads)))
    scale[3], scale[7], scale[9] = 2.5, 0.0, 40.0
    p, q = rng.uniform(-5.0, 40.0, (rows, 2)), rng.uniform(-4.0, 1.0, (rows, 2))
    p[:5], q[:5] = 0.0, 0.0  # rows OpenDSS poses as they are
    a, b = chord.solve(p, q, load_scale=scale), plain.solve(p, q, load_scale=scale)
    assert chord._cpu().chord and not plain._cpu().chord
    assert bool(a.converged.all()) and bool(b.converged.all())
    base = float(b.voltages.abs().max())
    assert float((a.voltages - b.voltages).abs().max()) <= 1e-9 * base
    assert int(a.iterations[9]) == int(b.iterations[9]) > plain.max_iter  # Newton's
    assert int(a.iterations[3]) > int(b.iterations[3])  # chord steps, then Z-bus steps
    random_rows = [r for r in range(rows) if r not in (3, 7, 9)]
    steps_chord, steps_plain = (float(x.iterations[random_rows].double().mean())
                                for x in (a, b))
    assert steps_chord < 0.75 * steps_plain
    ref = OpenDSSReference(feeder)
    for row in range(5):
        v_ref = ref.solve_case(scale[row])[0]
        assert _error_pu(feeder, a.voltages[row].numpy(), v_ref) <= TOL_PU


def test_the_chord_adjoint_gives_torchs_gradients(feeder_cache):
    """Where a power flow has the chord's factors its adjoint iteration takes chord steps
    too (`grid.single.adjoint`): gradients of a loss of the voltages with respect to the
    loads' scales and the injections, on IEEE 123 at batch 6 and at batch 1, against
    torch's adjoint (compiled_cpu=False), to 1e-8 of the largest."""
    feeder = feeder_cache("ieee123")
    conns = ["48.1", "65.2.3"]
    chord, plain = PowerFlow(feeder, conns), PowerFlow(feeder, conns, compiled_cpu=False)
    rng = np.random.default_rng(5)
    for rows in (6, 1):
        scale_np = rng.uniform(0.5, 1.5, (rows, len(feeder.loads)))
        p_np = rng.uniform(-5.0, 40.0, (rows, 2))
        grads = []
        for pf in (chord, plain):
            scale = torch.tensor(scale_np, requires_grad=True)
            p = torch.tensor(p_np, requires_grad=True)
            result = pf.solve(p, torch.zeros(rows, 2, dtype=torch.float64), load_scale=scale)
            (result.vmag_pu ** 2).sum().backward()
            grads.append((scale.grad, p.grad))
        for a, b in zip(*grads):
            assert float((a - b).abs().max()) <= 1e-8 * float(b.abs().max())
    assert chord._cpu().chord


def test_the_chord_extrapolation_saves_steps(feeder_cache):
    """Each scenario's iterate is extrapolated once along its slowest direction
    (`grid.single.CHORD_EXTRAPOLATE_AT`): on IEEE 123 at 0.5-1.5 times its loads, 512
    rows, the chord took 5.7 steps on average without it and 5.25 with; here at most 5.45,
    to the Z-bus steps' voltages within 1e-9 of the largest."""
    feeder = feeder_cache("ieee123")
    chord, plain = PowerFlow(feeder), PowerFlow(feeder, chord=False)
    scale = np.random.default_rng(3).uniform(0.5, 1.5, (512, len(feeder.loads)))
    a, b = chord.solve(load_scale=scale), plain.solve(load_scale=scale)
    assert bool(a.converged.all())
    assert float(a.iterations.double().mean()) <= 5.45
    base = float(b.voltages.abs().max())
    assert float((a.voltages - b.voltages).abs().max()) <= 1e-9 * base


@pytest.mark.parametrize("variant", ["default", "zip", "model4", "model6-regions"])
def test_the_chords_first_currents_are_the_load_models(tmp_path, variant):
    """At a level's start every load term draws its scale times what it draws at scale 1
    (`grid.single.start_currents`): equal to the load model evaluated in full
    (`currents`) for random scales and injections, at every level, on IEEE 123 with its
    loads in each model; a column off the start (a warm start) is refused, untouched."""
    from grid.single import currents, start_currents

    master = tmp_path / "ieee123.dss"
    edit = {**VARIANTS, "zip": VARIANTS["zip"].replace("0.93]", "0.6]")}[variant]
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee123' / 'IEEE123Master.dss'}\"\n"
                      f"{edit}\n")  # (IEEE 123 has no solution with the 0.93 drop-out)
    solver = PowerFlow(load_feeder(master))._cpu()
    assert solver._chord_ready()
    rng = np.random.default_rng(5)
    p, t, b = solver.n_ports, solver.n_terms, 7
    scale = rng.uniform(0.0, 2.0, (t, b))
    s_conj = 1e3 * (rng.normal(size=(p, b)) + 1j * rng.normal(size=(p, b)))
    for lv in range(len(solver.levels)):
        u = np.repeat(solver.start(lv)[:, None], b, 1)
        want, got = np.empty((p, b), dtype=complex), np.empty((p, b), dtype=complex)
        currents(u, s_conj, scale, solver.loads, want)
        assert start_currents(solver.net, lv, u, s_conj, scale, solver.loads, got)
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
        u[3, 4] *= 1 + 1e-12
        got[:] = 0.0
        assert not start_currents(solver.net, lv, u, s_conj, scale, solver.loads, got)
        assert not got.any()


@pytest.mark.parametrize("level", [0.3, 2.0])
def test_a_batch_takes_the_chord_of_its_load_level(feeder_cache, level):
    """A batch away from nominal load takes the chord factored nearest its level (here
    0.25 and 2), from that level's solution: fewer steps than Z-bus steps, to the same
    voltages."""
    feeder = feeder_cache("ieee123")
    chord, plain = PowerFlow(feeder), PowerFlow(feeder, chord=False)
    scale = level * np.random.default_rng(2).uniform(0.7, 1.3, (16, len(feeder.loads)))
    a, b = chord.solve(load_scale=scale), plain.solve(load_scale=scale)
    assert bool(a.converged.all()) and bool(b.converged.all())
    base = float(b.voltages.abs().max())
    assert float((a.voltages - b.voltages).abs().max()) <= 1e-9 * base
    assert float(a.iterations.double().mean()) < 0.75 * float(b.iterations.double().mean())
    # one scenario warm-started: the level the kernel picks, the batch's pick for it alone
    from grid.single import scenario_level

    solver = chord._cpu()
    k = scale.take(chord._t_load_np, axis=1)
    want = solver.levels.tolist().index({0.3: 0.25, 2.0: 2.0}[level])
    assert [scenario_level(solver.net, row) for row in k] == [
        solver._level(row[None]) for row in k] == [want] * len(k)
    warm = chord.solve(load_scale=scale[:1], initial=a.u[:1])
    assert int(warm.iterations[0]) <= 2  # (started at its answer)


def _answers() -> str:
    """A digest of the kernels' answers: warm-started series of one and of 40 scenarios
    on IEEE 13 (Z-bus steps), IEEE 123 (chord steps) and the European LV feeder (Y's LU),
    their network losses and a gradient."""
    out = []
    for name in ("ieee13", "ieee123", "eulv"):
        feeder = load_feeder(name)
        pf = PowerFlow(feeder)
        rng = np.random.default_rng(0)
        for batch in (1, 40):
            digest, result = hashlib.sha1(), None
            for _ in range(4):
                scale = torch.as_tensor(rng.uniform(0.5, 1.5, (batch, len(feeder.loads))))
                result = pf.solve(load_scale=scale, initial=result)
                digest.update(result.u.numpy().tobytes())
                digest.update(result.network_losses.numpy().tobytes())
            scale = torch.as_tensor(rng.uniform(0.5, 1.5, (batch, len(feeder.loads))))
            scale.requires_grad_()
            pf.solve(load_scale=scale).u.sum().backward()
            digest.update(scale.grad.numpy().tobytes())
            out.append(f"{name}/{batch}:{digest.hexdigest()}")
    return " ".join(out)


@pytest.mark.slow
def test_kernels_compiled_in_the_process_answer_as_the_cached_ones(tmp_path):
    """The same answers to the last bit from kernels compiled in the process that runs
    them (a first run, a local run) and loaded from numba's cache (every later run, and
    Ray's workers). Until the kernels' fast math was limited to multiply-adds (`FMA`),
    the compiled and the cached code of four of these six series differed in the last
    bits: reordered sums round as the surrounding inlined code has them."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    code = "import tests.grid.test_single as t; print(t._answers())"

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=900, cwd=FEEDER_DIR.parent.parent)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    compiled = run()  # an empty cache: every kernel compiled in that process
    assert list((tmp_path / "numba").rglob("*.nbi")), "numba cached nothing"
    cached = run()
    assert compiled == cached
    assert _answers() == cached  # this process's kernels: the project's own cache
