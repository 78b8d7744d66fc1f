"""The Kron reduction of a large feeder kept implicit: a sparse LU of Y instead of a dense Zb.

The dense power flow forms Zb = M Y⁻¹ Mᵀ once, which costs one sparse solve per port
(thousands of right-hand sides on the IEEE 8500-node feeder) and a (2P)² matmul per
iteration. Here every product with Zb is M (Y⁻¹ (Mᵀ c)): a scatter to the nodes, two
sparse triangular solves and a gather back, linear in the feeder's size. The LU is
scipy's SuperLU, so this path runs on the CPU.

Complex port quantities are [B, P] tensors, complex node quantities [B, N]. Units as in
`grid.powerflow`: volts, amperes, siemens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from grid.feeder import GROUND

# SuperLU's ordering for Y, which is structurally symmetric: minimum degree on Yᵀ + Y.
# On IEEE 8500 its factors hold 63k entries against 75k with the default COLAMD.
ORDERING = "MMD_AT_PLUS_A"
SUPERLU = {"permc_spec": ORDERING}  # splu's options for Y, on either path


class SparseKron:
    """Products with Zb = M Y⁻¹ Mᵀ and Zb^H, and solves with the power flow's Jacobian,
    through one sparse LU of Y.

    pairs: the (a, b) node pair of each port, b possibly GROUND.
    """

    def __init__(self, y: sp.spmatrix, pairs: Sequence[tuple[int, int]],
                 device: torch.device) -> None:
        n = y.shape[0]
        self.device = device
        self.lu = spla.splu(sp.csc_matrix(y, dtype=complex), **SUPERLU)
        a = np.array([p for p, _ in pairs], dtype=np.int64)
        b = np.array([q for _, q in pairs], dtype=np.int64)
        rows = np.arange(len(pairs))
        wired = b != GROUND
        # M: +1 at a, -1 at b per port; u = M v and the node injections are Mᵀ c
        self.m = sp.csr_matrix(
            (np.r_[np.ones(len(a)), -np.ones(wired.sum())],
             (np.r_[rows, rows[wired]], np.r_[a, b[wired]])), shape=(len(pairs), n))
        self.m_t = self.m.T.tocsr()
        # For the Jacobian: Y and M in real form, [Re; Im] stacked
        yr, yi = sp.csr_matrix(y.real), sp.csr_matrix(y.imag)
        self.y_real = sp.bmat([[yr, -yi], [yi, yr]], format="csr")
        self.m_real = sp.block_diag([self.m, self.m], format="csr")

    # ------------------------------------------------------------------ products
    def _solve(self, rhs: np.ndarray, trans: str) -> np.ndarray:
        """Y⁻¹ rhs ("N") or Y⁻ᴴ rhs ("H") for complex rhs [N, B]."""
        return self.lu.solve(np.asfortranarray(rhs, dtype=complex), trans=trans)

    def _torch(self, x: np.ndarray) -> torch.Tensor:
        """[N or P, B] numpy -> [B, N or P] torch on the power flow's device."""
        return torch.from_numpy(np.ascontiguousarray(x.T)).to(self.device)

    def nodes(self, c: torch.Tensor) -> torch.Tensor:
        """Y⁻¹ Mᵀ c [B, N] for complex port currents c [B, P]; differentiable."""
        return _Nodes.apply(c, self)

    def ports(self, c: torch.Tensor) -> torch.Tensor:
        """Zb c [B, P] for complex port currents c [B, P]; differentiable."""
        return _Ports.apply(c, self)

    def ports_adjoint(self, mu: torch.Tensor) -> torch.Tensor:
        """Zb^H mu [B, P]: the transpose of the real form of Zb, in complex form."""
        return self._torch(self.m @ self._solve(self.m_t @ _numpy(mu).T, "H"))

    # ------------------------------------------------------------------ Jacobian
    def jacobian_solve(self, blocks: Sequence[torch.Tensor], rhs: torch.Tensor,
                       transpose: bool) -> torch.Tensor:
        """Solve J x = rhs, or Jᵀ x = rhs, per row, for J = I + Ẑ K.

        Ẑ is the real form of Zb and K the block-diagonal dc/du whose per-port 2x2 blocks
        are `blocks` (dcr/dur, dci/dur, dcr/dui, dci/dui, each [R, P]); rhs and the answer
        are [R, 2, P]. By the push-through identity
        J⁻¹ = I - M̂ (Ŷ + M̂ᵀ K M̂)⁻¹ M̂ᵀ K, a sparse system in node space, so Zb is never
        formed. Rows whose node-space matrix is singular (at the nose of the PV curve)
        come back NaN.
        """
        k_rr, k_ir, k_ri, k_ii = (x.detach().cpu().numpy() for x in blocks)
        r_all = rhs.detach().cpu().numpy().reshape(rhs.shape[0], -1)  # [R, 2P] as [re | im]
        out = np.full_like(r_all, np.nan)
        m = self.m_real
        for i in range(r_all.shape[0]):
            k = sp.bmat([[sp.diags(k_rr[i]), sp.diags(k_ri[i])],
                         [sp.diags(k_ir[i]), sp.diags(k_ii[i])]], format="csr")
            try:
                lu = spla.splu((self.y_real + m.T @ k @ m).tocsc(), permc_spec=ORDERING)
            except RuntimeError:  # exactly singular
                continue
            r = r_all[i]
            if transpose:
                out[i] = r - k.T @ (m @ lu.solve(m.T @ r, trans="T"))
            else:
                out[i] = r - m @ lu.solve(m.T @ (k @ r))
        return torch.from_numpy(out).to(self.device).view_as(rhs)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().resolve_conj().numpy()


class _Nodes(torch.autograd.Function):
    """Y⁻¹ Mᵀ c for complex c [B, P]; the backward applies the conjugate transpose,
    M Y⁻ᴴ, to the gradient (torch's convention for complex linear maps)."""

    @staticmethod
    def forward(ctx, c, kron):  # type: ignore[override]
        ctx.kron = kron
        return kron._torch(kron._solve(kron.m_t @ _numpy(c).T, "N"))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        kron = ctx.kron
        return kron._torch(kron.m @ kron._solve(_numpy(grad).T, "H")), None


class _Ports(torch.autograd.Function):
    """Zb c = M Y⁻¹ Mᵀ c for complex c [B, P]; the backward is Zb^H."""

    @staticmethod
    def forward(ctx, c, kron):  # type: ignore[override]
        ctx.kron = kron
        return kron._torch(kron.m @ kron._solve(kron.m_t @ _numpy(c).T, "N"))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.kron.ports_adjoint(grad), None
