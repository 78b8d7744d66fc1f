"""The grid actor steps a feeder's own generation along its daily loadshapes: its
substation power and voltages per step against OpenDSS's daily mode of the same file at the
same step length, and a resumed actor continuing exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosim.actors.grid import GridActor
from grid.reference import OpenDSSReference

DAILY = Path(__file__).parents[1] / "grid" / "data" / "ieee13_daily.dss"
DT_S = 1800.0


def _actor() -> GridActor:
    # loads at their base (OpenDSS: a flat daily shape), one idle household connection
    return GridActor("grid", 0, str(DAILY), ["675.1"], feeder_load_scale=1.0,
                     dt_s=DT_S, clock_s=0.0)


def test_substation_power_and_voltages_follow_opendss_daily():
    actor = _actor()
    ref = OpenDSSReference(actor.feeder)
    ctx = ref.ctx
    ctx.Text.Command(f"set mode=daily stepsize={DT_S:g}s number=1")
    ctx.Text.Command("set controlmode=off")
    ctx.Solution.Hour(0)
    ctx.Solution.Seconds(0)
    sub = []
    for step in range(48):
        (state,) = actor.physics(step, [])
        ctx.Solution.Solve()
        theirs = -ctx.Circuit.TotalPower()[0]
        assert state.converged
        assert state.substation_kw == pytest.approx(theirs, abs=1e-3), f"step {step}"
        vmag = np.abs(ref.solve()[0]) / (actor.feeder.node_base_kv * 1e3)
        assert state.v_min_pu == pytest.approx(np.nanmin(vmag), abs=1e-6)
        assert state.v_max_pu == pytest.approx(np.nanmax(vmag), abs=1e-6)
        sub.append(state.substation_kw)
    assert np.ptp(sub) > 300  # the day's PV and generation move the substation


def test_a_resumed_actor_continues_the_day_exactly():
    """Resumed at 6:30, when the night has switched the hysteresis inverter off: at 7:00
    its 6 kW of panel keep it off (below its 12 kW cut-in), where a fresh actor's stays on
    (above its 4 kW cut-out)."""
    whole, first = _actor(), _actor()
    for step in range(13):
        whole.physics(step, [])
        first.physics(step, [])
    resumed = _actor()
    resumed.load_state_dict(first.state_dict())
    sub = [whole.physics(13, [])[0].substation_kw]
    assert resumed.physics(13, [])[0].substation_kw == sub[0]
    assert _actor().physics(13, [])[0].substation_kw == pytest.approx(sub[0] - 6.0, abs=0.5)
    for step in range(14, 48):
        a, b = whole.physics(step, []), resumed.physics(step, [])
        assert a[0].substation_kw == b[0].substation_kw, f"step {step}"
