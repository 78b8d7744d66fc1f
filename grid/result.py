"""The answer of a batched power flow, as tensors and as tables."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from grid.powerflow import PowerFlow
    from grid.single import CpuSolver, Summary

CDTYPE = torch.complex128


class PowerFlowResult:
    """Solution of a batch of scenarios; rows of scenarios that did not converge are NaN.

    Always computed: `voltages` (complex [B, nodes], V, in `feeder.nodes` order),
    `converged` (bool [B]), `iterations` (int [B]) and `residual` ([B], the last relative
    port-voltage change). Everything else is derived on first access and cached; all of it
    is differentiable with respect to tensors passed to `PowerFlow.solve`.
    """

    def __init__(
        self,
        pf: PowerFlow,
        u: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
        s_conn: torch.Tensor | None,
        converged: torch.Tensor,
        iterations: torch.Tensor,
        residual: torch.Tensor,
        currents: torch.Tensor | None = None,
        voltages: torch.Tensor | None = None,
        compiled: CpuSolver | None = None,
    ) -> None:
        """voltages: the node voltages where the solver computed them already (the
        compiled CPU loop, which gives them only when every scenario converged); otherwise
        they follow from the currents. compiled: that loop's solver, which then derives
        the voltage magnitudes, violations, line loading, network losses, substation and
        load power too, in one pass (none of them needs a gradient there)."""
        self.pf, self.feeder = pf, pf.feeder
        self._compiled = compiled
        self.u, self._s_conn = u, s_conn
        self.converged, self.iterations, self.residual = converged, iterations, residual
        self._all_converged = voltages is not None or bool(converged.all())
        c = pf._currents(u, s_port, scale) if currents is None else currents
        self._port_currents = c  # [B, 2, P], A drawn a -> b
        if voltages is None:
            voltages = pf._node_voltages(torch.complex(c[:, 0], c[:, 1]))
        self.voltages = self._nan_rows(voltages)

    def _nan_rows(self, x: torch.Tensor) -> torch.Tensor:
        """x with the rows of scenarios that did not converge set to NaN."""
        if self._all_converged:
            return x
        ok = self.converged.view(-1, *([1] * (x.dim() - 1)))
        return torch.where(ok, x, torch.full((), float("nan"), dtype=x.dtype, device=x.device))

    @property
    def batch(self) -> int:
        return self.voltages.shape[0]

    @cached_property
    def _derived(self) -> Summary | None:
        """The derived quantities by the compiled kernel, in one pass
        (grid.single.derived), where the compiled loop solved; None: torch derives them."""
        return None if self._compiled is None else self._compiled.derived(
            self.voltages, self.u, self._port_currents)

    @cached_property
    def vmag_pu(self) -> torch.Tensor:
        """[B, nodes] voltage magnitude per unit of the node's line-to-neutral base."""
        if self._derived is not None:
            return self._derived.vmag_pu
        v = self.voltages
        return torch.sqrt(v.real.square() + v.imag.square()) / self.pf.node_base_v

    @cached_property
    def undervoltage(self) -> torch.Tensor:
        """bool [B, nodes]: below `feeder.vmin_pu`."""
        return self.vmag_pu.detach() < self.feeder.vmin_pu

    @cached_property
    def overvoltage(self) -> torch.Tensor:
        """bool [B, nodes]: above `feeder.vmax_pu`."""
        return self.vmag_pu.detach() > self.feeder.vmax_pu

    @property
    def violations(self) -> torch.Tensor:
        """[B]: number of nodes outside the voltage limits."""
        if self._derived is not None:
            return self._derived.violations
        return (self.undervoltage | self.overvoltage).sum(-1)

    @cached_property
    def connection_voltages(self) -> torch.Tensor:
        """complex [B, connections]: voltage across each caller connection, V."""
        if self._compiled is not None:  # (numpy's gather: a tenth of torch's three calls)
            u = self.u.numpy()[:, :, self.pf._conn_port_np]
            return torch.from_numpy(u[:, 0] + 1j * u[:, 1])
        u = self.u[:, :, self.pf.conn_port]
        return self._nan_rows(torch.complex(u[:, 0], u[:, 1]))

    @cached_property
    def line_currents(self) -> torch.Tensor:
        """complex [B, lines, conductors]: current into each line at its bus1 end, A."""
        pf, v = self.pf, self.voltages
        ground = torch.zeros(v.shape[0], 1, dtype=v.dtype, device=v.device)
        v_pad = torch.cat([v, ground], 1)
        gathered = v_pad.index_select(1, pf.line_idx.flatten()).view(
            v.shape[0], *pf.line_idx.shape)
        return torch.einsum("lkj,blj->blk", pf.line_y, gathered)

    @cached_property
    def line_loading(self) -> torch.Tensor:
        """[B, lines]: largest conductor current over normal ampacity (nan if unrated)."""
        if self._derived is not None:
            return self._derived.line_loading
        i = self.line_currents
        return torch.sqrt(i.real.square() + i.imag.square()).amax(-1) / self.pf.line_amps

    @cached_property
    def substation_power(self) -> torch.Tensor:
        """complex [B]: power the sources deliver into the feeder, kVA."""
        if self._derived is not None:
            return self._derived.substation_power
        pf = self.pf
        vs = self.voltages[:, pf.src_idx]
        i_src = pf.src_i_n - vs @ pf.src_y_t
        return (vs * i_src.conj()).sum(-1) / 1e3

    @cached_property
    def load_power(self) -> torch.Tensor:
        """complex [B]: power drawn by the feeder's own loads, kVA.

        What every port draws, u conj(c) summed over the ports, is the loads' power less
        what the connections inject (an injection s draws -conj(s) u / |u|^2, so its port
        term is -s): the loads' power is that sum plus the injections. The currents are
        the load models' at the answer, so this is their power, without evaluating them
        once more (a few hundred microseconds per batch-1 result)."""
        if self._derived is not None:
            return self._derived.port_power + self.injection_power
        u, c = self.u, self._port_currents
        p = (u[:, 0] * c[:, 0] + u[:, 1] * c[:, 1]).sum(-1)
        q = (u[:, 1] * c[:, 0] - u[:, 0] * c[:, 1]).sum(-1)
        return self._nan_rows(torch.complex(p, q) / 1e3 + self.injection_power)

    @cached_property
    def injection_power(self) -> torch.Tensor:
        """complex [B]: net power injected at the caller connections, kVA."""
        if self._s_conn is None:
            return torch.zeros(self.batch, dtype=CDTYPE, device=self.voltages.device)
        return self._s_conn.sum(-1)

    @cached_property
    def losses(self) -> torch.Tensor:
        """complex [B]: power absorbed by lines, transformers and shunts, kVA.

        Shunt capacitors make the reactive part negative where they supply vars. The energy
        balance substation + injections = loads + losses holds by construction.
        """
        return self.substation_power - self.load_power + self.injection_power

    @cached_property
    def network_losses(self) -> torch.Tensor:
        """complex [B]: power absorbed by the network, kVA, from the node voltages and the
        network's admittance alone: sum of V conj(Y V) without the sources.

        Independent of the load model, so `substation_power + injection_power - load_power
        - network_losses` is how far a solution is from Kirchhoff's current law (zero to
        solver tolerance). Computed on the CPU; not differentiable.
        """
        if self._derived is not None:
            return self._derived.network_losses
        v = self.voltages.detach().cpu().numpy()
        s = (v * (self.pf.y_net @ v.T).T.conj()).sum(1) / 1e3
        return torch.as_tensor(s, device=self.voltages.device)

    def node_table(self, scenario: int = 0) -> pd.DataFrame:
        """One row per node of one scenario: voltage magnitude, angle and limit flags."""
        v = self.voltages[scenario].detach().cpu().numpy()
        return pd.DataFrame(
            {
                "node": self.feeder.nodes,
                "v_volts": np.abs(v),
                "v_angle_deg": np.degrees(np.angle(v)),
                "v_pu": self.vmag_pu[scenario].detach().cpu().numpy(),
                "undervoltage": self.undervoltage[scenario].cpu().numpy(),
                "overvoltage": self.overvoltage[scenario].cpu().numpy(),
            }
        )

    def line_table(self, scenario: int = 0) -> pd.DataFrame:
        """One row per line of one scenario: current per conductor and loading."""
        amps = self.line_currents[scenario].detach().abs().cpu().numpy()
        frame = self.feeder.line_table()[["name", "bus1", "bus2", "norm_amps"]].copy()
        for k in range(amps.shape[1]):
            frame[f"i{k + 1}_amps"] = amps[:, k]
        frame["loading"] = self.line_loading[scenario].detach().cpu().numpy()
        return frame
