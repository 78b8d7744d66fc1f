"""Bad input fails early with an error naming the file, line, bus, connection or load."""

from __future__ import annotations

import math

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


def test_feeder_without_enabled_source(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\nvsource.source.enabled=no\n')
    with pytest.raises(FeederError, match="no enabled voltage source"):
        load_feeder(path)


def test_unsupported_elements_are_named(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\n'
                            "new pvsystem.roof bus1=675.1 phases=1 kv=2.4 kva=50 pmpp=40\n")
    with pytest.raises(FeederError, match="PVSystem.roof"):
        load_feeder(path)


def test_unsupported_load_model_names_the_load(tmp_path):
    path = _write(tmp_path, f'redirect "{IEEE13}"\nload.611.model=4\n')
    with pytest.raises(FeederError, match="load '611'.*model 4"):
        load_feeder(path)


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
