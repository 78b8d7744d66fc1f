"""GridActor: the feeder's three-phase AC power flow, once per step.

It sums the households' injections per grid connection (a few hundred connections, whatever
the number of households), solves the batched torch power flow, warm-started from the last
step, and publishes a GridState. Node voltages and line loadings go to the records.

With `controls="opendss"` the feeder's regulators and capacitors act after each power flow
(grid.controls: OpenDSS's static control mode, settling within the step) and keep their
taps from step to step; the `controls` table records every control's position per step
(regulator tap number from the middle of its range, capacitor steps in service).

The feeder's own generators and PV systems on daily loadshapes follow them (grid.daily).
Step k is solved at the time OpenDSS's daily mode would give it, the end of the step:
clock_s + (k + 1) dt_s, which time-of-day capacitor controls read too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cosim.actors.base import Actor, only
from cosim.messages import GridState, InjectionBatch, Message
from grid import PowerFlow, load_feeder
from grid.controls import Controls
from grid.daily import DailyGeneration


class GridActor(Actor):
    SUBSCRIBES = {"physics": ("injections",)}
    PUBLISHES = {"physics": ("grid",)}

    def __init__(self, name: str, seed: int, feeder: str, connections: Sequence[str],
                 feeder_load_scale: float = 0.0, vmin_pu: float = 0.95,
                 vmax_pu: float = 1.05, tol: float = 1e-9, device: str = "auto",
                 controls_load_scale: float = 1.0, controls: str = "frozen",
                 dt_s: float = 900.0, clock_s: float = 0.0, copies: int = 1) -> None:
        """dt_s: step length; clock_s: local time of day of step 0 (s), the clock of
        time-controlled capacitors; copies: independent copies of the feeder, solved as
        one batch (a household's connection index is copy * connections + connection)."""
        super().__init__(name, seed)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.feeder = load_feeder(feeder, vmin_pu=vmin_pu, vmax_pu=vmax_pu,
                                  controls_load_scale=controls_load_scale)
        if controls not in ("frozen", "opendss"):
            raise ValueError(f"grid.controls must be 'frozen' or 'opendss', got {controls!r}")
        self.controls = (Controls(self.feeder, connections, device=device, tol=tol)
                         if controls == "opendss" else None)
        self._pf = (PowerFlow(self.feeder, connections, device=device, tol=tol)
                    if self.controls is None else None)
        if copies > 1 and controls != "frozen":
            raise ValueError("grid.controls = \"opendss\" keeps one set of taps; it cannot "
                             "run copies")
        self.dt_s, self.clock_s, self.copies = dt_s, clock_s, copies
        self.load_scale = feeder_load_scale
        # generation on daily shapes: a load_scale column per feeder load, else a scalar
        self.daily = DailyGeneration(self.feeder) if self.feeder.shaped else None
        self.conn_base_v = self.feeder.connection_bases_v(connections)
        self._warm: torch.Tensor | None = None  # last port voltages: the next start
        self._indices: dict[tuple[int, int], tuple[np.ndarray, dict]] = {}  # `_index`
        # one solve at set-up: a power flow's first solve loads the compiled kernels
        # (grid.single, 0.3-0.7 s), which belongs to starting the actor, not to step 0
        self.pf.solve(load_scale=0.0)

    @property
    def pf(self) -> PowerFlow:
        """The power flow of the present taps and capacitor states."""
        return self._pf if self.controls is None else self.controls.powerflow

    def physics(self, step: int, inbox: list[Message]) -> list[Message]:
        n_conn, c = self.pf.n_connections, self.copies
        p = np.zeros(c * n_conn)
        q = np.zeros(c * n_conn)
        for batch in only(inbox, InjectionBatch):
            self._validate(step, batch)
            p += np.bincount(batch.connection, weights=batch.p_kw, minlength=c * n_conn)
            q += np.bincount(batch.connection, weights=batch.q_kvar, minlength=c * n_conn)
        p_t = torch.as_tensor(p.reshape(c, n_conn))
        q_t = torch.as_tensor(q.reshape(c, n_conn))
        time_s = self.clock_s + (step + 1) * self.dt_s
        scale = self._load_scale(time_s)
        if self.controls is None:
            result = self.pf.solve(p_t, q_t, load_scale=scale, initial=self._warm)
            controlled = {}
        else:
            solved = self.controls.step(time_s, p_t, q_t, load_scale=scale,
                                        initial=self._warm)
            result = solved.result
            controlled = dict(control_iterations=solved.iterations,
                              tap_changes=solved.tap_changes,
                              capacitor_switches=solved.capacitor_switches,
                              controls_settled=solved.settled)
            positions = self.controls.positions()
            self.record("controls", step=step, control=np.array(list(positions)),
                        position=np.array(list(positions.values()), dtype=np.int64))
        converged = result.converged.cpu().numpy()
        # a copy that did not converge starts its next step cold, as a run of its own would
        self._warm = (result.u if converged.all() else None if not converged.any() else
                      torch.where(result.converged[:, None, None], result.u, self.pf.u0))
        vpu = result.vmag_pu.cpu().numpy()  # [copies, nodes]
        # NaN-ignoring reductions (fmin, fmax): a node without a voltage base has no p.u.
        v_min = np.where(converged, np.fmin.reduce(vpu, 1), np.nan)
        v_max = np.where(converged, np.fmax.reduce(vpu, 1), np.nan)
        if not converged.all():  # where the solve failed, a first-order estimate
            estimate = self.pf.first_step_vmag_pu(p_t, q_t, load_scale=scale).cpu().numpy()
            estimate = np.where(converged[:, None], vpu, estimate)
            lowest = np.fmin.reduce(estimate, 1)
        else:
            estimate, lowest = vpu, v_min
        conn_v = np.abs(result.connection_voltages.cpu().numpy()) / self.conn_base_v
        sub = result.substation_power.cpu().numpy()
        losses = result.losses.cpu().numpy()
        load = result.load_power.cpu().numpy()
        # Kirchhoff, independently of the load models: what the network absorbs, from the
        # voltages and Y alone, against what the sources and connections put in.
        kcl = (sub + result.injection_power.cpu().numpy() - load
               - result.network_losses.cpu().numpy()).real
        violations = result.violations.cpu().numpy().astype(np.int64)
        loading = result.line_loading.cpu().numpy()  # [copies, lines], NaN where unrated
        max_loading = np.where(converged, np.fmax.reduce(loading, 1), np.nan)
        overloaded = np.where(converged, (loading > 1.0).sum(1), 0)
        # the worst bus of the copy with the lowest voltage
        low = 0 if c == 1 else int(np.nanargmin(lowest))
        # where the copy's lowest voltage is: the first node at its (known) minimum, a
        # fifth of nanargmin's time on the European LV feeder's 2,721 nodes
        at = np.flatnonzero(estimate[low] == lowest[low])
        bus = self.feeder.nodes[int(at[0]) if len(at) else int(np.nanargmin(estimate[low]))]
        if self.recording:
            worst = (np.array([bus]) if c == 1 else
                     np.array([self.feeder.nodes[int(k)] for k in np.nanargmin(estimate, 1)]))
            copy = {"copy": np.arange(c)} if c > 1 else {}
            self.record("grid", step=step, converged=converged,
                        iterations=result.iterations.cpu().numpy(), substation_kw=sub.real,
                        substation_kvar=sub.imag, losses_kw=losses.real,
                        losses_kvar=losses.imag, injections_kw=p.reshape(c, n_conn).sum(1),
                        feeder_loads_kw=load.real, kcl_mismatch_kw=kcl, v_min_pu=v_min,
                        v_max_pu=v_max, violations=violations, worst_bus=worst,
                        **controlled, **copy)
            node, copy_of_node = self._index(vpu.shape)
            line, copy_of_line = self._index(loading.shape)
            self.record("buses", step=step, node=node, v_pu=vpu.ravel(), **copy_of_node)
            self.record("lines", step=step, line=line, loading=loading.ravel(), **copy_of_line)
        return [GridState(
            step, self.name, iterations=int(result.iterations.max()),
            balance_kw=float(kcl[np.argmax(abs(kcl))]),
            worst_bus=bus if c == 1 else f"{bus} (copy {low})", connection_v_pu=conn_v,
            copy_converged=converged, copy_violations=violations, copy_v_min_pu=v_min,
            copy_v_max_pu=v_max, copy_substation_kw=sub.real, copy_substation_kvar=sub.imag,
            copy_losses_kw=losses.real, copy_losses_kvar=losses.imag,
            copy_max_loading=max_loading, copy_overloaded_lines=overloaded)]

    def _index(self, shape: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The `buses` or `lines` index columns of a [copies, items] result: each row's
        item, and its copy where there are several. Made once per shape and shared by the
        steps' records, read-only (rather than tiled anew every step)."""
        if shape not in self._indices:
            c, items = shape
            index = np.tile(np.arange(items), c)
            copy = {"copy": np.repeat(np.arange(c), items)} if c > 1 else {}
            for column in (index, *copy.values()):
                column.setflags(write=False)
            self._indices[shape] = index, copy
        return self._indices[shape]

    def _load_scale(self, time_s: float) -> float | np.ndarray:
        """The power flow's load_scale at `time_s` (s after midnight of day 0): the feeder's
        loads at `feeder_load_scale`, its generation at its daily shapes' output."""
        if self.daily is None:
            return self.load_scale
        generation = self.daily.multipliers(time_s / 3600.0)
        columns = np.where(self.feeder.consuming, self.load_scale, generation)
        return np.repeat(columns[None], self.copies, axis=0)

    def _validate(self, step: int, batch: InjectionBatch) -> None:
        batch.require(step, "connection", 0, self.copies * self.pf.n_connections,
                      "unknown grid connection")

    def state_dict(self) -> dict[str, object]:
        # the warm start is state: without it a resumed run would take other iterations
        # and differ from the uninterrupted one in the last digits
        warm = None if self._warm is None else self._warm.cpu().numpy()
        controls = None if self.controls is None else self.controls.state_dict()
        daily = None if self.daily is None else self.daily.state_dict()
        return super().state_dict() | {"warm": warm, "controls": controls, "daily": daily}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        warm = state["warm"]
        self._warm = None if warm is None else torch.as_tensor(warm, device=self.pf.device)
        if self.controls is not None:
            self.controls.load_state_dict(state["controls"])
        if self.daily is not None:
            self.daily.load_state_dict(state["daily"])
