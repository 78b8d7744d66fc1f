"""Exact gradients through the power flow: the implicit adjoint against central finite
differences (five-point stencil) and against autograd through unrolled iterations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grid import PowerFlow
from grid.result import PowerFlowResult

REL = 1e-6


def _objectives(feeder, seed=0):
    w = torch.as_tensor(np.random.default_rng(seed).normal(size=len(feeder.nodes)))
    regular = torch.as_tensor([not ln.is_switch for ln in feeder.lines])
    return {
        "voltages": lambda r: (r.vmag_pu.nan_to_num(0.0) * w).sum(),
        "losses": lambda r: r.losses.real.sum() / 100.0,
        "line_currents": lambda r: (r.line_currents.abs()[:, regular] ** 2).sum() / 1e5,
        "connection_voltages": lambda r: r.connection_voltages.abs().sum() / 1e3,
        "substation_q": lambda r: r.substation_power.imag.sum() / 1e3,
    }


def _unrolled(pf, p, q, scale, steps=200):
    """The power flow by plain iterations under autograd: the reference for gradients."""
    s_port, s_term, s_conn, batch = pf._inputs(p, q, scale)
    u = pf.u0.expand(batch, -1, -1)
    for _ in range(steps):
        u = pf._apply(pf._currents(u, s_port, s_term))
    ok = torch.ones(batch, dtype=torch.bool)
    return PowerFlowResult(pf, u, s_port, s_term, s_conn, ok, ok.long(), ok.double())


def _fd(fn, x, index, h):
    """Five-point central difference of fn at x along one coordinate."""
    def at(step):
        y = x.detach().clone()
        y[index] += step
        with torch.no_grad():
            return float(fn(y))
    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


@pytest.fixture(scope="module")
def case(feeder_cache):
    feeder = feeder_cache("ieee13")
    conns = ["675.1", "675.2", "611.3", "692.3.1", "634.1", "671.1.2", "652.1"]
    pf = PowerFlow(feeder, conns, tol=1e-14, max_iter=300)
    rng = np.random.default_rng(11)
    p = torch.as_tensor(rng.uniform(-80, 80, (3, len(conns))))
    q = torch.as_tensor(rng.uniform(-40, 40, (3, len(conns))))
    scale = torch.as_tensor(rng.uniform(0.7, 1.5, (3, len(feeder.loads))))
    return feeder, pf, p, q, scale


@pytest.mark.parametrize("objective", ["voltages", "losses", "line_currents",
                                       "connection_voltages", "substation_q"])
def test_implicit_gradients_match_finite_differences(case, objective):
    feeder, pf, p, q, scale = case
    fn = _objectives(feeder)[objective]
    # the base case must reach the low-voltage load regions too
    assert bool(pf.solve(p, q, load_scale=scale).undervoltage.any())
    xs = [t.clone().requires_grad_(True) for t in (p, q, scale)]
    grads = torch.autograd.grad(fn(pf.solve(*xs[:2], load_scale=xs[2])), xs)
    calls = [
        (lambda y: fn(pf.solve(y, q, load_scale=scale)), 0, 1.0),
        (lambda y: fn(pf.solve(p, y, load_scale=scale)), 1, 1.0),
        (lambda y: fn(pf.solve(p, q, load_scale=y)), 2, 1e-3),
    ]
    rng = np.random.default_rng(5)
    for call, which, h in calls:
        g = grads[which]
        for _ in range(4):
            index = tuple(int(rng.integers(n)) for n in g.shape)
            fd = _fd(call, (p, q, scale)[which], index, h)
            assert abs(fd - float(g[index])) <= REL * float(g.abs().max()), (which, index)


def test_implicit_equals_unrolled_autograd(case):
    """Backpropagating through 200 plain iterations gives the same gradient, to rounding."""
    feeder, pf, p, q, scale = case
    fn = _objectives(feeder, seed=3)["voltages"]

    xs = [t.clone().requires_grad_(True) for t in (p, q, scale)]
    implicit = torch.autograd.grad(fn(pf.solve(*xs[:2], load_scale=xs[2])), xs)
    reference = torch.autograd.grad(fn(_unrolled(pf, *xs)), xs)
    for a, b in zip(implicit, reference):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * float(b.abs().max()))


def test_backward_does_not_unroll(case):
    """The autograd graph holds one solve, not one node per iteration."""
    feeder, pf, p, q, scale = case
    x = p.clone().requires_grad_(True)
    loss = pf.solve(x, q, load_scale=scale).vmag_pu.nan_to_num(0).sum()
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    assert len(seen) < 200  # an unrolled graph of ~12 iterations would be several hundred
    assert sum(type(n).__name__ == "_ImplicitFixedPointBackward" for n in seen) == 1


def test_non_converged_scenarios_get_nan_values_and_zero_gradients(case):
    feeder, pf, p, q, scale = case
    x = torch.stack([scale[0], scale[0]]).requires_grad_(True)
    impossible = p[:2].clone()
    impossible[1, 0] = -30_000.0  # 30 MW drawn at one phase of a 5 MVA feeder
    result = pf.solve(impossible, q[:2], load_scale=x)
    assert result.converged.tolist() == [True, False]
    assert torch.isnan(result.voltages[1]).all() and torch.isfinite(result.voltages[0]).all()
    assert torch.isnan(result.losses[1]) and torch.isnan(result.load_power[1])
    loss = result.vmag_pu[0].nan_to_num(0).sum() + result.vmag_pu[1].nan_to_num(0).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and bool((grad[1] == 0).all())
    assert bool((grad[0] != 0).any())


def test_gradient_at_a_fixed_point_plain_iteration_cannot_hold(tmp_path):
    """ZIP loads at their steep 0.93 p.u. cutoff: the adjoint falls back to a direct solve
    and still agrees with finite differences."""
    from grid import load_feeder
    from grid.feeder import FEEDER_DIR

    master = tmp_path / "zip13.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
        "batchedit load..* model=8 zipv=[0.3 0.3 0.4 0.5 0.2 0.3 0.93]\n"
    )
    feeder = load_feeder(master)
    pf = PowerFlow(feeder, tol=1e-13, max_iter=400)
    scale = torch.as_tensor(np.random.default_rng(3).uniform(0.8, 1.7, (10, len(feeder.loads))))
    hard = scale[8:9]  # OpenDSS does not converge on this case
    fn = _objectives(feeder)["voltages"]
    x = hard.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(pf.solve(load_scale=x)), x)
    for index in [(0, 0), (0, 4), (0, 9)]:
        fd = _fd(lambda y: fn(pf.solve(load_scale=y)), hard, index, 1e-5)
        assert abs(fd - float(g[index])) <= 1e-5 * float(g.abs().max())


def test_implicit_equals_unrolled_with_loads_sharing_ports(tmp_path):
    from grid import load_feeder
    from grid.feeder import FEEDER_DIR

    master = tmp_path / "shared13.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
        "new load.extra bus1=675.1 phases=1 conn=wye kv=2.4 kw=150 kvar=40 model=2\n"
    )
    feeder = load_feeder(master)
    pf = PowerFlow(feeder, ["675.1", "633.2"], tol=1e-14, max_iter=300)
    assert not pf.terms_first
    rng = np.random.default_rng(2)
    p = torch.as_tensor(rng.uniform(-50, 50, (2, 2)))
    scale = torch.as_tensor(rng.uniform(0.7, 1.4, (2, len(feeder.loads))))
    fn = _objectives(feeder, seed=4)["voltages"]

    xs = [t.clone().requires_grad_(True) for t in (p, scale)]
    implicit = torch.autograd.grad(fn(pf.solve(xs[0], load_scale=xs[1])), xs)
    reference = torch.autograd.grad(fn(_unrolled(pf, xs[0], None, xs[1])), xs)
    for a, b in zip(implicit, reference):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * float(b.abs().max()))


def test_gradient_where_only_newton_converges(tmp_path):
    """IEEE 13 with constant-impedance loads at 8x: the fixed point diverges, Newton
    converges, and the implicit gradient there (a direct adjoint solve) agrees with
    finite differences."""
    from grid import load_feeder
    from grid.feeder import FEEDER_DIR

    master = tmp_path / "z13.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n"
        "batchedit load..* model=2\n"
    )
    feeder = load_feeder(master)
    conns = ["675.1", "692.3.1"]
    pf = PowerFlow(feeder, conns, tol=1e-13)
    rng = np.random.default_rng(9)
    p = torch.as_tensor(rng.uniform(-50, 50, (1, 2)))
    scale = torch.as_tensor(rng.uniform(7.8, 8.2, (1, len(feeder.loads))))
    assert not bool(PowerFlow(feeder, conns, newton_iter=0).solve(p, load_scale=scale)
                    .converged[0])
    fn = _objectives(feeder, seed=6)["voltages"]
    xs = [t.clone().requires_grad_(True) for t in (p, scale)]
    result = pf.solve(xs[0], load_scale=xs[1])
    assert bool(result.converged[0])
    grads = torch.autograd.grad(fn(result), xs)
    calls = [(lambda y: fn(pf.solve(y, load_scale=scale)), p, 1.0),
             (lambda y: fn(pf.solve(p, load_scale=y)), scale, 1e-4)]
    for (call, x, h), g in zip(calls, grads):
        for index in [(0, 0), (0, 1)] + ([(0, 5)] if x is scale else []):
            fd = _fd(call, x, index, h)
            assert abs(fd - float(g[index])) <= 1e-6 * float(g.abs().max()), index
