"""Feeders load through OpenDSSDirect.py into arrays that agree with OpenDSS and the
published test-case facts."""

from __future__ import annotations

import os

import networkx as nx
import numpy as np
import pytest

from grid import shipped_feeders
from grid.feeder import FEEDER_DIR, GROUND, SHIPPED

# Facts from the feeders' own documentation, not from our code.
FACTS = {
    "ieee13": {"loads": 15, "kw": 3466.0, "kvar": 2102.0},
    "ieee123": {"loads": 91, "kw": 3490.0, "kvar": 1920.0},
    "eulv": {"loads": 55, "kw": 55.0},
}


def test_shipped_feeders_carry_the_epri_licence():
    assert (FEEDER_DIR / "LICENSE-EPRI.txt").read_text().startswith("*")
    assert set(shipped_feeders()) == {"ieee13", "ieee123", "eulv", "ieee8500"}


def test_shipped_feeders_have_no_comments():
    for path in FEEDER_DIR.rglob("*.dss"):
        text = path.read_text(errors="replace")
        assert "!" not in text and "//" not in text, path


@pytest.mark.parametrize("name", sorted(FACTS))
def test_loads_match_published_totals(feeder_cache, name):
    feeder = feeder_cache(name)
    facts = FACTS[name]
    assert len(feeder.loads) == facts["loads"]
    assert sum(ld.kw for ld in feeder.loads) == pytest.approx(facts["kw"])
    if "kvar" in facts:
        assert sum(ld.kvar for ld in feeder.loads) == pytest.approx(facts["kvar"])


def test_ieee123_load_connections_and_models(feeder_cache):
    feeder = feeder_cache("ieee123")
    conns = [ld.conn for ld in feeder.loads]
    models = [ld.model for ld in feeder.loads]
    assert conns.count("wye") == 84 and conns.count("delta") == 7
    assert (models.count(1), models.count(2), models.count(5)) == (59, 17, 15)


def test_eulv_ships_its_100_daily_profiles():
    profiles = sorted((FEEDER_DIR / "eulv" / "Daily_1min_100profiles").glob("*.txt"))
    assert len(profiles) == 100
    first = np.loadtxt(profiles[0])
    assert first.shape == (1440,) and (first >= 0).all()


@pytest.mark.parametrize("name", ["ieee13", "ieee123", "eulv"])
def test_admittance_matrix_reproduces_the_noload_solution(feeder_cache, name):
    """Y v_noload must inject current only at the source terminals (no loads in Y)."""
    feeder = feeder_cache(name)
    y = feeder.y
    assert y.shape == (len(feeder.nodes),) * 2
    assert abs(y - y.T).max() < 1e-9 * abs(y).max()  # reciprocal network
    injected = np.abs(y @ feeder.v_noload)
    others = np.setdiff1d(np.arange(len(feeder.nodes)), feeder.source_nodes)
    assert injected[others].max() < 1e-6 * injected[feeder.source_nodes].max()


@pytest.mark.parametrize("name", ["ieee13", "ieee123", "eulv"])
def test_topology_coordinates_and_ratings(feeder_cache, name):
    feeder = feeder_cache(name)
    assert nx.is_connected(feeder.graph.subgraph(
        nx.node_connected_component(feeder.graph, feeder.buses[0])))
    assert len(feeder.bus_coords) >= 0.9 * len(feeder.buses)
    rated = [ln for ln in feeder.lines if ln.norm_amps > 0]
    assert len(rated) == len(feeder.lines)
    for ln in feeder.lines:
        assert ln.yprim.shape == (2 * ln.phases, 2 * ln.phases)
        assert all(n == GROUND or 0 <= n < len(feeder.nodes) for n in ln.nodes1 + ln.nodes2)
    finite = np.isfinite(feeder.node_base_kv)
    assert finite.mean() > 0.95


def test_load_branches_follow_opendss_conventions(feeder_cache):
    feeder = feeder_cache("ieee13")
    by_name = {ld.name: ld for ld in feeder.loads}
    delta3 = by_name["671"].branches()
    assert len(delta3) == 3 and delta3[0][2] == pytest.approx(4160.0)
    wye1 = by_name["634a"].branches()
    assert wye1 == [(feeder.node_index("634.1"), GROUND, pytest.approx(277.0))]
    delta1 = by_name["692"].branches()  # Bus1=692.3.1, a phase-to-phase load
    assert delta1[0][:2] == (feeder.node_index("692.3"), feeder.node_index("692.1"))


def test_summary_and_tables(feeder_cache):
    feeder = feeder_cache("ieee123")
    summary = feeder.summary()
    assert summary["loads"] == 91 and summary["lines"] == len(feeder.line_table())
    assert 0.9 < summary["solved_vmin_pu"] <= summary["solved_vmax_pu"] < 1.1
    assert list(feeder.load_table().columns[:3]) == ["name", "bus", "phases"]


def test_loading_leaves_the_working_directory_alone(tmp_path, monkeypatch):
    from grid import load_feeder

    monkeypatch.chdir(tmp_path)
    load_feeder("ieee13")
    assert str(tmp_path) == str(type(tmp_path).cwd())


@pytest.mark.slow
def test_ieee8500_loads(feeder_cache):
    feeder = feeder_cache("ieee8500")
    assert len(feeder.loads) == 1177
    assert len(feeder.nodes) > 8000
    assert all(ld.phases == 2 and ld.conn == "wye" for ld in feeder.loads)


@pytest.mark.parametrize("name", ["ieee13", "ieee123", "eulv"])
def test_shipped_feeders_have_only_loads(feeder_cache, name):
    feeder = feeder_cache(name)
    assert {ld.kind for ld in feeder.loads} == {"load"}
    assert feeder.summary()["generating_elements"] == 0


def _opendss_compiled(runner, path):
    """Element names, node order and solved voltages after compiling `path` in a fresh
    engine, either by OpenDSS's own Compile or by `runner`."""
    from grid.feeder import new_dss_engine

    cwd = os.getcwd()
    try:
        ctx = new_dss_engine()
        if runner is None:
            ctx.Text.Command(f'compile "{path}"')
        else:
            runner(ctx, path)
        ctx.Solution.Solve()
        return (ctx.Circuit.AllElementNames(), ctx.Circuit.YNodeOrder(),
                np.asarray(ctx.Circuit.AllBusVolts()))
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("name", ["ieee13", "ieee123", "eulv"])
def test_run_script_builds_what_opendss_compile_builds(name):
    from grid.feeder import run_script

    path = FEEDER_DIR / SHIPPED[name][0]
    ours, theirs = _opendss_compiled(run_script, path), _opendss_compiled(None, path)
    assert ours[0] == theirs[0] and ours[1] == theirs[1]
    assert np.abs(ours[2] - theirs[2]).max() < 1e-6


def test_run_script_follows_a_nested_compile_into_its_directory(tmp_path):
    """As in OpenDSS, a Compile makes its file's directory the current one for the lines
    after it; a Redirect returns."""
    from grid.feeder import run_script

    sub = tmp_path / "sub"
    sub.mkdir()
    ieee13 = FEEDER_DIR / SHIPPED["ieee13"][0]
    (sub / "inner.dss").write_text(f'redirect "{ieee13}"\n')
    (sub / "more.dss").write_text("new load.extra bus1=675.1 phases=1 kv=2.4 kw=10\n")
    master = tmp_path / "master.dss"
    master.write_text("compile sub/inner.dss\nredirect more.dss\n")
    ours, theirs = _opendss_compiled(run_script, master), _opendss_compiled(None, master)
    assert "Load.extra" in theirs[0] and ours[0] == theirs[0]
