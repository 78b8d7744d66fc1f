"""Device parameters of many households: broadcast to float64 tensors and checked.

Every device's `create()` passes its keyword values through `Parameters`, which turns each
into a `[households]` float64 tensor (a scalar applies to all) and offers the checks the
devices share. A failed check raises `DeviceError` naming the household (its entry in the
`households` sequence given to `create`), the device and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Self

import numpy as np
import torch


class DeviceError(ValueError):
    """Inconsistent device parameters; names the household and the field."""


class Parameters:
    """Named `[households]` float64 tensors of one device kind, with checks."""

    def __init__(self, device: str, households: Sequence[object], **values: object) -> None:
        self.device = device
        self.households = households
        n = len(households)
        self.values: dict[str, torch.Tensor] = {}
        for name, value in values.items():
            try:
                t = (value.detach().to(torch.float64) if isinstance(value, torch.Tensor)
                     else torch.from_numpy(np.array(value, dtype=np.float64)))
            except (TypeError, ValueError):
                raise DeviceError(f"{device} {name}: {value!r} is not a number or a list of "
                                  f"numbers") from None
            if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, n)):
                raise DeviceError(f"{device} {name}: {tuple(t.shape)} values for {n} households")
            self.values[name] = t.expand(n).clone()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def check(self, bad: torch.Tensor, field: str, rule: str) -> None:
        """Raise for the first household where `bad` holds: "household H: device field V rule"."""
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            raise DeviceError(f"household {self.households[k]}: {self.device} {field} "
                              f"{float(self.values[field][k])} {rule}")

    def finite(self, *allow_inf: str) -> Parameters:
        """No NaN anywhere; no infinity except in the fields named."""
        for name, t in self.values.items():
            bad = torch.isnan(t) if name in allow_inf else ~torch.isfinite(t)
            self.check(bad, name, "is not finite" if name not in allow_inf else "is NaN")
        return self

    def non_negative(self, *fields: str) -> Parameters:
        for field in fields:
            self.check(self.values[field] < 0, field, "is negative")
        return self

    def positive(self, *fields: str) -> Parameters:
        for field in fields:
            self.check(self.values[field] <= 0, field, "must be positive")
        return self

    def fraction(self, *fields: str, open_low: bool = False) -> Parameters:
        """Each field in [0, 1], or (0, 1] with `open_low`."""
        for field in fields:
            t = self.values[field]
            low = t <= 0 if open_low else t < 0
            self.check(low | (t > 1), field, "must be in (0, 1]" if open_low else
                       "must be in [0, 1]")
        return self

    def ordered(self, low: str, high: str) -> Parameters:
        """`low` must not exceed `high`, household by household."""
        bad = self.values[low] > self.values[high]
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            raise DeviceError(f"household {self.households[k]}: {self.device} {low} "
                              f"{float(self.values[low][k])} exceeds {high} "
                              f"{float(self.values[high][k])}")
        return self


class OnDevice:
    """For frozen dataclasses of parameter tensors: `to(device)` moves every tensor field
    (a rollout on a GPU needs its devices there too), `select(rows)` keeps some
    households."""

    def to(self, device: torch.device | str) -> Self:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    def select(self, rows: torch.Tensor) -> Self:
        """The devices of some households (`rows`: indices into the fleet)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})


def to_interval(action: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                signed: bool) -> torch.Tensor:
    """Affine map of a clamped raw action onto [lo, hi]: [-1, 1] if `signed`, else [0, 1].

    Differentiable almost everywhere (zero gradient only where the action is clamped).
    """
    if signed:
        share = (action.clamp(-1.0, 1.0) + 1.0) * 0.5
    else:
        share = action.clamp(0.0, 1.0)
    return lo + share * (hi - lo)
