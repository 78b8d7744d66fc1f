"""Regulator and capacitor controls in the loop, as OpenDSS runs them in its static mode.

`load_feeder` freezes the taps and capacitors at one loading. `Controls` lets them move: after
each power flow the controllers sample it and act, the power flow is solved again with the new
taps, and so on until no controller acts, exactly as OpenDSS's `SolveSnap` iterates in
`controlmode=static`, the default of its snapshot, daily and yearly modes:

    repeat: solve; every enabled controller samples the solution and, when it wants to act
    and is not yet armed, queues an action at now + its delay; the queue then runs the
    actions due soonest (all those with the earliest time) and time stays where it is
    until the queue is empty after a sample (settled) or `max_iterations`.

So delays only order the actions within a step: a controller with a shorter delay acts, and
the circuit is solved again, before one with a longer delay is reconsidered; equal delays act
in the same iteration. Nothing waits across steps. That is the right picture when the step
(15 min to 1 h) is much longer than the delays (tens of seconds to a few minutes): the
controllers settle within it. Steps as short as the delays would call for OpenDSS's
time-driven mode (one tap per `tapdelay`, actions waiting across steps), which is not
reproduced. Time itself (seconds, `time_s`) matters only for a capacitor's dead time after
it opens and for time-of-day capacitor control. If the controllers still act after
`max_iterations` power flows (OpenDSS's `maxcontroliter`; 100, as `load_feeder` sets it),
the step ends with the taps of its last solution and says it did not settle; OpenDSS would
also apply that last, unsolved round of actions.

RegControl (OpenDSS `RegControl.pas`): the control voltage is the monitored winding's
voltage (phase `ptphase`, or the highest/lowest) over `ptratio`, plus line-drop compensation
(R + jX) I / CTprimary with I the current into that winding terminal (or Beckwith's
|V| - Z |I| with `LDC_Z`). Out of `band` around `vreg`, the change needed is rounded to whole
taps; in static mode a tap action moves 70 % of it, at least one tap and at most
`maxtapchange`. `vlimit` caps the local voltage. Reversible regulators watch the power
through the winding and, after `revDelay`, switch to the reverse settings (`revvreg`,
`revband`, `revR`, `revX`, `rev_Z`), or to the neutral tap with `revNeutral`; `cogen` mode
keeps looking forward with the reverse settings. Not supported (a FeederError says so): a
remote regulated bus (`bus=`), delta-connected monitored windings, two controls on one
transformer.

CapControl (OpenDSS `CapControl.pas`): types current, voltage, kvar, PF and time, with ON and
OFF settings and delays, the dead time after opening, the voltage override (`VoltOverride`,
`Vmin`, `Vmax`, `VBus`) and multi-step banks (one step per action). User-model and "follow"
controls are refused.

A new tap or capacitor state changes only those elements' admittance: a private OpenDSS
engine gives their primitive admittance (Yprim) in the new state, the difference from the
frozen state goes into the feeder's Y at their nodes, the no-load voltages follow from the
sources' Norton currents (which no tap changes), and the state's `PowerFlow` is built once
and cached. Controls act on one scenario (batch 1): every scenario would need
its own taps.

Units: volts, amperes, watts (kW/kvar where OpenDSS's settings are), seconds.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from grid.errors import FeederError, GridError
from grid.feeder import GROUND, Feeder, compile_circuit, freeze_controls, new_dss_engine
from grid.powerflow import PowerFlow
from grid.result import PowerFlowResult

MAX_PHASE, MIN_PHASE, AVG_PHASES = -2, -3, -1  # OpenDSS's codes for ptphase/ctphase
TAP, REVERSE, OPEN, CLOSE, NONE = "tap", "reverse", "open", "close", "none"  # queue actions
_CAP_TYPES = {0: "current", 1: "voltage", 2: "kvar", 3: "time", 4: "pf"}
_PD_CLASSES = {"line", "transformer", "reactor", "capacitor", "autotrans"}


@dataclass(frozen=True)
class RegulatorSettings:
    """One RegControl and the taps of its transformer (OpenDSS property names in quotes)."""

    name: str
    transformer: str
    winding: int  # the monitored winding ("winding")
    tap_winding: int  # the winding whose tap moves ("tapwinding")
    vreg: float  # V on the PT secondary ("vreg")
    band: float  # V, full width ("band")
    ptratio: float
    ct_primary: float  # A ("CTprim")
    r: float  # line-drop compensation, V on the 120 V base ("R", "X")
    x: float
    ldc_z: float  # Beckwith LDC: |V| - Z |I| when > 0 ("LDC_Z")
    delay_s: float  # before the first tap change ("delay")
    tap_delay_s: float  # between tap changes ("tapdelay"; time modes only)
    max_tap_change: int  # taps per action ("maxtapchange"; 0 locks the tap)
    inverse_time: bool
    pt_phase: int  # 1.. or MAX_PHASE / MIN_PHASE
    vlimit: float  # V on the PT secondary, 0 = off
    reversible: bool
    rev_vreg: float
    rev_band: float
    rev_r: float
    rev_x: float
    rev_ldc_z: float
    rev_threshold_w: float  # power through the winding that counts as reversed
    rev_delay_s: float
    rev_neutral: bool  # in reverse, go to the neutral tap and stay
    cogen: bool  # reverse power: keep regulating forward, with the reverse settings
    min_tap: float  # p.u.
    max_tap: float
    increment: float  # p.u. per tap
    base_v: float  # the monitored winding's voltage base, V (OpenDSS's BaseVoltage)
    phases: int
    conductors: int  # per terminal
    nodes: tuple[int, ...]  # feeder node index of each transformer conductor, -1 ground


@dataclass(frozen=True)
class CapacitorSettings:
    """One CapControl and its capacitor."""

    name: str
    capacitor: str
    kind: str  # "current", "voltage", "kvar", "time" or "pf"
    element: str  # the monitored element ("element"), e.g. "line.l84"
    terminal: int
    on: float  # A, V, kvar, hour of day (per the kind) ("ONsetting")
    off: float
    pf_on: float  # PF settings in OpenDSS's 0..2 range (leading above 1)
    pf_off: float
    ptratio: float
    ctratio: float
    on_delay_s: float
    off_delay_s: float
    dead_time_s: float
    v_override: bool
    vmin: float  # V on the PT secondary
    vmax: float
    pt_phase: int  # 1.. or AVG_PHASES / MAX_PHASE / MIN_PHASE
    ct_phase: int
    pct_min_kvar: float
    steps: int  # the capacitor's number of steps
    total_kvar: float
    delta: bool
    phases: int  # the capacitor's phases
    monitored_phases: int
    monitored_conductors: int
    nodes: tuple[int, ...]  # the monitored element's conductors, -1 ground
    vbus_nodes: tuple[int, ...] = ()  # the override bus's nodes, when "VBus" is set


@dataclass
class _Regulator:
    s: RegulatorSettings
    tap: float  # p.u. of the tap winding
    pending: float = 0.0  # p.u. tap change wanted
    armed: bool = False
    handle: int = 0
    in_reverse: bool = False
    in_cogen: bool = False
    reverse_pending: bool = False
    reverse_handle: int = 0

    @property
    def number(self) -> int:
        """Tap position counted from the middle of the range, as OpenDSS's TapNum."""
        s = self.s
        return round((self.tap - (s.max_tap + s.min_tap) / 2) / s.increment)


@dataclass
class _Capacitor:
    s: CapacitorSettings
    closed: bool  # the capacitor's terminal
    in_service: int  # steps in service
    present: str = CLOSE  # the state seen at the last sample
    pending: str = NONE
    armed: bool = False
    handle: int = 0
    last_open_s: float = field(init=False)  # when it last opened, s

    def __post_init__(self) -> None:
        self.last_open_s = -self.s.dead_time_s  # as OpenDSS: free to close at once


@dataclass
class ControlStep:
    """One co-simulation step's control solve: the final power flow (with the final taps),
    how many power flows it took, the tap and capacitor moves, and whether the controllers
    settled within the iteration limit."""

    result: PowerFlowResult
    iterations: int
    tap_changes: int
    capacitor_switches: int
    settled: bool


class _Queue:
    """OpenDSS's control queue: actions sorted by time; each push returns a handle."""

    def __init__(self) -> None:
        self.items: list[tuple[float, int, object, str]] = []
        self.serial = 0

    def push(self, time_s: float, owner: object, action: str) -> int:
        self.serial += 1
        # OpenDSS inserts before the first action due at the same time or later
        times = [t for t, *_ in self.items]
        self.items.insert(bisect.bisect_left(times, time_s), (time_s, self.serial, owner,
                                                               action))
        return self.serial

    def delete(self, handle: int) -> None:
        self.items = [a for a in self.items if a[1] != handle]

    def pop_nearest(self) -> list[tuple[object, str]]:
        """The actions due at the earliest time, removed in queue order."""
        if not self.items:
            return []
        first = self.items[0][0]
        due = [(owner, action) for t, _, owner, action in self.items if t <= first]
        self.items = [a for a in self.items if a[0] > first]
        return due


class Controls:
    """The feeder's RegControls and CapControls, acting between power flows.

    connections and the keyword arguments are those of `PowerFlow`; `powerflow` is the one
    for the present taps and capacitor states. `step` solves a step with the controls in
    the loop. The state starts where `load_feeder` froze it and carries across steps.
    """

    def __init__(self, feeder: Feeder, connections: Sequence[str] = (), *,
                 max_iterations: int = 100, **powerflow: object) -> None:
        self.feeder = feeder
        self.connections = tuple(connections)
        self.max_iterations = max_iterations
        self._pf_kwargs = powerflow
        self.ctx = new_dss_engine()
        compile_circuit(self.ctx, feeder.path, feeder.commands)
        freeze_controls(self.ctx, feeder.controls_load_scale)
        self.ctx.Text.Command("batchedit load..* enabled=no")  # only to solve quickly
        self.ctx.Solution.SolveNoControl()
        self._index = {n: i for i, n in enumerate(feeder.nodes)}
        src = feeder.source_nodes
        self._i_source = np.zeros(len(feeder.nodes), dtype=complex)
        self._i_source[src] = (feeder.y @ feeder.v_noload)[src]  # Norton currents
        self.regulators = [_Regulator(s, tap=self._present_tap(s))
                           for s in self._read_regulators()]
        self.capacitors = [self._read_capacitor(name) for name in self._capcontrol_names()]
        self._queue = _Queue()
        self._switched = [f"transformer.{r.s.transformer}" for r in self.regulators] + [
            f"capacitor.{c.s.capacitor}" for c in self.capacitors]
        self._element_nodes = {e: self._nodes(e)[0] for e in self._switched}
        # per state: the PowerFlow and the Yprim of every element a controller switches or
        # measures
        self._frozen = self._yprims()
        self._states: dict[tuple, tuple[PowerFlow, dict[str, np.ndarray]]] = {
            self.state_key(): (PowerFlow(feeder, self.connections, **powerflow), self._frozen)}

    # ------------------------------------------------------------------ reading OpenDSS
    def _query(self, element: str, prop: str) -> str:
        self.ctx.Text.Command(f"? {element}.{prop}")
        return self.ctx.Text.Result().strip()

    def _nodes(self, element: str) -> tuple[list[int], int, int]:
        """Feeder node index (-1 ground) of each conductor of `element`, its conductors
        per terminal and its phases."""
        ctx = self.ctx
        ctx.Circuit.SetActiveElement(element)
        nc = ctx.CktElement.NumConductors()
        order = list(ctx.CktElement.NodeOrder())
        out = []
        for t, bus in enumerate(ctx.CktElement.BusNames()):
            bus = bus.split(".", 1)[0].lower()
            out += [GROUND if k == 0 else self._index[f"{bus}.{k}"]
                    for k in order[t * nc:(t + 1) * nc]]
        return out, nc, ctx.CktElement.NumPhases()

    def _read_regulators(self) -> list[RegulatorSettings]:
        ctx, rc, tr = self.ctx, self.ctx.RegControls, self.ctx.Transformers
        out, seen = [], {}
        for name in rc.AllNames() or []:
            element = f"regcontrol.{name.lower()}"
            ctx.Circuit.SetActiveElement(element)
            if not ctx.CktElement.Enabled():
                continue
            rc.Name(name)
            where = f"{self.feeder.path}: {element}"
            transformer = rc.Transformer().lower()
            if rc.MonitoredBus():
                raise FeederError(f"{where}: a remote regulated bus (bus=) is not supported")
            if transformer in seen:
                raise FeederError(f"{where}: transformer {transformer} already has a "
                                  f"control ({seen[transformer]})")
            seen[transformer] = element
            winding, tap_winding = rc.Winding(), rc.TapWinding()
            nodes, nc, phases = self._nodes(f"transformer.{transformer}")
            tr.Name(transformer)
            tr.Wdg(winding)
            if tr.IsDelta():
                raise FeederError(f"{where}: a delta-connected monitored winding is not "
                                  "supported")
            # OpenDSS's winding base: line-to-neutral for 2- and 3-phase wye windings
            base_v = tr.kV() * (1e3 / math.sqrt(3) if phases in (2, 3) else 1e3)
            tr.Wdg(tap_winding)
            pt = self._query(element, "ptphase").lower()
            out.append(RegulatorSettings(
                name=name.lower(), transformer=transformer, winding=winding,
                tap_winding=tap_winding, vreg=rc.ForwardVreg(), band=rc.ForwardBand(),
                ptratio=rc.PTRatio(), ct_primary=rc.CTPrimary(), r=rc.ForwardR(),
                x=rc.ForwardX(), ldc_z=float(self._query(element, "ldc_z")),
                delay_s=rc.Delay(), tap_delay_s=rc.TapDelay(),
                max_tap_change=rc.MaxTapChange(), inverse_time=bool(rc.IsInverseTime()),
                pt_phase={"max": MAX_PHASE, "min": MIN_PHASE}.get(pt) or int(pt),
                vlimit=rc.VoltageLimit(), reversible=bool(rc.IsReversible()),
                rev_vreg=rc.ReverseVreg(), rev_band=rc.ReverseBand(), rev_r=rc.ReverseR(),
                rev_x=rc.ReverseX(), rev_ldc_z=float(self._query(element, "rev_z")),
                rev_threshold_w=float(self._query(element, "revthreshold")) * 1e3,
                rev_delay_s=float(self._query(element, "revdelay")),
                rev_neutral=self._query(element, "revneutral").lower().startswith(("y", "t")),
                cogen=self._query(element, "cogen").lower().startswith(("y", "t")),
                min_tap=tr.MinTap(), max_tap=tr.MaxTap(),
                increment=(tr.MaxTap() - tr.MinTap()) / tr.NumTaps(), base_v=base_v,
                phases=phases, conductors=nc, nodes=tuple(nodes)))
        return out

    def _capcontrol_names(self) -> list[str]:
        names = []
        for name in self.ctx.CapControls.AllNames() or []:
            self.ctx.Circuit.SetActiveElement(f"capcontrol.{name}")
            if self.ctx.CktElement.Enabled():
                names.append(name.lower())
        return names

    def _read_capacitor(self, name: str) -> _Capacitor:
        ctx, cc = self.ctx, self.ctx.CapControls
        cc.Name(name)
        element = f"capcontrol.{name}"
        where = f"{self.feeder.path}: {element}"
        kind = _CAP_TYPES.get(cc.Mode())
        if kind is None:
            raise FeederError(f"{where}: control type {cc.Mode()} (user model or follow) is "
                              "not supported; use current, voltage, kvar, time or pf")
        capacitor = cc.Capacitor().lower()
        ctx.Capacitors.Name(capacitor)
        steps, states = ctx.Capacitors.NumSteps(), list(ctx.Capacitors.States())
        total_kvar = ctx.Capacitors.kvar()
        delta = bool(ctx.Capacitors.IsDelta())
        ctx.Circuit.SetActiveElement(f"capacitor.{capacitor}")
        cap_phases = ctx.CktElement.NumPhases()
        closed = not ctx.CktElement.IsOpen(1, 0)
        monitored = f"capacitor.{capacitor}" if kind == "time" else cc.MonitoredObj().lower()
        terminal = 1 if kind == "time" else cc.MonitoredTerm()
        if monitored.split(".", 1)[0] not in _PD_CLASSES:
            raise FeederError(f"{where}: the monitored element {monitored} must be a line, "
                              "transformer, reactor or capacitor")
        nodes, nc, phases = self._nodes(monitored)
        vbus = self._query(element, "vbus").lower()
        vbus_nodes: tuple[int, ...] = ()
        if vbus:
            ctx.Circuit.SetActiveBus(vbus)
            vbus_nodes = tuple(self._index[f"{vbus}.{k}"] for k in ctx.Bus.Nodes())

        def phase_code(prop: str) -> int:
            value = self._query(element, prop).lower()
            return {"avg": AVG_PHASES, "max": MAX_PHASE, "min": MIN_PHASE}.get(value) or int(
                value)

        def pf_range(value: float, default: float) -> float:  # OpenDSS's 0..2 PF scale
            if not -1.0 <= value <= 1.0:
                return default
            return 2.0 + value if value < 0 else value

        settings = CapacitorSettings(
            name=name, capacitor=capacitor, kind=kind, element=monitored, terminal=terminal,
            on=cc.ONSetting(), off=cc.OFFSetting(), pf_on=pf_range(cc.ONSetting(), 0.95),
            pf_off=pf_range(cc.OFFSetting(), 1.05), ptratio=cc.PTRatio(),
            ctratio=cc.CTRatio(), on_delay_s=cc.Delay(), off_delay_s=cc.DelayOff(),
            dead_time_s=cc.DeadTime(), v_override=bool(cc.UseVoltOverride()), vmin=cc.Vmin(),
            vmax=cc.Vmax(), pt_phase=phase_code("ptphase"), ct_phase=phase_code("ctphase"),
            pct_min_kvar=float(self._query(element, "pctminkvar")), steps=steps,
            total_kvar=total_kvar, delta=delta, phases=cap_phases, monitored_phases=phases,
            monitored_conductors=nc, nodes=tuple(nodes), vbus_nodes=vbus_nodes)
        in_service = max((k + 1 for k, on in enumerate(states) if on), default=0)
        return _Capacitor(settings, closed=closed, in_service=in_service,
                          present=CLOSE if closed else OPEN)

    def _present_tap(self, s: RegulatorSettings) -> float:
        self.ctx.Transformers.Name(s.transformer)
        self.ctx.Transformers.Wdg(s.tap_winding)
        return self.ctx.Transformers.Tap()

    def _yprims(self) -> dict[str, np.ndarray]:
        """Yprim (S) of every element a controller switches or measures, in the engine's
        present state."""
        out = {}
        for element in {*self._switched, *(c.s.element for c in self.capacitors)}:
            self.ctx.Circuit.SetActiveElement(element)
            y = np.asarray(self.ctx.CktElement.YPrim()).view(complex)
            n = int(math.isqrt(len(y)))
            out[element] = y.reshape(n, n)
        return out

    # ------------------------------------------------------------------ state
    def state_key(self) -> tuple:
        """Tap positions and capacitor (closed, steps): what the admittance depends on."""
        return (tuple(r.number for r in self.regulators),
                tuple((c.closed, c.in_service) for c in self.capacitors))

    @property
    def powerflow(self) -> PowerFlow:
        """The power flow for the present taps and capacitor states."""
        return self._state()[0]

    def _state(self) -> tuple[PowerFlow, dict[str, np.ndarray]]:
        key = self.state_key()
        if key not in self._states:
            self._states[key] = self._build_state()
        return self._states[key]

    def _build_state(self) -> tuple[PowerFlow, dict[str, np.ndarray]]:
        """Put the present taps and capacitors into the engine, add their Yprims' change
        from the frozen state to the feeder's Y and solve the no-load voltages for the
        sources' Norton currents."""
        ctx = self.ctx
        for r in self.regulators:
            ctx.Transformers.Name(r.s.transformer)
            ctx.Transformers.Wdg(r.s.tap_winding)
            ctx.Transformers.Tap(r.tap)
        for c in self.capacitors:
            ctx.Capacitors.Name(c.s.capacitor)
            ctx.Capacitors.States([int(k < c.in_service) for k in range(c.s.steps)])
            ctx.Circuit.SetActiveElement(f"capacitor.{c.s.capacitor}")
            (ctx.CktElement.Close if c.closed else ctx.CktElement.Open)(1, 0)
        ctx.Solution.SolveNoControl()  # recomputes the changed Yprims
        yprims = self._yprims()
        rows, cols, vals = [], [], []
        for element in self._switched:
            nodes = np.array(self._element_nodes[element])
            keep = np.flatnonzero(nodes != GROUND)
            change = (yprims[element] - self._frozen[element])[np.ix_(keep, keep)]
            rows.append(np.repeat(nodes[keep], len(keep)))
            cols.append(np.tile(nodes[keep], len(keep)))
            vals.append(change.ravel())
        n = len(self.feeder.nodes)
        change = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                       np.concatenate(cols))), shape=(n, n))
        y = (self.feeder.y + change).tocsc()
        v_noload = spla.splu(y).solve(self._i_source)
        feeder = dataclasses.replace(self.feeder, y=y, v_noload=v_noload)
        return PowerFlow(feeder, self.connections, **self._pf_kwargs), yprims

    def positions(self) -> dict[str, int]:
        """Tap number of each regulator and steps in service of each controlled capacitor
        (0 when open), by control name."""
        return ({r.s.name: r.number for r in self.regulators}
                | {c.s.name: c.in_service if c.closed else 0 for c in self.capacitors})

    def state_dict(self) -> dict[str, object]:
        keep = ("tap", "in_reverse", "in_cogen")
        return {"regulators": [{k: getattr(r, k) for k in keep} for r in self.regulators],
                "capacitors": [{k: getattr(c, k) for k in ("closed", "in_service",
                                                           "last_open_s")}
                               for c in self.capacitors]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for r, saved in zip(self.regulators, state["regulators"]):
            vars(r).update(saved)
        for c, saved in zip(self.capacitors, state["capacitors"]):
            vars(c).update(saved)

    # ------------------------------------------------------------------ the loop
    def step(self, time_s: float, p_kw: object = None, q_kvar: object = None, *,
             load_scale: object = None, initial: object = None) -> ControlStep:
        """Solve one scenario with the controls in the loop (OpenDSS's static mode).

        time_s: the step's time in seconds, counted from a midnight (time-of-day capacitor
            control and dead times read it). The other arguments are `PowerFlow.solve`'s.
        """
        taps0 = [r.number for r in self.regulators]
        caps0 = [(c.closed, c.in_service) for c in self.capacitors]
        settled = False
        for iteration in range(1, self.max_iterations + 1):
            pf, yprims = self._state()
            result = pf.solve(p_kw, q_kvar, load_scale=load_scale, initial=initial)
            if result.batch != 1:
                raise GridError(f"controls act on one scenario at a time, got {result.batch}")
            if not bool(result.converged[0]):
                break  # as OpenDSS: a solution that failed ends the control iterations
            v = np.append(result.voltages[0].cpu().numpy(), 0)  # ground last: index -1
            self._sample(v, yprims, time_s)
            due = self._queue.pop_nearest()
            if not due:
                settled = True
                break
            if iteration == self.max_iterations:
                break  # unlike OpenDSS, no last action unsolved: taps match voltages
            for owner, action in due:
                self._act(owner, action, time_s)
            initial = result
        if not settled:  # nothing half-done carries into the next step
            self._queue = _Queue()
            for device in (*self.regulators, *self.capacitors):
                device.armed = False
            for r in self.regulators:
                r.reverse_pending = False
        moves = sum(abs(r.number - t) for r, t in zip(self.regulators, taps0))
        switches = sum((c.closed, c.in_service) != s for c, s in zip(self.capacitors, caps0))
        return ControlStep(result, iteration, moves, switches, settled)

    def _sample(self, v: np.ndarray, yprims: dict[str, np.ndarray], now: float) -> None:
        for r in self.regulators:
            self._sample_regulator(r, v, yprims[f"transformer.{r.s.transformer}"], now)
        for c in self.capacitors:
            self._sample_capacitor(c, v, yprims[c.s.element], now)

    def _act(self, owner: _Regulator | _Capacitor, action: str, now: float) -> None:
        if isinstance(owner, _Regulator):
            self._act_regulator(owner, action)
        else:
            self._act_capacitor(owner, action, now)

    # ------------------------------------------------------------------ regulators
    def _sample_regulator(self, r: _Regulator, v: np.ndarray, yprim: np.ndarray,
                          now: float) -> None:
        s = r.s
        if s.max_tap_change == 0:
            r.pending = 0.0
            return
        vt = v[list(s.nodes)]  # conductor voltages, all terminals
        currents = yprim @ vt  # into each conductor
        k0 = (s.winding - 1) * s.conductors
        if s.reversible or s.cogen:
            # power through the monitored winding, positive forward (out of that terminal)
            forward = -float(np.sum(vt[k0:k0 + s.conductors]
                                    * np.conj(currents[k0:k0 + s.conductors])).real)
            looking_forward = (not r.in_reverse) or r.in_cogen
            flipped = (forward < -s.rev_threshold_w if looking_forward and not r.in_cogen
                       else forward > s.rev_threshold_w)
            if flipped and not r.reverse_pending:
                r.reverse_pending = True
                r.reverse_handle = self._queue.push(now + s.rev_delay_s, r, REVERSE)
            elif r.reverse_pending and not flipped:
                r.reverse_pending = False
                self._queue.delete(r.reverse_handle)
            if not (looking_forward and not r.in_cogen) and s.rev_neutral:
                if not r.armed:
                    r.pending = 0.0
                    if abs(r.tap - 1.0) > 1e-12:
                        r.pending = round((1.0 - r.tap) / s.increment) * s.increment
                        if r.pending != 0.0:
                            r.handle = self._queue.push(now + s.tap_delay_s, r, TAP)
                            r.armed = True
                return
        winding_v = vt[k0:k0 + s.phases] - vt[k0 + s.phases]  # wye: phase to neutral
        if s.pt_phase in (MAX_PHASE, MIN_PHASE):
            pick = np.argmax if s.pt_phase == MAX_PHASE else np.argmin
            phase = int(pick(np.abs(winding_v)))
        else:
            phase = s.pt_phase - 1
        v_control = winding_v[phase] / s.ptratio
        v_local = abs(v_control)
        reverse_settings = r.in_reverse or r.in_cogen
        if s.r != 0.0 or s.x != 0.0 or s.ldc_z > 0.0:
            i_ldc = currents[k0 + phase] / s.ct_primary
            z = s.rev_ldc_z if reverse_settings else s.ldc_z
            if s.ldc_z == 0.0:
                v_control += (complex(s.rev_r, s.rev_x) if reverse_settings
                              else complex(s.r, s.x)) * i_ldc
            else:
                v_control = abs(v_control) - abs(i_ldc) * z
        v_actual = abs(v_control)
        if r.in_reverse:
            v_actual /= r.tap
        vreg, band = (s.rev_vreg, s.rev_band) if reverse_settings else (s.vreg, s.band)
        over_limit = s.vlimit > 0 and v_local > s.vlimit
        if abs(vreg - v_actual) > band / 2.0 or over_limit:
            boost = (s.vlimit - v_local) if over_limit else (vreg - v_actual)
            needed = boost * s.ptratio / s.base_v  # p.u. on the winding
            r.pending = round(needed / s.increment) * s.increment
            if s.tap_winding != s.winding or r.in_reverse:
                r.pending = -r.pending
            can_move = (r.tap < s.max_tap) if r.pending > 0 else (r.tap > s.min_tap)
            if r.pending != 0.0 and not r.armed and can_move:
                delay = s.delay_s
                if s.inverse_time:
                    delay /= min(10.0, 2.0 * abs(s.vreg - v_actual) / s.band)
                r.handle = self._queue.push(now + delay, r, TAP)
                r.armed = True
        else:  # back in band: forget the change
            r.pending = 0.0
            if r.armed:
                self._queue.delete(r.handle)
                r.armed = False

    @staticmethod
    def _act_regulator(r: _Regulator, action: str) -> None:
        s = r.s
        if action == REVERSE:
            if r.reverse_pending:
                if s.cogen:
                    r.in_cogen = not r.in_cogen
                else:
                    r.in_reverse = not r.in_reverse
                r.reverse_pending = False
            return
        if r.pending != 0.0:
            # static mode: 70 % of the way, at least one tap, at most maxtapchange
            taps = min(max(int(0.7 * abs(r.pending) / s.increment), 1), s.max_tap_change)
            r.tap = min(max(r.tap + math.copysign(taps * s.increment, r.pending),
                            s.min_tap), s.max_tap)
        r.pending = 0.0
        r.armed = False

    # ------------------------------------------------------------------ capacitors
    def _sample_capacitor(self, c: _Capacitor, v: np.ndarray, yprim: np.ndarray,
                          now: float) -> None:
        s = c.s
        c.present = CLOSE if c.closed else OPEN
        vt = v[list(s.nodes)]
        k0 = (s.terminal - 1) * s.monitored_conductors
        terminal_v = vt[k0:k0 + s.monitored_conductors]
        switch = False
        if s.v_override and s.kind != "voltage":
            measured = v[list(s.vbus_nodes[:s.phases])] if s.vbus_nodes else terminal_v
            v_test = self._control_voltage(s, measured)
            if c.present == OPEN and v_test < s.vmin:
                c.pending, switch = CLOSE, True
            elif c.present == CLOSE and v_test > s.vmax:
                c.pending, switch = OPEN, True
        if not switch:
            switch = self._capacitor_rule(c, vt, yprim, terminal_v, k0, now)
        if switch and not c.armed:
            if c.pending == CLOSE:
                since_open = now - c.last_open_s
                delay = (max(s.on_delay_s, s.dead_time_s + s.on_delay_s - since_open)
                         if since_open < s.dead_time_s else s.on_delay_s)
            else:
                delay = s.off_delay_s
            c.handle = self._queue.push(now + delay, c, c.pending)
            c.armed = True
        if c.armed and c.pending == NONE:
            self._queue.delete(c.handle)
            c.armed = False

    def _capacitor_rule(self, c: _Capacitor, vt: np.ndarray, yprim: np.ndarray,
                        terminal_v: np.ndarray, k0: int, now: float) -> bool:
        """The control type's ON/OFF test; sets c.pending and says whether to switch.
        Where OpenDSS leaves the pending change as it was, so does this."""
        s = c.s
        more = s.steps - c.in_service > 0  # steps left to close
        if s.kind == "voltage":
            value = self._control_voltage(s, terminal_v)
            if c.present == CLOSE:
                c.pending = NONE
            high, low = value > s.off, value < s.on
        elif s.kind == "time":
            hour = (now / 3600.0) % 24.0
            inside = (s.on <= hour < s.off) if s.off > s.on else (hour >= s.on)
            outside = ((hour >= s.off or hour < s.on) if s.off > s.on
                       else (s.off <= hour < s.on))
            low, high = inside, outside
        else:
            currents = yprim @ vt
            if s.kind == "current":
                mags = np.abs(currents[k0:k0 + s.monitored_phases])
                if s.ct_phase == AVG_PHASES:
                    value = mags.sum() / s.monitored_phases / s.ctratio
                elif s.ct_phase == MAX_PHASE:
                    value = mags.max() / s.ctratio
                elif s.ct_phase == MIN_PHASE:
                    value = mags.min() / s.ctratio
                else:  # OpenDSS reads this phase of terminal 1, whatever the terminal
                    value = abs(currents[s.ct_phase - 1]) / s.ctratio
                high, low = value < s.off, value > s.on
            else:
                power = complex(np.sum(terminal_v * np.conj(
                    currents[k0:k0 + s.monitored_conductors])))
                q_kvar = power.imag * 1e-3
                if s.kind == "kvar":
                    high, low = q_kvar < s.off, q_kvar > s.on
                else:  # pf, on OpenDSS's 0..2 scale (leading above 1)
                    size = abs(power)
                    pf = abs(power.real) / size if size != 0.0 else 1.0
                    pf = 2.0 - pf if power.imag < 0.0 else pf
                    low = pf < s.pf_on and q_kvar > (
                        s.total_kvar * s.pct_min_kvar * 0.01 if c.present == OPEN
                        else s.total_kvar / s.steps * 0.5)
                    high = pf > s.pf_off
        # "low" wants another step closed, "high" wants one opened
        if c.present == OPEN:
            c.pending = CLOSE if low else NONE
            return low
        if high:
            c.pending = OPEN
            return True
        if more:
            if low:
                c.pending = CLOSE
                return True
            return False
        if s.kind != "voltage":
            c.pending = NONE
        return False

    @staticmethod
    def _control_voltage(s: CapacitorSettings, vb: np.ndarray) -> float:
        mags = np.abs(vb[:s.monitored_phases])
        if s.pt_phase == AVG_PHASES:
            return float(mags.sum() / s.monitored_phases / s.ptratio)
        if s.pt_phase == MAX_PHASE:
            return float(mags.max() / s.ptratio)
        if s.pt_phase == MIN_PHASE:
            return float(mags.min() / s.ptratio)
        k = s.pt_phase - 1
        if s.delta:  # line to line across the delta bank
            return float(abs(vb[k] - vb[(k + 1) % s.phases]) / s.ptratio)
        return float(abs(vb[k]) / s.ptratio)

    @staticmethod
    def _act_capacitor(c: _Capacitor, action: str, now: float) -> None:
        s = c.s
        if action == OPEN and c.present == CLOSE:
            c.in_service = max(c.in_service - 1, 0)
            if s.steps == 1 or c.in_service == 0:
                c.closed = False
                c.present = OPEN
                if s.steps == 1:  # OpenDSS times the dead time from single-step opens
                    c.last_open_s = now
        elif action == CLOSE:
            if c.present == OPEN:
                c.closed = True
                c.present = CLOSE
            c.in_service = min(c.in_service + 1, s.steps)
        c.armed = False
