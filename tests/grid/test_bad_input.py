"""Bad input fails early with an error naming the file, line, bus, connection or load."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from grid import FeederError, InjectionError, PowerFlow, load_feeder
from grid.feeder import FEEDER_DIR

IEEE13 = FEEDER_DIR / "ieee13" / "IEEE13Nodeckt.dss"


def _write(tmp_path, text, name="bad.dss"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FeederError, match="not found.*nowhere.dss"):
        load_feeder(tmp_path / "nowhere.dss")


def test_malformed_dss_names_file_and_line(tmp_path):
    path = _write(tmp_path, "clear\nnew circuit.x basekv=12.47\n"
                            "new line.l1 bus1=sourcebus bus2=a lenght=3\n")
    with pytest.raises(FeederError) as info:
        load_feeder(path)
    message = str(info.value)
    assert "bad.dss" in message and "line: 3" in message and "lenght" in message


def test_missing_redirect_target(tmp_path):
    path = _write(tmp_path, "clear\nnew circuit.x basekv=12.47\nredirect missing_lines.dss\n")
    with pytest.raises(FeederError, match="missing_lines.dss"):
        load_feeder(path)


def test_feeder_without_circuit(tmp_path):
    path = _write(tmp_path, "clear\n")
    with pytest.raises(FeederError, match="no circuit"):
        load_feeder(path)


TINY = ("clear\nnew circuit.tiny basekv=12.47 bus1=src\n"
        "new line.l1 bus1=src bus2=a length=1 units=km\n"
        "new load.a bus1=a kv=12.47 kw=100 kvar=30\n")


@pytest.mark.parametrize("tail", ["", "set voltagebases=[12.47]\n", "solve\n"])
def test_feeder_without_calcvoltagebases_says_so(tmp_path, tail):
    path = _write(tmp_path, TINY + tail)
    with pytest.raises(FeederError, match="bad.dss: the master never runs CalcVoltageBases"):
        load_feeder(path)
    _write(tmp_path, TINY + "set voltagebases=[12.47]\ncalcvoltagebases\n")
    assert len(load_feeder(path).loads) == 1


def test_feeder_without_enabled_source(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\nvsource.source.enabled=no\n')
    with pytest.raises(FeederError, match="no enabled voltage source"):
        load_feeder(path)


def test_unsupported_elements_are_named(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\n'
                            "new isource.inj bus1=675.1 phases=1 amps=5\n")
    with pytest.raises(FeederError, match="unsupported element.*Isource.inj"):
        load_feeder(path)


def test_inverter_controls_are_refused(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\n'
                            "new pvsystem.roof bus1=675.1 phases=1 kv=2.4 kva=50 pmpp=40\n"
                            "new xycurve.vv npts=2 xarray=[0.9 1.1] yarray=[1 -1]\n"
                            "new invcontrol.ic derlist=[pvsystem.roof] mode=voltvar "
                            "vvc_curve1=vv\n")
    with pytest.raises(FeederError, match="unsupported element.*InvControl.ic"):
        load_feeder(path)


def test_errors_in_redirected_scripts_name_that_file_and_line(tmp_path):
    _write(tmp_path, "new line.l2 bus1=a bus2=b\nnew line.l3 bus1=b bus2=c lenght=3\n",
           "lines.dss")
    path = _write(tmp_path, "clear\nnew circuit.x basekv=12.47\nredirect lines.dss\n")
    with pytest.raises(FeederError, match="lines.dss, line: 2: .*lenght"):
        load_feeder(path)
    _write(tmp_path, "redirect bad.dss\n", "lines.dss")
    with pytest.raises(FeederError, match="lines.dss: redirects back to .*bad.dss"):
        load_feeder(path)


def test_reporting_commands_write_and_open_nothing(tmp_path, monkeypatch):
    """Show, Export, Plot and the other commands that write reports or open them are
    skipped, abbreviated or not, in the master and in the scripts it redirects to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened"
    for program in ("xdg-open", "open", "notepad"):  # what OpenDSS would run on a report
        (bin_dir / program).write_text(f'#!/bin/sh\necho "$@" >> "{opened}"\n')
        (bin_dir / program).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    feeder_dir = tmp_path / "feeder"
    feeder_dir.mkdir()
    _write(feeder_dir, "Export monitors\nsh taps\nExp powers\n", "reports.dss")
    path = _write(feeder_dir, f'redirect "{IEEE13}"\nShow voltages\nExport voltages\n'
                              "Plot circuit\nVisualize currents Line.650632\n"
                              "Save circuit dir=saved\nsa circuit dir=saved2\nDump\n"
                              "/* a block comment\nnew line.nowhere bus1=nowhere\n*/\n"
                              '"show" losses\nredirect reports.dss\n', "master.dss")
    before = sorted(p.name for p in IEEE13.parent.iterdir())
    feeder = load_feeder(path)
    assert sorted(p.name for p in feeder_dir.rglob("*")) == ["master.dss", "reports.dss"]
    assert sorted(p.name for p in IEEE13.parent.iterdir()) == before
    assert not opened.exists()
    assert "nowhere" not in feeder.buses
    shipped = load_feeder("ieee13")
    assert feeder.nodes == shipped.nodes
    assert np.abs(feeder.v_solved - shipped.v_solved).max() < 1e-9


def test_feeder_without_loads_solves_to_its_noload_voltages(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\nbatchedit load..* enabled=no\n')
    feeder = load_feeder(path)
    assert feeder.loads == ()
    assert np.abs(feeder.v_noload - feeder.v_solved).max() < 1e-9  # OpenDSS's own solution
    result = PowerFlow(feeder, ["675.1"]).solve([[0.0]])  # caller connections still work
    assert np.abs(result.voltages[0].numpy() - feeder.v_solved).max() < 1e-6


def test_feeder_without_loads_or_connections_solves(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\nbatchedit load..* enabled=no\n')
    feeder = load_feeder(path)
    result = PowerFlow(feeder).solve()
    assert bool(result.converged.all())
    assert np.abs(result.voltages[0].numpy() - feeder.v_solved).max() < 1e-6


def test_inverted_voltage_limits():
    with pytest.raises(FeederError, match="vmin_pu"):
        load_feeder("ieee13", vmin_pu=1.05, vmax_pu=0.95)


@pytest.fixture(scope="module")
def ieee13(feeder_cache):
    return feeder_cache("ieee13")


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("999.1", "unknown bus '999'"),
        ("611.1", "bus '611' has phases \\[3\\], not 1"),
        ("675", "write 'bus.phase'"),
        ("675.x", "write 'bus.phase'"),
        ("675.2.2", "joins a phase to itself"),
    ],
)
def test_bad_connections(ieee13, spec, pattern):
    with pytest.raises(InjectionError, match=pattern):
        PowerFlow(ieee13, ["675.1", spec])


def test_non_finite_injection_names_connection_and_scenario(ieee13):
    pf = PowerFlow(ieee13, ["675.1", "611.3"])
    p = torch.zeros(4, 2, dtype=torch.float64)
    p[2, 1] = math.nan
    with pytest.raises(InjectionError, match="p_kw.*scenario 2, column 1 \\('611.3'\\)"):
        pf.solve(p)
    q = torch.zeros(4, 2, dtype=torch.float64)
    q[0, 0] = math.inf
    with pytest.raises(InjectionError, match="q_kvar.*'675.1'"):
        pf.solve(None, q)
    with pytest.raises(InjectionError, match="p_kw.*scenario 0, column 1 \\('611.3'\\)"):
        pf.solve([[0.0, -math.inf]])  # one scenario, as a co-simulation step gives it


def test_non_finite_load_scale_names_the_load(ieee13):
    pf = PowerFlow(ieee13)
    scale = torch.ones(2, len(ieee13.loads), dtype=torch.float64)
    scale[1, 3] = math.nan
    with pytest.raises(InjectionError, match=f"load_scale.*'{ieee13.loads[3].name}'"):
        pf.solve(load_scale=scale)


def test_negative_load_scale_names_the_load(ieee13):
    pf = PowerFlow(ieee13)
    scale = torch.ones(2, len(ieee13.loads), dtype=torch.float64)
    scale[1, 4] = -0.5
    with pytest.raises(InjectionError, match=f"negative.*scenario 1, column 4 "
                                             rf"\('{ieee13.loads[4].name}'\): -0.5"):
        pf.solve(load_scale=scale)
    with pytest.raises(InjectionError, match="negative"):
        pf.solve(load_scale=-1.0)
    assert bool(pf.solve(load_scale=0.0).converged.all())  # no load at all is fine


def test_wrong_shapes(ieee13):
    pf = PowerFlow(ieee13, ["675.1", "611.3"])
    with pytest.raises(InjectionError, match="shape \\[batch, 2\\]"):
        pf.solve(torch.zeros(3, 5))
    with pytest.raises(InjectionError, match="one column per feeder load"):
        pf.solve(load_scale=torch.ones(2, 3))
    with pytest.raises(InjectionError, match="load_scale has 3 scenarios"):
        pf.solve(torch.zeros(2, 2), load_scale=torch.ones(3, len(ieee13.loads)))
    with pytest.raises(InjectionError, match="must be real"):
        pf.solve(torch.zeros(1, 2, dtype=torch.complex128))
    with pytest.raises(InjectionError, match="no connections"):
        PowerFlow(ieee13).solve(torch.zeros(1, 1))
