"""`cosim report`: a run's pictures as PNG files and a Markdown page that links them.

    voltage_profile.png   each node's voltage against its distance from the source, at
                          chosen steps (default: lowest voltage, highest, last)
    voltage_heatmap.png   bus x time, the lowest phase of each bus, buses by distance
    prices.png            clearing price per market, retailers' import and export prices
    trades.png            energy traded per market and step, and the trading households
    stored_energy.png     batteries' state of charge across households (bands), and the
                          stored energy of batteries and cars
    bills.png             each household's bill over the run, and its distribution
    report.md             the run's summary and the pictures
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cosim.viz.figures import series, step_values
from cosim.viz.layout import FeederLayout, build_layout, feeder_of
from cosim.viz.records import RunRecords
from grid.plot import bus_phase_pu, draw_profile


def _figure(width: float = 8.0, height: float = 4.5, rows: int = 1) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, axes[0] if rows == 1 else axes


def _hours(records: RunRecords) -> np.ndarray:
    return np.arange(records.n_steps) * records.dt_s / 3600


def default_steps(records: RunRecords) -> list[int]:
    """The steps with the lowest and the highest voltage anywhere, and the last."""
    grid = records.tables["grid"]
    v_min = grid.per_step("v_min_pu", "min") if "v_min_pu" in grid.columns else None
    v_max = grid.per_step("v_max_pu", "max") if "v_max_pu" in grid.columns else None
    picks = []
    if v_min is not None and np.isfinite(v_min).any():
        picks.append(int(np.nanargmin(v_min)))
    if v_max is not None and np.isfinite(v_max).any():
        picks.append(int(np.nanargmax(v_max)))
    picks.append(records.n_steps - 1)
    return sorted(set(picks))


def node_voltages(records: RunRecords, layout: FeederLayout) -> np.ndarray:
    """Every node's voltage at every recorded step, p.u., [steps, nodes] (NaN: none)."""
    buses = records.tables["buses"]
    out = np.full((records.n_steps, len(layout.feeder.nodes)), np.nan)
    steps = buses.columns["step"]
    keep = steps < records.n_steps
    out[steps[keep], buses.columns["node"][keep]] = buses.columns["v_pu"][keep]
    return out


def voltage_profile(records: RunRecords, layout: FeederLayout, volts: np.ndarray,
                    steps: Sequence[int], path: Path) -> None:
    feeder = layout.feeder
    figure, axes = _figure(8.0, 2.6 * len(steps), rows=len(steps))
    axes = np.atleast_1d(axes)
    distance = dict(zip(layout.buses, layout.distance_km))
    for ax, step in zip(axes, steps):
        draw_profile(ax, feeder, distance, bus_phase_pu(feeder, volts[step]))
        ax.set_title(f"step {step}, {records.time(step):%Y-%m-%d %H:%M} UTC", fontsize=9)
    axes[-1].set_xlabel("distance from the source (km)")
    figure.savefig(path, dpi=100)


def voltage_heatmap(records: RunRecords, layout: FeederLayout, volts: np.ndarray,
                    path: Path) -> None:
    per_bus = np.stack([layout.bus_min(v) for v in volts])  # [steps, buses]
    order = np.argsort(np.nan_to_num(layout.distance_km, nan=np.inf), kind="stable")
    shown = [i for i in order if np.isfinite(per_bus[:, i]).any()]
    figure, ax = _figure(9.0, 5.5)
    hours = _hours(records)
    image = ax.imshow(per_bus[:, shown].T, aspect="auto", cmap="RdBu", interpolation="none",
                      vmin=layout.feeder.vmin_pu, vmax=layout.feeder.vmax_pu,
                      extent=(0, hours[-1] + records.dt_s / 3600, len(shown), 0))
    figure.colorbar(image, ax=ax, label="lowest phase voltage (p.u.)")
    ax.set_xlabel("hours since start")
    ax.set_ylabel(f"bus ({len(shown)}, by distance from the source)")
    ax.set_title(f"{layout.feeder.name}: voltage of every bus over the run")
    figure.savefig(path, dpi=100)


def prices(records: RunRecords, path: Path) -> None:
    figure, ax = _figure()
    hours = _hours(records)
    for (axis, label), values in series(records).items():
        if axis == "price":
            ax.plot(hours, values, label=label, linewidth=1.0,
                    drawstyle="steps-post" if "import" in label else "default")
    table = records.table("prices")
    if table is not None:
        for source in np.unique(table.columns["source"]):
            ax.plot(hours, step_values(table, "source", source, "export_price", records.n_steps),
                    label=f"{source} export", linewidth=1.0, linestyle=":",
                    drawstyle="steps-post")
    ax.set_xlabel("hours since start")
    ax.set_ylabel("price (currency/kWh)")
    ax.set_title("clearing prices (markets; gaps: nothing traded) and retail prices")
    if ax.lines:
        ax.legend(fontsize="small", ncols=3)
    figure.savefig(path, dpi=100)


def trades(records: RunRecords, path: Path) -> None:
    figure, axes = _figure(8.0, 5.0, rows=2)
    hours = _hours(records)
    table = records.table("trades")
    if table is None:
        axes[0].text(0.5, 0.5, "no trades in this run", ha="center", transform=axes[0].transAxes)
    else:
        steps, market = table.columns["step"], table.columns["market"]
        bought = np.clip(table.columns["kwh"], 0, None)
        keep = steps < records.n_steps
        bottom = np.zeros(records.n_steps)
        for m in np.unique(market):
            mine = keep & (market == m)
            volume = np.bincount(steps[mine], bought[mine], records.n_steps)
            axes[0].bar(hours, volume, width=records.dt_s / 3600, bottom=bottom,
                        align="edge", label=f"market {m}")
            bottom += volume
        traders = np.bincount(steps[keep], minlength=records.n_steps)
        axes[1].plot(hours, traders, linewidth=1.0, drawstyle="steps-post")
        axes[0].legend(fontsize="small", ncols=3)
    axes[0].set_ylabel("traded (kWh per step)")
    axes[1].set_ylabel("households trading")
    axes[1].set_xlabel("hours since start")
    axes[0].set_title("peer-to-peer trades")
    figure.savefig(path, dpi=100)


def stored_energy(records: RunRecords, path: Path) -> None:
    figure, axes = _figure(8.0, 5.0, rows=2)
    hours = _hours(records)
    table = records.tables["households"]
    capacity = records.homes["battery_capacity_kwh"].to_numpy(float)
    ids, steps = table.columns["household"], table.columns["step"]
    has = capacity[ids] > 0
    if has.any():
        soc = np.full((records.n_steps, records.n_households), np.nan)
        keep = has & (steps < records.n_steps)
        soc[steps[keep], ids[keep]] = table.columns["battery_energy_kwh"][keep] / \
            capacity[ids[keep]]
        soc = soc[:, capacity > 0]
        q = np.nanpercentile(soc, [10, 25, 50, 75, 90], axis=1)
        axes[0].fill_between(hours, q[0], q[4], alpha=0.25, label="10-90 %", step="post")
        axes[0].fill_between(hours, q[1], q[3], alpha=0.45, label="25-75 %", step="post")
        axes[0].plot(hours, q[2], linewidth=1.2, label="median", drawstyle="steps-post")
        axes[0].set_ylim(0, 1)
        axes[0].legend(fontsize="small", ncols=3)
    else:
        axes[0].text(0.5, 0.5, "no batteries in this run", ha="center",
                     transform=axes[0].transAxes)
    axes[0].set_ylabel("battery state of charge")
    axes[0].set_title(f"storage across households ({int((capacity > 0).sum())} batteries)")
    found = series(records)
    for key in (("stored", "batteries"), ("stored", "cars")):
        axes[1].plot(hours, found[key], label=key[1], linewidth=1.0)
    axes[1].set_ylabel("stored energy (kWh)")
    axes[1].set_xlabel("hours since start")
    axes[1].legend(fontsize="small")
    figure.savefig(path, dpi=100)


def bills(records: RunRecords, path: Path) -> np.ndarray:
    """Draw the bills; returns each household's total bill (currency)."""
    table = records.tables["households"]
    steps, ids = table.columns["step"], table.columns["household"]
    keep = steps < records.n_steps
    cost = np.zeros((records.n_steps, records.n_households))
    cost[steps[keep], ids[keep]] = np.nan_to_num(table.columns["cost"][keep])
    cumulative = np.cumsum(cost, axis=0)
    figure, axes = _figure(8.0, 5.0, rows=1)
    axes = [axes, figure.add_axes((0.62, 0.18, 0.3, 0.3))]
    hours = _hours(records)
    q = np.percentile(cumulative, [10, 50, 90], axis=1)
    axes[0].fill_between(hours, q[0], q[2], alpha=0.3, label="10-90 % of households")
    axes[0].plot(hours, q[1], linewidth=1.2, label="median household")
    axes[0].set_xlabel("hours since start")
    axes[0].set_ylabel("bill so far (currency)")
    axes[0].set_title("household bills (negative: paid for exports)")
    axes[0].legend(fontsize="small", loc="upper left")
    axes[1].hist(cumulative[-1], bins=30, color="0.5")
    axes[1].set_title("total bill per household", fontsize=8)
    axes[1].tick_params(labelsize=7)
    figure.savefig(path, dpi=100)
    return cumulative[-1]


PICTURES = (
    ("voltage_profile.png", "Voltage along the feeder"),
    ("voltage_heatmap.png", "Voltage of every bus over time"),
    ("prices.png", "Prices"),
    ("trades.png", "Trades"),
    ("stored_energy.png", "Stored energy"),
    ("bills.png", "Bills"),
)


def write_report(records: RunRecords, out: str | Path,
                 steps: Sequence[int] | None = None) -> Path:
    """Write the pictures and report.md (module docstring) into `out`; returns report.md.
    `steps`: the voltage profiles' steps (each below records.n_steps)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = list(steps) if steps else default_steps(records)
    bad = [s for s in steps if s >= records.n_steps]
    if bad:
        raise ValueError(f"step(s) {', '.join(map(str, bad))}: the run recorded steps 0 to "
                         f"{records.n_steps - 1}")
    layout = build_layout(feeder_of(records.config), records.homes)
    volts = node_voltages(records, layout)
    voltage_profile(records, layout, volts, steps, out / "voltage_profile.png")
    voltage_heatmap(records, layout, volts, out / "voltage_heatmap.png")
    prices(records, out / "prices.png")
    trades(records, out / "trades.png")
    stored_energy(records, out / "stored_energy.png")
    totals = bills(records, out / "bills.png")
    markdown = out / "report.md"
    markdown.write_text(_markdown(records, layout, steps, totals))
    return markdown


def _markdown(records: RunRecords, layout: FeederLayout, steps: Sequence[int],
              totals: np.ndarray) -> str:
    run = records.config["run"]
    summary = records.manifest.get("summary") or {}
    grid = records.tables["grid"]
    hours = records.dt_s / 3600
    lines = [
        f"# {run['name']}: run report", "",
        f"Run folder `{records.path}`, status {records.manifest.get('status', 'unknown')}: "
        f"{records.n_households} households on {layout.feeder.name}, {records.n_steps} of "
        f"{records.steps_total} steps of {records.dt_s} s from {records.time(0):%Y-%m-%d %H:%M}"
        " UTC.", "",
        "| quantity | value |", "| --- | --- |",
        f"| substation energy | {np.nansum(grid.per_step('substation_kw')) * hours:,.1f} kWh |",
        f"| losses | {np.nansum(grid.per_step('losses_kw')) * hours:,.1f} kWh |",
        f"| node-steps outside voltage limits | {int(np.nansum(grid.per_step('violations')))} |",
        f"| households' bills | total {totals.sum():,.2f}, median {np.median(totals):,.2f}, "
        f"from {totals.min():,.2f} to {totals.max():,.2f} |",
    ]
    for key, label in (("p2p_kwh", "peer-to-peer energy (kWh)"),
                       ("v_min_pu", "lowest voltage (p.u.)"),
                       ("v_max_pu", "highest voltage (p.u.)")):
        if key in summary and summary[key] is not None:
            lines.append(f"| {label} | {summary[key]:,.4g} |")
    lines.append("")
    for name, title in PICTURES:
        note = f" (steps {', '.join(map(str, steps))})" if name == "voltage_profile.png" \
            else ""
        lines += [f"## {title}{note}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)
