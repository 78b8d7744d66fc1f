"""Where things sit on the feeder map: buses at the feeder's own coordinates, lines between
them, households around the bus they connect to, markets at the middle of their members.

Coordinates are the feeder file's (BusCoords and the like), in its own units; a bus the file
does not place sits at the mean of its placed neighbours, so no layout algorithm is needed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from grid import Feeder, load_feeder
from grid.plot import distances_km


@dataclass(frozen=True)
class FeederLayout:
    """The drawing geometry of one feeder and one set of households.

    buses: bus names; bus_xy [buses, 2]; node_bus [nodes]: the bus of each feeder node (the
    `node` column of the buses table); line_xy [lines, 2, 2]: the ends of each line (the
    `line` column of the lines table); other_xy: transformers and other two-bus elements;
    home_xy [households, 2]; home_bus [households]; distance_km [buses]: electrical
    distance from the source (NaN where unreachable)."""

    feeder: Feeder
    buses: tuple[str, ...]
    bus_xy: np.ndarray
    node_bus: np.ndarray
    line_xy: np.ndarray
    other_xy: np.ndarray
    home_xy: np.ndarray
    home_bus: np.ndarray
    distance_km: np.ndarray

    @property
    def source_bus(self) -> int:
        return int(self.node_bus[self.feeder.sources[0].nodes[0]])

    def market_xy(self, market: np.ndarray) -> np.ndarray:
        """Centre of each market's households, [markets, 2] for markets 0..max."""
        n = int(market.max()) + 1
        out = np.zeros((n, 2))
        for axis in (0, 1):
            out[:, axis] = np.bincount(market, self.home_xy[:, axis], n) / np.maximum(
                np.bincount(market, minlength=n), 1)
        return out

    def bus_min(self, node_values: np.ndarray) -> np.ndarray:
        """The lowest value over each bus's nodes (a bus's lowest-phase voltage), [buses]."""
        out = np.full(len(self.buses), np.inf)
        np.minimum.at(out, self.node_bus, np.where(np.isfinite(node_values), node_values,
                                                   np.inf))
        out[~np.isfinite(out)] = np.nan
        return out


@functools.cache
def _feeder(name: str, vmin_pu: float, vmax_pu: float, controls_load_scale: float) -> Feeder:
    # loading IEEE 123 takes seconds (OpenDSS solves it with its controls): once per process
    return load_feeder(name, vmin_pu=vmin_pu, vmax_pu=vmax_pu,
                       controls_load_scale=controls_load_scale)


def feeder_of(config: dict) -> Feeder:
    """The feeder a run's config names, with its limits and control loading."""
    grid = config["grid"]
    return _feeder(grid["feeder"], float(grid.get("vmin_pu", 0.95)),
                   float(grid.get("vmax_pu", 1.05)),
                   float(grid.get("controls_load_scale", 1.0)))


def build_layout(feeder: Feeder, homes: pd.DataFrame) -> FeederLayout:
    """The layout of `feeder` with `homes` (homes.parquet: household, connection_name)."""
    buses = tuple(feeder.graph.nodes)
    index = {bus: i for i, bus in enumerate(buses)}
    xy = _placed(feeder.graph, feeder.bus_coords)
    bus_xy = np.array([xy[b] for b in buses])
    node_bus = np.array([index[n.rsplit(".", 1)[0]] for n in feeder.nodes])
    line_xy = np.array([[xy[ln.bus1.lower()], xy[ln.bus2.lower()]] for ln in feeder.lines])
    other = [(a, b) for a, b, kind in feeder.graph.edges(data="kind") if kind != "line"]
    other_xy = np.array([[xy[a], xy[b]] for a, b in other]).reshape(-1, 2, 2)
    home_bus = np.array([index[c.split(".", 1)[0].lower()] for c in homes["connection_name"]])
    home_xy = bus_xy[home_bus] + _ring(home_bus, _spacing(bus_xy, line_xy))
    dist = distances_km(feeder)
    distance = np.array([dist.get(b, np.nan) for b in buses])
    return FeederLayout(feeder, buses, bus_xy, node_bus, line_xy, other_xy, home_xy,
                        home_bus, distance)


def _placed(graph: nx.Graph, coords: dict[str, tuple[float, float]]) -> dict:
    """Every bus's coordinates: its own, else the mean of its placed neighbours (repeated
    outwards), else the mean of all (an island the file does not place)."""
    xy = {b: np.asarray(coords[b], float) for b in graph.nodes if b in coords}
    centre = np.mean(list(xy.values()), axis=0) if xy else np.zeros(2)
    todo = [b for b in graph.nodes if b not in xy]
    while todo:
        placed = {b: np.mean([xy[n] for n in graph.neighbors(b) if n in xy], axis=0)
                  for b in todo if any(n in xy for n in graph.neighbors(b))}
        if not placed:
            xy |= {b: centre for b in todo}
            break
        xy |= placed
        todo = [b for b in todo if b not in xy]
    return xy


def _spacing(bus_xy: np.ndarray, line_xy: np.ndarray) -> float:
    """A radius for the ring of households around a bus: a third of the median line."""
    lengths = np.linalg.norm(line_xy[:, 1] - line_xy[:, 0], axis=1)
    lengths = lengths[lengths > 0]
    if len(lengths):
        return float(np.median(lengths)) / 3
    extent = np.ptp(bus_xy, axis=0).max()
    return float(extent) / 100 if extent > 0 else 1.0


def _ring(home_bus: np.ndarray, radius: float) -> np.ndarray:
    """Offsets that spread the households of one bus on a small sunflower disc, so each is
    visible; deterministic (the k-th household of a bus always sits at the same place)."""
    order = np.argsort(home_bus, kind="stable")
    rank = np.empty(len(home_bus), dtype=int)
    counts = np.bincount(home_bus)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(home_bus)) - first[home_bus[order]]
    total = counts[home_bus]
    r = radius * np.sqrt((rank + 0.5) / total)
    angle = rank * np.pi * (3 - np.sqrt(5))  # the golden angle
    return np.column_stack([r * np.cos(angle), r * np.sin(angle)])
