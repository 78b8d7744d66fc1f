"""Trades as edges between households.

A market clears at one price per step and books each household's fill against the pool, so
the records say who sold and who bought how much, not who sold to whom. To draw the
step's trades as edges, each market's sold energy is handed to its buyers in household
order (a north-west-corner allocation): every kWh of each edge was sold by its first end and
bought by its second, every household's edges sum to its fill, and a market with s sellers
and b buyers gives at most s + b - 1 edges.
"""

from __future__ import annotations

import numpy as np


def trade_edges(household: np.ndarray, market: np.ndarray,
                kwh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seller, buyer, kwh) edges of one step's fills (`kwh` > 0 bought, < 0 sold)."""
    sellers_out, buyers_out, energy_out = [], [], []
    for m in np.unique(market):
        mine = market == m
        h, q = household[mine], kwh[mine]
        sell = np.argsort(h[q < 0], kind="stable")
        buy = np.argsort(h[q > 0], kind="stable")
        sellers, supply = h[q < 0][sell], -q[q < 0][sell]
        buyers, demand = h[q > 0][buy], q[q > 0][buy]
        i = j = 0
        supply, demand = supply.copy(), demand.copy()
        while i < len(sellers) and j < len(buyers):
            amount = min(supply[i], demand[j])
            if amount > 0:
                sellers_out.append(sellers[i])
                buyers_out.append(buyers[j])
                energy_out.append(amount)
            supply[i] -= amount
            demand[j] -= amount
            # the smaller side is used up; float residue must not stall the walk
            if supply[i] <= 1e-12 * max(1.0, amount):
                i += 1
            if demand[j] <= 1e-12 * max(1.0, amount):
                j += 1
    return (np.array(sellers_out, dtype=int), np.array(buyers_out, dtype=int),
            np.array(energy_out, dtype=float))
