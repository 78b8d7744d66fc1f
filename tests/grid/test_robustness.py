"""Past the fixed point's reach: the Newton fallback against OpenDSS.

Ways the Z-bus fixed point gives up although a solution exists: it runs out of iterations
on the IEEE 8500-node feeder at twice its load (OpenDSS converges), it diverges where the
map stops contracting (heavy constant-impedance load, a linear network with a unique
solution that OpenDSS finds), and it stalls just before the nose of the PV curve. Past the
nose there is no solution: the power flow must say so (converged False, NaN voltages),
as OpenDSS does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from grid import PowerFlow, load_feeder
from grid.feeder import FEEDER_DIR
from grid.reference import OpenDSSReference

TOL_PU = 1e-6


def _ieee13_variant(tmp_path, name: str, commands: str, **kwargs):
    master = tmp_path / f"{name}.dss"
    master.write_text(
        f"redirect \"{FEEDER_DIR / 'ieee13' / 'IEEE13Nodeckt.dss'}\"\n{commands}\n")
    return load_feeder(master, **kwargs)


def _error_pu(feeder, v, v_ref) -> float:
    return float(np.nanmax(np.abs(v - v_ref) / (feeder.node_base_kv * 1e3)))


@pytest.mark.parametrize("load", [8.0, 10.0])
def test_constant_impedance_load_where_the_fixed_point_diverges(tmp_path, load):
    """IEEE 13 with every load constant-impedance (model 2) at 8x and 10x its load: the
    fixed point alone diverges, OpenDSS converges, and so do we, on its answer. OpenDSS
    also solves it as one linear system (loadmodel=admittance), without iterating."""
    # OpenDSS sets its regulators at the design load, where its control loop converges
    feeder = _ieee13_variant(tmp_path, "z13", f"batchedit load..* model=2\nset loadmult={load}",
                             controls_load_scale=1.0 / load)
    alone = PowerFlow(feeder, newton_iter=0).solve()
    assert not bool(alone.converged[0])
    result = PowerFlow(feeder).solve()
    assert bool(result.converged[0])
    assert bool(result.undervoltage.any())
    ref = OpenDSSReference(feeder)
    v_ref, ok = ref.solve()
    assert ok
    assert _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU
    ref.ctx.Text.Command("set loadmodel=admittance")
    v_direct, ok = ref.solve()
    assert ok
    assert _error_pu(feeder, result.voltages[0].numpy(), v_direct) <= TOL_PU


def test_ieee8500_at_twice_its_load_where_the_fixed_point_gives_up(feeder_cache):
    """The shipped IEEE 8500-node feeder at 2x its load: the fixed point is out of its 100
    iterations, OpenDSS needs 941 of its 1,000; Newton gets there in a few steps."""
    feeder = feeder_cache("ieee8500")
    alone = PowerFlow(feeder, newton_iter=0).solve(load_scale=2.0)
    assert not bool(alone.converged[0])
    result = PowerFlow(feeder).solve(load_scale=2.0)
    assert bool(result.converged[0])
    v_ref, ok = OpenDSSReference(feeder).solve_case(2.0)
    assert ok
    assert _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU


@pytest.fixture(scope="module")
def constant_power13(tmp_path_factory):
    """IEEE 13 with constant-power loads down to 1e-4 p.u., so that its PV curve has a
    nose: at about 3.018x the load no operating point exists."""
    return _ieee13_variant(tmp_path_factory.mktemp("nose"), "p13",
                           "batchedit load..* vminpu=0.0001 vlowpu=0.00005")


def test_up_to_the_nose_we_match_opendss(constant_power13):
    feeder = constant_power13
    scales = [3.0, 3.017, 3.0176]  # OpenDSS needs up to ~900 of its 1,000 iterations
    result = PowerFlow(feeder).solve(load_scale=torch.tensor(scales))
    assert bool(result.converged.all())
    ref = OpenDSSReference(feeder)
    for k, s in enumerate(scales):
        v_ref, ok = ref.solve_case(s)
        assert ok
        assert _error_pu(feeder, result.voltages[k].numpy(), v_ref) <= TOL_PU


def test_just_before_the_nose_newton_converges_where_iterations_stall(constant_power13):
    """At 3.0178x the fixed point (and OpenDSS's, in 1,000 iterations) has not settled;
    Newton has, to an operating point where Kirchhoff's current law holds."""
    feeder = constant_power13
    alone = PowerFlow(feeder, newton_iter=0).solve(load_scale=3.0178)
    assert not bool(alone.converged[0])
    result = PowerFlow(feeder).solve(load_scale=3.0178)
    assert bool(result.converged[0])
    assert float(result.residual[0]) <= 1e-9
    sub = result.substation_power[0]
    kcl = sub + result.injection_power[0] - result.load_power[0] - result.network_losses[0]
    assert abs(complex(kcl)) <= 1e-9 * abs(complex(sub))
    assert float(result.vmag_pu[0].nan_to_num(1.0).min()) < 0.5  # deep in the sag


def test_past_the_nose_no_solution_is_reported(constant_power13):
    feeder = constant_power13
    scales = [3.0, 3.1, 4.0]
    result = PowerFlow(feeder).solve(load_scale=torch.tensor(scales))
    assert result.converged.tolist() == [True, False, False]
    assert torch.isnan(result.voltages[1:]).all() and torch.isfinite(result.voltages[0]).all()
    assert bool((result.residual[1:] > 1e-9).all()) and bool(result.residual.isfinite().all())
    ref = OpenDSSReference(feeder)
    for s in scales[1:]:
        assert not ref.solve_case(s)[1]


def test_an_impossible_injection_is_reported(feeder_cache):
    """A 4 MW constant-power draw at one phase of IEEE 13 (with its own loads as they are):
    neither OpenDSS nor we find an operating point."""
    feeder = feeder_cache("ieee13")
    pf = PowerFlow(feeder, ["675.1"])
    result = pf.solve(p_kw=[[-1000.0], [-4000.0]])
    assert result.converged.tolist() == [True, False]
    ref = OpenDSSReference(feeder, ["675.1"])
    v_ref, ok = ref.solve_case(1.0, [-1000.0])
    assert ok and _error_pu(feeder, result.voltages[0].numpy(), v_ref) <= TOL_PU
    assert not ref.solve_case(1.0, [-4000.0])[1]


def test_opendss_survives_environment_changes_in_a_new_thread(tmp_path):
    """Variables added after OpenDSS loads (pytest, Ray and torch all add some) once made
    the next thread that called OpenDSS crash (grid.feeder._pin_environment). In a fresh
    process, as the co-simulation's grid actor does: load, grow the environment, solve in
    a new thread; and the variables still reach a child process."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "env_thread.py"
    script.write_text(textwrap.dedent("""
        import os, subprocess, threading
        from grid.feeder import compile_circuit, feeder_path, new_dss_engine
        ctx = new_dss_engine()
        compile_circuit(ctx, *feeder_path("ieee13"))
        for k in range(300):
            os.environ[f"COSIM_TEST_{k}"] = "x" * 50
        def solve():
            ctx.Solution.Solve()
            print("solved", ctx.Solution.Converged())
        thread = threading.Thread(target=solve)
        thread.start()
        thread.join()
        print(subprocess.run(["sh", "-c", "echo $COSIM_TEST_7"], capture_output=True,
                             text=True).stdout.strip())
    """))
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["solved", "True", "x" * 50]
