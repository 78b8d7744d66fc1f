"""OpenDSS's static load models as piecewise quadratics in the branch voltage magnitude.

Each load branch draws S(r) = q2 r^2 + q1 r + q0 (complex VA, r = |u| in volts), with the
coefficients depending on which of OpenDSS's four voltage regions r lies in:

    r <= vlow            constant impedance at nominal power (Yeq)
    vlow < r <= vmin     current magnitude linear in r, from Yeq*vlow to the model's
                         current at vmin (OpenDSS's InterpolateY95_YLow)
    vmin < r <= vmax     the model itself: Z, I and P parts in proportion
    r > vmax             constant impedance matching the model at vmax

Models 3 and 4 take the mid and high regions of constant P and Q (model 1), whatever their
normal band. Models 6 and 7 (constant P, Q fixed at the base kvar, or from the fixed
reactance of that kvar) have constant impedance in both: G matched to P at vmin or vmax, B
from the base kvar. Model 4 is the one non-quadratic: in the normal band it adds
P0 (r/vn)^cvr_watts + j Q0 (r/vn)^cvr_vars. Model 8 (ZIP) adds OpenDSS's smooth drop-out
below its cutoff voltage. Everything is exact to OpenDSS (Load.pas of DSS C-API 0.14), so
that validation against it holds at low voltages too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from grid.feeder import Load

DROPOUT_SLOPE = 500.0  # OpenDSS's tanh steepness for the ZIP cutoff, per p.u.


def _branch_coefficients(ld: Load, v_nom: float, share: float) -> np.ndarray:
    """Coefficients [region, power] of one load branch: regions (normal, high, mid, low),
    powers (q2, q1, q0), complex, for S in VA and r in volts."""
    p0, q0 = ld.kw * share, ld.kvar * share
    total = complex(p0, q0)
    vn, vlow, v95, v105 = v_nom, ld.vlowpu * v_nom, ld.vminpu * v_nom, ld.vmaxpu * v_nom
    out = np.zeros((4, 3), dtype=complex)
    out[3, 0] = total / vn**2
    if ld.model in (6, 7):
        qf = ld.fixed_kvar * share
        z, i, p = (complex(p0 * a, qf * b) for a, b in zip(ld.zip_p, ld.zip_q))
        out[0] = (z / vn**2, i / vn, p)
        out[1, 0] = complex(p0 / v105**2, qf / vn**2)
        if v95 > vlow:
            out[2, 0] = complex(p0 / v95**2, qf / vn**2)
        return out
    z, i, p = (complex(p0 * a, q0 * b) for a, b in zip(ld.zip_p, ld.zip_q))
    zo, io, po = (0j, 0j, total) if ld.model in (3, 4) else (z, i, p)
    out[0] = (z / vn**2, i / vn, p)
    out[1, 0] = zo / vn**2 + io / (vn * v105) + po / v105**2
    if v95 > vlow:
        a = vlow / vn**2
        b_p = (1.0 / v95 - a) / (v95 - vlow)
        b_i = (1.0 / vn - a) / (v95 - vlow)
        out[2] = (zo / vn**2 + po * b_p + io * b_i, (po + io) * a - (po * b_p + io * b_i) * vlow,
                  0.0)
    return out


@dataclass
class PowerLaw:
    """Model 4's normal-band power of some load terms: P0 x^a + j Q0 x^b, x = r / vn, for
    vmin < r <= vmax (elsewhere the quadratic table holds all of it)."""

    terms: torch.Tensor  # [K] indices of the load terms
    p0: torch.Tensor  # [K] W at nominal voltage
    q0: torch.Tensor  # [K] var at nominal voltage
    a: torch.Tensor  # [K] cvr_watts
    b: torch.Tensor  # [K] cvr_vars
    inv_vn: torch.Tensor  # [K] 1 / nominal branch voltage, 1/V
    vmin: torch.Tensor  # [K] V
    vmax: torch.Tensor  # [K] V

    def add(self, r: torch.Tensor, s: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """s = [Re S, Im S, dRe S/dr, dIm S/dr] ([B, T] each, the derivatives None when not
        asked for) with this power, and its derivative, added at voltages r [B, T]."""
        rr = r[:, self.terms]
        on = (rr > self.vmin) & (rr <= self.vmax)
        x = rr * self.inv_vn
        sp = torch.where(on, self.p0 * x.pow(self.a), 0.0)
        sq = torch.where(on, self.q0 * x.pow(self.b), 0.0)
        parts = [sp, sq]
        if s[2] is not None:  # d(P0 x^a)/dr = a P0 x^a / r (where on, so r > 0)
            parts += [torch.where(on, sp * self.a / rr, 0.0),
                      torch.where(on, sq * self.b / rr, 0.0)]
        return [t.index_add(1, self.terms, part) for t, part in zip(s, parts)] + s[len(parts):]


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
    power_law: PowerLaw | None = None  # model 4 terms, None if there are none

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
        exp = [k for k, ld in enumerate(per) if ld.model == 4]
        power_law = None
        if exp:
            share = [1e3 / len(per[k].branches()) for k in exp]
            power_law = PowerLaw(
                terms=torch.as_tensor(exp, dtype=torch.long, device=device),
                p0=t(np.array([per[k].kw * w for k, w in zip(exp, share)])),
                q0=t(np.array([per[k].kvar * w for k, w in zip(exp, share)])),
                a=t(np.array([per[k].cvr_watts for k in exp])),
                b=t(np.array([per[k].cvr_vars for k in exp])),
                inv_vn=t(1.0 / vn[exp]),
                vmin=t(np.array([per[k].vminpu for k in exp]) * vn[exp]),
                vmax=t(np.array([per[k].vmaxpu for k in exp]) * vn[exp]),
            )
        return cls(
            table=t(table),
            columns=tuple(tuple(t(table[:, g, j]) for j in range(6)) for g in range(4)),
            vlow=t(np.array([ld.vlowpu for ld in per]) * vn),
            vmin=t(np.array([ld.vminpu for ld in per]) * vn),
            vmax=t(np.array([ld.vmaxpu for ld in per]) * vn),
            inv_vn=t(1.0 / vn),
            cutoff_pu=t(cutoff) if (cutoff > 0).any() else None,
            power_law=power_law,
        )

    def to(self, dtype: torch.dtype) -> LoadModel:
        """The same model with its floating-point tensors in `dtype`."""
        def cast(x: object) -> object:
            if isinstance(x, torch.Tensor):
                return x.to(dtype) if x.is_floating_point() else x
            if isinstance(x, tuple):
                return tuple(cast(y) for y in x)
            if isinstance(x, PowerLaw):
                return PowerLaw(*(cast(getattr(x, f.name)) for f in dataclasses.fields(x)))
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
        if self.power_law is not None:
            sr, si, dsr, dsi = self.power_law.add(r, [sr, si, dsr, dsi])
        if self.cutoff_pu is not None:
            x = torch.tanh(DROPOUT_SLOPE * (r * self.inv_vn - self.cutoff_pu))
            on = r > self.vlow  # OpenDSS applies no drop-out in the lowest region
            yv = torch.where(on, 0.5 * (1.0 + x), 1.0)
            if derivative:
                dyv = torch.where(on, 0.5 * DROPOUT_SLOPE * (1.0 - x * x) * self.inv_vn, 0.0)
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
