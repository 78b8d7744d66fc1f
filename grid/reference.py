"""OpenDSS itself, driven on the same cases as `PowerFlow`: the reference for validation and
the peer in benchmarks.

The circuit is compiled in a private engine, solved once with its controls, and then the
controls are frozen exactly as in `load_feeder`, so both solvers see the same regulator taps
and capacitor states. Injections become extra single-phase loads with negative power whose
voltage limits are pushed out of reach, i.e. pure constant-power injections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from grid.errors import GridError
from grid.feeder import Feeder, compile_circuit, freeze_controls, new_dss_engine


class OpenDSSReference:
    """An OpenDSS engine holding `feeder`'s circuit with frozen controls.

    connections: caller connections as in `PowerFlow` ("bus.p" or "bus.p.q").
    tolerance: OpenDSS's convergence tolerance (its default is 1e-4).
    """

    def __init__(
        self,
        feeder: Feeder,
        connections: Sequence[str] = (),
        *,
        tolerance: float = 1e-12,
        max_iterations: int = 1000,
    ) -> None:
        self.feeder = feeder
        self.ctx = new_dss_engine()
        compile_circuit(self.ctx, feeder.path, feeder.commands)
        cmd = self.ctx.Text.Command
        freeze_controls(self.ctx, feeder.controls_load_scale)
        cmd(f"set tolerance={tolerance} maxiterations={max_iterations}")
        self.load_names = [ld.name for ld in feeder.loads]
        self.kw = np.array([ld.kw for ld in feeder.loads])
        self.kvar = np.array([ld.kvar for ld in feeder.loads])
        # generating elements (PVSystem, Storage, Generator) stay at the file's output
        self.consuming = feeder.consuming
        self.injection_names = []
        for k, spec in enumerate(connections):
            bus, *phases = spec.lower().split(".")
            name = f"inj_{k}"
            base_kv = feeder.node_base_kv[feeder.node_index(f"{bus}.{phases[0]}")]
            kv = base_kv * (math.sqrt(3) if len(phases) == 2 else 1.0)
            conn = "delta" if len(phases) == 2 else "wye"
            cmd(
                f"new load.{name} bus1={spec} phases=1 conn={conn} kv={kv:.6f} model=1 "
                "kw=0 kvar=0 vminpu=0.0001 vlowpu=0.00005 vmaxpu=1000"
            )
            self.injection_names.append(name)
        self.ctx.Solution.SolveNoControl()
        self._order: np.ndarray | None = None

    def _node_order(self) -> np.ndarray:
        """Map OpenDSS's present Y node order onto `feeder.nodes`."""
        if self._order is None:
            names = [n.lower() for n in self.ctx.Circuit.YNodeOrder()]
            where = {n: i for i, n in enumerate(names)}
            missing = [n for n in self.feeder.nodes if n not in where]
            if missing:
                raise GridError(f"OpenDSS has no node(s) {missing[:5]} of {self.feeder.name}")
            self._order = np.array([where[n] for n in self.feeder.nodes])
        return self._order

    def set_case(
        self,
        load_scale: np.ndarray | float = 1.0,
        p_kw: np.ndarray | None = None,
        q_kvar: np.ndarray | None = None,
    ) -> None:
        """Scale every feeder load and set the injections (generation positive), one case.
        The feeder's generating elements keep their output: their scale must be 1."""
        scale = np.broadcast_to(np.asarray(load_scale, dtype=float), self.kw.shape)
        if not np.all(scale[~self.consuming] == 1.0):
            raise ValueError("the OpenDSS reference scales loads only: give the feeder's "
                             "generating elements a load_scale of 1")
        loads = self.ctx.Loads
        for name, kw, kvar, s, own in zip(self.load_names, self.kw, self.kvar, scale,
                                          self.consuming):
            if not own:
                continue
            loads.Name(name)
            loads.kW(kw * s)
            loads.kvar(kvar * s)
        n = len(self.injection_names)
        p = np.zeros(n) if p_kw is None else np.asarray(p_kw, dtype=float)
        q = np.zeros(n) if q_kvar is None else np.asarray(q_kvar, dtype=float)
        for name, pk, qk in zip(self.injection_names, p, q):
            loads.Name(name)
            loads.kW(-pk)
            loads.kvar(-qk)

    def solve(self) -> tuple[np.ndarray, bool]:
        """Solve the present case: (complex node voltages in `feeder.nodes` order, converged)."""
        self.ctx.Solution.SolveNoControl()
        volts = np.asarray(self.ctx.Circuit.YNodeVArray()).view(complex)
        return volts[self._node_order()], bool(self.ctx.Solution.Converged())

    def solve_case(
        self,
        load_scale: np.ndarray | float = 1.0,
        p_kw: np.ndarray | None = None,
        q_kvar: np.ndarray | None = None,
    ) -> tuple[np.ndarray, bool]:
        """`set_case` then `solve`."""
        self.set_case(load_scale, p_kw, q_kvar)
        return self.solve()

    def powers(self) -> tuple[complex, complex, complex]:
        """Source power delivered, total losses (lines and transformers) and capacitor kvar,
        all as complex kVA, of the last solution."""
        total = complex(*self.ctx.Circuit.TotalPower())
        losses = complex(*self.ctx.Circuit.Losses()) / 1e3
        caps = 0j
        for name in self.ctx.Capacitors.AllNames() or []:
            self.ctx.Circuit.SetActiveElement(f"Capacitor.{name}")
            powers = np.asarray(self.ctx.CktElement.Powers())
            caps += complex(powers[0::2].sum(), powers[1::2].sum())
        return -total, losses, caps

    def prepare_series(self, load_scale: np.ndarray) -> None:
        """Load many cases the way OpenDSS runs time series, its fastest path through a
        sequence of load states: one loadshape per load holding the cases as its points,
        solved in yearly mode. load_scale: [cases, loads]."""
        scale = np.asarray(load_scale, dtype=float)
        ctx, cmd = self.ctx, self.ctx.Text.Command
        self.set_case(1.0)
        for j, name in enumerate(self.load_names):
            shape = f"series_{j}"
            ctx.LoadShape.New(shape)
            ctx.LoadShape.Npts(scale.shape[0])
            ctx.LoadShape.HrInterval(1.0)
            ctx.LoadShape.PMult(scale[:, j].tolist())
            ctx.LoadShape.UseActual(False)
            cmd(f"load.{name}.yearly={shape}")
        self._series_cases = scale.shape[0]

    def run_series(self) -> np.ndarray:
        """Solve the prepared cases, one yearly-mode solution per case, reading all node
        voltages after each: complex [cases, nodes]. As in any OpenDSS time series each
        case starts from the previous solution."""
        ctx, cmd = self.ctx, self.ctx.Text.Command
        cmd("set mode=yearly stepsize=1h number=1")
        ctx.Solution.Hour(0)
        ctx.Solution.Seconds(0)
        order = self._node_order()
        out = np.empty((self._series_cases, len(order)), dtype=complex)
        for k in range(self._series_cases):
            ctx.Solution.Solve()
            out[k] = np.asarray(ctx.Circuit.YNodeVArray()).view(complex)[order]
        cmd("set mode=snapshot")
        return out

    def solve_series(self, load_scale: np.ndarray) -> np.ndarray:
        """`prepare_series` then `run_series`."""
        self.prepare_series(load_scale)
        return self.run_series()
