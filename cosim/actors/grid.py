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
                 n_households: int, feeder_load_scale: float = 0.0, vmin_pu: float = 0.95,
                 vmax_pu: float = 1.05, tol: float = 1e-9, device: str = "auto",
                 controls_load_scale: float = 1.0, controls: str = "frozen",
                 dt_s: float = 900.0, clock_s: float = 0.0) -> None:
        """dt_s: step length; clock_s: local time of day of step 0 (s), the clock of
        time-controlled capacitors."""
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
        self.dt_s, self.clock_s = dt_s, clock_s
        self.n_households = n_households
        self.load_scale = feeder_load_scale
        # generation on daily shapes: a load_scale column per feeder load, else a scalar
        self.daily = DailyGeneration(self.feeder) if self.feeder.shaped else None
        self.conn_base_v = np.array([self.feeder.connection_base_v(c) for c in connections])
        self._warm: torch.Tensor | None = None  # last port voltages: the next start
        # one solve at set-up: a power flow's first solve loads the compiled kernels
        # (grid.single, 0.3-0.7 s), which belongs to starting the actor, not to step 0
        self.pf.solve(load_scale=0.0)

    @property
    def pf(self) -> PowerFlow:
        """The power flow of the present taps and capacitor states."""
        return self._pf if self.controls is None else self.controls.powerflow

    def physics(self, step: int, inbox: list[Message]) -> list[Message]:
        n_conn = self.pf.n_connections
        p = np.zeros(n_conn)
        q = np.zeros(n_conn)
        for batch in only(inbox, InjectionBatch):
            self._validate(step, batch)
            p += np.bincount(batch.connection, weights=batch.p_kw, minlength=n_conn)
            q += np.bincount(batch.connection, weights=batch.q_kvar, minlength=n_conn)
        p_t, q_t = torch.as_tensor(p[None]), torch.as_tensor(q[None])
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
        converged = bool(result.converged[0])
        self._warm = result.u if converged else None
        vpu = result.vmag_pu[0].cpu().numpy()
        estimate = vpu if converged else self.pf.first_step_vmag_pu(
            p_t, q_t, load_scale=scale)[0].cpu().numpy()
        worst = self.feeder.nodes[int(np.nanargmin(estimate))]
        conn_v = np.abs(result.connection_voltages[0].cpu().numpy()) / self.conn_base_v
        sub = complex(result.substation_power[0])
        losses = complex(result.losses[0])
        # Kirchhoff, independently of the load models: what the network absorbs, from the
        # voltages and Y alone, against what the sources and connections put in.
        kcl = (sub + complex(result.injection_power[0]) - complex(result.load_power[0])
               - complex(result.network_losses[0])).real
        violations = int(result.violations[0])
        self.record("grid", step=step, converged=converged,
                    iterations=int(result.iterations[0]), substation_kw=sub.real,
                    substation_kvar=sub.imag, losses_kw=losses.real, losses_kvar=losses.imag,
                    injections_kw=float(p.sum()), feeder_loads_kw=complex(
                        result.load_power[0]).real, kcl_mismatch_kw=kcl,
                    v_min_pu=float(np.nanmin(vpu)) if converged else np.nan,
                    v_max_pu=float(np.nanmax(vpu)) if converged else np.nan,
                    violations=violations, worst_bus=worst, **controlled)
        self.record("buses", step=step, node=np.arange(len(vpu)), v_pu=vpu)
        loading = result.line_loading[0].cpu().numpy()
        self.record("lines", step=step, line=np.arange(len(self.feeder.lines)),
                    loading=loading)
        rated = loading[np.isfinite(loading)]
        max_loading = float(rated.max()) if converged and len(rated) else float("nan")
        overloaded = int((rated > 1.0).sum()) if converged else 0
        return [GridState(
            step, self.name, converged=converged, iterations=int(result.iterations[0]),
            substation_kw=sub.real, substation_kvar=sub.imag, losses_kw=losses.real,
            losses_kvar=losses.imag, balance_kw=kcl,
            v_min_pu=float(np.nanmin(vpu)) if converged else float("nan"),
            v_max_pu=float(np.nanmax(vpu)) if converged else float("nan"),
            violations=violations, worst_bus=worst, connection_v_pu=conn_v,
            max_loading=max_loading, overloaded_lines=overloaded)]

    def _load_scale(self, time_s: float) -> float | np.ndarray:
        """The power flow's load_scale at `time_s` (s after midnight of day 0): the feeder's
        loads at `feeder_load_scale`, its generation at its daily shapes' output."""
        if self.daily is None:
            return self.load_scale
        generation = self.daily.multipliers(time_s / 3600.0)
        return np.where(self.feeder.consuming, self.load_scale, generation)[None]

    def _validate(self, step: int, batch: InjectionBatch) -> None:
        batch.require(step, "connection", 0, self.pf.n_connections, "unknown grid connection")
        batch.require(step, "household", 0, self.n_households, "unknown household id")

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
