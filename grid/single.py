"""The power flow's fixed point on the CPU, compiled by numba: one scenario, or a batch.

A co-simulation solves one scenario per step, warm-started from the last. There the torch
iteration is bound by dispatch, not arithmetic: some 60 operations of 3-10 us each per
iteration on vectors of a few hundred ports, where the arithmetic itself takes a few
microseconds. This module runs the same iteration as `PowerFlow._iterate` (the same load-
model coefficient table, residual, stopping rules and Anderson mixing) as one
numba-compiled loop over complex vectors. It only iterates: the caller wraps its answer in
the usual torch result, and everything after (derived quantities, Newton for a scenario
that did not converge) stays torch. Tests pin it to the torch iteration (same steps, same
answer to roundoff) and to OpenDSS. The implicit gradient's adjoint fixed point
(`PowerFlow._adjoint`) is iterated here too (`adjoint`), with products by Zbᴴ through the
same LU, transposed; torch computes its inputs (the per-port blocks of dc/du) and uses its
answer.

A batch runs in chunks of scenarios, each chunk in lockstep on one thread and the chunks
on all threads (`numba.prange`); each scenario still stops on its own, as if alone. Its
products with Zb go through Y's sparse LU (SuperLU's factors, solved here) with the
scenarios as the fastest axis, so every elimination step is an axpy across the chunk:
on IEEE 123 that is a third of the dense Zb's flops, and it vectorises. One scenario on a
dense feeder uses the dense Zb instead (`Network`).

Where a batch goes through the LU, it takes chord steps instead (`iterate_chord`): the
load currents' change with voltage, linearised at the solution for a load level near the
batch's (K0), moves into the matrix, factored once per power flow and level in real 2x2
blocks (`chord_factors`). The Z-bus step's error shrinks by about 0.1 per step on IEEE
123; the chord step's by 0.01-0.09, for the same work per step. The fixed points are the
same. Once, after a few steps, each scenario's iterate is extrapolated along its slowest
direction, by the ratio of its last two changes (mean steps 5.7 -> 5.25). A converged
scenario's node voltages come from its last chord step's solve (`chord_node_voltages`).
The adjoint iteration of the implicit gradient takes chord steps too (`adjoint`).
One scenario on a feeder with both (IEEE 123) takes chord steps through each level's
dense Zb' instead (`Network.ch_zbt`, twice Zb's bytes, since K0 is real-linear): on a
warm-started series of random loads 5.3 steps instead of the Z-bus steps' 8.3, the kernel
1.15x faster, the level picked in the kernel (`scenario_level`).

The compiled functions are cached on disk (numba's `cache=True`, next to this file), so
only the first use on a machine pays their compilation (about 1.5 min; `make setup` does it).

Units as in `grid.powerflow`: volts, amperes, VA.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from grid.loadmodel import DROPOUT_SLOPE
from grid.sparse import SUPERLU

if TYPE_CHECKING:
    from grid.powerflow import PowerFlow

CONVERGED, RUNAWAY, SLOW = 0, 1, 2  # how an iteration ended
CHORD_MAX_NODES = 600  # the chord's factorisation takes [levels, N, N] 2x2 blocks of
#                       work space (92 MB at 600 nodes; 20 MB on IEEE 123)
CHORD_STALL = 0.3  # a chord step that shrinks the residual less hands over to Z-bus steps
# the chord step after which each running scenario's iterate is extrapolated, once, by the
# ratio of its last two changes (`iterate_chord`)
CHORD_EXTRAPOLATE_AT = 4
# the load levels (x nominal) with a chord factorisation; a batch takes the nearest to its
# median scenario's, and Z-bus steps below CHORD_MIN_LEVEL, where loads barely move the
# voltages and a Z-bus step is nearly exact
CHORD_LEVELS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
CHORD_MIN_LEVEL = 0.05
SCENARIO_LEVEL = -2  # `solve`'s lv: the kernel picks one scenario's level
# The fast math the kernels allow: products fused into the sums they feed, and nothing
# else. Reordered sums (fastmath=True's reassoc) round differently depending on the code
# LLVM inlines a kernel into, so the same kernel compiled in a process and loaded from
# numba's cache in another gave answers differing in the last bits, and the local and
# Ray backends' records differed. The accumulations are written as chains, each
# addition taking one new product, so that each fuses into one multiply-add, the same
# wherever the code lands (`test_kernels_compiled_in_the_process_answer_as_the_cached_ones`).
FMA = {"contract"}
CHORD_DENSE_BYTES = 32 * 2**20  # the most the dense Zb' of every level may take


class CpuAnswer(NamedTuple):
    """The fixed points of B scenarios as the torch iteration returns them: u and c
    [B, 2, P] (real parts, then imaginary), converged [B], iterations [B] and residual
    [B]; and the node voltages [B, N] (complex, V) where every scenario converged."""

    u: torch.Tensor
    c: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    residual: torch.Tensor
    voltages: torch.Tensor | None = None


class Loads(NamedTuple):
    """The load model's terms as flat numpy arrays for the compiled kernels (T terms)."""

    port: np.ndarray  # [T] port of each term
    q: np.ndarray  # [T, 6, 4] conj(S)'s coefficients of r², r and 1, real and imaginary
    #                parts, per term and region (normal, high, mid, low)
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def currents(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads,
             out: np.ndarray) -> None:
    """Port currents drawn a -> b (A) into out [P, b], at port voltages u [P, b] of b
    scenarios (scenarios fastest, so each term's loop runs across them): a load term
    draws conj(S(|u|)) u / |u|^2 times its scale [T, b], an injection s draws
    -conj(s) u / |u|^2 (s_conj [P, b], or [0, b] for none). S(r) is `LoadModel.power`:
    the quadratic of the term's voltage region, model 4's power law in the normal band,
    the ZIP drop-out above the lowest region."""
    out[:] = 0.0
    has_cutoff = lm.cutoff.shape[0] > 0
    b = u.shape[1]
    xr, xi, rs = np.empty(b), np.empty(b), np.empty(b)  # conj(S) and |u| per scenario
    for k in range(lm.port.shape[0]):
        p, j = lm.port[k], lm.law[k]
        vmax, vmin, vlow = lm.vmax[k], lm.vmin[k], lm.vlow[k]
        # the term's four quadratics (normal, high, mid, low region), picked per scenario
        # by selects rather than a table lookup, in real arithmetic; |u|, the real and
        # the imaginary part each in a loop of their own, and the law and the drop-out
        # (calls) in another: so that the loops over scenarios vectorise (1.4x against
        # one loop, which LLVM left scalar; numpy's error model, since Python's checks
        # every division for zero, which kept that loop scalar too)
        q = lm.q[k]  # [6, 4]
        a0r, a1r, a2r, a3r = q[0, 0], q[0, 1], q[0, 2], q[0, 3]
        a0i, a1i, a2i, a3i = q[1, 0], q[1, 1], q[1, 2], q[1, 3]
        b0r, b1r, b2r, b3r = q[2, 0], q[2, 1], q[2, 2], q[2, 3]
        b0i, b1i, b2i, b3i = q[3, 0], q[3, 1], q[3, 2], q[3, 3]
        c0r, c1r, c2r, c3r = q[4, 0], q[4, 1], q[4, 2], q[4, 3]
        c0i, c1i, c2i, c3i = q[5, 0], q[5, 1], q[5, 2], q[5, 3]
        up = u[p]
        for s in range(b):
            rs[s] = math.sqrt(up[s].real * up[s].real + up[s].imag * up[s].imag)
        for s in range(b):
            r = rs[s]
            high, mid, low = r > vmax, r <= vmin, r <= vlow
            xr[s] = ((a1r if high else (a3r if low else a2r) if mid else a0r) * r
                     + (b1r if high else (b3r if low else b2r) if mid else b0r)) * r + (
                c1r if high else (c3r if low else c2r) if mid else c0r)
        for s in range(b):
            r = rs[s]
            high, mid, low = r > vmax, r <= vmin, r <= vlow
            xi[s] = ((a1i if high else (a3i if low else a2i) if mid else a0i) * r
                     + (b1i if high else (b3i if low else b2i) if mid else b0i)) * r + (
                c1i if high else (c3i if low else c2i) if mid else c0i)
        if j >= 0 or has_cutoff:
            for s in range(b):
                r = rs[s]
                if j >= 0 and vmin < r <= vmax:  # model 4's law, in the normal band
                    rel = r * lm.inv_vn[k]
                    xr[s] += lm.law_p0[j] * rel ** lm.law_a[j]
                    xi[s] -= lm.law_q0[j] * rel ** lm.law_b[j]
                if has_cutoff and r > vlow:
                    f = 0.5 * (1.0 + math.tanh(DROPOUT_SLOPE * (r * lm.inv_vn[k]
                                                                - lm.cutoff[k])))
                    xr[s], xi[s] = xr[s] * f, xi[s] * f
        sk, op = scale[k], out[p]
        for s in range(b):
            vr, vi = up[s].real, up[s].imag
            f = sk[s] / (vr * vr + vi * vi)
            op[s] += complex((xr[s] * vr - xi[s] * vi) * f, (xr[s] * vi + xi[s] * vr) * f)
    _injection_currents(u, s_conj, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _injection_currents(u: np.ndarray, s_conj: np.ndarray, out: np.ndarray) -> None:
    """out [P, b] less what injections s_conj [P, b] (or [0, b]) draw at u [P, b]:
    -conj(s) u / |u|^2."""
    for p in range(s_conj.shape[0]):
        for s in range(u.shape[1]):
            v = u[p, s]
            out[p, s] -= s_conj[p, s] * v / (v.real * v.real + v.imag * v.imag)


@numba.njit(cache=True, nogil=True)
def start_currents(net: Network, lv: int, u: np.ndarray, s_conj: np.ndarray,
                   scale: np.ndarray, lm: Loads, out: np.ndarray) -> bool:
    """`currents` into out [P, b] where every column of u [P, b] is level lv's start
    (`Network.ch_start`): there each load term draws its scale times the current it draws
    at scale 1 (`Network.ch_c0`), so the load model need not be evaluated. Returns False,
    writing nothing, where a column is not at the start (a warm start)."""
    start, c0 = net.ch_start[lv], net.ch_c0[lv]
    off = 0  # (counted, not stopped at: the loop vectorises)
    for q in range(u.shape[0]):
        sr, si = start[0, q], start[1, q]
        for s in range(u.shape[1]):
            off += (u[q, s].real != sr) | (u[q, s].imag != si)
    if off:
        return False
    out[:] = 0.0
    for k in range(lm.port.shape[0]):
        sk, op, x = scale[k], out[lm.port[k]], complex(c0[0, k], c0[1, k])
        for s in range(u.shape[1]):
            op[s] += sk[s] * x
    _injection_currents(u, s_conj, out)
    return True


@numba.njit(cache=True, nogil=True)
def bounded(a: np.ndarray, low: float) -> bool:
    """Whether every entry of a is finite and at least `low` (NaN fails): one pass, where
    numpy's min, max and isfinite cost a few microseconds each on a batch-1 input. It
    counts the failures rather than stopping at the first, so that the loop vectorises
    (8x faster on a [1024, 91] input)."""
    flat = a.ravel()  # (a view where a is C-contiguous, else a copy)
    bad = 0
    for i in range(flat.size):
        v = flat[i]  # (-inf, when low is -inf, fails too)
        bad += not ((v >= low) & (abs(v) < math.inf))
    return bad == 0


@numba.njit(cache=True, nogil=True)
def residuals(g: np.ndarray, u: np.ndarray, inv_base: np.ndarray, out: np.ndarray) -> None:
    """Per scenario into out [b]: the largest change of a port voltage's real or imaginary
    part from u to g [P, b], relative to the port's no-load magnitude; NaN if any is
    NaN."""
    out[:] = 0.0
    for p in range(g.shape[0]):
        w = inv_base[p]
        for s in range(g.shape[1]):
            d = g[p, s] - u[p, s]
            m = max(abs(d.real), abs(d.imag)) * w
            if m > out[s] or m != m:  # (a NaN stays: nothing compares above it)
                out[s] = m


@numba.njit(cache=True, nogil=True)
def largest_changes(g: np.ndarray, u: np.ndarray, inv_base: np.ndarray, res: np.ndarray,
                    out: np.ndarray) -> None:
    """Per scenario into out [b]: a port whose change from u to g [P, b] is the
    scenario's residual res [b] (`residuals`, the same arithmetic, so equal bit for bit);
    port 0 where none is (a NaN residual)."""
    out[:] = 0
    for p in range(g.shape[0]):
        w = inv_base[p]
        for s in range(g.shape[1]):
            d = g[p, s] - u[p, s]
            if max(abs(d.real), abs(d.imag)) * w == res[s]:
                out[s] = p


@numba.njit(cache=True, nogil=True)
def extrapolate(g: np.ndarray, u: np.ndarray, beta: np.ndarray) -> None:
    """g [P, b] moved on along its change from u by beta [b]: g + beta (g - u)."""
    for p in range(g.shape[0]):
        for s in range(g.shape[1]):
            g[p, s] += beta[s] * (g[p, s] - u[p, s])


class Network(NamedTuple):
    """The linear half of the power flow for the compiled kernels.

    Products with Zb = M Y⁻¹ Mᵀ and with X = Y⁻¹ Mᵀ run through Y's sparse LU, for many
    scenarios at once: each elimination step is then an axpy across the scenarios, which
    vectorises. On feeders small enough for the dense path one scenario alone uses the
    dense Zbᵀ and Xᵀ instead (`zbt_*`, `xt_*`; empty on large feeders): at batch 1 the
    dense products are faster, and X is linear in c to roundoff, where the triangular
    solves' roundoff, amplified by Y's condition, moves node voltages by about 1e-12
    between nearby inputs (enough to spoil finite differences taken at tol 1e-13).

    The LU is SuperLU's, Pr Y Pc = L U, taken apart so that its triangular solves run
    compiled: SuperLU's own solve costs about 1 ms per call on IEEE 8500, mostly outside
    its arithmetic. Its values are split into real and imaginary parts."""

    zbt_re: np.ndarray  # [P, P] Zbᵀ, dense feeders (transposed: products run by columns)
    zbt_im: np.ndarray
    xt_re: np.ndarray  # [P, N] Xᵀ, dense feeders
    xt_im: np.ndarray
    l_ptr: np.ndarray  # L below its unit diagonal, CSC
    l_idx: np.ndarray
    l_re: np.ndarray
    l_im: np.ndarray
    u_ptr: np.ndarray  # U above its diagonal, CSC
    u_idx: np.ndarray
    u_re: np.ndarray
    u_im: np.ndarray
    dinv_re: np.ndarray  # [N] 1 / U's diagonal
    dinv_im: np.ndarray
    perm_r: np.ndarray  # [N]
    perm_c: np.ndarray  # [N]
    port_a: np.ndarray  # [P] node of each port's a end
    port_b: np.ndarray  # [P] node of its b end, -1 for ground
    # The chord iteration's factors (`chord_map`), all empty where a feeder has none:
    # Y + M K0 Mᵀ in real 2x2 blocks, K0 the ports' dc/du at the solution with every
    # load at one of CHORD_LEVELS (V levels, one pattern). A block [a, b, c, d] maps
    # (re, im) to (a re + b im, c re + d im); the factors' blocks lie four numbers each
    # in flat arrays.
    ch_k0: np.ndarray  # [V, P, 4] K0's block per port
    ch_pos: np.ndarray  # [N] each node's position: the factors' (the ports' paths), then
    # those after them (the rest)
    ch_l_ptr: np.ndarray  # L's blocks below its identity diagonal, CSC over positions
    ch_l_idx: np.ndarray
    ch_l_val: np.ndarray  # [V, 4 nnz]
    ch_u_ptr: np.ndarray  # U's blocks above its diagonal, CSC
    ch_u_idx: np.ndarray
    ch_u_val: np.ndarray  # [V, 4 nnz]
    ch_dinv: np.ndarray  # [V, 4 m] the inverses of U's diagonal blocks (m positions)
    ch_x_ptr: np.ndarray  # U's blocks in the rows of the rest, CSR in their order
    ch_x_idx: np.ndarray  # (positions)
    ch_x_val: np.ndarray  # [V, 4 nnz]
    ch_x_dinv: np.ndarray  # [V, 4 (N - m)] the inverses of their diagonal blocks
    # Mᵀ by positions, for `block_solve` to add a right-hand side as it reaches each row:
    ch_port_ptr: np.ndarray  # [m + 1] CSR over positions
    ch_port_idx: np.ndarray  # the ports with their a end there (q), or b end (-1 - q)
    ch_l_first: np.ndarray  # [nnz of L] 1 where the block is the first to reach its row
    ch_fresh: np.ndarray  # [m] 1 where no block of L reaches the row
    # each level's solution, the start of a batch's chord steps, and the current each load
    # term draws there at scale 1 (`start_currents`):
    ch_start: np.ndarray  # [V, 2, P] (real parts, then imaginary), V
    ch_c0: np.ndarray  # [V, 2, T] A
    # One scenario's chord steps on a dense feeder (`chord_map`) take Zb' dense, in the
    # real [re, im] form (K0 is real-linear, not complex-linear), transposed; empty where
    # there is none. And what picks its level in the kernel (`scenario_level`):
    ch_zbt: np.ndarray  # [V, 2P, 2P]
    ch_levels: np.ndarray  # [V] the levels' load, x nominal
    ch_weight: np.ndarray  # [T] each load term's share of the nominal |S|


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def minus_product(at_re: np.ndarray, at_im: np.ndarray, c: np.ndarray, base: np.ndarray,
                  out: np.ndarray) -> None:
    """out = base - A c for a complex matrix A given as the real and imaginary parts of
    its transpose [P, M]: four columns at a time, each pass an update of the sums over
    contiguous memory, which vectorises, eight multiply-adds per entry (`FMA`). Four
    columns per pass read and write the sums a quarter as often: on IEEE 123
    that is 4.3 against 6.2 us for Zb, 10 against 16 for X, whose 144 and 422 kB stream
    from L2. A loop rather than BLAS: a threaded BLAS wakes its threads for a product
    this small, which on a busy two-core machine took milliseconds instead of
    microseconds."""
    p, m = at_re.shape
    acc_re, acc_im = np.zeros(m), np.zeros(m)
    j = 0
    while j + 4 <= p:
        c0r, c0i, c1r, c1i = c[j].real, c[j].imag, c[j + 1].real, c[j + 1].imag
        c2r, c2i, c3r, c3i = c[j + 2].real, c[j + 2].imag, c[j + 3].real, c[j + 3].imag
        for i in range(m):
            a0r, a0i, a1r, a1i = at_re[j, i], at_im[j, i], at_re[j + 1, i], at_im[j + 1, i]
            a2r, a2i = at_re[j + 2, i], at_im[j + 2, i]
            a3r, a3i = at_re[j + 3, i], at_im[j + 3, i]
            acc_re[i] = (acc_re[i] + a0r * c0r - a0i * c0i + a1r * c1r - a1i * c1i
                         + a2r * c2r - a2i * c2i + a3r * c3r - a3i * c3i)
            acc_im[i] = (acc_im[i] + a0r * c0i + a0i * c0r + a1r * c1i + a1i * c1r
                         + a2r * c2i + a2i * c2r + a3r * c3i + a3i * c3r)
        j += 4
    for j in range(j, p):
        cr, ci = c[j].real, c[j].imag
        for i in range(m):
            acc_re[i] = acc_re[i] + at_re[j, i] * cr - at_im[j, i] * ci
            acc_im[i] = acc_im[i] + at_re[j, i] * ci + at_im[j, i] * cr
    for i in range(m):
        out[i] = base[i] - complex(acc_re[i], acc_im[i])


@numba.njit(cache=True, nogil=True)
def _scatter(net: Network, perm: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """y [N, 2, b] = the node values of Mᵀ x for port values x [P, b], node i's at row
    perm[i]: each port's value added at its a end and taken away at its b end (none for
    ground)."""
    y[:] = 0.0
    for p in range(x.shape[0]):
        ra = perm[net.port_a[p]]
        rb = perm[net.port_b[p]] if net.port_b[p] >= 0 else -1
        for s in range(x.shape[1]):
            v = x[p, s]
            y[ra, 0, s] += v.real
            y[ra, 1, s] += v.imag
            if rb >= 0:
                y[rb, 0, s] -= v.real
                y[rb, 1, s] -= v.imag


@numba.njit(cache=True, nogil=True)
def _gather(net: Network, perm: np.ndarray, y: np.ndarray, base: np.ndarray,
            out: np.ndarray) -> None:
    """out [P, b] = base [P] - M z for node values z = y [N, 2, b], node i's at row
    perm[i]: each port's a end less its b end (none for ground). `_scatter` reversed."""
    for q in range(out.shape[0]):
        ia, ib = perm[net.port_a[q]], net.port_b[q]
        for s in range(out.shape[1]):
            v = complex(y[ia, 0, s], y[ia, 1, s])
            if ib >= 0:
                v -= complex(y[perm[ib], 0, s], y[perm[ib], 1, s])
            out[q, s] = base[q] - v


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _subtract_product(y: np.ndarray, dst: int, src: int, vr: float, vi: float) -> None:
    """Row dst of y [N, 2, b] minus (vr + i vi) times its row src (dst != src), for every
    scenario: one elimination step of the triangular solves, an axpy across the
    scenarios."""
    for s in range(y.shape[2]):
        ar, ai = y[src, 0, s], y[src, 1, s]
        y[dst, 0, s] = y[dst, 0, s] - vr * ar + vi * ai
        y[dst, 1, s] = y[dst, 1, s] - vr * ai - vi * ar


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _scale_row(y: np.ndarray, j: int, er: float, ei: float) -> None:
    """Row j of y [N, 2, b] times er + i ei, for every scenario."""
    for s in range(y.shape[2]):
        ar, ai = y[j, 0, s], y[j, 1, s]
        y[j, 0, s] = er * ar - ei * ai
        y[j, 1, s] = er * ai + ei * ar


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def lu_solve(net: Network, c: np.ndarray, y: np.ndarray) -> None:
    """z = U⁻¹ L⁻¹ Pr Mᵀ c for port currents c [P, b] of b scenarios, into y [N, 2, b]
    (each row's real parts, then its imaginary parts, scenarios fastest: one row's values
    side by side, which the axpys stream faster than two arrays); node i's value of
    Y⁻¹ Mᵀ c is z[perm_c[i]]."""
    b, n = c.shape[1], y.shape[0]
    _scatter(net, net.perm_r, c, y)  # Pr Mᵀ c: row i of Y goes to row perm_r[i]
    if b == 1:  # one scenario: the same elimination without the loop over scenarios
        _lu_solve_one(net, y.reshape(n, 2))
        return
    for j in range(n):  # L y = ..., column by column (unit diagonal)
        for k in range(net.l_ptr[j], net.l_ptr[j + 1]):
            _subtract_product(y, net.l_idx[k], j, net.l_re[k], net.l_im[k])
    for j in range(n - 1, -1, -1):  # U z = y
        _scale_row(y, j, net.dinv_re[j], net.dinv_im[j])
        for k in range(net.u_ptr[j], net.u_ptr[j + 1]):
            _subtract_product(y, net.u_idx[k], j, net.u_re[k], net.u_im[k])


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def _lu_solve_one(net: Network, y: np.ndarray) -> None:
    """`lu_solve`'s two triangular solves for one scenario, in place on y [N, 2]."""
    for j in range(y.shape[0]):
        ar, ai = y[j, 0], y[j, 1]
        for k in range(net.l_ptr[j], net.l_ptr[j + 1]):
            i, vr, vi = net.l_idx[k], net.l_re[k], net.l_im[k]
            y[i, 0] = y[i, 0] - vr * ar + vi * ai
            y[i, 1] = y[i, 1] - vr * ai - vi * ar
    for j in range(y.shape[0] - 1, -1, -1):
        er, ei = net.dinv_re[j], net.dinv_im[j]
        ar, ai = er * y[j, 0] - ei * y[j, 1], er * y[j, 1] + ei * y[j, 0]
        y[j, 0], y[j, 1] = ar, ai
        for k in range(net.u_ptr[j], net.u_ptr[j + 1]):
            i, vr, vi = net.u_idx[k], net.u_re[k], net.u_im[k]
            y[i, 0] = y[i, 0] - vr * ar + vi * ai
            y[i, 1] = y[i, 1] - vr * ai - vi * ar


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def lu_solve_transposed(net: Network, x: np.ndarray, y: np.ndarray) -> None:
    """z = Pr⁻¹ L⁻ᵀ U⁻ᵀ Pc⁻¹ Mᵀ x for port values x [P, b] into y [N, 2, b], as `lu_solve`
    lays it out: `lu_solve` for Yᵀ (Yᵀ = Pc Uᵀ Lᵀ Pr, from Pr Y Pc = L U); node i's value of
    Y⁻ᵀ Mᵀ x is z[perm_r[i]]. Uᵀ and Lᵀ are solved row by row, which are U's and L's
    stored columns."""
    n = y.shape[0]
    _scatter(net, net.perm_c, x, y)  # Pc⁻¹ Mᵀ x: node i goes to row perm_c[i]
    for j in range(n):  # Uᵀ w = y: row j of Uᵀ is column j of U (rows above j)
        for k in range(net.u_ptr[j], net.u_ptr[j + 1]):
            _subtract_product(y, j, net.u_idx[k], net.u_re[k], net.u_im[k])
        _scale_row(y, j, net.dinv_re[j], net.dinv_im[j])
    for j in range(n - 1, -1, -1):  # Lᵀ z = w: row j of Lᵀ is column j of L (unit diagonal)
        for k in range(net.l_ptr[j], net.l_ptr[j + 1]):
            _subtract_product(y, j, net.l_idx[k], net.l_re[k], net.l_im[k])


@numba.njit(cache=True, nogil=True)
def adjoint_map(net: Network, mu: np.ndarray, out: np.ndarray, y: np.ndarray) -> None:
    """out = -Zbᴴ mu [P, b] for b scenarios' mu [P, b]: the adjoint of c -> -Zb c (in the
    real [re, im] form, the transposed product; Zbᴴ mu = conj(Zbᵀ conj(mu)))."""
    p, b = mu.shape
    lu_solve_transposed(net, np.conj(mu), y)
    pr = net.perm_r
    for q in range(p):
        ia, ib = pr[net.port_a[q]], net.port_b[q]
        for s in range(b):
            zr, zi = y[ia, 0, s], y[ia, 1, s]
            if ib >= 0:
                zr -= y[pr[ib], 0, s]
                zi -= y[pr[ib], 1, s]
            out[q, s] = complex(-zr, zi)


@numba.njit(cache=True, nogil=True)
def adjoint(g: np.ndarray, k: np.ndarray, net: Network, tol: float, max_iter: int,
            out_mu: np.ndarray, out_gc: np.ndarray, settled: np.ndarray, lv: int) -> None:
    """`PowerFlow._adjoint`'s fixed-point iteration for b scenarios in lockstep, each
    stopping on its own: mu = g + Kᵀ gc(mu) with gc = -Zbᴴ mu, from mu = g. g [b, P] is
    dL/du (dL/dRe + i dL/dIm per port), k [b, 4, P] the per-port 2x2 blocks of dc/du
    (dcr/dur, dci/dur, dcr/dui, dci/dui). A scenario settles when the largest change of
    a real or imaginary part is within tol of the largest part, and gives up when mu is
    not finite or grows past 1e12 times g (settled [b] False: the caller solves those
    directly). Writes mu and gc(mu) to out_mu and out_gc [b, 2, P] (real parts, then
    imaginary).

    With a chord level lv >= 0 it takes chord steps instead, as the forward iteration
    does (K0 of level lv): (I + Zb K)ᵀ = (I + Zb' (K - K0))ᵀ (I + Zb K0)ᵀ, so it
    iterates nu = g + (K - K0)ᵀ gc with gc = -Zb'ᵀ nu (the same rule for stopping, on
    nu), and answers mu = nu + K0ᵀ gc, for which -Zbᵀ mu is that same gc."""
    b, p = g.shape
    chord = lv >= 0
    n = net.ch_l_ptr.shape[0] - 1 if chord else net.dinv_re.shape[0]
    gt = np.ascontiguousarray(g.T)
    kt = np.empty((4, p, b))
    for j in range(4):
        kt[j] = k[:, j].T
    if chord:  # the blocks of K - K0 (see above)
        for q in range(p):
            k0 = net.ch_k0[lv, q]  # (rr, ri, ir, ii); kt's order is (rr, ir, ri, ii)
            for s in range(b):
                kt[0, q, s] -= k0[0]
                kt[1, q, s] -= k0[2]
                kt[2, q, s] -= k0[1]
                kt[3, q, s] -= k0[3]
    mu, gc, nxt = gt.copy(), np.empty_like(gt), np.empty_like(gt)
    y = np.empty((n, 2, b))
    zero = np.zeros(p, dtype=np.complex128)
    g_size = np.zeros(b)
    for q in range(p):
        for s in range(b):
            g_size[s] = max(g_size[s], abs(gt[q, s].real), abs(gt[q, s].imag))
    running = np.ones(b, dtype=np.bool_)
    settled[:] = False
    size, change = np.empty(b), np.empty(b)
    for _ in range(max_iter):
        if chord:  # gc = -Zb'ᵀ nu
            chord_products(net, lv, mu, zero, gc, y, True)
        else:
            adjoint_map(net, mu, gc, y)
        size[:] = 0.0
        change[:] = 0.0
        for q in range(p):
            for s in range(b):
                gr, gi = gc[q, s].real, gc[q, s].imag
                v = gt[q, s] + complex(kt[0, q, s] * gr + kt[1, q, s] * gi,
                                       kt[2, q, s] * gr + kt[3, q, s] * gi)
                nxt[q, s] = v
                d = v - mu[q, s]
                size[s] = max(size[s], abs(v.real), abs(v.imag))
                change[s] = max(change[s], abs(d.real), abs(d.imag))
        left = 0
        for s in range(b):
            if not running[s]:
                continue
            finite = math.isfinite(size[s]) and math.isfinite(change[s])
            settled[s] = finite and change[s] <= tol * size[s]
            mu[:, s] = nxt[:, s]
            if settled[s] or not finite or size[s] > 1e12 * g_size[s]:
                running[s] = False
            else:
                left += 1
        if left == 0:
            break
    if chord:  # from nu to mu = nu + K0ᵀ gc, where gc = -Zb'ᵀ nu is -Zbᵀ mu
        chord_products(net, lv, mu, zero, gc, y, True)
        for q in range(p):
            k0 = net.ch_k0[lv, q]
            for s in range(b):
                gr, gi = gc[q, s].real, gc[q, s].imag
                mu[q, s] += complex(k0[0] * gr + k0[2] * gi, k0[1] * gr + k0[3] * gi)
    else:
        adjoint_map(net, mu, gc, y)
    for s in range(b):
        for q in range(p):
            out_mu[s, 0, q], out_mu[s, 1, q] = mu[q, s].real, mu[q, s].imag
            out_gc[s, 0, q], out_gc[s, 1, q] = gc[q, s].real, gc[q, s].imag


@numba.njit(cache=True, nogil=True, parallel=True)
def adjoint_parallel(g: np.ndarray, k: np.ndarray, net: Network, tol: float, max_iter: int,
                     out_mu: np.ndarray, out_gc: np.ndarray, settled: np.ndarray,
                     chunk: int, lv: int) -> None:
    """`adjoint` for chunks of `chunk` scenarios on all threads, a chunk at a time each."""
    b = g.shape[0]
    for j in numba.prange((b + chunk - 1) // chunk):
        lo, hi = j * chunk, min(b, (j + 1) * chunk)
        adjoint(g[lo:hi], k[lo:hi], net, tol, max_iter, out_mu[lo:hi], out_gc[lo:hi],
                settled[lo:hi], lv)


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def minus_products(at_re: np.ndarray, at_im: np.ndarray, c: np.ndarray, base: np.ndarray,
                   out: np.ndarray, acc: np.ndarray) -> None:
    """out = base - A c [M, b] for b scenarios' c [P, b], A as `minus_product` takes it
    (the real and imaginary parts of its transpose [P, M]): an axpy across the scenarios
    per entry of A, as `lu_solve` does per entry of L and U (acc: work space of at least
    [M, 2, b])."""
    p, b = c.shape
    m = at_re.shape[1]
    acc[:m] = 0.0
    cr, ci = np.empty(b), np.empty(b)
    for j in range(p):
        for s in range(b):
            cr[s], ci[s] = c[j, s].real, c[j, s].imag
        for i in range(m):
            ar, ai = at_re[j, i], at_im[j, i]
            for s in range(b):
                acc[i, 0, s] = acc[i, 0, s] + ar * cr[s] - ai * ci[s]
                acc[i, 1, s] = acc[i, 1, s] + ar * ci[s] + ai * cr[s]
    for i in range(m):
        for s in range(b):
            out[i, s] = base[i] - complex(acc[i, 0, s], acc[i, 1, s])


@numba.njit(cache=True, nogil=True)
def zbus_map(net: Network, c: np.ndarray, u0: np.ndarray, out: np.ndarray,
             y: np.ndarray) -> None:
    """out = u0 - Zb c [P, b] for b scenarios' port currents c [P, b]: the linear half of
    the Z-bus map (y [N, 2, b]: work space). Through the dense Zb where the feeder has
    one and its P² entries are no more than L's and U's (one scenario always: there the
    dense product vectorises and the triangular solves do not); else through Y's LU. On
    the European LV feeder, 55 ports on 2,721 nodes, that is 3,025 entries against about
    25,000; on IEEE 123, 9,025 against 2,600."""
    p, b = c.shape
    if net.zbt_re.shape[0] > 0:
        if b == 1:
            minus_product(net.zbt_re, net.zbt_im, c.reshape(p), u0, out.reshape(p))
            return
        if p * p <= net.l_re.shape[0] + net.u_re.shape[0]:
            minus_products(net.zbt_re, net.zbt_im, c, u0, out, y)
            return
    lu_solve(net, c, y)
    _gather(net, net.perm_c, y, u0, out)


@numba.njit(cache=True, nogil=True)
def node_voltages(net: Network, c: np.ndarray, w: np.ndarray, out: np.ndarray,
                  y: np.ndarray) -> None:
    """out = w - X c [b, N]: node voltages from port currents c [P, b] and no-load
    voltages w [N] (y [N, 2, b]: work space)."""
    p, b = c.shape
    if net.xt_re.shape[0] > 0 and b == 1:
        minus_product(net.xt_re, net.xt_im, c.reshape(p), w, out[0])
        return
    lu_solve(net, c, y)
    # eight scenarios at a time, so that the rows of out being written stay in cache
    # (the node voltages of 16 on the European LV feeder: 571 -> 431 us)
    for s0 in range(0, b, 8):
        for i in range(w.shape[0]):
            j = net.perm_c[i]
            for s in range(s0, min(b, s0 + 8)):
                out[s, i] = w[i] - complex(y[j, 0, s], y[j, 1, s])


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _subtract_block(y: np.ndarray, dst: int, src: int, a: float, b: float, c: float,
                    d: float) -> None:
    """Row dst of y [N, 2, b] minus the real 2x2 block [[a, b], [c, d]] (acting on
    (re, im)) times row src, for every scenario: `_subtract_product` for a real-linear
    entry."""
    for s in range(y.shape[2]):
        xr, xi = y[src, 0, s], y[src, 1, s]
        y[dst, 0, s] = y[dst, 0, s] - a * xr - b * xi
        y[dst, 1, s] = y[dst, 1, s] - c * xr - d * xi


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _set_block(y: np.ndarray, dst: int, src: int, a: float, b: float, c: float,
               d: float) -> None:
    """Row dst of y [N, 2, b] = minus the real 2x2 block [[a, b], [c, d]] times row src:
    `_subtract_block` from zero."""
    for s in range(y.shape[2]):
        xr, xi = y[src, 0, s], y[src, 1, s]
        y[dst, 0, s] = -(a * xr + b * xi)
        y[dst, 1, s] = -(c * xr + d * xi)


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _apply_block(y: np.ndarray, j: int, a: float, b: float, c: float, d: float) -> None:
    """Row j of y [N, 2, b] times the real 2x2 block [[a, b], [c, d]]."""
    for s in range(y.shape[2]):
        xr, xi = y[j, 0, s], y[j, 1, s]
        y[j, 0, s] = a * xr + b * xi
        y[j, 1, s] = c * xr + d * xi


@numba.njit(cache=True, nogil=True, fastmath=FMA, inline="always")
def _add_ports(net: Network, x: np.ndarray, y: np.ndarray, j: int) -> None:
    """Row j of y [m, 2, b] plus row j of Mᵀ x in the chord's positions, for port values
    x [P, b]: the ports with their a end there added, those with their b end taken away."""
    for t in range(net.ch_port_ptr[j], net.ch_port_ptr[j + 1]):
        q = net.ch_port_idx[t]
        sign = 1.0 if q >= 0 else -1.0
        q = q if q >= 0 else -1 - q
        for s in range(y.shape[2]):
            y[j, 0, s] += sign * x[q, s].real
            y[j, 1, s] += sign * x[q, s].imag


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def block_solve(net: Network, lv: int, x: np.ndarray, y: np.ndarray) -> None:
    """y [m, 2, b] = (Y + M K0 Mᵀ)⁻¹ Mᵀ x in the factors' positions, K0 of level lv, for
    port values x [P, b]: the chord's block triangular solves, each step an update across
    the scenarios. Mᵀ x enters each row as the forward solve reaches it, and the first
    update of a row sets it: y's old values are never read, so it needs no zeroing pass.
    (The blocks are read from flat arrays, four numbers at a time: with a view per block,
    and with real and imaginary parts in two arrays, the solves took 1.5 times as long.)"""
    n = y.shape[0]
    l_val, u_val, dinv = net.ch_l_val[lv], net.ch_u_val[lv], net.ch_dinv[lv]
    for j in range(n):  # L y = Mᵀ x (identity diagonal blocks)
        if net.ch_fresh[j]:
            y[j] = 0.0
        _add_ports(net, x, y, j)
        for k in range(net.ch_l_ptr[j], net.ch_l_ptr[j + 1]):
            a, bb, c, d = l_val[4 * k], l_val[4 * k + 1], l_val[4 * k + 2], l_val[4 * k + 3]
            if net.ch_l_first[k]:
                _set_block(y, net.ch_l_idx[k], j, a, bb, c, d)
            else:
                _subtract_block(y, net.ch_l_idx[k], j, a, bb, c, d)
    for j in range(n - 1, -1, -1):  # U z = y
        _apply_block(y, j, dinv[4 * j], dinv[4 * j + 1], dinv[4 * j + 2], dinv[4 * j + 3])
        for k in range(net.ch_u_ptr[j], net.ch_u_ptr[j + 1]):
            _subtract_block(y, net.ch_u_idx[k], j, u_val[4 * k], u_val[4 * k + 1],
                            u_val[4 * k + 2], u_val[4 * k + 3])


@numba.njit(cache=True, nogil=True)
def chord_map(net: Network, lv: int, c: np.ndarray, u: np.ndarray, u0: np.ndarray,
              out: np.ndarray, y: np.ndarray, dense: bool) -> None:
    """out = u0 - Zb' (c + K0 (u0 - u)) [P, b], the chord step from u [P, b] with port
    currents c = c(u), where Zb' = Mᵀ (Y + M K0 Mᵀ)⁻¹ M, K0 of level lv (y [N, 2, b]:
    work space). dense: for one scenario, the product by the level's dense Zb'
    (`Network.ch_zbt`), y untouched.

    Its fixed points are the Z-bus map's: u = u0 - Zb' (c + K0 (u0 - u)) rearranges to
    (I + Zb K0) u = (I + Zb K0) u0 - Zb c - Zb K0 u0 + Zb K0 u, that is u = u0 - Zb c.
    Near the level's solution, where c(u) changes as K0 says, a step is nearly Newton's."""
    p, b = c.shape
    k0 = net.ch_k0[lv]
    for q in range(p):  # c + K0 (u0 - u), into out until the product overwrites it
        a, bb, cc, d = k0[q, 0], k0[q, 1], k0[q, 2], k0[q, 3]
        for s in range(b):
            dr, di = u0[q].real - u[q, s].real, u0[q].imag - u[q, s].imag
            out[q, s] = c[q, s] + complex(a * dr + bb * di, cc * dr + d * di)
    if dense:  # one scenario (b = 1) through the dense Zb' (`Network.ch_zbt`)
        x = out.reshape(p).view(np.float64)  # (re, im) pairs, as ch_zbt's rows lie
        minus_product_real(net.ch_zbt[lv], x, u0.view(np.float64), x)
        return
    chord_products(net, lv, out, u0, out, y, False)


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def minus_product_real(at: np.ndarray, x: np.ndarray, base: np.ndarray,
                       out: np.ndarray) -> None:
    """out = base - A x for a real matrix given as its transpose at [M, M] (out may be x):
    `minus_product`'s four columns a pass, for one real vector."""
    m = at.shape[0]
    acc = np.zeros(m)
    j = 0
    while j + 4 <= m:
        x0, x1, x2, x3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        for i in range(m):
            acc[i] = (acc[i] + at[j, i] * x0 + at[j + 1, i] * x1 + at[j + 2, i] * x2
                      + at[j + 3, i] * x3)
        j += 4
    for j in range(j, m):
        xj = x[j]
        for i in range(m):
            acc[i] = acc[i] + at[j, i] * xj
    for i in range(m):
        out[i] = base[i] - acc[i]


@numba.njit(cache=True, nogil=True)
def scenario_level(net: Network, scale: np.ndarray) -> int:
    """The chord level for one scenario's load scales [T]: the factored level nearest its
    scales weighed by the terms' nominal |S| (`CpuSolver._level`), or -1."""
    x = 0.0
    for t in range(scale.shape[0]):
        x += scale[t] * net.ch_weight[t]
    return nearest_level(net.ch_levels, x)


@numba.njit(cache=True, nogil=True)
def nearest_level(levels: np.ndarray, x: float) -> int:
    """The index of the level nearest x (by ratio), or -1 (Z-bus steps) below
    CHORD_MIN_LEVEL."""
    if not x >= CHORD_MIN_LEVEL:
        return -1
    best, lv = math.inf, -1
    for v in range(levels.shape[0]):
        d = abs(math.log(levels[v] / x))
        if d < best:
            best, lv = d, v
    return lv


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def chord_node_voltages(net: Network, lv: int, y: np.ndarray, cols: np.ndarray,
                        w: np.ndarray, out: np.ndarray, rows: np.ndarray,
                        z: np.ndarray) -> None:
    """out[rows[i]] [N] = w - z, the node voltages of the chord step of column cols[i],
    for every i, from the block solve that left z at the ports' paths in y[:, :, cols[i]]
    (z [N, 2, >= len(cols)]: work space). They are the network's voltages for port
    currents c(u) + K0 (g - u) (g = M (w - z), the step's port voltages): at convergence
    c(g) to first order in the step, so no further solve with Y is needed. The rest of
    the positions, whose forward values are zero, take U's rows alone.
    All the columns that converged in a step at once, scenarios fastest, and written out
    eight scenarios at a time (a cache line of each position): 1.0 against 1.6 us per
    scenario on IEEE 123, one at a time."""
    m, k = y.shape[0], cols.shape[0]
    for i in range(m):
        for s in range(k):
            z[i, 0, s], z[i, 1, s] = y[i, 0, cols[s]], y[i, 1, cols[s]]
    x_val, x_dinv = net.ch_x_val[lv], net.ch_x_dinv[lv]
    for t in range(net.ch_x_ptr.shape[0] - 1):
        zt = z[m + t]
        zt[:, :k] = 0.0
        for e in range(net.ch_x_ptr[t], net.ch_x_ptr[t + 1]):
            a, b, c, d = x_val[4 * e], x_val[4 * e + 1], x_val[4 * e + 2], x_val[4 * e + 3]
            zs = z[net.ch_x_idx[e]]
            for s in range(k):
                zt[0, s] = zt[0, s] + a * zs[0, s] + b * zs[1, s]
                zt[1, s] = zt[1, s] + c * zs[0, s] + d * zs[1, s]
        a, b, c, d = x_dinv[4 * t], x_dinv[4 * t + 1], x_dinv[4 * t + 2], x_dinv[4 * t + 3]
        for s in range(k):
            re, im = zt[0, s], zt[1, s]
            zt[0, s], zt[1, s] = -(a * re + b * im), -(c * re + d * im)
    for s0 in range(0, k, 8):
        for i in range(w.shape[0]):
            zq = z[net.ch_pos[i]]
            for s in range(s0, min(k, s0 + 8)):
                out[rows[s], i] = w[i] - complex(zq[0, s], zq[1, s])


@numba.njit(cache=True, nogil=True)
def chord_products(net: Network, lv: int, x: np.ndarray, base: np.ndarray, out: np.ndarray,
                   y: np.ndarray, transposed: bool) -> None:
    """out = base - Zb' x [P, b] (Zb'ᵀ x if transposed) in the real [re, im] form, for
    port values x [P, b] (complex, each number a pair; out may be x) and base [P]."""
    if transposed:
        block_solve_transposed(net, lv, x, y)
    else:
        block_solve(net, lv, x, y)
    _gather(net, net.ch_pos, y, base, out)


@numba.njit(cache=True, nogil=True, fastmath=FMA)
def block_solve_transposed(net: Network, lv: int, x: np.ndarray, y: np.ndarray) -> None:
    """`block_solve` for the transpose, (Y + M K0 Mᵀ)ᵀ = Uᵀ Lᵀ: Uᵀ and Lᵀ solved row by
    row, which are U's and L's stored columns (each block transposed). Row j of Mᵀ x
    sets row j as the Uᵀ solve reaches it, so y's old values are never read here
    either."""
    n = y.shape[0]
    l_val, u_val, dinv = net.ch_l_val[lv], net.ch_u_val[lv], net.ch_dinv[lv]
    for j in range(n):  # Uᵀ y = Mᵀ x: row j of Uᵀ is column j of U (rows above j)
        y[j] = 0.0
        _add_ports(net, x, y, j)
        for k in range(net.ch_u_ptr[j], net.ch_u_ptr[j + 1]):
            _subtract_block(y, j, net.ch_u_idx[k], u_val[4 * k], u_val[4 * k + 2],
                            u_val[4 * k + 1], u_val[4 * k + 3])
        _apply_block(y, j, dinv[4 * j], dinv[4 * j + 2], dinv[4 * j + 1], dinv[4 * j + 3])
    for j in range(n - 1, -1, -1):  # Lᵀ z = y: row j of Lᵀ is column j of L
        for k in range(net.ch_l_ptr[j], net.ch_l_ptr[j + 1]):
            _subtract_block(y, j, net.ch_l_idx[k], l_val[4 * k], l_val[4 * k + 2],
                            l_val[4 * k + 1], l_val[4 * k + 3])


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
            max_iter: int, memory: int, mix_from: int, out_u: np.ndarray,
            out_c: np.ndarray, out_v: np.ndarray, end: np.ndarray, steps: np.ndarray,
            resid: np.ndarray) -> None:
    """`PowerFlow._iterate` for b scenarios in lockstep, each as alone: fixed-point steps
    g = u0 - Zb c(u) from u [P, b] (s_conj [P, b] or [0, b] for no injections, scale
    [T, b]; scenarios fastest), with Anderson mixing of `memory` steps from step
    `mix_from` on (a step whose residual jumped tenfold stays plain). A scenario stops
    when it converges (its iterate and currents go to out_u and out_c [b, P]), runs away
    (above 10 or not finite) or runs out of steps; end [b] says which (CONVERGED, RUNAWAY,
    SLOW), steps [b] when, and resid [b] its last residual. out_v [b, N]: the node
    voltages of out_c."""
    p, b = u.shape
    n = net.dinv_re.shape[0]
    u = u.copy()
    g, c = np.empty_like(u), np.empty_like(u)
    y = np.empty((n, 2, b))
    currents(u, s_conj, scale, lm, c)
    # Anderson's history per scenario: newest differences of f = g - u and of g
    hist_f = np.empty((b, max(memory, 1), p), dtype=np.complex128)
    hist_g = np.empty_like(hist_f)
    prev_f, prev_g = np.empty((b, p), dtype=np.complex128), np.empty((b, p), np.complex128)
    mixed = np.empty(p, dtype=np.complex128)
    kept = np.zeros(b, dtype=np.int64)
    have_prev = np.zeros(b, dtype=np.bool_)
    prev_res = np.full(b, np.inf)
    running = np.ones(b, dtype=np.bool_)
    res = np.empty(b)
    left = b
    end[:] = SLOW
    out_c[:] = 0.0
    for it in range(1, max_iter + 1):
        zbus_map(net, c, u0, g, y)
        currents(g, s_conj, scale, lm, c)  # (stopped scenarios too: cheaper than asking)
        residuals(g, u, inv_base, res)
        for s in range(b):
            if not running[s]:
                continue
            resid[s], steps[s] = res[s], it
            if res[s] <= tol or not res[s] <= 10.0:
                end[s] = CONVERGED if res[s] <= tol else RUNAWAY
                out_u[s], out_c[s] = g[:, s], c[:, s]
                running[s] = False
                left -= 1
                continue
            if memory > 0 and it >= mix_from:
                if have_prev[s]:
                    if kept[s] == memory:  # drop the oldest difference
                        for i in range(kept[s] - 1):
                            hist_f[s, i], hist_g[s, i] = hist_f[s, i + 1], hist_g[s, i + 1]
                        kept[s] -= 1
                    k = kept[s]
                    for q in range(p):
                        hist_f[s, k, q] = (g[q, s] - u[q, s]) - prev_f[s, q]
                        hist_g[s, k, q] = g[q, s] - prev_g[s, q]
                    kept[s] += 1
                for q in range(p):
                    prev_f[s, q], prev_g[s, q] = g[q, s] - u[q, s], g[q, s]
                if have_prev[s] and not res[s] > 10.0 * prev_res[s]:
                    anderson(prev_f[s], prev_g[s], hist_f[s], hist_g[s], kept[s], mixed)
                    g[:, s] = mixed
                    currents(g[:, s:s + 1], s_conj[:, s:s + 1], scale[:, s:s + 1], lm,
                             c[:, s:s + 1])
                have_prev[s] = True
            prev_res[s] = res[s]
        if left == 0:
            break
        u, g = g, u  # the new iterates; the old ones' memory takes the next step
    for s in range(b):
        if running[s]:  # out of steps
            out_u[s], out_c[s] = u[:, s], c[:, s]
    node_voltages(net, np.ascontiguousarray(out_c.T), w, out_v, y)


@numba.njit(cache=True, nogil=True, inline="always")
def _chord_stalls(res: float, prev: float, it: int) -> bool:
    """Whether a scenario's chord step it, residual res after prev, ran away (above 10,
    or not finite) or shrank it by less than CHORD_STALL (from the third step on)."""
    return not res <= 10.0 or (it >= 3 and res > CHORD_STALL * prev)


@numba.njit(cache=True, nogil=True)
def iterate_chord(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads,
                  net: Network, u0: np.ndarray, w: np.ndarray, inv_base: np.ndarray,
                  tol: float, max_iter: int, out_u: np.ndarray, out_c: np.ndarray,
                  out_v: np.ndarray, end: np.ndarray, steps: np.ndarray,
                  resid: np.ndarray, lv: int) -> None:
    """`iterate` with chord steps (`chord_map`, level lv) in place of Z-bus steps, for b
    scenarios in lockstep, each stopping on its own by the same rule; same arguments and
    outputs, less the mixing (a chord step contracts several times as much as a Z-bus
    step), and node voltages out_v only for the scenarios that converged, from their last
    step (`chord_node_voltages`).
    The scenarios still running are packed together whenever a quarter of them has
    stopped, so the chunk's work follows the average scenario, not the slowest.

    Far from its level's loading (with K0 at nominal, on IEEE 123 from about 2.5 times
    it, where the loads fall into their constant-impedance region) K0 no longer
    describes the loads and the chord contracts less than the Z-bus map, or not at all.
    A scenario whose residual shrinks by less than CHORD_STALL in a step from the third
    on, or runs away, stops unconverged (SLOW) for `solve` to hand to the Z-bus steps."""
    p, b = u.shape
    n, m = net.dinv_re.shape[0], net.ch_l_ptr.shape[0] - 1  # nodes, the chord's positions
    dense = b == 1 and net.ch_zbt.shape[0] > 0  # one scenario through the dense Zb'
    u, s_conj, scale = u.copy(), s_conj.copy(), scale.copy()
    g, c = np.empty_like(u), np.empty_like(u)
    y = np.empty((m, 2, b))
    z = np.empty((n, 2, b))  # the node voltages' work space
    idx = np.arange(b)  # column j holds scenario idx[j]
    res = np.empty(b)
    # the columns still running, and those converged in the step (and their scenarios)
    live, done, done_rows = np.empty((3, b), dtype=np.int64)
    end[:] = SLOW
    out_c[:] = 0.0
    nb = b
    prev_res = np.full(b, np.inf)
    # per column: the port of its largest change in the step two before the
    # extrapolation, and its change there in the step before
    worst, last, beta = np.zeros(b, np.int64), np.zeros(b, np.complex128), np.zeros(b)
    if not start_currents(net, lv, u, s_conj, scale, lm, c):
        currents(u, s_conj, scale, lm, c)
    for it in range(1, max_iter + 1):
        chord_map(net, lv, c, u, u0, g, y, dense)
        residuals(g, u, inv_base, res)
        if it == CHORD_EXTRAPOLATE_AT - 2:
            largest_changes(g, u, inv_base, res, worst)
        elif it == CHORD_EXTRAPOLATE_AT - 1:
            for j in range(nb):
                last[j] = g[worst[j], j] - u[worst[j], j]
        elif it == CHORD_EXTRAPOLATE_AT:
            # Past the first steps the error of most scenarios shrinks by about the
            # same factor lam each step along one direction (a regional mode), so
            # g + lam / (1 - lam) (g - u) removes most of it; lam is the ratio of the
            # last two changes at one port. On IEEE 123 at 0.5-1.5 times its loads a
            # tenth of the scenarios contract by only 0.1 per step: 5.7 -> 5.25 mean
            # steps at tol 1e-9, for one pass over the iterates.
            for j in range(nb):
                d, d0 = g[worst[j], j] - u[worst[j], j], last[j]
                size = d0.real * d0.real + d0.imag * d0.imag
                lam = (d.real * d0.real + d.imag * d0.imag) / size if size > 0.0 else 0.0
                lam = min(max(lam, -0.5), 0.5)
                going = tol < res[j] and not _chord_stalls(res[j], prev_res[idx[j]], it)
                beta[j] = lam / (1.0 - lam) if going else 0.0
            extrapolate(g, u, beta)
        currents(g, s_conj, scale, lm, c)
        left = n_done = 0
        for j in range(nb):
            s = idx[j]
            resid[s], steps[s] = res[j], it
            if res[j] <= tol:
                end[s] = CONVERGED
                out_u[s], out_c[s] = g[:, j], c[:, j]
                done[n_done], done_rows[n_done] = j, s
                n_done += 1
            elif _chord_stalls(res[j], prev_res[s], it):
                out_u[s], out_c[s] = g[:, j], c[:, j]  # (SLOW: for the Z-bus steps)
            else:
                prev_res[s] = res[j]
                live[left] = j
                left += 1
        if n_done and dense:  # from the currents at g, through the dense X
            node_voltages(net, c, w, out_v, z)
        elif n_done:
            chord_node_voltages(net, lv, y, done[:n_done], w, out_v, done_rows[:n_done], z)
        if left == 0:
            break
        u, g = g, u
        if 4 * left <= 3 * nb:  # pack the running columns: new arrays, C-contiguous
            keep = live[:left].copy()
            u, c, scale = u[:, keep], c[:, keep], scale[:, keep]
            s_conj = s_conj[:, keep]
            idx, worst, last = idx[keep], worst[keep], last[keep]
            g = np.empty_like(u)
            y = np.empty((m, 2, left))
            nb = left
    for j in range(nb):
        s = idx[j]
        if end[s] == SLOW:  # out of steps
            out_u[s], out_c[s] = u[:, j], c[:, j]


@numba.njit(cache=True, nogil=True)
def iterate_chord_then_z_bus(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray,
                             lm: Loads, net: Network, u0: np.ndarray, w: np.ndarray,
                             inv_base: np.ndarray, tol: float, max_iter: int, memory: int,
                             mix_from: int, out_u: np.ndarray, out_c: np.ndarray,
                             out_v: np.ndarray, end: np.ndarray, steps: np.ndarray,
                             resid: np.ndarray, lv: int) -> None:
    """`iterate_chord`, then `iterate` (Z-bus steps, with mixing) for the scenarios the
    chord steps did not converge, from their start; same arguments and outputs. Their
    steps count both."""
    iterate_chord(u, s_conj, scale, lm, net, u0, w, inv_base, tol, max_iter, out_u, out_c,
                  out_v, end, steps, resid, lv)
    rest = np.nonzero(end != CONVERGED)[0]
    if len(rest) == 0:
        return
    k, p = len(rest), u.shape[0]
    sub_u, sub_c = np.empty((k, p), np.complex128), np.empty((k, p), np.complex128)
    sub_v = np.empty((k, out_v.shape[1]), np.complex128)
    sub_end, sub_steps, sub_res = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k)
    iterate(np.ascontiguousarray(u[:, rest]), np.ascontiguousarray(s_conj[:, rest]),
            np.ascontiguousarray(scale[:, rest]), lm, net, u0, w, inv_base, tol, max_iter,
            memory, mix_from, sub_u, sub_c, sub_v, sub_end, sub_steps, sub_res)
    for i in range(k):
        s = rest[i]
        out_u[s], out_c[s], out_v[s] = sub_u[i], sub_c[i], sub_v[i]
        end[s], resid[s] = sub_end[i], sub_res[i]
        steps[s] += sub_steps[i]


@numba.njit(cache=True, nogil=True)
def solve(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads, net: Network,
          u0: np.ndarray, w: np.ndarray, inv_base: np.ndarray, tol: float, max_iter: int,
          memory: int, mix_from: int, out_u: np.ndarray, out: np.ndarray,
          out_v: np.ndarray, ok: np.ndarray, steps: np.ndarray, resid: np.ndarray,
          lv: int) -> bool:
    """`iterate` for inputs with one row per scenario (u [b, P], s_conj [b, P] or [b, 0],
    scale [b, T]), answered as the torch iteration answers: a scenario that did not
    converge at no load, with no currents and max_iter steps. Writes the iterates to
    out_u [b, P], u and c to out [2, b, 2, P] (real parts, then imaginary), converged to
    ok [b]; returns whether all converged. lv >= 0: chord steps of that level first
    (`iterate_chord_then_z_bus`); SCENARIO_LEVEL: of the level `scenario_level` picks for
    the first scenario."""
    b, p = u.shape
    out_c, end = np.empty((b, p), dtype=np.complex128), np.empty(b, dtype=np.int64)
    if lv == SCENARIO_LEVEL:
        lv = scenario_level(net, scale[0])
    if lv >= 0:
        iterate_chord_then_z_bus(np.ascontiguousarray(u.T), np.ascontiguousarray(s_conj.T),
                                 np.ascontiguousarray(scale.T), lm, net, u0, w, inv_base,
                                 tol, max_iter, memory, mix_from, out_u, out_c, out_v, end,
                                 steps, resid, lv)
    else:
        iterate(np.ascontiguousarray(u.T), np.ascontiguousarray(s_conj.T),
                np.ascontiguousarray(scale.T), lm, net, u0, w, inv_base, tol, max_iter,
                memory, mix_from, out_u, out_c, out_v, end, steps, resid)
    every = True
    for s in range(b):
        ok[s] = end[s] == CONVERGED
        if not ok[s]:
            every = False
            out_u[s], out_c[s], steps[s] = u0, 0.0, max_iter
        for q in range(p):
            out[0, s, 0, q], out[0, s, 1, q] = out_u[s, q].real, out_u[s, q].imag
            out[1, s, 0, q], out[1, s, 1, q] = out_c[s, q].real, out_c[s, q].imag
    return every


@numba.njit(cache=True, nogil=True, parallel=True)
def solve_parallel(u: np.ndarray, s_conj: np.ndarray, scale: np.ndarray, lm: Loads,
                   net: Network, u0: np.ndarray, w: np.ndarray, inv_base: np.ndarray,
                   tol: float, max_iter: int, memory: int, mix_from: int,
                   out_u: np.ndarray, out: np.ndarray, out_v: np.ndarray, ok: np.ndarray,
                   steps: np.ndarray, resid: np.ndarray, chunk: int, lv: int) -> bool:
    """`solve` for chunks of `chunk` scenarios on all threads, a chunk at a time each."""
    b = u.shape[0]
    n = (b + chunk - 1) // chunk
    every = np.empty(n, dtype=np.bool_)
    for k in numba.prange(n):
        lo, hi = k * chunk, min(b, (k + 1) * chunk)
        every[k] = solve(u[lo:hi], s_conj[lo:hi], scale[lo:hi], lm, net, u0, w, inv_base,
                         tol, max_iter, memory, mix_from, out_u[lo:hi], out[:, lo:hi],
                         out_v[lo:hi], ok[lo:hi], steps[lo:hi], resid[lo:hi], lv)
    return every.all()


class Derived(NamedTuple):
    """What `derived` reads of a power flow: node bases and limits, lines, the network's
    Y and the sources."""

    base_v: np.ndarray  # [N] line-to-neutral base, V (NaN where none)
    limits: np.ndarray  # [2] the feeder's vmin_pu and vmax_pu
    line_idx: np.ndarray  # [L, 2k] the nodes at both ends of each line (N: ground)
    line_y: np.ndarray  # [L, k, 2k] complex, the line's Yprim rows of its bus1 end
    inv_amps: np.ndarray  # [L] 1 / normal ampacity (NaN where unrated)
    y_ptr: np.ndarray  # the network's Y without the sources' own, CSR
    y_idx: np.ndarray
    y_val: np.ndarray
    src_idx: np.ndarray  # [S] source terminal nodes
    src_y_t: np.ndarray  # [S, S] complex, the sources' admittance, transposed
    src_i_n: np.ndarray  # [S] complex, their Norton currents, A


class Summary(NamedTuple):
    """`derived`'s answer, as `PowerFlowResult`'s properties give it (tensors)."""

    vmag_pu: torch.Tensor  # [B, N]
    line_loading: torch.Tensor  # [B, L]
    network_losses: torch.Tensor  # [B] complex, kVA
    substation_power: torch.Tensor  # [B] complex, kVA
    port_power: torch.Tensor  # [B] complex, kVA: u conj(c) summed over the ports
    violations: torch.Tensor  # [B] int64: nodes outside the limits


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _derived_point(v: np.ndarray, u: np.ndarray, c: np.ndarray, d: Derived, s: int,
                   vmag: np.ndarray, substation: np.ndarray, port_power: np.ndarray,
                   violations: np.ndarray) -> None:
    """`derived`'s node magnitudes, violations, substation and port power of scenario s.
    (The magnitudes' loop vectorises: numpy's error model, since Python's checks each
    division for zero, and the violations counted without a branch; 19 -> 7-10 us per
    scenario on the European LV feeder's 2,721 nodes. No base is zero: NaN where none.)"""
    n, n_src = v.shape[1], d.src_idx.shape[0]
    vmin, vmax = d.limits[0], d.limits[1]
    outside = 0
    for i in range(n):
        x = v[s, i]
        m = math.sqrt(x.real * x.real + x.imag * x.imag) / d.base_v[i]
        vmag[s, i] = m
        outside += (m < vmin) | (m > vmax)  # (NaN, a node without a base: neither)
    violations[s] = outside
    total = 0j  # the sources' V conj(I_N - Ys V)
    for q in range(n_src):
        i_src = d.src_i_n[q]
        for j in range(n_src):
            i_src -= v[s, d.src_idx[j]] * d.src_y_t[j, q]
        total += v[s, d.src_idx[q]] * i_src.conjugate()
    substation[s] = total / 1e3
    pr = pi = 0.0
    for q in range(u.shape[2]):
        pr += u[s, 0, q] * c[s, 0, q] + u[s, 1, q] * c[s, 1, q]
        pi += u[s, 1, q] * c[s, 0, q] - u[s, 0, q] * c[s, 1, q]
    port_power[s] = complex(pr / 1e3, pi / 1e3)


@numba.njit(cache=True, nogil=True)
def _derived_one(v: np.ndarray, d: Derived, s: int, loading: np.ndarray,
                 losses: np.ndarray) -> None:
    """`derived`'s line loading and network losses of scenario s alone."""
    n = v.shape[1]
    lines, k, k2 = d.line_y.shape
    for line in range(lines):
        worst = 0.0  # the largest conductor current at the bus1 end, A
        for r in range(k):
            ar = ai = 0.0
            for j in range(k2):
                node = d.line_idx[line, j]
                if node < n:
                    y, x = d.line_y[line, r, j], v[s, node]
                    ar += y.real * x.real - y.imag * x.imag
                    ai += y.real * x.imag + y.imag * x.real
            worst = max(worst, math.sqrt(ar * ar + ai * ai))
        loading[s, line] = worst * d.inv_amps[line]
    tr = ti = 0.0  # sum of V conj(Y V)
    for i in range(n):
        ar = ai = 0.0
        for p in range(d.y_ptr[i], d.y_ptr[i + 1]):
            y, x = d.y_val[p], v[s, d.y_idx[p]]
            ar += y.real * x.real - y.imag * x.imag
            ai += y.real * x.imag + y.imag * x.real
        x = v[s, i]
        tr += x.real * ar + x.imag * ai
        ti += x.imag * ar - x.real * ai
    losses[s] = complex(tr, ti) / 1e3


@numba.njit(cache=True, nogil=True)
def _derived_chunk(v: np.ndarray, d: Derived, lo: int, hi: int, loading: np.ndarray,
                   losses: np.ndarray) -> None:
    """`_derived_one` for scenarios lo to hi in lockstep, the same sums in the same order,
    each product of a line's or Y's entry an axpy across the scenarios (their voltages
    laid out scenarios fastest): about twice as fast per scenario from 16 scenarios on,
    where one scenario's gathers through the node indices bound the pass."""
    n, m = v.shape[1], hi - lo
    lines, k, k2 = d.line_y.shape
    vr, vi = np.empty((n, m)), np.empty((n, m))
    for i in range(n):
        for t in range(m):
            vr[i, t], vi[i, t] = v[lo + t, i].real, v[lo + t, i].imag
    ar, ai, worst = np.empty(m), np.empty(m), np.empty(m)
    for line in range(lines):
        worst[:] = 0.0
        for r in range(k):
            ar[:] = 0.0
            ai[:] = 0.0
            for j in range(k2):
                node = d.line_idx[line, j]
                if node < n:
                    yr, yi = d.line_y[line, r, j].real, d.line_y[line, r, j].imag
                    for t in range(m):
                        ar[t] += yr * vr[node, t] - yi * vi[node, t]
                        ai[t] += yr * vi[node, t] + yi * vr[node, t]
            for t in range(m):
                worst[t] = max(worst[t], math.sqrt(ar[t] * ar[t] + ai[t] * ai[t]))
        for t in range(m):
            loading[lo + t, line] = worst[t] * d.inv_amps[line]
    tr, ti = np.zeros(m), np.zeros(m)
    for i in range(n):
        ar[:] = 0.0
        ai[:] = 0.0
        for p in range(d.y_ptr[i], d.y_ptr[i + 1]):
            j = d.y_idx[p]
            yr, yi = d.y_val[p].real, d.y_val[p].imag
            for t in range(m):
                ar[t] += yr * vr[j, t] - yi * vi[j, t]
                ai[t] += yr * vi[j, t] + yi * vr[j, t]
        for t in range(m):
            tr[t] += vr[i, t] * ar[t] + vi[i, t] * ai[t]
            ti[t] += vi[i, t] * ar[t] - vr[i, t] * ai[t]
    for t in range(m):
        losses[lo + t] = complex(tr[t], ti[t]) / 1e3


@numba.njit(cache=True, nogil=True, parallel=True)
def derived(v: np.ndarray, u: np.ndarray, c: np.ndarray, d: Derived, vmag: np.ndarray,
            loading: np.ndarray, losses: np.ndarray, substation: np.ndarray,
            port_power: np.ndarray, violations: np.ndarray, chunk: int) -> None:
    """`PowerFlowResult`'s vmag_pu, violations, line_loading, network_losses,
    substation_power and the ports' power (of load_power) from the node voltages v
    [B, N] (complex, V; every scenario converged) and the port voltages and currents u,
    c [B, 2, P]: the same formulas as its torch properties, in one pass over the voltages
    instead of a few dozen [B, N] and [B, L, k] temporaries (at batch 32 on the European
    LV feeder, about 0.8 ms against torch's 6; at batch 1 the substation and port power
    and the violations add a few microseconds, where torch's calls for them took about
    0.3 ms). Scenarios on all threads: one at a time (chunk 1), or in chunks of `chunk`
    in lockstep (`_derived_chunk`)."""
    b = v.shape[0]
    for s in numba.prange(b):
        _derived_point(v, u, c, d, s, vmag, substation, port_power, violations)
    if chunk == 1:
        for s in numba.prange(b):
            _derived_one(v, d, s, loading, losses)
    else:
        for j in numba.prange((b + chunk - 1) // chunk):
            _derived_chunk(v, d, j * chunk, min(b, (j + 1) * chunk), loading, losses)


@numba.njit(cache=True, nogil=True)
def derived_one(v: np.ndarray, u: np.ndarray, c: np.ndarray, d: Derived, vmag: np.ndarray,
                loading: np.ndarray, losses: np.ndarray, substation: np.ndarray,
                port_power: np.ndarray, violations: np.ndarray) -> None:
    """`derived` of one scenario on the calling thread. A parallel region, even over one
    scenario, ends at a barrier that waits for every thread of numba's pool; where another
    thread holds the other core (a run's records being encoded), the barrier waited for
    the scheduler: 2.2 ms per step on IEEE 123 at 10,000 households (the physics phase
    3.9 ms per step, 1.1-1.5 ms without the region)."""
    _derived_point(v, u, c, d, 0, vmag, substation, port_power, violations)
    _derived_one(v, d, 0, loading, losses)


def _network(pf: PowerFlow) -> Network:
    """The `Network` of a power flow, from its own matrices: Y's sparse LU (its sparse
    path's, or made here with the same options), the dense Zbᵀ and Xᵀ where it has them."""
    p = pf.n_ports
    lu = pf._kron.lu if pf._kron is not None else spla.splu(
        sp.csc_matrix(pf.feeder.y, dtype=complex), **SUPERLU)
    if pf._kron is None:  # zr is [[Re, Im], [-Im, Re]] of Zbᵀ; x_t is Xᵀ
        zr, xt = _np(pf.zr), _np(pf.x_t)
        dense = [zr[:p, :p], zr[:p, p:], xt.real, xt.imag]
    else:  # empty, with the same types, so that one compilation serves both
        dense = [np.zeros((0, 0))] * 4
    lo, up = lu.L.tocsc(), lu.U.tocsc()
    lo.setdiag(0)  # unit diagonal, implied
    lo.eliminate_zeros()
    dinv = 1.0 / up.diagonal().astype(complex)
    up.setdiag(0)
    up.eliminate_zeros()
    parts = [*dense, lo.indptr, lo.indices, lo.data.real, lo.data.imag,
             up.indptr, up.indices, up.data.real, up.data.imag, dinv.real, dinv.imag,
             lu.perm_r, lu.perm_c, *pf.port_nodes]
    return Network(*_typed(parts), *_typed(_NO_CHORD))


def _typed(parts: list) -> list[np.ndarray]:
    """Arrays as the kernels take them: C-contiguous int64 or float64."""
    return [np.ascontiguousarray(x, dtype=np.int64 if x.dtype.kind in "iu" else np.float64)
            for x in parts]


_ints, _blocks, _flat = np.zeros(0, dtype=np.int64), np.zeros((0, 0, 4)), np.zeros((0, 0))
_empty = np.zeros(0)
_NO_CHORD = [_blocks, _ints, _ints, _ints, _flat, _ints, _ints, _flat, _flat, _ints, _ints,
             _flat, _flat, _ints, _ints, _ints, _ints, _blocks, _blocks, _blocks, _empty,
             _empty]


def chord_factors(y: sp.spmatrix, port_a: np.ndarray, port_b: np.ndarray,
                  k0: np.ndarray) -> list[np.ndarray]:
    """The `Network` fields of the chord iteration: Y + M K0 Mᵀ (Y complex [N, N], S;
    K0 [V, P, 4] real 2x2 blocks per port for V levels, A/V) factored as L U in real 2x2
    blocks, one pattern for all levels.

    The order is SuperLU's minimum degree on Y's pattern, and the elimination pivots on
    whole diagonal blocks (each inverted), never across nodes: the factors keep the
    block pattern, so a step costs what a complex one does (on IEEE 123 1,742 blocks,
    against 2,604 entries in the partially pivoted complex LU). Dense work space,
    eliminated only where a column has entries: for feeders up to CHORD_MAX_NODES."""
    y = sp.csc_matrix(y, dtype=complex)
    y.sum_duplicates()  # (the fancy-indexed sums below would drop repeated entries)
    n, levels = y.shape[0], k0.shape[0]
    pos = np.asarray(spla.splu(y, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                               options={"SymmetricMode": True}).perm_c)
    yc = y.tocoo()
    r, c = pos[yc.row], pos[yc.col]
    nz = np.zeros((n, n), dtype=bool)  # the pattern, kept by structure, not by value
    nz[r, c] = True
    nz[np.arange(n), np.arange(n)] = True
    a = np.zeros((levels, n, n, 2, 2))
    a[:, r, c, 0, 0] += yc.data.real
    a[:, r, c, 0, 1] -= yc.data.imag
    a[:, r, c, 1, 0] += yc.data.imag
    a[:, r, c, 1, 1] += yc.data.real
    blk = k0.reshape(levels, -1, 2, 2)
    for q in range(len(port_a)):
        i = pos[port_a[q]]
        a[:, i, i] += blk[:, q]
        if port_b[q] >= 0:
            j = pos[port_b[q]]
            a[:, j, j] += blk[:, q]
            a[:, i, j] -= blk[:, q]
            a[:, j, i] -= blk[:, q]
            nz[i, j] = nz[j, i] = True
    dinv = np.zeros((levels, n, 2, 2))
    for k in range(n):
        dinv[:, k] = np.linalg.inv(a[:, k, k])
        rows = np.nonzero(nz[k + 1:, k])[0] + k + 1
        cols = np.nonzero(nz[k, k + 1:])[0] + k + 1
        if len(rows):
            a[:, rows, k] = a[:, rows, k] @ dinv[:, k, None]
            if len(cols):
                a[:, rows[:, None], cols] -= np.einsum("vrab,vcbd->vrcad", a[:, rows, k],
                                                       a[:, k, cols])
                nz[np.ix_(rows, cols)] = True
    # Only the ports' values are read, and the right-hand sides live at the ports: so
    # only positions on the elimination tree's paths from the ports to its root take
    # part (the pattern is symmetric, so U's row j holds only j's ancestors). On IEEE
    # 123 that is 234 of 278 positions, and 1,460 of 1,742 blocks.
    lower = np.tril(nz, -1)
    parent = np.where(lower.any(0), lower.argmax(0), -1)  # the first row below, per column
    need = np.zeros(n, dtype=bool)
    for q in np.unique(pos[np.concatenate([port_a, port_b[port_b >= 0]])]):
        while q >= 0 and not need[q]:
            need[q], q = True, parent[q]
    # The other positions take no part in a step; their node voltages, once a scenario
    # converged, follow from U's rows alone (their forward values are zero), ancestors
    # first (`chord_node_voltages`). They come after the ports' paths, highest first.
    keep, rest = np.nonzero(need)[0], np.nonzero(~need)[0][::-1]
    m = len(keep)
    renumber = np.empty(n, dtype=np.int64)
    renumber[np.concatenate([keep, rest])] = np.arange(n)
    x_rows, x_cols = np.nonzero(np.triu(nz, 1)[rest])  # U's rows of the rest, by row
    x_val = a[:, rest[x_rows], x_cols].reshape(levels, -1)
    x_dinv = dinv[:, rest].reshape(levels, -1)
    a, nz, dinv = a[:, keep[:, None], keep], nz[np.ix_(keep, keep)], dinv[:, keep]
    l_col, l_row = np.nonzero(np.tril(nz, -1).T)  # CSC: by column, rows ascending
    u_col, u_row = np.nonzero(np.triu(nz, 1).T)
    first = np.zeros(len(l_row), dtype=np.int64)
    first[np.unique(l_row, return_index=True)[1]] = 1  # (columns ascending: the earliest)
    ends = np.concatenate([renumber[pos[port_a]], renumber[pos[port_b[port_b >= 0]]]])
    tags = np.concatenate([np.arange(len(port_a)), -1 - np.nonzero(port_b >= 0)[0]])
    order = np.argsort(ends, kind="stable")
    return _typed([k0, renumber[pos], np.searchsorted(l_col, np.arange(m + 1)), l_row,
                   a[:, l_row, l_col].reshape(levels, -1),
                   np.searchsorted(u_col, np.arange(m + 1)), u_row,
                   a[:, u_row, u_col].reshape(levels, -1), dinv.reshape(levels, -1),
                   np.searchsorted(x_rows, np.arange(len(rest) + 1)), renumber[x_cols],
                   x_val, x_dinv, np.searchsorted(ends[order], np.arange(m + 1)), tags[order],
                   first, (np.bincount(l_row, minlength=m) == 0).astype(np.int64)])


class CpuSolver:
    """The fixed-point iteration of one `PowerFlow` on the CPU, compiled (`solve`): one
    scenario, or a batch in lockstep, chunks of it on all threads.

    Built once per power flow (on first use) from its tensors, so it shares their
    values: Zb (or the sparse LU), no-load port voltages, the load-model coefficients.
    """

    CHUNK = 128  # scenarios per lockstep chunk: their work space fits in a core's L2
    DERIVED_LOCKSTEP = 16  # scenarios per chunk of the derived pass, and the fewest to chunk

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
            q=np.ascontiguousarray(np.stack([f(conj[:, i].reshape(n_terms, 4))
                                             for i in range(3) for f in (np.real, np.imag)],
                                            axis=1)),
            vlow=_np(lm.vlow), vmin=_np(lm.vmin), vmax=_np(lm.vmax), inv_vn=_np(lm.inv_vn),
            cutoff=empty if lm.cutoff_pu is None else _np(lm.cutoff_pu),
            law=law_of,
            **{f"law_{f}": empty if law is None else _np(getattr(law, f))
               for f in ("p0", "q0", "a", "b")})
        self.n_terms, self.n_ports, self.n_nodes = n_terms, pf.n_ports, len(self.w)
        # the arguments after u, s_conj and scale, the same in every call
        self._fixed = (self.loads, self.net, self.u0, self.w, self.inv_base, float(self.tol),
                       int(self.max_iter), int(self.memory), int(self.mix_from))
        self._none = np.zeros((1, 0), dtype=complex)  # no injections, one scenario
        example = (self.u0[None].copy(), self._none, np.ones((1, n_terms)), *self._fixed,
                   *self._outputs(1))
        self._solve = _entry_point(solve, (*example, -1))
        self._solve_parallel = _entry_point(solve_parallel, (*example, self.CHUNK, -1))
        # Batches take chord steps (`iterate_chord`) where products with Zb go through
        # Y's LU; the factors are made on first use (`_chord_ready`)
        p = self.n_ports
        self.chord = pf.chord and self.n_nodes <= CHORD_MAX_NODES and not (
            self.net.zbt_re.shape[0] and p * p <= len(self.net.l_re) + len(self.net.u_re))
        self._pf = pf if self.chord else None
        self.levels: np.ndarray | None = None  # the CHORD_LEVELS factored
        y = pf.y_net
        self.derive_from = Derived(
            _np(pf.node_base_v), np.array([pf.feeder.vmin_pu, pf.feeder.vmax_pu], dtype=float),
            _np(pf.line_idx).astype(np.int64), np.ascontiguousarray(_np(pf.line_y)),
            1.0 / _np(pf.line_amps), y.indptr.astype(np.int64), y.indices.astype(np.int64),
            y.data.astype(complex), _np(pf.src_idx).astype(np.int64), _np(pf.src_y_t),
            _np(pf.src_i_n))
        self._derived = _entry_point(derived, (self.u0[None], *self._outputs(1)[1],
                                               self.derive_from, *self._derived_outputs(1), 1))
        self._derived_one = _entry_point(derived_one, (
            self.u0[None], *self._outputs(1)[1], self.derive_from, *self._derived_outputs(1)))
        # The last converged answer at batch 1: ((its u's memory address, version),
        # complex u [1, P], u). A time series warm-starts from it, and then needs no
        # conversion back; holding the tensor keeps its address from being reused, and an
        # in-place change of it (or of a view of it) moves the version on.
        self._last: tuple[tuple[int, int], np.ndarray, torch.Tensor] | None = None

    def _chord_ready(self) -> bool:
        """Whether batches take chord steps; makes their factors on first call: for each
        of CHORD_LEVELS, the solution with every load at that level (Z-bus steps, no
        injections), K0 = dc/du there and each load term's current there at scale 1. A
        level whose solution does not converge is left out."""
        if not self.chord or self.levels is not None:
            return self.chord
        pf, net, t = self._pf, self.net, self.n_terms
        levels, starts, k0, c0 = [], [], [], []
        for level in CHORD_LEVELS:
            out = self._outputs(1)
            scale = np.full((1, self.n_terms), level)
            if not self._solve(self.u0[None].copy(), self._none, scale, *self._fixed, *out,
                               -1):
                continue
            u = out[0]  # [1, P] complex
            blocks, _ = pf._port_jacobian(torch.from_numpy(np.stack([u.real, u.imag], 1)),
                                          None, torch.from_numpy(scale))
            rr, ir, ri, ii = (_np(b)[0] for b in blocks)
            levels.append(level)
            starts.append(u[0])
            k0.append(np.stack([rr, ri, ir, ii], 1))
            # one column per term, each alone at scale 1, all at the start
            each = np.empty((self.n_ports, t), dtype=complex)
            currents(np.repeat(u.T, t, 1), np.zeros((0, t), dtype=complex), np.eye(t),
                     self.loads, each)
            c0.append(each[self.loads.port, np.arange(t)])
        self._pf = None
        if not levels:
            self.chord = False
            return False
        factors = chord_factors(pf.feeder.y, net.port_a, net.port_b, np.stack(k0))
        starts_ri, c0_ri = (np.stack([np.stack([x.real, x.imag]) for x in a])
                            for a in (starts, c0))
        # each load term's share of the nominal |S|, weighing the terms' scales into a
        # level (all zero where no load draws any: every scenario then takes Z-bus steps)
        vn = 1.0 / self.loads.inv_vn
        q = self.loads.q[:, :, 0]  # the normal region's quadratic
        va = np.abs((q[:, 0] + 1j * q[:, 1]) * vn ** 2 + (q[:, 2] + 1j * q[:, 3]) * vn
                    + q[:, 4] + 1j * q[:, 5])
        self.levels = np.array(levels, dtype=float)
        # (zip stops at ch_c0: ch_zbt stays empty until made below)
        self.net = net._replace(**dict(zip(Network._fields[-len(_NO_CHORD):],
                                           [*factors, *_typed([starts_ri, c0_ri])])),
                                ch_levels=self.levels,
                                ch_weight=va / va.sum() if va.sum() > 0 else va)
        p = self.n_ports
        if net.zbt_re.shape[0] and len(levels) * (2 * p) ** 2 * 8 <= CHORD_DENSE_BYTES:
            self.net = self.net._replace(ch_zbt=self._dense_chord(len(levels)))
        self._fixed = (self._fixed[0], self.net, *self._fixed[2:])
        return True

    def _dense_chord(self, n_levels: int) -> np.ndarray:
        """Each level's Zb' = Mᵀ (Y + M K0 Mᵀ)⁻¹ M [V, 2P, 2P] as one scenario's chord
        step takes it (`chord_map`): real, on (re, im) pairs port by port, transposed;
        by the block solves, a column per unit port current, real and imaginary."""
        p, m = self.n_ports, self.net.ch_l_ptr.shape[0] - 1
        unit = np.zeros((p, 2 * p), dtype=complex)
        unit[np.arange(p), 2 * np.arange(p)] = 1.0
        unit[np.arange(p), 2 * np.arange(p) + 1] = 1j
        zbt = np.empty((n_levels, 2 * p, 2 * p))
        out, y = np.empty((p, 2 * p), dtype=complex), np.empty((m, 2, 2 * p))
        for lv in range(n_levels):
            chord_products(self.net, lv, unit, np.zeros(p, dtype=complex), out, y, False)
            # row j: Zb' times unit input j, in (re, im) pairs
            zbt[lv] = -np.ascontiguousarray(out.T).view(np.float64)
        return zbt

    def start(self, lv: int) -> np.ndarray:
        """Level lv's solution [P] (complex, V), where a cold batch's chord steps start."""
        x = self.net.ch_start[lv]
        return x[0] + 1j * x[1]

    def _level(self, scale: np.ndarray) -> int:
        """The chord level for a batch of load scales [B, T]: its median scenario's
        scales weighed by the terms' nominal |S| (`Network.ch_weight`; injections not
        counted), as `scenario_level` weighs one."""
        # of at most 64 rows spread over the batch: its median to a few percent, where
        # all 1,024 rows of a batch took 0.07 ms (about 1% of its solve on IEEE 123); by
        # a partition, without np.median's own overhead (about 20 us)
        x = scale[::max(1, scale.shape[0] // 64)] @ self.net.ch_weight
        mid = len(x) // 2  # (the upper of two middles)
        return nearest_level(self.levels, float(np.partition(x, mid)[mid]))

    def _adjoint_level(self, k: np.ndarray) -> int:
        """The chord level for the adjoint of a batch with dc/du's blocks k [B, 4, P]:
        the level whose K0 is nearest its median scenario's in size (sum of |entries|)."""
        size = float(np.median(np.abs(k).sum((1, 2))))
        sizes = np.abs(self.net.ch_k0).sum((1, 2))  # per level
        if not size > 0:
            return -1
        return int(np.argmin(np.abs(np.log(sizes / size))))

    def _outputs(self, b: int) -> tuple[np.ndarray, ...]:
        """The kernel's outputs for b scenarios: out_u, out, out_v, ok, steps and resid
        (see `solve`)."""
        return (np.empty((b, self.n_ports), dtype=complex), np.empty((2, b, 2, self.n_ports)),
                np.empty((b, self.n_nodes), dtype=complex), np.empty(b, dtype=np.bool_),
                np.empty(b, dtype=np.int64), np.empty(b))

    def solve(self, s_port: torch.Tensor | None, scale: torch.Tensor | None,
              u_init: torch.Tensor | None, batch: int) -> CpuAnswer:
        """The fixed points of `batch` scenarios from u_init (or no load): s_port
        [B, 2, P] (W, var) and scale [B, T], CPU tensors that need no gradient, and u_init
        [B, 2, P]. Stops as `_iterate` does, per scenario: converged when the largest
        change of a port voltage's real or imaginary part, relative to its no-load
        magnitude, is within tol; not converged (answered at no load with max_iter
        steps, for Newton to try) after a runaway (above 10, or not finite) or max_iter
        steps. The node voltages come only if every scenario converged."""
        s = None
        if s_port is not None:
            x = s_port.numpy()
            s = x[:, 0] - 1j * x[:, 1]  # conj(s)
        return self.solve_arrays(s, None if scale is None else scale.numpy(), u_init, batch)

    def solve_arrays(self, s_conj: np.ndarray | None, scale: np.ndarray | None,
                     u_init: torch.Tensor | None, batch: int) -> CpuAnswer:
        """`solve` for inputs as numpy: s_conj [B, P] (conj(s), W and var) and scale
        [B, T], or None."""
        # C-contiguous float64 and complex128 always: the kernel is called for these
        # types without numba's checks (`_entry_point`)
        if s_conj is None:
            s = self._none if batch == 1 else np.zeros((batch, 0), dtype=complex)
        else:
            s = np.ascontiguousarray(s_conj, dtype=complex)
        k = (np.ones((batch, self.n_terms)) if scale is None
             else np.ascontiguousarray(scale, dtype=np.float64))
        # Chord steps for a batch; for one scenario only through a dense Zb' (through
        # the block solves one scenario's chord step costs more than the Z-bus steps it
        # saves). A warm-started scenario has the kernel pick its level; from cold, the
        # level's solution is the start.
        if not self._chord_ready() or (batch == 1 and not self.net.ch_zbt.shape[0]):
            lv = -1
        elif batch > 1 or u_init is None:
            lv = self._level(k)
        else:
            lv = SCENARIO_LEVEL
        if u_init is None:
            u = np.repeat((self.u0 if lv < 0 else self.start(lv))[None], batch, 0)
        elif batch == 1 and self._last is not None and self._last[0] == (
                u_init.data_ptr(), u_init._version):
            u = self._last[1]  # our last answer (or a view of it), unchanged since
        else:
            x = _np(u_init)
            u = x[:, 0] + 1j * x[:, 1]
        out_u, out, out_v, ok, steps, resid = outputs = self._outputs(batch)
        if batch == 1:
            every = self._solve(u, s, k, *self._fixed, *outputs, lv)
        else:  # chunks of at most CHUNK, and at least one per thread (batch 64 on two
            # cores: two chunks of 32 solve in about 0.8 of the time of one of 64)
            chunk = min(self.CHUNK, -(-batch // numba.get_num_threads()))
            every = self._solve_parallel(u, s, k, *self._fixed, *outputs, chunk, lv)
        # (from numpy: torch's own constructors cost more per call, which counts here)
        answer = CpuAnswer(torch.from_numpy(out[0]), torch.from_numpy(out[1]),
                              torch.from_numpy(ok), torch.from_numpy(steps),
                              torch.from_numpy(resid),
                              torch.from_numpy(out_v) if every else None)
        if batch == 1 and every:
            self._last = ((answer.u.data_ptr(), answer.u._version), out_u, answer.u)
        return answer

    def _derived_outputs(self, b: int) -> tuple[np.ndarray, ...]:
        return (np.empty((b, self.n_nodes)), np.empty((b, len(self.derive_from.inv_amps))),
                np.empty(b, dtype=complex), np.empty(b, dtype=complex),
                np.empty(b, dtype=complex), np.empty(b, dtype=np.int64))

    def derived(self, voltages: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> Summary:
        """What `derived` gives of converged node voltages [B, N] (complex, V) and the
        port voltages and currents u, c [B, 2, P] of the same solve."""
        b = voltages.shape[0]
        out = self._derived_outputs(b)
        arrays = (np.ascontiguousarray(x.numpy()) for x in (voltages, u, c))
        if b == 1:
            self._derived_one(*arrays, self.derive_from, *out)
        else:  # lockstep chunks from 16 scenarios on (below, one at a time is faster), at
            # least one per thread
            chunk = 1 if b < self.DERIVED_LOCKSTEP else min(
                self.DERIVED_LOCKSTEP, -(-b // numba.get_num_threads()))
            self._derived(*arrays, self.derive_from, *out, chunk)
        return Summary(*(torch.from_numpy(x) for x in out))

    def adjoint(self, grad_u: torch.Tensor, blocks: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The adjoint fixed point of `PowerFlow._adjoint` (see `adjoint`): from grad_u
        [B, 2, P] (dL/du) and dc/du's per-port blocks (four [B, P]) returns mu and
        gc = -Zbᴴ mu (each [B, 2, P]) and settled [B] (False: solve that row directly)."""
        x = _np(grad_u)
        g = np.ascontiguousarray(x[:, 0] + 1j * x[:, 1])
        k = np.ascontiguousarray(np.stack([_np(b) for b in blocks], 1))
        batch = g.shape[0]
        mu, gc = np.empty((batch, 2, self.n_ports)), np.empty((batch, 2, self.n_ports))
        settled = np.empty(batch, dtype=np.bool_)
        lv = self._adjoint_level(k) if self._chord_ready() else -1
        args = (g, k, self.net, float(self.tol), int(self.max_iter), mu, gc, settled)
        if batch <= self.CHUNK:
            adjoint(*args, lv)
        else:
            adjoint_parallel(*args, self.CHUNK, lv)
        return torch.from_numpy(mu), torch.from_numpy(gc), torch.from_numpy(settled)


def _entry_point(kernel: numba.core.registry.CPUDispatcher, args: tuple) -> object:
    """The compiled `kernel` for the types of `args`, to be called without numba's
    dispatch: typing a call's arguments (two named tuples of 27 arrays) takes about 8 us,
    a tenth of a warm-started solve on IEEE 123. The caller passes these same types in
    every call (the compiled code reads its arguments as these types, unchecked). Loads
    the kernel from numba's disk cache, or compiles it."""
    signature = tuple(numba.typeof(a) for a in args)
    kernel.compile(signature)
    return kernel.overloads[signature].entry_point


def compile_kernels() -> None:
    """Compile (and cache on disk) the kernels by solving IEEE 13 and taking a gradient,
    alone and in more than one chunk, and a warm-started IEEE 123 scenario (whose chord
    factors and dense Zb' are made by kernels called from here): `make setup` runs this
    so that no run's first solve or gradient waits for the compiler."""
    from grid.feeder import load_feeder
    from grid.powerflow import PowerFlow

    for a in (np.zeros(1), np.zeros((1, 1)), np.zeros((2, 2))[:, :1]):  # the input checks
        bounded(a, 0.0)
    pf = PowerFlow(load_feeder("ieee13"))
    for batch in (1, CpuSolver.CHUNK + 1):
        scale = torch.ones(batch, dtype=torch.float64, requires_grad=True)
        pf.solve(load_scale=scale).u.sum().backward()
    pf = PowerFlow(load_feeder("ieee123"))
    pf.solve(load_scale=1.1, initial=pf.solve(load_scale=1.0))
