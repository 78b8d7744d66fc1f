"""OpenDSS's static load models as piecewise quadratics in the branch voltage magnitude.

Each load branch draws S(r) = q2 r^2 + q1 r + q0 (complex VA, r = |u| in volts), with the
coefficients depending on which of OpenDSS's four voltage regions r lies in:

    r <= vlow            constant impedance at nominal power (Yeq)
    vlow < r <= vmin     current magnitude linear in r, from Yeq*vlow to the model's
                         current at vmin (OpenDSS's InterpolateY95_YLow)
    vmin < r <= vmax     the model itself: Z, I and P parts in proportion
    r > vmax             constant impedance matching the model at vmax

Model 8 (ZIP) adds OpenDSS's smooth drop-out below its cutoff voltage. Everything is
exact to OpenDSS, so that validation against it holds at low voltages too.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from grid.feeder import Load

_DROPOUT_SLOPE = 500.0  # OpenDSS's tanh steepness for the ZIP cutoff, per p.u.


def _branch_coefficients(ld: Load, v_nom: float, share: float) -> np.ndarray:
    """Coefficients [region, power] of one load branch: regions (normal, high, mid, low),
    powers (q2, q1, q0), complex, for S in VA and r in volts."""
    p0, q0 = ld.kw * share, ld.kvar * share
    z, i, p = (complex(p0 * a, q0 * b) for a, b in zip(ld.zip_p, ld.zip_q))
    total = complex(p0, q0)
    # Model 3 is constant P with quadratic Q only inside the normal band; OpenDSS treats
    # it as constant PQ (on the total) in the other regions.
    zo, io, po = (0j, 0j, total) if ld.model == 3 else (z, i, p)
    vn, vlow, v95, v105 = v_nom, ld.vlowpu * v_nom, ld.vminpu * v_nom, ld.vmaxpu * v_nom
    out = np.zeros((4, 3), dtype=complex)
    out[0] = (z / vn**2, i / vn, p)
    out[1, 0] = zo / vn**2 + io / (vn * v105) + po / v105**2
    if v95 > vlow:
        a = vlow / vn**2
        b_p = (1.0 / v95 - a) / (v95 - vlow)
        b_i = (1.0 / vn - a) / (v95 - vlow)
        out[2] = (zo / vn**2 + po * b_p + io * b_i, (po + io) * a - (po * b_p + io * b_i) * vlow,
                  0.0)
    out[3, 0] = total / vn**2
    return out


@dataclass
class LoadModel:
    """Load terms of a feeder on one torch device; one term per load branch."""

    table: torch.Tensor  # [T, region, 6]: q2r, q2i, q1r, q1i, q0r, q0i per region
    columns: tuple[tuple[torch.Tensor, ...], ...]  # the same per region, six [T] each
    vlow: torch.Tensor
    vmin: torch.Tensor
    vmax: torch.Tensor
    inv_vn: torch.Tensor
    cutoff_pu: torch.Tensor | None  # [T], ZIP drop-out voltage, None if no load has one

    @classmethod
    def build(
        cls,
        loads: Sequence[Load],
        terms: Sequence[tuple[int, float]],
        device: torch.device,
    ) -> LoadModel:
        """terms: (load index, nominal branch voltage in V) per load branch."""
        coef = np.zeros((len(terms), 4, 3), dtype=complex)
        for k, (li, vn) in enumerate(terms):
            coef[k] = _branch_coefficients(loads[li], vn, 1e3 / len(loads[li].branches()))
        table = np.stack([coef.real, coef.imag], -1).reshape(len(terms), 4, 6)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=device)

        vn = np.array([v for _, v in terms], dtype=float)
        per = [loads[li] for li, _ in terms]
        cutoff = np.array([ld.zip_cutoff for ld in per], dtype=float)
        return cls(
            table=t(table),
            columns=tuple(tuple(t(table[:, g, j]) for j in range(6)) for g in range(4)),
            vlow=t(np.array([ld.vlowpu for ld in per]) * vn),
            vmin=t(np.array([ld.vminpu for ld in per]) * vn),
            vmax=t(np.array([ld.vmaxpu for ld in per]) * vn),
            inv_vn=t(1.0 / vn),
            cutoff_pu=t(cutoff) if (cutoff > 0).any() else None,
        )

    def to(self, dtype: torch.dtype) -> LoadModel:
        """The same model with its floating-point tensors in `dtype`."""
        def cast(x: object) -> object:
            if isinstance(x, torch.Tensor):
                return x.to(dtype)
            if isinstance(x, tuple):
                return tuple(cast(y) for y in x)
            return x

        return dataclasses.replace(
            self, **{f.name: cast(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def _coefficients(self, r: torch.Tensor, terms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The six coefficients of the region each r [k] lies in, for terms [k]."""
        high = r > self.vmax[terms]
        below = r <= self.vmin[terms]
        lowest = r <= self.vlow[terms]
        region = high.long() + below.long() * (2 + lowest.long())  # 0 normal 1 high 2 mid 3 low
        return self.table[terms, region].unbind(-1)

    def _select(self, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The six coefficients of the region each r [B, T] lies in, by elementwise
        selection (which torch.compile fuses; a gather it does not)."""
        high = r > self.vmax
        below = r <= self.vmin
        lowest = r <= self.vlow
        normal, over, mid, low = self.columns
        return tuple(
            torch.where(high, h, torch.where(below, torch.where(lowest, lo, m), n))
            for n, h, m, lo in zip(normal, over, mid, low)
        )

    def power(
        self, r: torch.Tensor, derivative: bool = False, branchless: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """S(r) as (Re, Im) in VA for branch voltage magnitudes r [B, T] in volts, and
        dS/dr (W/V, var/V) when asked.

        Eagerly, every branch is first evaluated in the normal region and the few outside
        it are corrected in place: a full pass per coefficient would cost more than the
        whole normal evaluation. branchless=True selects every branch's region, a gather
        that torch.compile fuses into its one kernel.
        """
        if branchless:
            sr, si, dsr, dsi = _quadratic(self._select(r), r, derivative)
        else:
            sr, si, dsr, dsi = _quadratic(self.columns[0], r, derivative)
            outside = (r > self.vmax) | (r <= self.vmin)
            if bool(outside.any()):
                rows, cols = outside.nonzero(as_tuple=True)
                rr = r[rows, cols]
                fixed = _quadratic(self._coefficients(rr, cols), rr, derivative)
                sr, si = sr.index_put((rows, cols), fixed[0]), si.index_put((rows, cols),
                                                                            fixed[1])
                if derivative:
                    dsr = dsr.index_put((rows, cols), fixed[2])
                    dsi = dsi.index_put((rows, cols), fixed[3])
        if self.cutoff_pu is not None:
            x = torch.tanh(_DROPOUT_SLOPE * (r * self.inv_vn - self.cutoff_pu))
            on = r > self.vlow  # OpenDSS applies no drop-out in the lowest region
            yv = torch.where(on, 0.5 * (1.0 + x), 1.0)
            if derivative:
                dyv = torch.where(on, 0.5 * _DROPOUT_SLOPE * (1.0 - x * x) * self.inv_vn, 0.0)
                dsr = dsr * yv + sr * dyv
                dsi = dsi * yv + si * dyv
            sr, si = sr * yv, si * yv
        return sr, si, dsr, dsi


def _quadratic(
    coef: Sequence[torch.Tensor], r: torch.Tensor, derivative: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """S = q2 r^2 + q1 r + q0 (Re and Im) and, if asked, dS/dr = 2 q2 r + q1."""
    q2r, q2i, q1r, q1i, q0r, q0i = coef
    sr = torch.addcmul(q0r, torch.addcmul(q1r, q2r, r), r)
    si = torch.addcmul(q0i, torch.addcmul(q1i, q2i, r), r)
    if not derivative:
        return sr, si, None, None
    return (sr, si, torch.addcmul(q1r, q2r, r, value=2.0),
            torch.addcmul(q1i, q2i, r, value=2.0))
