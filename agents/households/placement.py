"""Where households connect on a feeder: bus and phase(s) from the feeder's own loads.

Each OpenDSS load draws on one or more branches (phase to neutral for wye, phase to phase
for delta; `grid.Load.branches`). Households are placed on those branches:

- "one_per_load": household k on the first branch of the feeder's k-th load (a one-to-one
  replacement of the feeder's loads by households; needs at least as many loads);
- "by_load": each household on a branch drawn with probability proportional to the
  branch's share of its load's nominal kW (so heavily loaded buses get more homes), seeded.

A connection is written as the power flow takes it: "bus.p" from phase p to ground, or
"bus.p.q" between phases p and q (or phase and an ungrounded neutral).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a Feeder comes loaded, so grid is imported by then; not before
    from grid import Feeder
    from grid.feeder import Load

MODES = ("one_per_load", "by_load")


class PlacementError(ValueError):
    """The households cannot be placed as asked; names the feeder and the reason."""


@dataclass(frozen=True)
class Placement:
    connection: tuple[str, ...]  # per household: "bus.p" or "bus.p.q"
    load: tuple[str, ...]  # per household: the feeder load whose branch it took
    branch: tuple[int, ...]  # per household: index into `load_branches(feeder)`

    @property
    def bus(self) -> tuple[str, ...]:
        return tuple(c.split(".", 1)[0] for c in self.connection)

    @property
    def phases(self) -> tuple[str, ...]:
        """The phase ("1") or phase pair ("1.2") of each household's connection."""
        return tuple(c.split(".", 1)[1] for c in self.connection)


def connection_spec(feeder: Feeder, a: int, b: int) -> str:
    """Connection of the node pair (a, b) of `feeder`: "bus.p", or "bus.p.q"."""
    from grid.feeder import GROUND

    bus, pa = feeder.nodes[a].rsplit(".", 1)
    if b == GROUND:
        return f"{bus}.{pa}"
    return f"{bus}.{pa}.{feeder.nodes[b].rsplit('.', 1)[1]}"


def load_branches(feeder: Feeder) -> list[tuple[str, int, int, float]]:
    """(load name, node a, node b, kW) of every branch of the feeder's loads, in the
    feeder's load order: the places a household can connect."""
    return [(ld.name, a, b, ld.kw / len(ld.branches()))
            for ld in _consumers(feeder) for a, b, _ in ld.branches()]


def _consumers(feeder: Feeder) -> list[Load]:
    """The feeder's loads proper, where households can connect (`Feeder.consuming`)."""
    return [ld for ld, own in zip(feeder.loads, feeder.consuming) if own]


def place(feeder: Feeder, n: int, mode: str = "by_load", seed: int = 0) -> Placement:
    """Connections of `n` households on `feeder` (see the module docstring for `mode`)."""
    if mode not in MODES:
        raise PlacementError(f"placement mode {mode!r}: choose one of {MODES}")
    if n < 0:
        raise PlacementError(f"cannot place {n} households")
    branches = load_branches(feeder)
    if not branches:
        raise PlacementError(f"feeder {feeder.name} has no loads to place households at")
    if mode == "one_per_load":
        loads = _consumers(feeder)
        if n > len(loads):
            raise PlacementError(f"feeder {feeder.name} has {len(loads)} loads, too few "
                                 f"for {n} households one per load")
        pick = np.cumsum([0] + [len(ld.branches()) for ld in loads])[:n]
    else:
        weight = np.array([max(w, 0.0) for *_, w in branches])
        if weight.sum() <= 0:
            weight = np.ones(len(branches))
        pick = np.random.default_rng(seed).choice(len(branches), size=n, p=weight / weight.sum())
    return Placement(tuple(connection_spec(feeder, branches[k][1], branches[k][2]) for k in pick),
                     tuple(branches[k][0] for k in pick), tuple(int(k) for k in pick))
