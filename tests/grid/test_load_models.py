"""OpenDSS load models 4 (exponential), 6 (constant P, fixed Q) and 7 (constant P, fixed
reactance) against OpenDSS itself, in every voltage region of Load.pas: IEEE 13 and IEEE 123
with all their loads switched to each model, at nominal load, with the region limits moved
so that some loads sit below vlowpu, between vlowpu and vminpu and above vmaxpu, and scaled
up until loads fall below vminpu on their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grid import PowerFlow, load_feeder
from grid.feeder import FEEDER_DIR, SHIPPED
from grid.loadmodel import LoadModel
from grid.reference import OpenDSSReference

TOL_PU = 1e-6
MASTERS = {name: FEEDER_DIR / SHIPPED[name][0] for name in ("ieee13", "ieee123")}
SETTINGS = {4: "cvrwatts=0.8 cvrvars=3", 6: "", 7: ""}
# limits that put the loads in all four regions at nominal load
REGIONS = {"ieee13": "vminpu=1.0 vlowpu=0.97 vmaxpu=1.02",
           "ieee123": "vminpu=1.0 vlowpu=0.985 vmaxpu=1.044"}
# loadmult and limits of a heavy case: OpenDSS itself stops converging on IEEE 13 with
# model 6 above loadmult 1.1 (its Q jumps at vminpu), where no load is below 0.95 yet
HEAVY = {4: (1.5, ""), 6: (1.1, "vminpu=0.98 vlowpu=0.9"), 7: (1.5, "")}


def _feeder(tmp_path, name: str, model: int, extra: str = "", loadmult: float | None = None):
    lines = [f'redirect "{MASTERS[name]}"',
             f"batchedit load..* model={model} {SETTINGS[model]} {extra}"]
    if loadmult is not None:
        lines.append(f"set loadmult={loadmult}")
    path = tmp_path / f"{name}_model{model}.dss"
    path.write_text("\n".join(lines) + "\n")
    return load_feeder(path)


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


def _regions(feeder, v) -> np.ndarray:
    """How many load branches lie in each region (low, mid, normal, high) at voltages v."""
    counts = np.zeros(4, dtype=int)
    for ld in feeder.loads:
        for a, b, vn in ld.branches():
            x = abs((v[a] if a >= 0 else 0) - (v[b] if b >= 0 else 0)) / vn
            counts[0 if x <= ld.vlowpu else 1 if x <= ld.vminpu else 3 if x > ld.vmaxpu
                   else 2] += 1
    return counts


# OpenDSS itself does not converge on IEEE 123 with every load at model 6 and its default
# limits (its Q steps at vminpu and vmaxpu); moved limits (below) it does
@pytest.mark.parametrize(("name", "model"), [("ieee13", 4), ("ieee13", 6), ("ieee13", 7),
                                             ("ieee123", 4), ("ieee123", 7)])
def test_model_matches_opendss(tmp_path, name, model):
    feeder = _feeder(tmp_path, name, model)
    assert {ld.model for ld in feeder.loads} == {model}
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


@pytest.mark.parametrize("model", [4, 6, 7])
@pytest.mark.parametrize("name", ["ieee13", "ieee123"])
def test_model_matches_opendss_in_every_region(tmp_path, name, model):
    feeder = _feeder(tmp_path, name, model, REGIONS[name])
    assert (_regions(feeder, feeder.v_solved) > 0).all()
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


@pytest.mark.parametrize("model", [4, 6, 7])
def test_heavy_load_falls_below_vminpu_and_matches(tmp_path, model):
    loadmult, limits = HEAVY[model]
    feeder = _feeder(tmp_path, "ieee13", model, limits, loadmult=loadmult)
    assert _regions(feeder, feeder.v_solved)[:2].sum() > 0  # some loads are below vminpu
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert _error_pu(feeder, result.voltages[0].numpy(), feeder.v_solved) <= TOL_PU


def test_fixed_q_ignores_loadmult_as_opendss_does(tmp_path):
    base = _feeder(tmp_path, "ieee13", 6)
    heavy = _feeder(tmp_path, "ieee13", 6, loadmult=1.1)
    for b, h in zip(base.loads, heavy.loads):
        assert h.kw == pytest.approx(1.1 * b.kw) and h.kvar == pytest.approx(1.1 * b.kvar)
        assert h.fixed_kvar == pytest.approx(b.kvar)


@pytest.mark.parametrize("model", [4, 6, 7])
def test_random_load_scenarios_match_opendss(tmp_path, model):
    """Each load scaled on its own, OpenDSS re-solved with the scaled kW and kvar."""
    feeder = _feeder(tmp_path, "ieee13", model, REGIONS["ieee13"])
    scale = np.random.default_rng(model).uniform(0.5, 1.4, (4, len(feeder.loads)))
    result = PowerFlow(feeder).solve(load_scale=scale)
    assert bool(result.converged.all())
    ref = OpenDSSReference(feeder)
    for k in range(len(scale)):
        v_ref, ok = ref.solve_case(scale[k])
        assert ok
        assert _error_pu(feeder, result.voltages[k].numpy(), v_ref) <= TOL_PU


def test_exponential_derivative_matches_differences(tmp_path):
    """dS/d|u| of model 4, which the implicit gradients use, in all four regions."""
    feeder = _feeder(tmp_path, "ieee13", 4, "cvrwatts=1.7 cvrvars=2.6")
    terms = [(li, vn) for li, ld in enumerate(feeder.loads) for _, _, vn in ld.branches()]
    model = LoadModel.build(feeder.loads, terms, torch.device("cpu"))
    vn = torch.tensor([v for _, v in terms], dtype=torch.float64)
    r = vn * torch.tensor([[0.3], [0.8], [1.0], [1.2]], dtype=torch.float64)
    _, _, dsr, dsi = model.power(r, derivative=True)
    h = 1e-4 * vn
    up, down = model.power(r + h), model.power(r - h)
    assert torch.allclose(dsr, (up[0] - down[0]) / (2 * h), rtol=1e-6, atol=1e-9)
    assert torch.allclose(dsi, (up[1] - down[1]) / (2 * h), rtol=1e-6, atol=1e-9)
    branchless = model.power(r, derivative=True, branchless=True)
    for a, b in zip(branchless, model.power(r, derivative=True)):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)


def test_exponential_gradient_through_the_power_flow(tmp_path):
    """The implicit gradient of a voltage with respect to a model-4 load's scale against
    central differences of the solves."""
    feeder = _feeder(tmp_path, "ieee13", 4)
    pf = PowerFlow(feeder, tol=1e-13, max_iter=300)
    node = feeder.node_index("675.1")
    scale = torch.ones(1, len(feeder.loads), dtype=torch.float64, requires_grad=True)
    pf.solve(load_scale=scale).vmag_pu[0, node].backward()
    for col in (0, len(feeder.loads) - 1):
        h = 1e-4
        bumped = [scale.detach().clone() for _ in range(2)]
        bumped[0][0, col] += h
        bumped[1][0, col] -= h
        with torch.no_grad():
            v = [float(pf.solve(load_scale=s).vmag_pu[0, node]) for s in bumped]
        assert float(scale.grad[0, col]) == pytest.approx((v[0] - v[1]) / (2 * h), rel=1e-5)
