"""The viewer's pictures, as PNG bytes: the feeder map, the run's time series and one
household's history.

Each figure builds its artists once (the feeder's geometry, the colour bars, the full
series) and per step only changes what the step changed (colours, trade edges, labels, a
cursor), then encodes the PNG. Figures are made without pyplot: the server draws from
several threads and pyplot's global state is not thread-safe.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from PIL import Image

from cosim.viz.layout import FeederLayout
from cosim.viz.model import Frame
from cosim.viz.records import RunRecords

HOUSEHOLD_COLOURS = ("net_kw", "soc")  # what the households' colour can show


def png(figure: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (the report's pictures)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=80)
    FigureCanvasAgg(figure)
    return figure


class _Blit:
    """Renders a figure whose `dynamic` artists change from step to step: everything else
    is drawn once into a cached background (again only after `invalidate`), and each
    frame only draws the dynamic artists over it. A full draw of the map takes about six
    times as long as this."""

    def __init__(self, figure: Figure, dynamic: list[Artist]) -> None:
        self.figure, self.dynamic = figure, dynamic
        for artist in dynamic:
            artist.set_animated(True)  # left out of the full (background) draw
        self._background = None

    def invalidate(self) -> None:
        self._background = None

    def render(self) -> bytes:
        canvas = self.figure.canvas
        if self._background is None:
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        canvas.restore_region(self._background)
        for artist in self.dynamic:
            self.figure.draw_artist(artist)
        buffer = io.BytesIO()
        # the fastest zlib level: the browser gets a few more kB, the server saves 50 ms
        Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(
            buffer, format="png", compress_level=1)
        return buffer.getvalue()


class MapFigure:
    """The feeder map: buses coloured by their lowest phase's voltage, lines by loading,
    households by net power or battery state of charge, the step's trades as edges between
    the trading households, each market's clearing price at its centre and the retailers'
    price signals in a box."""

    def __init__(self, layout: FeederLayout, records: RunRecords) -> None:
        self.layout = layout
        feeder = layout.feeder
        self.figure = figure = _figure(8.0, 6.4)
        ax = self.ax = figure.add_axes((0.01, 0.01, 0.78, 0.93))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_axis_off()
        ax.add_collection(LineCollection(layout.other_xy, colors="0.6", linewidths=1.0,
                                         linestyles="dashed"))
        self.lines = LineCollection(layout.line_xy, cmap="plasma", norm=Normalize(0.0, 1.2),
                                    linewidths=2.0)
        ax.add_collection(self.lines)
        self.trades = LineCollection([], colors="#2ca02c", alpha=0.8, zorder=3)
        ax.add_collection(self.trades)
        # a diverging scale centred on 1 p.u., its ends at the feeder's limits
        vnorm = TwoSlopeNorm(1.0, min(feeder.vmin_pu, 0.999), max(feeder.vmax_pu, 1.001))
        self.buses = ax.scatter(*layout.bus_xy.T, c=np.ones(len(layout.buses)), cmap="RdBu",
                                norm=vnorm, s=22, edgecolors="black", linewidths=0.4,
                                zorder=4)
        net = records.tables["households"].columns["net_kw"]
        scale = float(np.nanmax(np.abs(net))) if len(net) else 1.0
        self.norms = {"net_kw": TwoSlopeNorm(0.0, -max(scale, 1e-3), max(scale, 1e-3)),
                      "soc": Normalize(0.0, 1.0)}
        # grey: no battery, when showing the state of charge
        self.cmaps = {"net_kw": colormaps["coolwarm"].with_extremes(bad="0.75"),
                      "soc": colormaps["viridis"].with_extremes(bad="0.75")}
        self.homes = ax.scatter(*layout.home_xy.T, c=np.zeros(len(layout.home_xy)), s=14,
                                cmap=self.cmaps["net_kw"], norm=self.norms["net_kw"],
                                marker="s", edgecolors="0.35", linewidths=0.3, zorder=5)
        market = records.homes["market"].to_numpy()
        self.market_xy = layout.market_xy(market)
        ax.scatter(*self.market_xy.T, marker="D", s=40, c="gold", edgecolors="black",
                   zorder=6)
        self.market_labels = [ax.annotate("", xy, xytext=(5, 5), textcoords="offset points",
                                          fontsize=7, zorder=7) for xy in self.market_xy]
        self.signal = ax.text(0.01, 0.01, "", transform=ax.transAxes, fontsize=7,
                              family="monospace", va="bottom",
                              bbox=dict(boxstyle="round", fc="white", alpha=0.85))
        self.title = ax.set_title("", fontsize=10)
        ax.autoscale_view()
        self._colourbar(figure.add_axes((0.80, 0.68, 0.02, 0.25)), self.buses,
                        "bus voltage, lowest phase (p.u.)")
        self._colourbar(figure.add_axes((0.80, 0.37, 0.02, 0.25)), self.lines,
                        "line loading (current / rating)")
        self.home_bar = self._colourbar(figure.add_axes((0.80, 0.06, 0.02, 0.25)),
                                        self.homes, "")
        self.colour_by = ""
        self.blit = _Blit(figure, [self.lines, self.trades, self.buses, self.homes,
                                   *self.market_labels, self.signal, self.title])

    def _colourbar(self, cax: object, mappable: object, label: str) -> object:
        bar = self.figure.colorbar(mappable, cax=cax)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=7)
        return bar

    def draw(self, frame: Frame, soc: np.ndarray, colour_by: str = "net_kw") -> bytes:
        """The map of `frame`, households coloured by `colour_by` (HOUSEHOLD_COLOURS)."""
        if colour_by != self.colour_by:  # the households' scale changes only on request
            self.homes.set_cmap(self.cmaps[colour_by])
            self.homes.set_norm(self.norms[colour_by])
            self.home_bar.update_normal(self.homes)
            self.home_bar.set_label("household net power (kW)" if colour_by == "net_kw"
                                    else "battery state of charge", fontsize=7)
            self.colour_by = colour_by
            self.blit.invalidate()
        self.buses.set_array(frame.bus_v)
        self.lines.set_array(frame.line_loading)
        self.homes.set_array(frame.households["net_kw"] if colour_by == "net_kw" else soc)
        seller, buyer, kwh = frame.trades
        xy = self.layout.home_xy
        self.trades.set_segments(np.stack([xy[seller], xy[buyer]], axis=1) if len(kwh)
                                 else [])
        if len(kwh):
            self.trades.set_linewidths(0.5 + 3.0 * kwh / kwh.max())
        for market, label in enumerate(self.market_labels):
            price = frame.market_price.get(market, np.nan)
            label.set_text(f"market {market}: " + ("no trade" if not np.isfinite(price)
                                                   else f"{price:.3f}/kWh"))
        self.signal.set_text("\n".join(
            f"{name:<14} buy {imp:.3f}  sell {exp:.3f}"
            for name, (imp, exp) in sorted(frame.retail_prices.items())))
        grid = frame.grid
        self.title.set_text(
            f"step {frame.step}  {frame.time:%Y-%m-%d %H:%M} UTC  substation "
            f"{grid.get('substation_kw', np.nan):,.1f} kW  {len(kwh)} trades  "
            f"{int(grid.get('violations', 0))} voltage violations"
            + ("" if grid.get("converged", True) else "  NOT CONVERGED"))
        return self.blit.render()


class SeriesFigure:
    """The run over time: prices per market and retailer, substation power and losses,
    voltage violations and the stored energy of batteries and cars, with a cursor at the
    step on display. The series are redrawn only when more steps were recorded (live)."""

    def __init__(self, records: RunRecords) -> None:
        self.records = records
        self.figure = figure = _figure(7.0, 6.4)
        self.axes = figure.subplots(4, 1, sharex=True)
        figure.subplots_adjust(left=0.11, right=0.97, top=0.97, bottom=0.08, hspace=0.25)
        self.cursors = [ax.axvline(0, color="black", linewidth=0.8) for ax in self.axes]
        self.blit = _Blit(figure, self.cursors)
        self.n_steps = -1

    def _series(self) -> None:
        records, axes = self.records, self.axes
        for ax in axes:
            for artist in [*ax.lines, *ax.collections]:
                if artist not in self.cursors:
                    artist.remove()
        hours = np.arange(records.n_steps) * records.dt_s / 3600
        for name, values in series(records).items():
            ax = axes[AXIS[name[0]]]
            ax.plot(hours, values[: len(hours)], label=name[1], linewidth=1.0)
        labels = ("price (/kWh)", "power (kW)", "violations", "stored (kWh)")
        for ax, label in zip(axes, labels):
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            if ax.lines[1:]:
                ax.legend(fontsize=6, loc="upper left", ncols=3)
        axes[-1].set_xlabel("hours since start", fontsize=8)
        axes[-1].set_xlim(0, max(hours[-1] if len(hours) else 1.0, 1e-3))
        self.n_steps = records.n_steps
        self.blit.invalidate()

    def draw(self, step: int) -> bytes:
        if self.records.n_steps != self.n_steps:
            self._series()
        x = step * self.records.dt_s / 3600
        for cursor in self.cursors:
            cursor.set_xdata([x, x])
        return self.blit.render()


AXIS = {"price": 0, "power": 1, "violations": 2, "stored": 3}


def series(records: RunRecords) -> dict[tuple[str, str], np.ndarray]:
    """The run's headline series per step, keyed (axis, label): clearing price of each
    market, import price of each retailer (currency/kWh), substation power and losses (kW),
    voltage violations (nodes), battery and car energy (kWh)."""
    out: dict[tuple[str, str], np.ndarray] = {}
    n = records.n_steps
    markets = records.table("markets")
    if markets is not None:
        for m in np.unique(markets.columns["market"]):
            out[("price", f"market {m}")] = step_values(markets, "market", m, "price", n)
    prices = records.table("prices")
    if prices is not None:
        for source in np.unique(prices.columns["source"]):
            out[("price", f"{source} import")] = step_values(prices, "source", source,
                                                       "import_price", n)
    grid = records.tables["grid"]
    out[("power", "substation")] = grid.per_step("substation_kw")[:n]
    out[("power", "losses")] = grid.per_step("losses_kw")[:n]
    out[("violations", "voltage")] = grid.per_step("violations")[:n]
    homes = records.tables["households"]
    out[("stored", "batteries")] = homes.per_step("battery_energy_kwh")[:n]
    out[("stored", "cars")] = homes.per_step("ev_energy_kwh")[:n]
    return out


def step_values(table: object, key: str, value: object, column: str, n: int) -> np.ndarray:
    """`column` of the rows whose `key` is `value`, per step, [n] (NaN where absent)."""
    rows = table.columns[key] == value
    out = np.full(n, np.nan)
    steps = table.columns["step"][rows]
    keep = steps < n
    out[steps[keep]] = table.columns[column][rows][keep]
    return out


class HouseholdFigure:
    """One household over the run: net power, its bids and fills, and its bill so far,
    with a cursor at the step on display. Its curves are redrawn only when another
    household is picked or more steps were recorded."""

    def __init__(self, records: RunRecords) -> None:
        self.records = records
        self.figure = figure = _figure(7.0, 4.2)
        self.axes = axes = figure.subplots(3, 1, sharex=True)
        figure.subplots_adjust(left=0.12, right=0.97, top=0.95, bottom=0.11, hspace=0.2)
        self.curves = {"net_kw": axes[0].plot([], [], linewidth=1.0)[0],
                       "bid_kwh": axes[1].plot([], [], linewidth=1.0, label="bid")[0],
                       "traded_kwh": axes[1].plot([], [], linewidth=1.0, label="traded")[0],
                       "cost": axes[2].plot([], [], linewidth=1.0)[0]}
        for ax, label in zip(axes, ("net power (kW)", "energy (kWh)", "bill so far")):
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[1].legend(fontsize=6, loc="upper left", ncols=2)
        axes[2].set_xlabel("hours since start", fontsize=8)
        self.cursors = [ax.axvline(0, color="black", linewidth=0.8) for ax in axes]
        self.blit = _Blit(figure, self.cursors)
        self.shown: tuple[int, int] | None = None

    def draw(self, household: int, step: int) -> bytes:
        records = self.records
        if self.shown != (household, records.n_steps):
            hours = np.arange(records.n_steps) * records.dt_s / 3600
            for column, curve in self.curves.items():
                values = records.household_series(household, column)
                curve.set_data(hours, np.nancumsum(values) if column == "cost" else values)
            for ax in self.axes:
                ax.relim()
                ax.autoscale_view()
            self.axes[0].set_title(f"household {household}", fontsize=9)
            self.shown = (household, records.n_steps)
            self.blit.invalidate()
        x = step * records.dt_s / 3600
        for cursor in self.cursors:
            cursor.set_xdata([x, x])
        return self.blit.render()
