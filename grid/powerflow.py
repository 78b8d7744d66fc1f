"""Batched three-phase AC power flow: the fixed-point Z-bus method in torch.

Every load branch and every caller connection is a *port*: an ordered node pair (a, b), b
possibly ground, across which constant-power, constant-current or constant-impedance power
is drawn. With X = Y⁻¹ Mᵀ (M the port incidence) the network is Kron-reduced to the ports:

    u = u0 - Zb c(u),    Zb = M X,    u0 = M w,

where u are port voltages, w the no-load node voltages and c(u) the currents the ports draw
(Bernstein et al., IEEE TPWRS 2018, written in port rather than node coordinates so that
wye and delta connections are one case). After convergence every node voltage is one matmul,
V = w - X c, and line currents, source power and losses follow from V.

Where the fixed point stalls (near the nose of the PV curve) or diverges (the map stops
contracting though a solution exists), a damped Newton method on u - u0 + Zb c(u) = 0
takes over for those scenarios alone; what it cannot solve either is reported as not
converged. On large feeders (IEEE 8500) Zb is never formed: every product with it goes
through a sparse LU of Y (`grid.sparse`).

Port quantities are real tensors [B, 2, P] (real parts, then imaginary parts): the load
model is real arithmetic, several times faster in torch than its complex kernels, contiguous
so that torch.compile vectorises it, and the map is real-linear rather than complex-linear
in u anyway. The matmul is one real GEMM of the [B, 2P] view with the 2P x 2P real form
of Zb.

Shapes carry a leading batch dimension B over scenarios. Units: volts, amperes, kW/kvar/kVA.
Injections are *net injections* into the grid (generation positive); feeder loads consume.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from grid.errors import GridError, InjectionError
from grid.feeder import GROUND, Feeder
from grid.loadmodel import LoadModel
from grid.result import PowerFlowResult
from grid.runtime import tune_cpu_allocator
from grid.single import CpuSolver, bounded
from grid.sparse import SparseKron

CDTYPE = torch.complex128
RDTYPE = torch.float64
COARSE_TOL = 1e-5  # relative port-voltage change at which float64 takes over from float32
SPARSE_MIN_PORTS = 1000  # from here on `sparse=None` picks the sparse path (on the CPU)
LINE_SEARCH_HALVINGS = 30  # Newton step lengths tried: 1, 1/2, ... 2^-29
JACOBIAN_CHUNK = 2**24  # matrix entries per batched dense Jacobian solve (128 MiB)


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

    tol: convergence threshold on the largest change of a port voltage's real or
        imaginary part in one step, relative to its no-load magnitude.
    anderson, anderson_start: Anderson mixing memory (0 for none), used from iteration
        anderson_start on, for the rows that converge slowly.
    compile: fuse the elementwise part of each iteration with torch.compile; about 1.3x
        the throughput on large batches, for a compilation of several seconds on first use.
    mixed: take the first, coarse iterations in float32 (half the matmul cost); the last
        ones, and so the answer and its tolerance, are always float64. Dense path only.
    newton_iter: damped Newton steps for the scenarios the fixed point leaves unconverged
        (0: none). The fixed point stalls near the nose of the PV curve, and diverges
        where the Z-bus map stops contracting though a solution exists (heavy
        constant-impedance load); Newton on u - u0 + Zb c(u) = 0, with a line search on
        the same residual, solves those. A scenario it cannot solve either stays
        converged=False: past the nose there is no solution.
    sparse: keep Y's sparse LU and apply Zb = M Y⁻¹ Mᵀ through it each iteration
        (`grid.sparse`) instead of forming the dense Zb. None chooses by size: sparse on
        the CPU from SPARSE_MIN_PORTS ports on (the IEEE 8500-node feeder), where the
        dense build alone takes tens of seconds and each dense iteration costs more than
        the sparse one. The dense path is faster for small feeders and large batches,
        and the only one on GPUs.
    compiled_cpu: iterate on the CPU in numba-compiled code (`grid.single`), one
        scenario or a batch (chunks of scenarios in lockstep on all threads): at batch 1
        5-10 times faster than torch, whose per-operation dispatch dominates one
        scenario, and at batch 1,024 on IEEE 123 about 2.5 times faster than torch's
        iteration (1.7 times its torch.compile'd form: BENCHMARKS.md). Each scenario
        takes the steps it would take alone in the torch iteration, to the same answer
        (`tests/grid/test_single.py`), except in batches that take chord steps (`chord`).
        The implicit gradient's adjoint iteration runs there too (the whole backward
        pass 1.4 times faster than torch's at batch 1,024 on IEEE 123, 8 times on IEEE
        8500 at batch 16). False keeps every solve and gradient in torch (and its
        float32 first steps: `mixed`).
    chord: compiled batches (two scenarios or more) on feeders whose products with Zb go
        through Y's LU (IEEE 123; up to `grid.single.CHORD_MAX_NODES` nodes) take chord
        steps: u = u0 - Zb' (c(u) + K0 (u0 - u)), Zb' = Mᵀ (Y + M K0 Mᵀ)⁻¹ M, with K0
        the ports' dc/du at the solution with every load at one of
        `grid.single.CHORD_LEVELS` (the nearest to the batch's median scenario), from
        which a cold batch starts, and each scenario's iterate extrapolated once along
        its slowest direction (`grid.single.CHORD_EXTRAPOLATE_AT`). The same fixed points
        as the Z-bus map, reached in 0.55-0.6 of the steps at the same cost per step: on
        IEEE 123 at batch 1,024 (loads at 0.5-1.5 of nominal) 5.25 steps against 9.3 at
        tol 1e-9. Scenarios then take
        fewer steps than alone or in torch, to the same answer within the tolerance. The
        implicit gradient's adjoint iteration takes chord steps too. False keeps the
        Z-bus steps everywhere.
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
        anderson_start: int = 10,
        compile: bool = False,
        mixed: bool = True,
        newton_iter: int = 30,
        sparse: bool | None = None,
        compiled_cpu: bool = True,
        chord: bool = True,
    ) -> None:
        self.feeder = feeder
        self.connection_names = tuple(connections)
        self.tol = tol
        self.max_iter = max_iter
        self.anderson = anderson
        self.anderson_start = anderson_start
        self.compile = compile
        self.newton_iter = newton_iter
        self._compiled: object = None
        self._single: PowerFlow | None = None
        self._cpu_solver: CpuSolver | None = None
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
        self.load_names = [ld.name for ld in feeder.loads]  # for error messages

        if sparse is None:
            sparse = self.device.type == "cpu" and n_ports >= SPARSE_MIN_PORTS
        if sparse and self.device.type != "cpu":
            raise GridError(f"sparse=True runs on the CPU (scipy's SuperLU), not on "
                            f"{self.device}; use the dense path (sparse=False) there")
        self.sparse = bool(sparse)
        self.compiled_cpu = compiled_cpu and self.device.type == "cpu"
        self.chord = chord
        self.mixed = mixed and not self.sparse  # float32 steps reuse the dense Zb

        def t(a: object, dtype: torch.dtype = RDTYPE) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)

        a_idx = np.array([a for a, _ in pairs], dtype=np.int64)
        b_idx = np.array([b for _, b in pairs], dtype=np.int64)
        v_pad = np.append(feeder.v_noload, 0.0)  # index -1 (GROUND) reads zero volts
        u0 = v_pad[a_idx] - v_pad[b_idx]
        self.u0 = t(np.stack([u0.real, u0.imag]))  # [2, P]
        self.inv_base = t(1.0 / np.maximum(np.abs(u0), 1.0))  # [P]
        self.w = t(feeder.v_noload, CDTYPE)
        self.port_nodes = (a_idx, b_idx)  # each port's a and b node (b may be GROUND)
        self.zr = self.x_t = self._kron = None
        if self.sparse:
            self._kron = SparseKron(feeder.y, pairs, self.device)
        else:
            # Kron reduction: one sparse LU of Y, solved for the port columns only
            rows = np.r_[np.arange(n_ports), np.flatnonzero(b_idx != GROUND)]
            cols = np.r_[a_idx, b_idx[b_idx != GROUND]]
            vals = np.r_[np.ones(n_ports), -np.ones(len(rows) - n_ports)]
            m = sp.csr_matrix((vals, (rows, cols)), shape=(n_ports, n_nodes))
            x = spla.splu(feeder.y.tocsc()).solve(m.T.toarray().astype(complex))  # [N, P]
            zb_t = (m @ x).T  # row-vector form: u = u0 - c @ Zb^T
            # u = u0 - c @ Zb^T for complex row vectors, as [Re c | Im c] @ zr
            self.zr = t(np.block([[zb_t.real, zb_t.imag], [-zb_t.imag, zb_t.real]]))
            self.x_t = t(x.T, CDTYPE)  # [P, N]

        self.t_port = t(t_port, torch.long)
        self.t_load = t([li for li, _ in terms], torch.long)
        # Usually the first ports carry one load term each, in order; then moving between
        # terms and ports is a slice instead of a gather and a scatter.
        self.n_terms = len(t_port)
        self.terms_first = t_port == list(range(len(t_port)))
        self.generating = t(~feeder.consuming, torch.bool)
        self.load_model = LoadModel.build(feeder.loads, terms, self.device)
        self.conn_port = t(conn_port, torch.long)
        self._conn_port_np = np.asarray(conn_port, dtype=np.int64)
        self._t_load_np = self.t_load.cpu().numpy()
        self._generating_np = self.generating.cpu().numpy()
        # the load scale of the last scalar load_scale: (value, batch, [batch, terms])
        self._scalar_scale: tuple[float, int, torch.Tensor | None] = (np.nan, 0, None)
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
        # The network alone (sources' own admittance removed), for an independent check.
        ysrc = sp.coo_matrix((ys.ravel(), (np.repeat(src, len(src)), np.tile(src, len(src)))),
                             shape=feeder.y.shape) if src else 0
        self.y_net = (feeder.y - ysrc).tocsr()

    @property
    def n_connections(self) -> int:
        return len(self.connection_names)

    # ------------------------------------------------------------------ inputs
    def _inputs(
        self, p_kw: object, q_kvar: object, load_scale: object
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
        """Validate and batch the inputs.

        Returns the injection per port [B, 2, P] (W, var), the load scale per load term
        [B, T], the injection per connection as complex kVA [B, C], and B.
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
            s_port = self._port_injections(p, q)
        scale = None
        if isinstance(load_scale, (int, float)) and self._scalar_scale[:2] == (
                load_scale, batch or 1):  # a time series' constant feeder scale
            scale = self._scalar_scale[2]
        elif load_scale is not None:
            x = (load_scale if isinstance(load_scale, torch.Tensor)
                 and load_scale.dtype == RDTYPE and load_scale.device == self.device
                 else torch.as_tensor(load_scale, dtype=RDTYPE, device=self.device))
            if x.dim() < 2:  # the loads proper; the file's generation keeps its output
                x = x.reshape(-1, 1).expand(batch or 1 if x.dim() == 0 else x.shape[0],
                                            self.n_loads)
                x = torch.where(self.generating, torch.ones((), dtype=RDTYPE,
                                                            device=self.device), x)
            if x.dim() != 2 or x.shape[1] != self.n_loads:
                raise InjectionError(
                    f"load_scale must be a scalar, [batch] or [batch, {self.n_loads}] "
                    f"(one column per feeder load), got {tuple(x.shape)}"
                )
            names = self.load_names
            if not _finite_non_negative(x):  # the errors say which and where
                _check_finite(x, "load_scale", names)
                # a load running backwards is a generator: say so
                rows, cols = torch.nonzero(x < 0, as_tuple=True)
                col = int(cols[0])
                raise InjectionError(
                    f"load_scale has {len(rows)} negative value(s); first at "
                    f"scenario {int(rows[0])}, column {col} ({names[col]!r}): "
                    f"{float(x[rows[0], col]):g} (a load multiplier must be >= 0)")
            if batch is not None and x.shape[0] not in (1, batch):
                raise InjectionError(
                    f"load_scale has {x.shape[0]} scenarios, the injections have {batch}"
                )
            batch = batch or x.shape[0]
            if x.shape[0] == batch and x.device.type == "cpu" and not x.requires_grad:
                scale = torch.from_numpy(x.numpy().take(self._t_load_np, axis=1))
            else:
                scale = x.expand(batch, -1).index_select(1, self.t_load)
            if isinstance(load_scale, (int, float)):  # nobody else holds this tensor
                self._scalar_scale = (load_scale, batch, scale)
        return s_port, scale, s_conn, batch or 1

    def _port_injections(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """[B, 2, P] W and var per port from kW and kvar per connection [B, C] (the
        connections at one port summed). One scenario without gradients on the CPU goes
        through numpy, whose two bincounts cost a fraction of torch's scatter there."""
        if p.shape[0] == 1 and p.device.type == "cpu" and not (
                p.requires_grad or q.requires_grad):
            out = np.empty((1, 2, self.n_ports))
            out[0, 0], out[0, 1] = self._port_sums(p.numpy()[0]), self._port_sums(q.numpy()[0])
            return torch.from_numpy(out)
        s_port = torch.zeros(p.shape[0], 2, self.n_ports, dtype=RDTYPE, device=self.device)
        return s_port.index_add(2, self.conn_port, torch.stack([p, q], 1) * 1e3)

    def _port_sums(self, x: np.ndarray) -> np.ndarray:
        """[P] W (or var) per port from one scenario's kW (or kvar) per connection [C]."""
        return np.bincount(self._conn_port_np, x, self.n_ports) * 1e3

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
        """Real and imaginary voltage of each load term, [B, T] each."""
        return self._to_terms(u[:, 0]), self._to_terms(u[:, 1])

    def _to_terms(self, x: torch.Tensor) -> torch.Tensor:
        """Per-port [B, P] -> per-load-term [B, T]."""
        return x[:, : self.n_terms] if self.terms_first else x[:, self.t_port]

    def _to_ports(self, x: torch.Tensor) -> torch.Tensor:
        """Per-load-term [B, T] -> per-port [B, P], summing the terms of each port."""
        if self.terms_first and self.n_terms == self.n_ports:
            return x
        if self.terms_first:
            return torch.nn.functional.pad(x, (0, self.n_ports - self.n_terms))
        return x.new_zeros(x.shape[0], self.n_ports).index_add(1, self.t_port, x)

    def _term_power(
        self, tr: torch.Tensor, ti: torch.Tensor, derivative: bool = False,
        branchless: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """|u|^2, |u| and the load power S(|u|) (VA) of each load term, and dS/d|u|."""
        r2 = torch.addcmul(tr * tr, ti, ti)
        r = r2 * torch.rsqrt(r2)  # rsqrt is ~3x faster than sqrt on CPU
        return (r2, r, *self.load_model.power(r, derivative, branchless))

    def _currents(
        self, u: torch.Tensor, s_port: torch.Tensor | None, scale: torch.Tensor | None,
        branchless: bool = False,
    ) -> torch.Tensor:
        """Port currents drawn a -> b (A), [B, 2, P], at port voltages u [B, 2, P].

        A load term draws c = conj(S(|u|)) u / |u|^2 (times its scale), an injection s
        draws c = -conj(s) u / |u|^2.
        """
        tr, ti = self._term_voltages(u)
        r2, _, sr, si, _, _ = self._term_power(tr, ti, branchless=branchless)
        k = torch.reciprocal(r2) if scale is None else scale / r2
        cr = torch.addcmul(sr * tr, si, ti) * k
        ci = torch.addcmul(sr * ti, si, tr, value=-1) * k
        cr, ci = self._to_ports(cr), self._to_ports(ci)
        if s_port is not None:
            ur, ui = u[:, 0], u[:, 1]
            jr, ji = s_port[:, 0], s_port[:, 1]
            k = torch.reciprocal(torch.addcmul(ur * ur, ui, ui))
            cr = cr - torch.addcmul(jr * ur, ji, ui) * k
            ci = ci - torch.addcmul(jr * ui, ji, ur, value=-1) * k
        return torch.stack([cr, ci], 1)

    def _apply(self, c: torch.Tensor) -> torch.Tensor:
        """The linear half of the Z-bus map: u = u0 - Zb c, [B, 2, P]."""
        batch = c.shape[0]
        if self._kron is not None:
            zc = self._kron.ports(torch.complex(c[:, 0], c[:, 1]))
            return self.u0 - torch.stack([zc.real, zc.imag], 1)
        g = torch.addmm(self.u0.view(1, -1).expand(batch, -1), c.reshape(batch, -1),
                        self.zr, alpha=-1)
        return g.view(batch, 2, self.n_ports)

    def _apply_adjoint(self, mu: torch.Tensor) -> torch.Tensor:
        """The transpose of c -> Zb c in real [B, 2, P] form (Zb^H in complex form)."""
        if self._kron is not None:
            z = self._kron.ports_adjoint(torch.complex(mu[:, 0], mu[:, 1]))
            return torch.stack([z.real, z.imag], 1)
        return (mu.reshape(mu.shape[0], -1) @ self.zr.T).view_as(mu)

    def _node_voltages(self, c: torch.Tensor) -> torch.Tensor:
        """Node voltages V = w - Y⁻¹ Mᵀ c [B, N] (V) from complex port currents c [B, P]
        (A); differentiable."""
        if self._kron is not None:
            return self.w - self._kron.nodes(c)
        return torch.addmm(self.w.expand(c.shape[0], -1), c, self.x_t, alpha=-1)

    def _currents_and_residual(
        self,
        u: torch.Tensor,
        u_prev: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
        branchless: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Port currents at u and the change from u_prev per scenario, largest real or
        imaginary port-voltage change relative to the port's no-load magnitude. One
        elementwise pass over the batch, which torch.compile fuses into one kernel."""
        res = ((u - u_prev).abs() * self.inv_base).amax((1, 2))
        return self._currents(u, s_port, scale, branchless), res

    def _iterate(
        self,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
        batch: int,
        u_init: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fixed-point iterations, with Anderson mixing once convergence is slow.

        Returns u and the port currents at u ([B, 2, P] each), converged [B], iterations
        [B] and residual [B]. A row stops when it converges or fails (residual non-finite
        or above 10: a runaway); its answer is its iterate at that moment, set aside, so
        that later steps cannot disturb it (near steep load characteristics a fixed point
        can be unstable under further steps). Stopped rows are dropped from the working
        batch once a quarter of it has stopped. Rows that fail end at no-load, flagged.
        """
        dev = self.device
        u0 = self.u0.expand(batch, -1, -1)
        u = u0.clone() if u_init is None else u_init.clone()
        first = 1
        if self.mixed and u_init is None:  # a warm start is already past the coarse steps
            u, first = self._coarse(u, s_port, scale)
        final_u, final_c = u0.clone(), torch.zeros_like(u0)
        iters = torch.full((batch,), self.max_iter, dtype=torch.long, device=dev)
        resid = torch.full((batch,), float("inf"), dtype=RDTYPE, device=dev)
        converged = torch.zeros(batch, dtype=torch.bool, device=dev)
        failed = torch.zeros(batch, dtype=torch.bool, device=dev)
        rows = torch.arange(batch, device=dev)  # batch row of each working row
        alive = torch.ones(batch, dtype=torch.bool, device=dev)
        hist_f: list[torch.Tensor] = []
        hist_g: list[torch.Tensor] = []
        prev: tuple[torch.Tensor, torch.Tensor] | None = None
        prev_res = resid
        fused = self._fused()
        c, _ = fused(u, u, s_port, scale)
        for it in range(first, self.max_iter + 1):
            g = self._apply(c)
            c, res = fused(g, u, s_port, scale)  # currents at g, for the next step
            newly = alive & (res <= self.tol)
            runaway = alive & ~newly & ~(res <= 10.0)
            any_new, any_bad, running = torch.stack(
                [newly.any(), runaway.any(), (alive & ~newly & ~runaway).sum()]).tolist()
            if any_new:
                at = rows[newly]
                final_u[at], final_c[at] = g[newly], c[newly]
                iters[at], resid[at], converged[at] = it, res[newly], True
            if any_bad:
                failed[rows[runaway]], resid[rows[runaway]] = True, res[runaway]
            if running == 0:
                break
            alive = alive & ~newly & ~runaway
            if running <= 0.75 * alive.shape[0]:
                keep = alive.nonzero().squeeze(1)
                rows, u, g, c, res, prev_res = (x[keep] for x in (rows, u, g, c, res, prev_res))
                s_port = None if s_port is None else s_port[keep]
                scale = None if scale is None else scale[keep]
                hist_f, hist_g = [h[keep] for h in hist_f], [h[keep] for h in hist_g]
                prev = None if prev is None else (prev[0][keep], prev[1][keep])
                alive = torch.ones(len(keep), dtype=torch.bool, device=dev)
            # Plain Z-bus steps converge in about ten iterations on ordinary cases, where
            # mixing costs more than it saves; slow rows (heavy load, steep ZIP cut-offs)
            # get Anderson mixing after `anderson_start` steps.
            if self.anderson and it >= self.anderson_start:
                f = (g - u).flatten(1)
                gf = g.flatten(1)
                if prev is not None:
                    hist_f.append(f - prev[0])
                    hist_g.append(gf - prev[1])
                    if len(hist_f) > self.anderson:
                        del hist_f[0], hist_g[0]
                    blended = _anderson(f, gf, hist_f, hist_g).view_as(g)
                    # a row whose residual jumped tenfold takes the plain step instead
                    jumped = res > 10 * prev_res
                    g = torch.where(jumped[:, None, None], g, blended)
                    c = self._currents(g, s_port, scale)
                prev = (f, gf)
            u = g
            prev_res = res
        else:
            resid[rows[alive]] = res[alive]  # out of iterations: not converged
        ok = converged & ~failed
        if not bool(ok.all()):
            final_u = torch.where(ok[:, None, None], final_u, u0)
        return final_u, final_c, ok, iters, resid

    def _coarse(
        self, u: torch.Tensor, s_port: torch.Tensor | None, scale: torch.Tensor | None
    ) -> tuple[torch.Tensor, int]:
        """Plain iterations in float32 until every row is within COARSE_TOL, where float64
        takes over: the first steps only need to point the right way, and single precision
        halves their matmul. Returns the float64 start and the next iteration number."""
        twin = self._single_precision()
        fused = twin._fused()
        u32 = u.float()
        s32 = None if s_port is None else s_port.float()
        scale32 = None if scale is None else scale.float()
        c, res = fused(u32, u32, s32, scale32)
        it = 0
        while it < self.anderson_start - 1:  # slow rows need float64 and Anderson mixing
            it += 1
            g = twin._apply(c)
            c, res = fused(g, u32, s32, scale32)
            u32 = g
            worst = float(res.max())
            if not worst > COARSE_TOL:  # converged enough, or NaN: float64 decides
                break
        ok = torch.isfinite(res)
        return torch.where(ok[:, None, None], u32.double(), self.u0), it + 1

    def _single_precision(self) -> PowerFlow:
        """A shallow float32 twin of this power flow, sharing everything else."""
        if self._single is None:
            twin = copy.copy(self)
            twin.zr, twin.u0, twin.inv_base = (x.float() for x in (self.zr, self.u0,
                                                                   self.inv_base))
            twin.load_model = self.load_model.to(torch.float32)
            twin._compiled, twin._single = None, None
            self._single = twin
        return self._single

    def _fused(self):  # noqa: ANN202 - a plain or torch.compile'd callable
        """`_currents_and_residual`, compiled into one kernel when compile=True."""
        if not self.compile:
            return self._currents_and_residual
        if self._compiled is None:
            self._compiled = torch.compile(
                functools.partial(self._currents_and_residual, branchless=True), dynamic=True)
        return self._compiled

    # ------------------------------------------------------------------ API
    def first_step_vmag_pu(self, p_kw: object = None, q_kvar: object = None, *,
                           load_scale: object = None) -> torch.Tensor:
        """[batch, nodes] voltage magnitudes (p.u.) after one fixed-point step from no
        load: the first-order estimate of the operating point, defined also where the
        iteration diverges, so a scenario that did not converge can still be told where
        its feeder sags most."""
        s_port, scale, _, batch = self._inputs(p_kw, q_kvar, load_scale)
        with torch.no_grad():
            c = self._currents(self.u0.expand(batch, -1, -1), s_port, scale)
            v = self._node_voltages(torch.complex(c[:, 0], c[:, 1]))
        return v.abs() / self.node_base_v

    # ------------------------------------------------------------------ API
    def _cpu(self) -> CpuSolver:
        """The compiled CPU loop of this power flow, built on first use."""
        if self._cpu_solver is None:
            self._cpu_solver = CpuSolver(self)
        return self._cpu_solver

    def solve(
        self,
        p_kw: object = None,
        q_kvar: object = None,
        *,
        load_scale: object = None,
        initial: PowerFlowResult | torch.Tensor | None = None,
    ) -> PowerFlowResult:
        """Solve a batch of scenarios.

        p_kw, q_kvar: net injection (generation positive) at each connection, shape
            [batch, connections] or [connections]; tensors that require grad get exact
            implicit gradients.
        load_scale: multiplier of the feeder's own loads: a scalar or [batch] scales its
            loads proper (PVSystem, Storage and Generator elements keep their output), or
            [batch, loads] one column per entry of `feeder.loads`, generation included.
        initial: where to start: a previous result of the same batch size, or its port
            voltages `result.u` (a warm start for time series, where the next step's
            voltages are close to the last).
        """
        if self.compiled_cpu and self.n_ports:
            one = self._solve_one(p_kw, q_kvar, load_scale, initial)
            if one is not None:
                return one
        s_port, scale, s_conn, batch = self._inputs(p_kw, q_kvar, load_scale)
        u_init = None
        if isinstance(initial, PowerFlowResult) and initial.u.shape[0] == batch:
            u_init = initial.u.detach() if initial._all_converged else torch.where(
                initial.converged[:, None, None], initial.u.detach(), self.u0)
        elif isinstance(initial, torch.Tensor) and initial.shape[0] == batch:
            u_init = initial.detach().to(self.device, RDTYPE)
        if self.n_ports == 0:  # nothing draws power: the no-load voltages are the solution
            u = self.u0.expand(batch, -1, -1).clone()
            dev = self.device
            return PowerFlowResult(self, u, s_port, scale, s_conn,
                                   torch.ones(batch, dtype=torch.bool, device=dev),
                                   torch.zeros(batch, dtype=torch.long, device=dev),
                                   torch.zeros(batch, dtype=RDTYPE, device=dev),
                                   torch.zeros_like(u))
        s_fixed = None if s_port is None else s_port.detach()
        scale_fixed = None if scale is None else scale.detach()
        answer = None
        if self.compiled_cpu:
            answer = self._cpu().solve(s_fixed, scale_fixed, u_init, batch)
        if answer is not None and answer.voltages is not None:  # converged, compiled
            u, c, converged, iters, resid, voltages = answer
        else:
            voltages = None
            with torch.no_grad():
                if answer is None:
                    answer = self._iterate(s_fixed, scale_fixed, batch, u_init)
                u, c, converged, iters, resid = answer[:5]
                if self.newton_iter and not bool(converged.all()):
                    u, c, converged, iters, resid = self._rescue(
                        u, c, converged, iters, resid, s_fixed, scale_fixed, u_init)
        if torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (s_port, scale)
        ):
            u = _ImplicitFixedPoint.apply(u, s_port, scale, converged, self)
            c = voltages = None  # recomputed from u under autograd
        return PowerFlowResult(self, u, s_port, scale, s_conn, converged, iters, resid, c,
                               voltages, compiled=self._cpu() if voltages is not None
                               else None)

    def _solve_one(
        self, p_kw: object, q_kvar: object, load_scale: object, initial: object
    ) -> PowerFlowResult | None:
        """`solve` for the co-simulation's call, one scenario on the compiled CPU loop
        with nothing that needs a gradient, its inputs kept in numpy (through torch's
        conversions a warm-started solve on IEEE 123 took 1.2 times as long, a
        co-simulation's call there with the derived quantities read 1.4 times).

        None, for `solve` to answer (or refuse, naming what is wrong) by its general
        path, unless: p_kw and q_kvar are both None or both one row; load_scale is None,
        a number or one row; each row is a CPU float64 tensor that needs no gradient, or
        a float64 array; all are in range; initial is None, a converged one-scenario
        result or its port voltages; and the solve converged. The same numbers go into
        the same kernel as by the general path: the answer is the same to the bit."""
        s_conj = s_conn = None
        if p_kw is not None or q_kvar is not None:  # (first: a batch leaves at once)
            nc = self.n_connections
            p, q = _plain_row(p_kw, nc), _plain_row(q_kvar, nc)
            if p is None or q is None or not (bounded(p, -np.inf) and bounded(q, -np.inf)):
                return None
            # conj(s) per port, as `_port_injections` and `CpuSolver.solve` make it
            s_conj = (self._port_sums(p[0]) - 1j * self._port_sums(q[0]))[None]
            s_conn = torch.complex(*(torch.as_tensor(x) for x in (p, q)))
        if isinstance(load_scale, (int, float)):
            # a number scales the loads proper, the file's generation keeps its output,
            # as in `_inputs`; then it is a row like any other
            load_scale = np.where(self._generating_np, 1.0, float(load_scale))[None]
        scale = None
        if load_scale is not None:
            scale = _plain_row(load_scale, self.n_loads)
            if scale is None or not bounded(scale, 0.0):
                return None
            scale = scale.take(self._t_load_np, axis=1)
        if isinstance(initial, PowerFlowResult):
            if initial.u.shape[0] != 1 or not initial._all_converged:
                return None
            initial = initial.u
        if initial is not None:
            if not (isinstance(initial, torch.Tensor) and initial.shape[0] == 1
                    and initial.dtype == RDTYPE and initial.is_cpu):
                return None
            initial = initial.detach() if initial.requires_grad else initial
        cpu = self._cpu()
        answer = cpu.solve_arrays(s_conj, scale, initial, 1)
        if answer.voltages is None:  # not converged: the general path tries Newton
            return None
        u, c, converged, iters, resid, voltages = answer
        return PowerFlowResult(self, u, None, None, s_conn, converged, iters, resid, c,
                               voltages, compiled=cpu)

    def _rescue(
        self,
        u: torch.Tensor,
        c: torch.Tensor,
        converged: torch.Tensor,
        iters: torch.Tensor,
        resid: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
        u_init: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """Newton for the rows the fixed point left unconverged, from their warm start or
        from no load (the fixed point's last iterate may have run away). `iterations`
        then counts the fixed-point iterations plus the Newton steps, `residual` is
        Newton's final one."""
        rows = (~converged).nonzero().squeeze(1)
        start = (self.u0.expand(len(rows), -1, -1) if u_init is None else u_init[rows])
        un, ok, steps, res = self._newton(
            start, *(None if a is None else a[rows] for a in (s_port, scale)))
        u, c, converged = u.clone(), c.clone(), converged.clone()
        good = rows[ok]
        u[good] = un[ok]
        c[good] = self._currents(un[ok], *(None if a is None else a[good]
                                           for a in (s_port, scale)))
        converged[good] = True
        return u, c, converged, iters.index_add(0, rows, steps), resid.index_copy(0, rows, res)

    # ------------------------------------------------------------------ Jacobian
    def _port_jacobian(
        self, u: torch.Tensor, s_port: torch.Tensor | None, scale: torch.Tensor | None
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """dc/du at port voltages u [B, 2, P], as four [B, P] blocks of the real 2x2
        per-port derivative: (dcr/dur, dci/dur, dcr/dui, dci/dui), in A/V.

        Per port c = h(r) u with h = conj(S(r)) / r^2 and r = |u|, so dc/du is the real
        2x2 block h I + u h'(r) u^T / r. Also returns the per-term (tr, ti, r^2, Sr, Si)
        the load-scale gradient reuses.
        """
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
        hr, hi, wr, wi = (self._to_ports(a) for a in (hr, hi, wr, wi))
        ur, ui = u[:, 0], u[:, 1]
        if s_port is not None:  # c = h u with h = -conj(s) / |u|^2 and h' / r = -2 h / r^2
            jr, ji = s_port[:, 0], s_port[:, 1]
            inv_r2 = torch.reciprocal(torch.addcmul(ur * ur, ui, ui))
            hsr, hsi = -jr * inv_r2, ji * inv_r2
            hr, hi = hr + hsr, hi + hsi
            wr = wr - 2 * (ur * hsr - ui * hsi) * inv_r2
            wi = wi - 2 * (ur * hsi + ui * hsr) * inv_r2
        blocks = (hr + ur * wr, hi + ur * wi, ui * wr - hi, hr + ui * wi)
        return blocks, (tr, ti, r2, sr, si)

    def _jacobian_solve(
        self, blocks: Sequence[torch.Tensor], rhs: torch.Tensor, transpose: bool = False
    ) -> torch.Tensor:
        """Solve J x = rhs (or Jᵀ x = rhs) per row for the Jacobian J = I + Ẑ K of
        u - u0 + Zb c(u), K the per-port blocks of `_port_jacobian`; rhs [R, 2, P].
        Rows where J is singular come back NaN."""
        if self._kron is not None:
            return self._kron.jacobian_solve(blocks, rhs, transpose)
        n = 2 * self.n_ports
        chunk = max(1, JACOBIAN_CHUNK // (n * n))  # rows per batched solve, bounding memory
        if rhs.shape[0] > chunk:
            return torch.cat([
                self._jacobian_solve([b[i: i + chunk] for b in blocks], rhs[i: i + chunk],
                                     transpose)
                for i in range(0, rhs.shape[0], chunk)])
        k_rr, k_ir, k_ri, k_ii = (b.unsqueeze(1) for b in blocks)
        z = self.zr.T  # the real form of Zb, [2P, 2P]
        z_re, z_im = z[:, : self.n_ports], z[:, self.n_ports:]
        # Ẑ K without forming K: K is four diagonals, so Ẑ K scales Ẑ's columns
        zk = torch.cat([z_re * k_rr + z_im * k_ir, z_re * k_ri + z_im * k_ii], -1)
        system = zk + torch.eye(n, dtype=RDTYPE, device=rhs.device)
        if transpose:
            system = system.transpose(1, 2)
        x, info = torch.linalg.solve_ex(system, rhs.reshape(rhs.shape[0], -1, 1))
        x = torch.where((info == 0)[:, None, None], x, float("nan"))
        return x.view_as(rhs)

    def _newton(
        self,
        u: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Damped Newton on F(u) = u - u0 + Zb c(u) = 0 from u [R, 2, P].

        The step length halves until the scaled residual |F| inv_base (the fixed point's
        own residual, in 2-norm) falls by a sufficient amount (Armijo); a row with no
        such step, or out of `newton_iter` steps, has no solution near its path and is
        not converged. Returns u, converged [R], Newton steps taken [R] and the final
        residual [R] (largest relative component of F, as in the fixed point).
        """
        def residual(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            s, k = (None if a is None else a[rows] for a in (s_port, scale))
            return x - self._apply(self._currents(x, s, k))

        def merit(f: torch.Tensor) -> torch.Tensor:
            return (f * self.inv_base).square().sum((1, 2))

        n = u.shape[0]
        u = u.clone()
        f = residual(u, torch.arange(n, device=u.device))
        steps = torch.zeros(n, dtype=torch.long, device=u.device)
        failed = torch.zeros(n, dtype=torch.bool, device=u.device)
        for _ in range(self.newton_iter):
            res = (f.abs() * self.inv_base).amax((1, 2))
            done = torch.isfinite(res) & (res <= self.tol)
            failed |= ~torch.isfinite(res)
            active = (~done & ~failed).nonzero().squeeze(1)
            if len(active) == 0:
                break
            blocks, _ = self._port_jacobian(
                u[active], *(None if a is None else a[active] for a in (s_port, scale)))
            du = -self._jacobian_solve(blocks, f[active])
            singular = ~torch.isfinite(du).all(2).all(1)
            failed[active[singular]] = True
            active, du = active[~singular], du[~singular]
            length = torch.ones(len(active), dtype=RDTYPE, device=u.device)
            pending = torch.ones(len(active), dtype=torch.bool, device=u.device)
            for _ in range(LINE_SEARCH_HALVINGS):
                at = pending.nonzero().squeeze(1)
                rows = active[at]
                trial = u[rows] + length[at, None, None] * du[at]
                f_trial = residual(trial, rows)
                m_trial = merit(f_trial)
                good = torch.isfinite(m_trial) & (
                    m_trial <= (1 - 1e-4 * length[at]) * merit(f[rows]))
                u[rows[good]], f[rows[good]] = trial[good], f_trial[good]
                pending[at[good]] = False
                if not bool(pending.any()):
                    break
                length[pending] *= 0.5
            failed[active[pending]] = True  # no descent: stalled at a residual minimum
            steps[active] += 1
        res = (f.abs() * self.inv_base).amax((1, 2))
        done = torch.isfinite(res) & (res <= self.tol)
        return u, done, steps, res

    # ------------------------------------------------------------------ adjoint
    def _adjoint(
        self,
        grad_u: torch.Tensor,
        u: torch.Tensor,
        s_port: torch.Tensor | None,
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Vector-Jacobian product of the fixed point u = u0 - Zb c(u, s, scale).

        Solves mu = g + (dc/du)^T (-mu Zb^*) by fixed-point iteration (it contracts wherever
        the forward map does) and returns (dc/ds)^T nu and (dc/dscale)^T nu for
        nu = -mu Zb^*. Gradients follow torch's convention for complex quantities,
        dL/dRe + i dL/dIm, here the two rows of [B, 2, P].
        """
        blocks, (tr, ti, r2, sr, si) = self._port_jacobian(u, s_port, scale)
        k_rr, k_ir, k_ri, k_ii = blocks
        ur, ui = u[:, 0], u[:, 1]

        def linear(mu: torch.Tensor) -> torch.Tensor:
            return -self._apply_adjoint(mu)

        def step(mu: torch.Tensor) -> torch.Tensor:
            gc = linear(mu)
            gr, gi = gc[:, 0], gc[:, 1]
            # (dc/du)^T per port: gradient (gr, gi) on c -> gradient on (ur, ui)
            return grad_u + torch.stack([k_rr * gr + k_ir * gi, k_ri * gr + k_ii * gi], 1)

        if self.compiled_cpu:  # the same iteration, compiled; gc = linear(mu) with it
            mu, gc, settled = self._cpu().adjoint(grad_u, blocks)
        else:
            mu = grad_u
            g_size = grad_u.abs().amax((1, 2))
            for _ in range(self.max_iter):
                mu_next = step(mu)
                size = mu_next.abs().amax((1, 2))
                settled = torch.isfinite(size) & (
                    (mu_next - mu).abs().amax((1, 2)) <= self.tol * size)
                diverged = ~torch.isfinite(size) | (size > 1e12 * g_size)
                mu = mu_next
                if bool((settled | diverged).all()):
                    break
            gc = None
        if not bool(settled.all()):
            # Where the map is not a contraction (a fixed point that Anderson mixing or
            # Newton found near a steep load characteristic or the nose) the adjoint
            # iteration diverges: solve Jᵀ mu = g directly for those rows instead.
            rows = torch.nonzero(~settled).flatten()
            mu = mu.clone()
            mu[rows] = self._jacobian_solve([b[rows] for b in blocks], grad_u[rows],
                                            transpose=True)
            gc = None
        if gc is None:
            gc = linear(mu)
        gr, gi = gc[:, 0], gc[:, 1]
        grad_s = grad_scale = None
        if s_port is not None:
            # c = -conj(s) u / |u|^2  =>  dL/ds = -conj(gc) u / |u|^2
            inv_r2 = torch.reciprocal(torch.addcmul(ur * ur, ui, ui))
            grad_s = torch.stack([-(gr * ur + gi * ui) * inv_r2,
                                  -(gr * ui - gi * ur) * inv_r2], 1)
        if scale is not None:
            # c = scale h u  =>  dL/dscale = Re(conj(gc) h u) per term
            gtr, gti = self._to_terms(gr), self._to_terms(gi)
            grad_scale = (gtr * (sr * tr + si * ti) + gti * (sr * ti - si * tr)) / r2
        return grad_s, grad_scale


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


def _numpy(x: torch.Tensor) -> np.ndarray | torch.Tensor:
    """A CPU tensor's memory as numpy (whose reductions cost a few microseconds where
    torch's dispatch costs several times that on a batch-1 solve); x elsewhere."""
    if x.device.type == "cpu":
        return (x.detach() if x.requires_grad else x).numpy()
    return x


def _plain_row(x: object, width: int) -> np.ndarray | None:
    """x as a numpy row [1, width], without a copy, where x is one already: a CPU float64
    tensor that needs no gradient, or a float64 array; else None."""
    if isinstance(x, torch.Tensor):
        if x.requires_grad or x.dtype != RDTYPE or not x.is_cpu:
            return None
        x = x.numpy()
    elif not isinstance(x, np.ndarray) or x.dtype != np.float64:
        return None
    return x if x.shape == (1, width) else None


def _finite_non_negative(x: torch.Tensor) -> bool:
    """Whether x is finite and >= 0 everywhere (NaN fails)."""
    a = _numpy(x)
    if isinstance(a, np.ndarray):
        return bool(bounded(a, 0.0))
    return a.numel() == 0 or bool((a.min() >= 0) & (a.max() < np.inf))


def _check_finite(x: torch.Tensor, name: str, labels: Sequence[str]) -> None:
    a = _numpy(x)
    if bool(bounded(a, -np.inf) if isinstance(a, np.ndarray) else torch.isfinite(a).all()):
        return
    bad = ~torch.isfinite(x)
    rows, cols = torch.nonzero(bad, as_tuple=True)
    col = int(cols[0])
    label = labels[col] if col < len(labels) else str(col)
    raise InjectionError(f"{name} has {int(bad.sum())} non-finite value(s); first at "
                         f"scenario {int(rows[0])}, column {col} ({label!r})")


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
        grad_u = torch.where(converged[:, None, None], grad_u, 0.0)
        grad_s, grad_scale = ctx.pf._adjoint(grad_u, u, s_port, scale)
        return None, grad_s, grad_scale, None, None
