"""Batched three-phase AC power flow: the fixed-point Z-bus method in torch.

Every load branch and every caller connection is a *port*: an ordered node pair (a, b), b
possibly ground, across which constant-power, constant-current or constant-impedance power
is drawn. With X = Y⁻¹ Mᵀ (M the port incidence) the network is Kron-reduced to the ports:

    u = u0 - Zb c(u),    Zb = M X,    u0 = M w,

where u are port voltages, w the no-load node voltages and c(u) the currents the ports draw
(Bernstein et al., IEEE TPWRS 2018, written in port rather than node coordinates so that
wye and delta connections are one case). After convergence every node voltage is one matmul,
V = w - X c, and line currents, source power and losses follow from V.

The iteration runs in planar real form, [Re | Im] stacked along the last axis: the map is
real-linear rather than complex-linear in u, the complex elementwise kernels of torch are
several times slower than real ones, and the real-form adjoint is simply a transpose.

Shapes carry a leading batch dimension B over scenarios. Units: volts, amperes, kW/kvar/kVA.
Injections are *net injections* into the grid (generation positive); feeder loads consume.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from grid.errors import InjectionError
from grid.feeder import GROUND, Feeder
from grid.loadmodel import LoadModel
from grid.runtime import tune_cpu_allocator

CDTYPE = torch.complex128
RDTYPE = torch.float64


def parse_connection(feeder: Feeder, spec: str) -> tuple[int, int]:
    """"bus.p" (phase p to ground) or "bus.p.q" (between phases p and q) -> node indices."""
    parts = spec.strip().lower().split(".")
    bus = parts[0]
    if bus not in feeder._bus_phases:
        raise InjectionError(f"unknown bus {bus!r} in connection {spec!r} (feeder {feeder.name})")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
        raise InjectionError(
            f"connection {spec!r}: write 'bus.phase' (to ground) or 'bus.phase.phase'"
        )
    phases = [int(p) for p in parts[1:]]
    present = feeder.bus_phases(bus)
    for ph in phases:
        if ph not in present:
            raise InjectionError(
                f"connection {spec!r}: bus {bus!r} has phases {present}, not {ph}"
            )
    if len(phases) == 2 and phases[0] == phases[1]:
        raise InjectionError(f"connection {spec!r} joins a phase to itself")
    a = feeder.node_index(f"{bus}.{phases[0]}")
    b = feeder.node_index(f"{bus}.{phases[1]}") if len(phases) == 2 else GROUND
    return a, b


class PowerFlow:
    """Batched fixed-point Z-bus power flow over one feeder, on one torch device.

    `connections` name where callers inject power (see `parse_connection`). `solve` then
    takes net injections in kW/kvar per connection and an optional load scale, batched over
    scenarios, and returns a `PowerFlowResult`. Gradients with respect to the injections and
    the load scale are exact: the backward pass solves the adjoint of the fixed point.

    tol is the convergence threshold on the largest change of a port voltage's real or
    imaginary part, relative to its no-load magnitude; anderson is the Anderson mixing
    memory (0 for plain fixed-point iterations). compile=True fuses the elementwise part
    of each iteration with torch.compile: about twice the throughput on large batches,
    paid for with a compilation of several seconds on first use.
    """

    def __init__(
        self,
        feeder: Feeder,
        connections: Sequence[str] = (),
        *,
        device: str | torch.device | None = None,
        tol: float = 1e-9,
        max_iter: int = 100,
        anderson: int = 2,
        compile: bool = False,
    ) -> None:
        self.feeder = feeder
        self.connection_names = tuple(connections)
        self.tol = tol
        self.max_iter = max_iter
        self.anderson = anderson
        self.compile = compile
        self._compiled = None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.device.type == "cpu":
            tune_cpu_allocator()

        # Ports: load branches first, then caller connections (sharing a port when the
        # node pair is the same, so 1,000 households on 100 load nodes add no work).
        port_of: dict[tuple[int, int], int] = {}
        t_port, terms = [], []
        for li, ld in enumerate(feeder.loads):
            for a, b, v_nom in ld.branches():
                t_port.append(port_of.setdefault((a, b), len(port_of)))
                terms.append((li, v_nom))
        conn_port = [
            port_of.setdefault(parse_connection(feeder, spec), len(port_of))
            for spec in self.connection_names
        ]
        pairs = list(port_of)
        n_nodes, n_ports = len(feeder.nodes), len(pairs)
        self.n_ports = n_ports
        self.n_loads = len(feeder.loads)

        # Kron reduction: one sparse LU of Y, solved for the port columns only.
        rows, cols, vals = [], [], []
        for p, (a, b) in enumerate(pairs):
            rows.append(p), cols.append(a), vals.append(1.0)
            if b != GROUND:
                rows.append(p), cols.append(b), vals.append(-1.0)
        m = sp.csr_matrix((vals, (rows, cols)), shape=(n_ports, n_nodes))
        x = spla.splu(feeder.y.tocsc()).solve(m.T.toarray().astype(complex))  # [N, P]
        zb_t = (m @ x).T  # row-vector form: u = u0 - c @ Zb^T
        u0 = m @ feeder.v_noload

        def t(a: object, dtype: torch.dtype = RDTYPE) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)

        self.zr = t(np.block([[zb_t.real, zb_t.imag], [-zb_t.imag, zb_t.real]]))
        self.u0 = t(np.concatenate([u0.real, u0.imag]))
        base = np.maximum(np.abs(u0), 1.0)
        self.inv_base = t(1.0 / np.concatenate([base, base]))
        self.x_t = t(x.T, CDTYPE)  # [P, N]
        self.w = t(feeder.v_noload, CDTYPE)

        self.t_port = t(t_port, torch.long)
        self.t_load = t([li for li, _ in terms], torch.long)
        # Usually every port carries exactly one load term; then gathers are skipped.
        self.identity_terms = t_port == list(range(n_ports))
        self.load_model = LoadModel.build(feeder.loads, terms, self.device)
        self.conn_port = t(conn_port, torch.long)
        base_v = feeder.node_base_kv * 1e3
        self.node_base_v = t(np.where(np.isfinite(base_v) & (base_v > 0), base_v, np.nan))

        # Lines: from-end currents by a gather over a padded Yprim (ground -> zero voltage).
        lines = feeder.lines
        k = max((ln.phases for ln in lines), default=1)
        idx = np.full((len(lines), 2 * k), n_nodes, dtype=np.int64)
        ypad = np.zeros((len(lines), k, 2 * k), dtype=complex)
        for li, ln in enumerate(lines):
            nc = ln.phases
            nodes = [n if n != GROUND else n_nodes for n in (*ln.nodes1, *ln.nodes2)]
            idx[li, :nc], idx[li, k: k + nc] = nodes[:nc], nodes[nc:]
            ypad[li, :nc, :nc] = ln.yprim[:nc, :nc]
            ypad[li, :nc, k: k + nc] = ln.yprim[:nc, nc:]
        self.line_idx = t(idx, torch.long)
        self.line_y = t(ypad, CDTYPE)
        amps = np.array([ln.norm_amps for ln in lines], dtype=float)
        self.line_amps = t(np.where(amps > 0, amps, np.nan))

        # Sources in Norton form: I = I_N - Ys V at their terminals.
        src = [n for s in feeder.sources for n in s.nodes]
        ys = sp.block_diag([s.y for s in feeder.sources]).toarray()
        self.src_idx = t(src, torch.long)
        self.src_y_t = t(ys.T, CDTYPE)
        self.src_i_n = t((feeder.y @ feeder.v_noload)[src], CDTYPE)

    @property
    def n_connections(self) -> int:
        return len(self.connection_names)

    # ------------------------------------------------------------------ inputs
    def _inputs(
        self, p_kw: object, q_kvar: object, load_scale: object
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
        """Validate and batch the inputs.

        Returns the injection per port in planar form [B, 2P] (W | var), the load scale per
        load term [B, T], the injection per connection as complex kVA [B, C], and B.
        """
        nc = self.n_connections
        batch: int | None = None
        s_conn = s_port = None
        if p_kw is not None or q_kvar is not None:
            if nc == 0:
                raise InjectionError("injections given, but the PowerFlow has no connections")
            p = self._matrix(p_kw, "p_kw", nc, self.connection_names)
            q = self._matrix(q_kvar, "q_kvar", nc, self.connection_names)
            p = torch.zeros_like(q) if p is None else p
            q = torch.zeros_like(p) if q is None else q
            if p.shape != q.shape:
                raise InjectionError(
                    f"p_kw {tuple(p.shape)} and q_kvar {tuple(q.shape)} have different shapes"
                )
            batch = p.shape[0]
            s_conn = torch.complex(p, q)
            s_port = torch.zeros(batch, 2 * self.n_ports, dtype=RDTYPE, device=self.device)
            s_port = s_port.index_add(
                1, torch.cat([self.conn_port, self.conn_port + self.n_ports]),
                torch.cat([p, q], 1) * 1e3,
            )
        scale = None
        if load_scale is not None:
            x = torch.as_tensor(load_scale, dtype=RDTYPE, device=self.device)
            if x.dim() == 0:
                x = x.reshape(1, 1).expand(batch or 1, self.n_loads)
            elif x.dim() == 1:
                x = x.unsqueeze(1).expand(x.shape[0], self.n_loads)
            if x.dim() != 2 or x.shape[1] != self.n_loads:
                raise InjectionError(
                    f"load_scale must be a scalar, [batch] or [batch, {self.n_loads}] "
                    f"(one column per feeder load), got {tuple(x.shape)}"
                )
            _check_finite(x, "load_scale", [ld.name for ld in self.feeder.loads])
            if batch is not None and x.shape[0] not in (1, batch):
                raise InjectionError(
                    f"load_scale has {x.shape[0]} scenarios, the injections have {batch}"
                )
            batch = batch or x.shape[0]
            scale = x.expand(batch, -1)[:, self.t_load]
        return s_port, scale, s_conn, batch or 1

    def _matrix(
        self, x: object, name: str, width: int, labels: Sequence[str]
    ) -> torch.Tensor | None:
        if x is None:
            return None
        x = torch.as_tensor(x, device=self.device)
        if x.is_complex():
            raise InjectionError(f"{name} must be real (give active and reactive parts apart)")
        x = x.to(RDTYPE)
        x = x.unsqueeze(0) if x.dim() == 1 else x
        if x.dim() != 2 or x.shape[1] != width:
            raise InjectionError(
                f"{name} must have shape [batch, {width}] (one column per connection), "
                f"got {tuple(x.shape)}"
            )
        _check_finite(x, name, labels)
        return x

    # ------------------------------------------------------------------ physics
    def _term_voltages(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.n_ports
        ur, ui = u[:, :p], u[:, p:]
        if self.identity_terms:
            return ur, ui
        return ur[:, self.t_port], ui[:, self.t_port]

    def _term_power(
        self, tr: torch.Tensor, ti: torch.Tensor, derivative: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """|u|^2, |u| and the load power S(|u|) (VA) of each load term, and dS/d|u|."""
        r2 = torch.addcmul(tr * tr, ti, ti)
        r = r2 * torch.rsqrt(r2)  # rsqrt is ~3x faster than sqrt on CPU
        return (r2, r, *self.load_model.power(r, derivative))

    def _currents(
        self, u: torch.Tensor, s_port: torch.Tensor | None, scale: torch.Tensor | None
    ) -> torch.Tensor:
        """Planar port currents drawn a -> b (A) at planar port voltages u.

        A load term draws c = conj(S(|u|)) u / |u|^2 (times its scale), an injection s
        draws c = -conj(s) u / |u|^2.
        """
        tr, ti = self._term_voltages(u)
        r2, _, sr, si, _, _ = self._term_power(tr, ti)
        k = torch.reciprocal(r2) if scale is None else scale / r2
        cr = torch.addcmul(sr * tr, si, ti) * k
        ci = torch.addcmul(sr * ti, si, tr, value=-1) * k
        p = self.n_ports
        if not self.identity_terms:
            cr = torch.zeros_like(u[:, :p]).index_add(1, self.t_port, cr)
            ci = torch.zeros_like(u[:, :p]).index_add(1, self.t_port, ci)
        if s_port is not None:
            ur, ui = u[:, :p], u[:, p:]
            sr, si = s_port[:, :p], s_port[:, p:]
            k = torch.reciprocal(torch.addcmul(ur * ur, ui, ui))
            cr = cr - torch.addcmul(sr * ur, si, ui) * k
            ci = ci - torch.addcmul(sr * ui, si, ur, value=-1) * k
        return torch.cat([cr, ci], 1)

    def _step(
        self,
        u: torch.Tensor,
        u0: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One application of the Z-bus map and its relative residual per scenario."""
        g = torch.addmm(u0, self._currents(u, s_port, scale), self.zr, alpha=-1)
        return g, ((g - u).abs() * self.inv_base).amax(-1)

    def _iterate(
        self,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
        batch: int,
        u_init: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-point iterations with Anderson mixing.

        Returns planar u [B, 2P], converged [B], iterations [B], residual [B]. Rows are
        independent, so the whole batch keeps iterating until every row has converged or
        failed (residual non-finite or above 10, i.e. a runaway); failed rows end at
        no-load and are flagged.
        """
        dev = self.device
        u0 = self.u0.expand(batch, -1)
        u = u0.clone() if u_init is None else u_init.clone()
        iters = torch.full((batch,), self.max_iter, dtype=torch.long, device=dev)
        resid = torch.full((batch,), float("inf"), dtype=RDTYPE, device=dev)
        done = torch.zeros(batch, dtype=torch.bool, device=dev)
        failed = torch.zeros(batch, dtype=torch.bool, device=dev)
        hist_f: list[torch.Tensor] = []
        hist_g: list[torch.Tensor] = []
        prev: tuple[torch.Tensor, torch.Tensor] | None = None
        prev_res = resid
        step = self._compiled_step() if self.compile else self._step
        for it in range(1, self.max_iter + 1):
            g, res = step(u, u0, s_port, scale)
            active = ~(done | failed)
            resid = torch.where(active, res, resid)
            newly = active & (res <= self.tol)
            iters = torch.where(newly, it, iters)
            done = done | newly
            failed = failed | (active & ~newly & ~(res <= 10.0))
            # A converged row takes g and then stays put while the rest of the batch
            # iterates: near steep load characteristics a fixed point can be unstable
            # under further plain steps.
            settled = torch.where(newly.unsqueeze(1), g, u)
            if bool((done | failed).all()):
                u = settled
                break
            f = g - u
            if self.anderson and prev is not None:
                hist_f.append(f - prev[0])
                hist_g.append(g - prev[1])
                if len(hist_f) > self.anderson:
                    del hist_f[0], hist_g[0]
            prev = (f, g)
            if hist_f:
                # A row whose residual jumped tenfold falls back to the plain Z-bus step
                # (Anderson mixing is non-monotone, but not that much).
                nxt = _anderson(f, g, hist_f, hist_g)
                jumped = res > 10 * prev_res
                if bool(jumped.any()):
                    nxt = torch.where(jumped.unsqueeze(1), g, nxt)
            else:
                nxt = g
            u = torch.where(done.unsqueeze(1), settled, nxt) if bool(done.any()) else nxt
            prev_res = res
        converged = done & ~failed
        u = torch.where(converged.unsqueeze(1), u, u0)
        return u, converged, iters, resid

    def _compiled_step(self):  # noqa: ANN202 - a torch.compile'd callable
        """The iteration step fused by torch.compile (one kernel for the elementwise part)."""
        if self._compiled is None:
            self._compiled = torch.compile(self._step, dynamic=True)
        return self._compiled

    # ------------------------------------------------------------------ API
    def solve(
        self,
        p_kw: object = None,
        q_kvar: object = None,
        *,
        load_scale: object = None,
        initial: PowerFlowResult | None = None,
    ) -> PowerFlowResult:
        """Solve a batch of scenarios.

        p_kw, q_kvar: net injection (generation positive) at each connection, shape
            [batch, connections] or [connections]; tensors that require grad get exact
            implicit gradients.
        load_scale: multiplier of the feeder's own loads: scalar, [batch] or
            [batch, loads] in `feeder.loads` order.
        initial: a previous result of the same batch size to start from (a warm start
            for time series: the next step's voltages are close to the last).
        """
        s_port, scale, s_conn, batch = self._inputs(p_kw, q_kvar, load_scale)
        u_init = None
        if initial is not None and initial.u.shape[0] == batch:
            u_init = torch.where(initial.converged.unsqueeze(1), initial.u.detach(),
                                 self.u0.expand(batch, -1))
        with torch.no_grad():
            u, converged, iters, resid = self._iterate(
                None if s_port is None else s_port.detach(),
                None if scale is None else scale.detach(),
                batch,
                u_init,
            )
        if torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (s_port, scale)
        ):
            u = _ImplicitFixedPoint.apply(u, s_port, scale, converged, self)
        return PowerFlowResult(self, u, s_port, scale, s_conn, converged, iters, resid)

    # ------------------------------------------------------------------ adjoint
    def _adjoint(
        self,
        grad_u: torch.Tensor,
        u: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Vector-Jacobian product of the fixed point u = u0 - c(u, s, scale) Zr.

        Solves mu = g + (dc/du)^T (-Zr^T mu) by fixed-point iteration (it contracts wherever
        the forward map does) and returns (dc/ds)^T nu and (dc/dscale)^T nu for
        nu = -mu Zr^T. Per port c = h(rho) u with h = conj(S(rho)) / rho^2 and rho the
        clamped |u|, so dc/du = h I + u h'(rho) rho'(r) u^T / r as a real 2x2 block.
        """
        p = self.n_ports
        tr, ti = self._term_voltages(u)
        r2, r, sr, si, dsr, dsi = self._term_power(tr, ti, derivative=True)
        hr, hi = sr / r2, -si / r2  # h = conj(S) / r^2
        # w = u h'(r) / r with h' = conj(S') / r^2 - 2 h / r
        dhr = (dsr / r2 - 2 * hr / r) / r
        dhi = (-dsi / r2 - 2 * hi / r) / r
        if scale is not None:
            hr, hi, dhr, dhi = hr * scale, hi * scale, dhr * scale, dhi * scale
        wr = tr * dhr - ti * dhi
        wi = tr * dhi + ti * dhr
        if not self.identity_terms:
            hr, hi, wr, wi = (torch.zeros_like(u[:, :p]).index_add(1, self.t_port, a)
                              for a in (hr, hi, wr, wi))
        ur, ui = u[:, :p], u[:, p:]
        if s_port is not None:  # c = h u with h = -conj(s) / |u|^2, rho = r
            jr, ji = s_port[:, :p], s_port[:, p:]
            inv_r2 = 1.0 / (ur * ur + ui * ui)
            hsr, hsi = -jr * inv_r2, ji * inv_r2
            hr, hi = hr + hsr, hi + hsi
            # h' / r = -2 h / r^2
            wr = wr - 2 * (ur * hsr - ui * hsi) * inv_r2
            wi = wi - 2 * (ur * hsi + ui * hsr) * inv_r2

        def vjp_c(gc: torch.Tensor) -> torch.Tensor:
            gr, gi = gc[:, :p], gc[:, p:]
            tw = wr * gr + wi * gi
            return torch.cat([hr * gr + hi * gi + ur * tw, hr * gi - hi * gr + ui * tw], 1)

        zr_t = self.zr.T
        mu = grad_u
        g_size = grad_u.abs().amax(-1)
        for _ in range(self.max_iter):
            mu_next = grad_u + vjp_c(-(mu @ zr_t))
            size = mu_next.abs().amax(-1)
            settled = torch.isfinite(size) & (
                (mu_next - mu).abs().amax(-1) <= self.tol * size)
            diverged = ~torch.isfinite(size) | (size > 1e12 * g_size)
            mu = mu_next
            if bool((settled | diverged).all()):
                break
        if not bool(settled.all()):
            # Where the map is not a contraction (a fixed point that Anderson mixing found
            # near a steep load characteristic) the adjoint iteration diverges: solve the
            # adjoint system mu (I + Zr^T K) = g directly for those rows instead, with K
            # the 2x2-block Jacobian of the port currents that vjp_c applies.
            rows = torch.nonzero(~settled).flatten()
            idx = torch.arange(p, device=u.device)
            k = torch.zeros(len(rows), 2 * p, 2 * p, dtype=u.dtype, device=u.device)
            k[:, idx, idx] = (hr + ur * wr)[rows]
            k[:, idx + p, idx] = (hi + ur * wi)[rows]
            k[:, idx, idx + p] = (ui * wr - hi)[rows]
            k[:, idx + p, idx + p] = (hr + ui * wi)[rows]
            system = torch.eye(2 * p, dtype=u.dtype, device=u.device) + zr_t @ k
            mu = mu.clone()
            mu[rows] = torch.linalg.solve(system.transpose(1, 2),
                                          grad_u[rows].unsqueeze(-1)).squeeze(-1)
        gc = -(mu @ zr_t)
        gr, gi = gc[:, :p], gc[:, p:]
        grad_s = grad_scale = None
        if s_port is not None:
            # c = -conj(s) u / |u|^2  =>  dL/ds = -conj(gc) u / |u|^2 in planar form
            inv_r2 = 1.0 / (ur * ur + ui * ui)
            grad_s = torch.cat([-(gr * ur + gi * ui) * inv_r2, -(gr * ui - gi * ur) * inv_r2], 1)
        if scale is not None:
            # c = scale h u  =>  dL/dscale = Re(conj(gc) h u) per term
            gtr, gti = (gr, gi) if self.identity_terms else (gr[:, self.t_port],
                                                             gi[:, self.t_port])
            hur = (sr * tr + si * ti) / r2
            hui = (sr * ti - si * tr) / r2
            grad_scale = gtr * hur + gti * hui
        return grad_s, grad_scale


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
    ) -> None:
        self.pf, self.feeder = pf, pf.feeder
        self.u, self._s_port, self._scale, self._s_conn = u, s_port, scale, s_conn
        self.converged, self.iterations, self.residual = converged, iterations, residual
        p = pf.n_ports
        c = pf._currents(u, s_port, scale)
        self._ok = converged.unsqueeze(1)
        self.voltages = self._nan_rows(pf.w - torch.complex(c[:, :p], c[:, p:]) @ pf.x_t)

    def _nan_rows(self, x: torch.Tensor) -> torch.Tensor:
        ok = self._ok if x.dim() > 1 else self.converged
        return torch.where(ok, x, torch.full((), float("nan"), dtype=x.dtype, device=x.device))

    @property
    def batch(self) -> int:
        return self.voltages.shape[0]

    @cached_property
    def vmag_pu(self) -> torch.Tensor:
        """[B, nodes] voltage magnitude per unit of the node's line-to-neutral base."""
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
        return (self.undervoltage | self.overvoltage).sum(-1)

    @cached_property
    def connection_voltages(self) -> torch.Tensor:
        """complex [B, connections]: voltage across each caller connection, V."""
        p = self.pf.n_ports
        uc = torch.complex(self.u[:, :p], self.u[:, p:])[:, self.pf.conn_port]
        return self._nan_rows(uc)

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
        i = self.line_currents
        return torch.sqrt(i.real.square() + i.imag.square()).amax(-1) / self.pf.line_amps

    @cached_property
    def substation_power(self) -> torch.Tensor:
        """complex [B]: power the sources deliver into the feeder, kVA."""
        pf = self.pf
        vs = self.voltages[:, pf.src_idx]
        i_src = pf.src_i_n - vs @ pf.src_y_t
        return (vs * i_src.conj()).sum(-1) / 1e3

    @cached_property
    def load_power(self) -> torch.Tensor:
        """complex [B]: power drawn by the feeder's own loads, kVA."""
        pf = self.pf
        _, _, sr, si, _, _ = pf._term_power(*pf._term_voltages(self.u))
        if self._scale is not None:
            sr, si = sr * self._scale, si * self._scale
        return self._nan_rows(torch.complex(sr.sum(-1), si.sum(-1)) / 1e3)

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


def _anderson(
    f: torch.Tensor, g: torch.Tensor, hist_f: list[torch.Tensor], hist_g: list[torch.Tensor]
) -> torch.Tensor:
    """Anderson (type II) mixing per scenario: g - dG gamma, gamma = argmin |f - dF gamma|.

    Memories of one and two are solved in closed form: a batched LAPACK call on thousands
    of 2x2 systems costs more than the iteration it saves.
    """
    dots = [[torch.linalg.vecdot(a, b) for b in hist_f] for a in hist_f]
    rhs = [torch.linalg.vecdot(a, f) for a in hist_f]
    eps = 1e-10 * torch.stack([dots[i][i] for i in range(len(hist_f))]).amax(0) + 1e-300
    if len(hist_f) == 1:
        gammas = [rhs[0] / (dots[0][0] + eps)]
    elif len(hist_f) == 2:
        a, b, c = dots[0][0] + eps, dots[0][1], dots[1][1] + eps
        det = a * c - b * b
        gammas = [(c * rhs[0] - b * rhs[1]) / det, (a * rhs[1] - b * rhs[0]) / det]
    else:
        gram = torch.stack([torch.stack(row, -1) for row in dots], -2)
        gram = gram + torch.diag_embed(eps.unsqueeze(-1).expand(-1, len(hist_f)))
        gamma = torch.linalg.solve(gram, torch.stack(rhs, -1))
        gammas = list(gamma.unbind(-1))
    out = g
    for gamma, dg in zip(gammas, hist_g):
        out = torch.addcmul(out, gamma.unsqueeze(-1), dg, value=-1)
    return out


def _check_finite(x: torch.Tensor, name: str, labels: Sequence[str]) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows, cols = torch.nonzero(bad, as_tuple=True)
        col = int(cols[0])
        label = labels[col] if col < len(labels) else str(col)
        raise InjectionError(
            f"{name} has {int(bad.sum())} non-finite value(s); first at scenario "
            f"{int(rows[0])}, column {col} ({label!r})"
        )


class _ImplicitFixedPoint(torch.autograd.Function):
    """Identity on the converged port voltages whose backward is the implicit adjoint."""

    @staticmethod
    def forward(ctx, u, s_port, scale, converged, pf):  # type: ignore[override]
        ctx.pf = pf
        ctx.save_for_backward(u, s_port, scale, converged)
        return u.clone()

    @staticmethod
    def backward(ctx, grad_u):  # type: ignore[override]
        u, s_port, scale, converged = ctx.saved_tensors
        grad_u = torch.where(converged.unsqueeze(1), grad_u, 0.0)
        grad_s, grad_scale = ctx.pf._adjoint(grad_u, u, s_port, scale)
        return None, grad_s, grad_scale, None, None
