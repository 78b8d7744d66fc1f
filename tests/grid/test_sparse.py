"""The sparse path (a sparse LU of Y instead of the dense Zb) against OpenDSS and against the
dense path: voltages, line currents, powers, the Newton fallback and gradients."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from grid import GridError, PowerFlow, load_feeder
from grid.feeder import FEEDER_DIR
from grid.powerflow import SPARSE_MIN_PORTS
from grid.reference import OpenDSSReference

TOL_PU = 1e-6


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


@pytest.fixture(scope="module")
def case123(feeder_cache):
    feeder = feeder_cache("ieee123")
    conns = [feeder.nodes[ld.nodes[0]] for ld in feeder.loads[:5]] + ["67.1.2"]
    rng = np.random.default_rng(12)
    p = rng.uniform(-40, 40, (4, len(conns)))
    q = rng.uniform(-15, 15, (4, len(conns)))
    scale = rng.uniform(0.6, 1.4, (4, len(feeder.loads)))
    return feeder, conns, p, q, scale


def test_small_feeders_stay_dense_by_default(case123):
    feeder, conns, *_ = case123
    pf = PowerFlow(feeder, conns)
    assert not pf.sparse and pf.n_ports < SPARSE_MIN_PORTS


def test_the_sparse_path_is_refused_off_the_cpu(case123):
    feeder, conns, *_ = case123
    with pytest.raises(GridError, match="sparse=True runs on the CPU"):
        PowerFlow(feeder, conns, device="meta", sparse=True)


def test_sparse_matches_opendss_and_the_dense_path(case123):
    feeder, conns, p, q, scale = case123
    sparse = PowerFlow(feeder, conns, sparse=True).solve(p, q, load_scale=scale)
    dense = PowerFlow(feeder, conns, sparse=False).solve(p, q, load_scale=scale)
    assert bool(sparse.converged.all())
    ref = OpenDSSReference(feeder, conns)
    base = torch.as_tensor(feeder.node_base_kv * 1e3)
    for k in range(len(p)):
        v_ref, ok = ref.solve_case(scale[k], p[k], q[k])
        assert ok and _error_pu(feeder, sparse.voltages[k].numpy(), v_ref) <= TOL_PU
    assert float(((sparse.voltages - dense.voltages).abs() / base).nan_to_num(0).max()) <= 1e-8
    amps = torch.as_tensor([ln.norm_amps for ln in feeder.lines])
    gap = ((sparse.line_currents - dense.line_currents).abs().amax(-1) / amps).max()
    assert float(gap) <= 1e-8
    for name in ("substation_power", "losses", "connection_voltages"):
        a, b = getattr(sparse, name), getattr(dense, name)
        assert torch.allclose(a, b, rtol=1e-9, atol=0), name


def test_sparse_gradients_equal_the_dense_ones(case123):
    feeder, conns, p, q, scale = case123
    w = torch.as_tensor(np.random.default_rng(1).normal(size=len(feeder.nodes)))

    def grads(pf):
        xs = [torch.as_tensor(a).clone().requires_grad_(True) for a in (p, q, scale)]
        r = pf.solve(*xs[:2], load_scale=xs[2])
        loss = ((r.vmag_pu.nan_to_num(0.0) * w).sum() + r.losses.real.sum() / 100
                + r.line_currents.abs().square().sum() / 1e5)
        return torch.autograd.grad(loss, xs)

    for a, b in zip(grads(PowerFlow(feeder, conns, sparse=True)),
                    grads(PowerFlow(feeder, conns, sparse=False))):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()))


def test_sparse_newton_where_the_fixed_point_diverges(tmp_path):
    """The Newton fallback on the sparse path: IEEE 13, constant-impedance loads at 8x,
    against OpenDSS; and its gradient against the dense path's."""
    master = tmp_path / "z13.dss"
    master.write_text(f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
                      "batchedit load..* model=2\nset loadmult=8\n")
    feeder = load_feeder(master, controls_load_scale=1 / 8)
    pf = PowerFlow(feeder, sparse=True)
    assert not bool(PowerFlow(feeder, sparse=True, newton_iter=0).solve().converged[0])
    scale = torch.ones(1, len(feeder.loads), dtype=torch.float64, requires_grad=True)
    result = pf.solve(load_scale=scale)
    assert bool(result.converged[0])
    v_ref, ok = OpenDSSReference(feeder).solve()
    assert ok and _error_pu(feeder, result.voltages[0].detach().numpy(), v_ref) <= TOL_PU
    (g_sparse,) = torch.autograd.grad(result.vmag_pu.nan_to_num(0).sum(), scale)
    scale_d = scale.detach().clone().requires_grad_(True)
    dense = PowerFlow(feeder, sparse=False).solve(load_scale=scale_d)
    (g_dense,) = torch.autograd.grad(dense.vmag_pu.nan_to_num(0).sum(), scale_d)
    assert torch.allclose(g_sparse, g_dense, rtol=1e-8, atol=1e-10 * float(g_dense.abs().max()))


@pytest.mark.slow
def test_ieee8500_takes_the_sparse_path_and_matches_opendss(feeder_cache):
    feeder = feeder_cache("ieee8500")
    start = time.perf_counter()
    pf = PowerFlow(feeder)
    build_s = time.perf_counter() - start
    assert pf.sparse
    assert build_s < 5  # the dense build took 20-30 s; the sparse one takes about 0.1 s
    scale = np.random.default_rng(3).uniform(0.7, 1.3, (3, len(feeder.loads)))
    result = pf.solve(load_scale=np.vstack([np.ones(len(feeder.loads)), scale]))
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU
    ref = OpenDSSReference(feeder)
    for k in range(len(scale)):
        v_ref, ok = ref.solve_case(scale[k])
        assert ok and _error_pu(feeder, result.voltages[k + 1].numpy(), v_ref) <= TOL_PU
