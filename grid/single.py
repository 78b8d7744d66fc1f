"""One scenario at a time: the power flow's fixed point compiled by numba, for batch 1 on
the CPU.

A co-simulation solves one scenario per step, warm-started from the last. There the torch
iteration is bound by dispatch, not arithmetic: some 60 operations of 3-10 us each per
iteration on vectors of a few hundred ports, where the arithmetic itself takes a few
microseconds. This module runs the same iteration as `PowerFlow._iterate` (the same Zb or
sparse LU, the same load-model coefficient table, the same residual, stopping rules and
Anderson mixing) as one numba-compiled loop over complex vectors. It only iterates: the
caller wraps its answer in the usual torch result, and everything after (derived
quantities, gradients, Newton for a scenario that did not converge) stays torch. Tests
pin it to the torch iteration (same steps, same answer to roundoff) and to OpenDSS.

On dense feeders a product with Zb is a complex matrix-vector product in the loop; on
large (sparse) feeders it is a scatter to the nodes, the two triangular solves of Y's
sparse LU (SuperLU's factors, solved here: SuperLU's own solve call costs more than its
arithmetic) and a gather back.

The compiled functions are cached on disk (numba's `cache=True`, next to this file), so
only the first use on a machine pays their compilation (about ten seconds).

Units as in `grid.powerflow`: volts, amperes, VA.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
import torch

from grid.loadmodel import DROPOUT_SLOPE

if TYPE_CHECKING:
    from grid.powerflow import PowerFlow

CONVERGED, RUNAWAY, SLOW = 0, 1, 2  # how an iteration ended


class SingleAnswer(NamedTuple):
    """The fixed point of one scenario as the torch iteration returns it: u and c [1, 2, P]
    (real parts, then imaginary), converged [1], iterations [1] and residual [1]; and the
    node voltages [1, N] (complex, V) where it converged."""

    u: torch.Tensor
    c: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    voltages: torch.Tensor | None = None


class Loads(NamedTuple):
    """The load model's terms as flat numpy arrays for the compiled kernels (T terms)."""

    port: np.ndarray  # [T] port of each term
    q2: np.ndarray  # [4 T] conj(S) coefficients per term and region (normal, high, mid, low)
    q1: np.ndarray
    q0: np.ndarray
    vlow: np.ndarray  # [T] region bounds, V
    vmin: np.ndarray
    vmax: np.ndarray
    inv_vn: np.ndarray  # [T] 1 / nominal branch voltage, 1/V
    cutoff: np.ndarray  # [T] ZIP drop-out voltage in p.u., or [0] when no load has one
    law: np.ndarray  # [T] index into the power-law arrays, -1 for none
    law_p0: np.ndarray  # [K] model 4: P0 (W), Q0 (var), exponents
    law_q0: np.ndarray
    law_a: np.ndarray
    law_b: np.ndarray


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


@numba.njit(cache=True, nogil=True)
def currents(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads,
             out: np.ndarray) -> None:
    """Port currents drawn a -> b (A) into out [P], at port voltages u [P]: a load term
    draws conj(S(|u|)) u / |u|^2 times its scale [T], an injection s draws
    -conj(s) u / |u|^2 (s_conj [P], or empty for none). S(r) is `LoadModel.power`: the
    quadratic of the term's voltage region, model 4's power law in the normal band, the
    ZIP drop-out above the lowest region."""
    out[:] = 0.0
    has_cutoff = lm.cutoff.shape[0] > 0
    for k in range(lm.port.shape[0]):
        p = lm.port[k]
        v = u[p]
        r2 = v.real * v.real + v.imag * v.imag
        r = math.sqrt(r2)
        region = 0
        if r > lm.vmax[k]:
            region = 1
        elif r <= lm.vmin[k]:
            region = 3 if r <= lm.vlow[k] else 2
        row = 4 * k + region
        s = (lm.q2[row] * r + lm.q1[row]) * r + lm.q0[row]
        j = lm.law[k]
        if j >= 0 and region == 0:
            x = r * lm.inv_vn[k]
            s += lm.law_p0[j] * x ** lm.law_a[j] - 1j * lm.law_q0[j] * x ** lm.law_b[j]
        if has_cutoff and r > lm.vlow[k]:
            s *= 0.5 * (1.0 + math.tanh(DROPOUT_SLOPE * (r * lm.inv_vn[k] - lm.cutoff[k])))
        out[p] += s * v * (scale[k] / r2)
    for p in range(s_conj.shape[0]):
        v = u[p]
        out[p] -= s_conj[p] * v / (v.real * v.real + v.imag * v.imag)


@numba.njit(cache=True, nogil=True)
def residual(g: np.ndarray, u: np.ndarray, inv_base: np.ndarray) -> float:
    """Largest change of a port voltage's real or imaginary part, relative to the port's
    no-load magnitude; NaN if any is NaN."""
    worst = 0.0
    for p in range(g.shape[0]):
        d = g[p] - u[p]
        m = max(abs(d.real), abs(d.imag)) * inv_base[p]
        if m != m:
            return m
        worst = max(worst, m)
    return worst


class Network(NamedTuple):
    """The linear half of the power flow for the compiled kernels: products with Zb and
    with X = Y⁻¹ Mᵀ, either dense (`zbt_*`, `xt_*` filled, the LU arrays empty) or
    through Y's sparse LU (the other way round). The LU is SuperLU's, Pr Y Pc = L U,
    taken apart so that its triangular solves run compiled too: SuperLU's own solve costs
    about 1 ms per call on IEEE 8500, mostly outside its arithmetic.

    (On IEEE 123 the LU's solves would take 60% of the dense product with X, which is
    bound by reading X's 400 kB. The dense product is kept: it is linear in c to
    roundoff, where the triangular solves' roundoff, amplified by Y's condition, moves
    the node voltages by about 1e-12 between nearby inputs, enough to spoil finite
    differences taken at tol 1e-13.)"""

    zbt_re: np.ndarray  # [P, P] Zbᵀ, dense path (transposed: products run by columns)
    zbt_im: np.ndarray
    xt_re: np.ndarray  # [P, N] Xᵀ, dense path
    xt_im: np.ndarray
    l_ptr: np.ndarray  # L below its unit diagonal, CSC
    l_idx: np.ndarray
    l_val: np.ndarray
    u_ptr: np.ndarray  # U above its diagonal, CSC
    u_idx: np.ndarray
    u_val: np.ndarray
    u_diag: np.ndarray  # [N]
    perm_r: np.ndarray  # [N]
    perm_c: np.ndarray  # [N]
    port_a: np.ndarray  # [P] node of each port's a end
    port_b: np.ndarray  # [P] node of its b end, -1 for ground


@numba.njit(cache=True, nogil=True, fastmath=True)
def minus_product(at_re: np.ndarray, at_im: np.ndarray, c: np.ndarray, base: np.ndarray,
                  out: np.ndarray) -> None:
    """out = base - A c for a complex matrix A given as the real and imaginary parts of
    its transpose [P, M]: column by column, each an axpy over contiguous memory, which
    vectorises (fastmath reorders the sums, changing roundoff only). A loop rather than
    BLAS: a threaded BLAS wakes its threads for a product this small, which on a busy
    two-core machine took milliseconds instead of microseconds."""
    m = at_re.shape[1]
    acc_re, acc_im = np.zeros(m), np.zeros(m)
    for j in range(at_re.shape[0]):
        cr, ci = c[j].real, c[j].imag
        for i in range(m):
            acc_re[i] += at_re[j, i] * cr - at_im[j, i] * ci
            acc_im[i] += at_re[j, i] * ci + at_im[j, i] * cr
    for i in range(m):
        out[i] = base[i] - complex(acc_re[i], acc_im[i])


@numba.njit(cache=True, nogil=True)
def node_solve(net: Network, c: np.ndarray) -> np.ndarray:
    """Y⁻¹ Mᵀ c [N] for port currents c [P], through the sparse LU: the currents
    scattered to their nodes, then Pc U⁻¹ L⁻¹ Pr."""
    n = net.u_diag.shape[0]
    y = np.zeros(n, dtype=np.complex128)
    for p in range(c.shape[0]):  # Pr Mᵀ c: row i of Y goes to row perm_r[i]
        y[net.perm_r[net.port_a[p]]] += c[p]
        if net.port_b[p] >= 0:
            y[net.perm_r[net.port_b[p]]] -= c[p]
    for j in range(n):  # L y = ..., column by column (unit diagonal)
        yj = y[j]
        for k in range(net.l_ptr[j], net.l_ptr[j + 1]):
            y[net.l_idx[k]] -= net.l_val[k] * yj
    for j in range(n - 1, -1, -1):  # U z = y
        y[j] /= net.u_diag[j]
        yj = y[j]
        for k in range(net.u_ptr[j], net.u_ptr[j + 1]):
            y[net.u_idx[k]] -= net.u_val[k] * yj
    x = np.empty(n, dtype=np.complex128)
    for i in range(n):  # x = Pc z
        x[i] = y[net.perm_c[i]]
    return x


@numba.njit(cache=True, nogil=True)
def zbus_map(net: Network, c: np.ndarray, u0: np.ndarray, out: np.ndarray) -> None:
    """out = u0 - Zb c [P]: the linear half of the Z-bus map."""
    if net.zbt_re.shape[0] > 0:
        minus_product(net.zbt_re, net.zbt_im, c, u0, out)
        return
    x = node_solve(net, c)
    for p in range(out.shape[0]):
        v = x[net.port_a[p]]
        if net.port_b[p] >= 0:
            v -= x[net.port_b[p]]
        out[p] = u0[p] - v


@numba.njit(cache=True, nogil=True)
def node_voltages(net: Network, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """w - X c [N]: node voltages from port currents c and no-load voltages w."""
    if net.xt_re.shape[0] > 0:
        out = np.empty_like(w)
        minus_product(net.xt_re, net.xt_im, c, w, out)
        return out
    return w - node_solve(net, c)


@numba.njit(cache=True, nogil=True)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """The real dot product of complex vectors seen as [real parts, imaginary parts]."""
    acc = 0.0
    for q in range(a.shape[0]):
        acc += a[q].real * b[q].real + a[q].imag * b[q].imag
    return acc


@numba.njit(cache=True, nogil=True)
def anderson(f: np.ndarray, g: np.ndarray, hist_f: np.ndarray, hist_g: np.ndarray,
             m: int, out: np.ndarray) -> None:
    """Anderson (type II) mixing, `powerflow._anderson` for one scenario: out = g - dG
    gamma with gamma = argmin |f - dF gamma| over the m newest differences [m, P], from
    the normal equations by Gaussian elimination (m is a few; scalar loops, as numba
    compiles them in a fraction of the time of its LAPACK bindings)."""
    a = np.empty((m, m + 1))  # [Gram | rhs]
    eps = 0.0
    for i in range(m):
        for j in range(m):
            a[i, j] = _dot(hist_f[i], hist_f[j])
        a[i, m] = _dot(hist_f[i], f)
        eps = max(eps, a[i, i])
    for i in range(m):
        a[i, i] += 1e-10 * eps + 1e-300
    for i in range(m):  # no pivoting: the Gram matrix is symmetric positive definite
        for r in range(i + 1, m):
            factor = a[r, i] / a[i, i]
            for j in range(i, m + 1):
                a[r, j] -= factor * a[i, j]
    gamma = np.empty(m)
    for i in range(m - 1, -1, -1):
        acc = a[i, m]
        for j in range(i + 1, m):
            acc -= a[i, j] * gamma[j]
        gamma[i] = acc / a[i, i]
    for q in range(g.shape[0]):
        x = g[q]
        for i in range(m):
            x -= gamma[i] * hist_g[i, q]
        out[q] = x


@numba.njit(cache=True, nogil=True)
def iterate(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads,
            net: Network, u0: np.ndarray, w: np.ndarray, inv_base: np.ndarray, tol: float,
            max_iter: int, memory: int, mix_from: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, float]:
    """`PowerFlow._iterate` for one scenario: fixed-point steps g = u0 - Zb c(u) from u,
    with Anderson mixing of `memory` steps from step `mix_from` on (a step whose
    residual jumped tenfold stays plain). Returns the last iterate, its currents, the
    node voltages (where it converged; else w), how it ended (CONVERGED, RUNAWAY or SLOW:
    out of steps), the steps taken and the last residual."""
    p = u.shape[0]
    u = u.copy()
    g = np.empty_like(u)
    c = np.empty_like(u)
    currents(u, s_conj, scale, lm, c)
    # Anderson's history: newest differences of f = g - u and of g, in rows 0..kept-1
    hist_f = np.empty((max(memory, 1), p), dtype=np.complex128)
    hist_g = np.empty_like(hist_f)
    prev_f, prev_g = np.empty(p, dtype=np.complex128), np.empty(p, dtype=np.complex128)
    kept, have_prev = 0, False
    res = prev_res = np.inf
    for it in range(1, max_iter + 1):
        zbus_map(net, c, u0, g)
        currents(g, s_conj, scale, lm, c)
        res = residual(g, u, inv_base)
        if res <= tol:
            return g, c, node_voltages(net, c, w), CONVERGED, it, res
        if not res <= 10.0:
            return g, c, w, RUNAWAY, it, res
        if memory > 0 and it >= mix_from:
            if have_prev:
                if kept == memory:  # drop the oldest difference
                    for i in range(kept - 1):
                        hist_f[i], hist_g[i] = hist_f[i + 1], hist_g[i + 1]
                    kept -= 1
                for q in range(p):
                    hist_f[kept, q] = (g[q] - u[q]) - prev_f[q]
                    hist_g[kept, q] = g[q] - prev_g[q]
                kept += 1
            for q in range(p):
                prev_f[q], prev_g[q] = g[q] - u[q], g[q]
            if have_prev and not res > 10.0 * prev_res:
                anderson(prev_f, prev_g, hist_f, hist_g, kept, g)
                currents(g, s_conj, scale, lm, c)
            have_prev = True
        u, g = g, u  # the new iterate; the old one's memory takes the next step
        prev_res = res
    return u, c, w, SLOW, max_iter, res


@numba.njit(cache=True, nogil=True)
def solve(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads, net: Network,
          u0: np.ndarray, w: np.ndarray, inv_base: np.ndarray, tol: float, max_iter: int,
          memory: int, mix_from: int, out: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, int, int, float]:
    """`iterate`, with the last iterate and its currents also written to out [2, 1, 2, P]
    as the torch result's u and c (real parts, then imaginary). Returns the last
    iterate, the node voltages, how it ended, the steps and the last residual."""
    g, c, v, end, it, res = iterate(u, s_conj, scale, lm, net, u0, w, inv_base, tol,
                                    max_iter, memory, mix_from)
    for q in range(g.shape[0]):
        out[0, 0, 0, q], out[0, 0, 1, q] = g[q].real, g[q].imag
        out[1, 0, 0, q], out[1, 0, 1, q] = c[q].real, c[q].imag
    return g, v, end, it, res


def _network(pf: PowerFlow) -> Network:
    """The dense or sparse `Network` of a power flow, from its own matrices."""
    p = pf.n_ports
    # the unused half empty, with the same types, so that one compilation serves both
    none_m, none_c = np.zeros((0, 0)), np.zeros(0, dtype=np.complex128)
    none_i = np.zeros(0, dtype=np.int64)
    if pf._kron is None:  # zr is [[Re, Im], [-Im, Re]] of Zbᵀ; x_t is Xᵀ
        zr, xt = _np(pf.zr), _np(pf.x_t)
        dense = [np.ascontiguousarray(a) for a in (zr[:p, :p], zr[:p, p:], xt.real,
                                                    xt.imag)]
        return Network(*dense, none_i, none_i, none_c, none_i, none_i, none_c, none_c,
                       none_i, none_i, none_i, none_i)
    kron = pf._kron
    lo, up = kron.lu.L.tocsc(), kron.lu.U.tocsc()
    lo.setdiag(0)  # unit diagonal, implied
    lo.eliminate_zeros()
    diag = up.diagonal().astype(complex)
    up.setdiag(0)
    up.eliminate_zeros()
    ints = [a.astype(np.int64) for a in (lo.indptr, lo.indices)]
    ints_u = [a.astype(np.int64) for a in (up.indptr, up.indices)]
    return Network(none_m, none_m, none_m, none_m, *ints, lo.data.astype(complex),
                   *ints_u, up.data.astype(complex), diag,
                   kron.lu.perm_r.astype(np.int64), kron.lu.perm_c.astype(np.int64),
                   kron.port_a.astype(np.int64), kron.port_b.astype(np.int64))


class SingleSolver:
    """The fixed-point iteration of one `PowerFlow` for one scenario, compiled.

    Built once per power flow (on first use) from its tensors, so it shares their
    values: Zb (or the sparse LU), no-load port voltages, the load-model coefficients.
    """

    def __init__(self, pf: PowerFlow) -> None:
        self.tol, self.max_iter = pf.tol, pf.max_iter
        self.memory, self.mix_from = pf.anderson, pf.anderson_start
        u0 = _np(pf.u0)
        self.u0 = u0[0] + 1j * u0[1]  # [P]
        self.inv_base = _np(pf.inv_base)
        self.w = _np(pf.w)
        self.net = _network(pf)
        lm = pf.load_model
        table = _np(lm.table)  # [T, region, (q2r, q2i, q1r, q1i, q0r, q0i)]
        n_terms = table.shape[0]
        conj = (table[..., 0::2] - 1j * table[..., 1::2]).reshape(-1, 3)
        law_of = np.full(n_terms, -1, dtype=np.int64)
        law = lm.power_law
        if law is not None:
            law_of[_np(law.terms)] = np.arange(len(law.terms))
        empty = np.zeros(0)
        self.loads = Loads(
            port=_np(pf.t_port).astype(np.int64),
            q2=np.ascontiguousarray(conj[:, 0]), q1=np.ascontiguousarray(conj[:, 1]),
            q0=np.ascontiguousarray(conj[:, 2]),
            vlow=_np(lm.vlow), vmin=_np(lm.vmin), vmax=_np(lm.vmax), inv_vn=_np(lm.inv_vn),
            cutoff=empty if lm.cutoff_pu is None else _np(lm.cutoff_pu),
            law=law_of,
            **{f"law_{f}": empty if law is None else _np(getattr(law, f))
               for f in ("p0", "q0", "a", "b")})
        self.ones = np.ones(n_terms)
        self.none = np.zeros(0, dtype=complex)
        self.n_ports = pf.n_ports
        # the arguments after u, s_conj and scale, the same in every call
        self._fixed = (self.loads, self.net, self.u0, self.w, self.inv_base, float(self.tol),
                       int(self.max_iter), int(self.memory), int(self.mix_from))
        self._solve = _entry_point(solve, (self.u0, self.none, self.ones, *self._fixed,
                                           np.empty((2, 1, 2, self.n_ports))))
        # The last converged answer: ((its u's memory address, version), complex u, u). A
        # time series warm-starts from it, and then needs no conversion back; holding the
        # tensor keeps its address from being reused, and an in-place change of it (or of
        # a view of it) moves the version on.
        self._last: tuple[tuple[int, int], np.ndarray, torch.Tensor] | None = None

    def iterate(self, s_port: torch.Tensor | None, scale: torch.Tensor | None,
                u_init: torch.Tensor | None) -> SingleAnswer:
        """The fixed point of one scenario from u_init (or no load): s_port [1, 2, P] (W,
        var) and scale [1, T], CPU tensors that need no gradient, and u_init [1, 2, P].
        Stops as `_iterate` does: converged when the largest change of a port voltage's
        real or imaginary part, relative to its no-load magnitude, is within tol; not
        converged (answered at no load, for Newton to try) after a runaway (above 10, or
        not finite) or max_iter steps."""
        # C-contiguous float64 and complex128 always: the kernel is called for these
        # types without numba's checks (`_entry_point`)
        s = self.none if s_port is None else _complex(s_port.numpy()[0]).conj()
        k = self.ones if scale is None else np.ascontiguousarray(scale.numpy()[0],
                                                                 dtype=np.float64)
        if u_init is None:
            u = self.u0
        elif self._last is not None and self._last[0] == (u_init.data_ptr(),
                                                         u_init._version):
            u = self._last[1]  # our last answer (or a view of it), unchanged since
        else:
            u = _complex(_np(u_init)[0])
        out = np.empty((2, 1, 2, self.n_ports))  # u and c of the torch result
        g, v, end, it, res = self._solve(u, s, k, *self._fixed, out)
        if end != CONVERGED:  # answered at no load, with max_iter, as in `_iterate`
            out[0, 0, 0], out[0, 0, 1], out[1] = self.u0.real, self.u0.imag, 0.0
            return self._answer(out, False, self.max_iter, res)
        answer = self._answer(out, True, it, res, torch.from_numpy(v[None]))
        self._last = ((answer.u.data_ptr(), answer.u._version), g, answer.u)
        return answer

    def rows(self, s_port: torch.Tensor | None, scale: torch.Tensor | None,
             u_init: torch.Tensor | None, batch: int) -> SingleAnswer:
        """`iterate` for each of `batch` scenarios ([B, ...] inputs), answers stacked; the
        node voltages only if every scenario converged."""
        def row(x: torch.Tensor | None, r: int) -> torch.Tensor | None:
            return None if x is None else x[r: r + 1]

        answers = [self.iterate(row(s_port, r), row(scale, r), row(u_init, r))
                   for r in range(batch)]
        parts = [torch.cat(column) for column in zip(*(a[:5] for a in answers))]
        done = all(a.voltages is not None for a in answers)
        return SingleAnswer(*parts, torch.cat([a.voltages for a in answers]) if done else None)

    @staticmethod
    def _answer(out: np.ndarray, ok: bool, it: int, res: float,
                voltages: torch.Tensor | None = None) -> SingleAnswer:
        """The answer from u and c in out [2, 1, 2, P]."""
        u, c = torch.from_numpy(out[0]), torch.from_numpy(out[1])
        # (from numpy: torch's own constructors cost more per call, which counts here)
        return SingleAnswer(u, c, torch.from_numpy(np.array([ok])),
                            torch.from_numpy(np.array([it], dtype=np.int64)),
                            torch.from_numpy(np.array([res])), voltages)


def _entry_point(kernel: numba.core.registry.CPUDispatcher, args: tuple) -> object:
    """The compiled `kernel` for the types of `args`, to be called without numba's
    dispatch: typing a call's arguments (two named tuples of 27 arrays) takes about 8 us,
    a tenth of a warm-started solve on IEEE 123. The caller passes these same types in
    every call (the compiled code reads its arguments as these types, unchecked). Loads
    the kernel from numba's disk cache, or compiles it."""
    signature = tuple(numba.typeof(a) for a in args)
    kernel.compile(signature)
    return kernel.overloads[signature].entry_point


def _complex(x: np.ndarray) -> np.ndarray:
    """[2, P] real and imaginary parts -> complex [P]."""
    return x[0] + 1j * x[1]


def compile_kernels() -> None:
    """Compile (and cache on disk) the kernels by solving IEEE 13 once: `make setup`
    runs this so that no run's first solve waits for the compiler."""
    from grid.feeder import load_feeder
    from grid.powerflow import PowerFlow

    PowerFlow(load_feeder("ieee13")).solve(load_scale=1.0)
