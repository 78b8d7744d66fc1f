"""Generating elements on daily loadshapes, stepped through the day as OpenDSS's daily mode
steps them.

A `Feeder` holds each generating element at its snapshot output (`Load.kw`, `Load.kvar`).
In OpenDSS's daily mode a Generator's kW and kvar follow its daily loadshape's multiplier,
and a PVSystem's irradiance does: its panel power (Pmpp x irradiance x multiplier) passes an
inverter that switches off when the panel falls below its cut-out power, on again only when
it reaches its cut-in power (each a percentage of its kVA rating), and clips at the rating.
`DailyGeneration` gives, for a time of day, each `feeder.loads` column's multiplier of its
snapshot output: the column of the power flow's `load_scale`. It keeps each inverter's
on/off state from step to step, as OpenDSS does (every inverter starts on).

What this does not reproduce is named when a `DailyGeneration` is built (`FeederError`):
a Storage element's loadshape dispatch (its state of charge moves), a PVSystem with an
efficiency or P-T curve, a %Pmpp cap, a fixed kvar, clipping at a power factor other than 1
or no output in the snapshot, and a Generator on a shape with actual values or Qmult, or
dispatching by load level or price.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from grid.errors import FeederError

if TYPE_CHECKING:
    from grid.feeder import Feeder


@dataclass(frozen=True, eq=False)
class Loadshape:
    """An OpenDSS loadshape: points every `interval` hours from hour 0, or at `hours`."""

    hours: np.ndarray  # hour of each point
    mult: np.ndarray  # multiplier at each point
    interval: float  # hours between points; 0 when the points are at the listed `hours`
    qmult: bool = False  # the shape has its own kvar multipliers
    actual: bool = False  # the points are kW, not multipliers (useactual=yes)

    def at(self, hour: float) -> float:
        """The multiplier at `hour` (hours after midnight of day 0) as OpenDSS reads it.

        A fixed-interval shape holds point k (from 1) at k x interval, rounded half to
        even, and repeats after its last point, so at hour 0 it is at its last point.
        A shape with listed hours interpolates linearly and repeats after its last hour.
        """
        n = len(self.mult)
        if self.interval > 0:
            k = int(np.rint(hour / self.interval))
            return float(self.mult[(k - 1) % n])
        last = float(self.hours[-1])
        if hour > last > 0:
            hour -= math.floor(hour / last) * last
        return float(np.interp(hour, self.hours, self.mult))


@dataclass(frozen=True)
class ShapedElement:
    """A generating element of a feeder with a daily loadshape (powers in kW, positive)."""

    column: int  # its index in `feeder.loads`
    name: str  # "class.name"
    shape: str
    snapshot_kw: float  # its output in the feeder's snapshot
    panel_kw: float = 0.0  # a PVSystem's panel power at multiplier 1: Pmpp x irradiance
    kva: float = math.inf  # a PVSystem's inverter rating
    cutin_kw: float = 0.0  # a PVSystem's inverter switches on at this panel power
    cutout_kw: float = 0.0  # ... and off below this one
    problem: str = ""  # why OpenDSS's daily mode is not reproduced; "" when it is

    @property
    def kind(self) -> str:
        return self.name.split(".", 1)[0]


def describe(column: int, name: str, snapshot_kw: float, shape_name: str, shape: Loadshape,
             prop: Callable[[str], str]) -> ShapedElement:
    """The generating element `name` ("class.name", column `column` of `feeder.loads`,
    `snapshot_kw` of output) on its daily loadshape, from its OpenDSS properties
    (`prop(p)` returns property p as OpenDSS's `?` command prints it)."""
    base = dict(column=column, name=name, shape=shape_name, snapshot_kw=snapshot_kw)
    kind = name.split(".", 1)[0]
    if kind == "storage":
        return ShapedElement(**base, problem=(
            "a Storage element's daily dispatch moves its state of charge, which is not "
            "simulated: give it a fixed state= and no daily="))
    if kind == "generator":
        problem = ""
        if prop("status").lower().startswith("f"):  # fixed: ignores its shape
            return ShapedElement(**{**base, "shape": ""})
        if prop("dispmode").lower() != "default":
            problem = f"dispmode={prop('dispmode')} (dispatch by load level or price)"
        elif shape.actual:
            problem = f"loadshape {shape_name!r} has useactual=yes"
        elif shape.qmult:
            problem = f"loadshape {shape_name!r} has its own Qmult"
        return ShapedElement(**base, problem=problem)
    # PVSystem
    num = {p: float(prop(p)) for p in ("pmpp", "irradiance", "kva", "%cutin", "%cutout",
                                          "%pmpp", "pf", "kvar")}
    kva = num["kva"]
    panel = num["pmpp"] * num["irradiance"]
    element = ShapedElement(**base, panel_kw=panel, kva=kva,
                            cutin_kw=num["%cutin"] / 100 * kva,
                            cutout_kw=num["%cutout"] / 100 * kva)
    problem = ""
    unity = num["pf"] == 1.0
    if prop("effcurve") or prop("P-TCurve"):
        problem = "an efficiency or P-T curve"
    elif num["%pmpp"] != 100.0:
        problem = f"%Pmpp={num['%pmpp']:g}"
    elif unity and num["kvar"] != 0.0:
        problem = f"a fixed kvar={num['kvar']:g}"
    elif shape.actual:
        problem = f"loadshape {shape_name!r} has useactual=yes"
    elif not unity and panel * float(np.max(shape.mult)) > kva * abs(num["pf"]) + 1e-9:
        problem = f"clipping at pf={num['pf']:g}"
    elif not element.snapshot_kw > 0:
        problem = "no output in the snapshot to scale"
    elif not math.isclose(_pv_output(element, 1.0, True), element.snapshot_kw,
                          rel_tol=1e-6, abs_tol=1e-9):
        problem = (f"its snapshot output {element.snapshot_kw:g} kW is not Pmpp x "
                   f"irradiance through its inverter ({_pv_output(element, 1.0, True):g} kW)")
    return replace(element, problem=problem)


def _pv_output(element: ShapedElement, mult: float, on: bool) -> float:
    """AC output (kW) at a multiplier of its irradiance, with the inverter on or off."""
    return min(element.panel_kw * mult, element.kva) if on else 0.0


@dataclass
class DailyGeneration:
    """Each feeder.loads column's multiplier of its snapshot output, through a day.

    Loads proper and elements without a daily shape get 1 (the caller scales the loads).
    """

    feeder: Feeder
    on: dict[str, bool] = field(default_factory=dict)  # PVSystem inverter states

    def __post_init__(self) -> None:
        bad = [e for e in self.feeder.shaped if e.problem]
        if bad:
            listed = "; ".join(f"{e.name} ({e.problem})" for e in bad)
            raise FeederError(
                f"{self.feeder.path}: OpenDSS's daily mode of {listed} is not reproduced; "
                "the co-simulation steps the feeder's generation through the day")
        self.elements = [e for e in self.feeder.shaped if e.shape]
        self.on = {e.name: True for e in self.elements if e.kind == "pvsystem"} | self.on

    def multipliers(self, hour: float) -> np.ndarray:
        """[len(feeder.loads)] multipliers at `hour` (hours after midnight of day 0, the
        time OpenDSS's daily mode gives the solution: the end of its step). A PVSystem's
        inverter state moves to this hour's."""
        out = np.ones(len(self.feeder.loads))
        for e in self.elements:
            m = self.feeder.daily_shapes[e.shape].at(hour)
            if e.kind == "pvsystem":
                panel = e.panel_kw * m
                on = self.on[e.name]
                on = panel >= e.cutout_kw if on else panel >= e.cutin_kw
                self.on[e.name] = on
                m = _pv_output(e, m, on) / e.snapshot_kw
            out[e.column] = m
        return out

    def state_dict(self) -> dict[str, bool]:
        return dict(self.on)

    def load_state_dict(self, state: dict[str, bool]) -> None:
        self.on = dict(state)
