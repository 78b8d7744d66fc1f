"""Pictures of a power-flow solution: the voltage profile along the feeder and a map.

Figures are built without pyplot, so nothing here touches global matplotlib state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from grid.feeder import Feeder
from grid.result import PowerFlowResult

PHASE_COLOURS = {1: "#1f77b4", 2: "#d62728", 3: "#2ca02c"}


def distances_km(feeder: Feeder) -> dict[str, float]:
    """Electrical path length from the (first) source bus to every reachable bus, km."""
    source_bus = feeder.nodes[feeder.sources[0].nodes[0]].rsplit(".", 1)[0]
    return nx.single_source_dijkstra_path_length(feeder.graph, source_bus, weight="length_km")


def bus_phase_pu(feeder: Feeder, vpu: np.ndarray) -> dict[str, dict[int, float]]:
    """Node voltages `[nodes]` (p.u., NaN where absent) as {bus: {phase: p.u.}}."""
    out: dict[str, dict[int, float]] = {}
    for name, v in zip(feeder.nodes, vpu):
        bus, phase = name.rsplit(".", 1)
        if np.isfinite(v):
            out.setdefault(bus, {})[int(phase)] = float(v)
    return out


def draw_profile(ax: object, feeder: Feeder, distance_km: Mapping[str, float],
                 volts: Mapping[str, Mapping[int, float]]) -> None:
    """Per-phase voltage (p.u.) against distance from the source (km), one segment per
    line whose two buses have that phase, and the feeder's voltage limits."""
    for phase, colour in PHASE_COLOURS.items():
        segments = []
        for a, b in feeder.graph.edges():
            va, vb = volts.get(a, {}), volts.get(b, {})
            if phase in va and phase in vb and a in distance_km and b in distance_km:
                segments.append([(distance_km[a], va[phase]), (distance_km[b], vb[phase])])
        ax.add_collection(LineCollection(segments, colors=colour, linewidths=1.0,
                                         label=f"phase {phase}"))
    for limit in (feeder.vmin_pu, feeder.vmax_pu):
        ax.axhline(limit, color="black", linestyle="--", linewidth=0.8)
    ax.autoscale()
    ax.set_ylabel("voltage (p.u.)")
    ax.legend(loc="best", fontsize="small")


def voltage_profile(ax: object, feeder: Feeder, result: PowerFlowResult, scenario: int = 0) -> None:
    """Per-phase voltage against distance from the source, one segment per line."""
    vpu = result.vmag_pu[scenario].detach().cpu().numpy()
    draw_profile(ax, feeder, distances_km(feeder), bus_phase_pu(feeder, vpu))
    ax.set_xlabel("distance from source (km)")
    ax.set_title(f"{feeder.name}: voltage profile")


def feeder_map(ax: object, feeder: Feeder, result: PowerFlowResult, scenario: int = 0) -> None:
    """Buses at their coordinates, coloured by their lowest phase voltage."""
    coords = feeder.bus_coords
    volts = bus_phase_pu(feeder, result.vmag_pu[scenario].detach().cpu().numpy())
    segments = [
        [coords[a], coords[b]] for a, b in feeder.graph.edges() if a in coords and b in coords
    ]
    ax.add_collection(LineCollection(segments, colors="#999999", linewidths=0.6))
    buses = [b for b in coords if volts.get(b)]
    xy = np.array([coords[b] for b in buses]) if buses else np.zeros((0, 2))
    vmin = np.array([min(volts[b].values()) for b in buses])
    points = ax.scatter(xy[:, 0], xy[:, 1], c=vmin, s=8, cmap="RdYlBu",
                        vmin=min(feeder.vmin_pu, vmin.min(initial=1.0)),
                        vmax=max(feeder.vmax_pu, vmin.max(initial=1.0)))
    ax.figure.colorbar(points, ax=ax, label="lowest phase voltage (p.u.)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{feeder.name}: bus voltages")


def save_summary(path: str | Path, feeder: Feeder, result: PowerFlowResult,
                 scenario: int = 0) -> Path:
    """Voltage profile and (where the feeder has coordinates) a map, as one PNG."""
    panels = 2 if feeder.bus_coords else 1
    fig = Figure(figsize=(6.5 * panels, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    voltage_profile(axes[0], feeder, result, scenario)
    if panels == 2:
        feeder_map(axes[1], feeder, result, scenario)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
