"""The SolaraViz page: Mesa's controls (reset, play, step, the step counter) in the side bar,
and four views of the model: the feeder map, the run's time series, a household inspector
and a seek bar.

Only what changed is re-rendered: each view subscribes to Mesa's update counter (a step,
a seek or a reset) and to its own inputs (the households' colour, the household picked);
the figures behind it redraw only their changing artists (cosim.viz.figures). A failure
is shown as one line in the page; the traceback goes to the server's log.

Solara serves this module (`cosim viz` sets it up with `configure`): `Page` is its page.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import solara
from mesa.visualization import SolaraViz
from mesa.visualization.utils import force_update, update_counter

from cosim.viz.figures import HOUSEHOLD_COLOURS, HouseholdFigure, MapFigure, SeriesFigure
from cosim.viz.model import FeederModel

log = logging.getLogger(__name__)


@dataclass
class _Views:
    """A model's figures, made once per model (a reset makes a new model) and drawn under
    one lock: sessions share the model, and a matplotlib figure is not thread-safe."""

    map: MapFigure
    series: SeriesFigure
    household: HouseholdFigure
    lock: threading.Lock = field(default_factory=threading.Lock)


_views: weakref.WeakKeyDictionary[FeederModel, _Views] = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def views(model: FeederModel) -> _Views:
    with _views_lock:
        if model not in _views:
            _views[model] = _Views(MapFigure(model.layout, model.records),
                                   SeriesFigure(model.records), HouseholdFigure(model.records))
        return _views[model]


def _guarded(what: str, draw: Callable[[], object]) -> object:
    """`draw()`, or an error line naming `what` failed (never a traceback in the page)."""
    try:
        return draw()
    except Exception as exc:
        log.exception("%s failed", what)
        return solara.Error(f"{what} failed: {type(exc).__name__}: {exc}")


# the households' colour and the household in the inspector, per browser session
COLOUR_LABELS = dict(zip(("net power", "state of charge"), HOUSEHOLD_COLOURS))
colour_by = solara.reactive("net power")
picked = solara.reactive(-1)  # -1: the model's most active household


def most_active(model: FeederModel) -> int:
    """The household whose net power varies most over the recorded steps (the one an
    inspector shows first: a flat one tells nothing)."""
    net = model.records.tables["households"].columns["net_kw"]
    ids = model.records.tables["households"].columns["household"]
    spread = np.zeros(model.records.n_households)
    np.maximum.at(spread, ids, np.abs(net - np.nanmean(net)))
    return int(np.nanargmax(spread))


@solara.component
def FeederMap(model: FeederModel):
    update_counter.get()

    def draw() -> tuple[bytes | None, str | None]:
        try:
            with views(model).lock:
                return views(model).map.draw(model.frame, model.frame.soc,
                                             COLOUR_LABELS[colour_by.value]), None
        except Exception as exc:
            log.exception("the map failed")
            return None, f"the map failed: {type(exc).__name__}: {exc}"

    # a re-render for any other reason (a session joining) reuses the picture
    image, problem = solara.use_memo(draw, [id(model), model.frame.step, colour_by.value,
                                            model.records.n_steps])
    with solara.Card("Feeder", margin=0):
        for message in (model.error, problem):
            if message:
                solara.Error(message, classes=["cosim-error"])
        solara.ToggleButtonsSingle(value=colour_by, values=list(COLOUR_LABELS))
        if image is not None:
            solara.Image(image, width="100%", classes=["cosim-map"])


@solara.component
def TimeSeries(model: FeederModel):
    update_counter.get()

    def draw() -> object:
        with views(model).lock:
            return solara.Image(views(model).series.draw(model.frame.step), width="100%",
                                classes=["cosim-series"])

    with solara.Card("Over time", margin=0):
        _guarded("the time series", draw)


@solara.component
def Inspector(model: FeederModel):
    update_counter.get()
    n = model.records.n_households
    household = picked.value if 0 <= picked.value < n else most_active(model)
    frame = model.frame
    row = {k: v[household] for k, v in frame.households.items()}
    devices = model.records.homes.iloc[household]
    seller, buyer, kwh = frame.trades
    partners = [f"sold {q:.3f} kWh to {b}" for s, b, q in zip(seller, buyer, kwh)
                if s == household]
    partners += [f"bought {q:.3f} kWh from {s}" for s, b, q in zip(seller, buyer, kwh)
                 if b == household]
    bill = float(np.nansum(model.records.household_series(household, "cost")[:frame.step + 1]))
    soc = frame.soc[household]

    def draw() -> object:
        with views(model).lock:
            return solara.Image(views(model).household.draw(household, frame.step),
                                width="100%", classes=["cosim-household-plot"])

    with solara.Card("Household", margin=0):
        solara.InputInt(f"household (0-{n - 1})", value=household,
                        on_value=lambda h: picked.set(int(np.clip(h, 0, n - 1))))
        # plain HTML: Solara's Markdown would fetch KaTeX from a CDN on every page
        solara.HTML("div", escape(
            f"at bus {devices['connection_name']}, market {devices['market']}, buys from "
            f"{devices['retailer']}; {_device_text(devices)}"))
        solara.Text(f"net power {row['net_kw']:.3f} kW", classes=["cosim-net-power"])
        items = (f"battery: {'none' if math.isnan(soc) else f'{soc:.0%} charged'}",
                 f"voltage {row['voltage_pu']:.4f} p.u.",
                 f"bid {row['bid_kwh']:.3f} kWh at {row['limit_price']:.3f}/kWh; traded "
                 f"{row['traded_kwh']:.3f} kWh at {row['price']:.3f}/kWh",
                 f"bill this step {row['cost']:.3f}, so far {bill:.2f}",
                 f"trades: {'; '.join(partners) if partners else 'none'}")
        solara.HTML("ul", "".join(f"<li>{escape(item)}</li>" for item in items))
        _guarded("the household plot", draw)


def _device_text(devices: object) -> str:
    parts = [(devices["pv_kwp"], "PV {:.1f} kWp"),
             (devices["battery_capacity_kwh"], "battery {:.1f} kWh"),
             (devices["ev_capacity_kwh"], "car {:.0f} kWh"),
             (devices.get("heat_pump_rating_kw", 0.0), "heat pump {:.1f} kW"),
             (devices.get("generator_rating_kw", 0.0), "generator {:.1f} kW")]
    owned = [text.format(size) for size, text in parts if size > 0]
    return ", ".join(owned) if owned else "no devices"


@solara.component
def Seek(model: FeederModel):
    update_counter.get()
    records = model.records

    def seek(step: int) -> None:
        model.seek(step)
        force_update()

    with solara.Card("Seek", margin=0):
        solara.SliderInt("step", value=model.steps, min=0, max=max(model.last_step, 1),
                         on_value=seek, thumb_label="always")
        live = " (live: later steps run the simulation)" if model.live is not None else ""
        solara.Text(f"{records.n_steps} of {records.steps_total} steps recorded{live}; "
                    f"{records.n_households} households on {model.layout.feeder.name}; "
                    f"run folder {records.path}")


@dataclass
class _Setup:
    """What `cosim viz` hands the page: the model it built (so bad input is reported
    before the server starts) and the parameters a reset rebuilds it from."""

    model: FeederModel | None = None
    params: dict = field(default_factory=dict)
    name: str = "cosim"


_setup = _Setup()


def configure(model: FeederModel, params: dict, name: str) -> None:
    """The model the page shows, and `FeederModel(**params)` for Mesa's reset."""
    _setup.model, _setup.params, _setup.name = model, params, name


@solara.component
def Views(model: FeederModel):
    """The four views, the map and the seek bar beside the series and the inspector."""
    with solara.Columns([1, 1]):
        with solara.Column():
            FeederMap(model)
            Seek(model)
        with solara.Column():
            TimeSeries(model)
            Inspector(model)


@solara.component
def Page():
    # one reactive model for Mesa's controls and the views: a reset replaces it for both.
    # The views are laid out here rather than in SolaraViz's draggable grid, whose fixed
    # cells crop a map.
    model = solara.use_reactive(_setup.model)
    if model.value is None:
        solara.Error("no run to show: start the viewer with `cosim viz RUN_DIR` or "
                     "`cosim viz CONFIG --live`")
        return
    SolaraViz(model, components=[], model_params=dict(_setup.params), name=_setup.name)
    Views(model.value)


def page_title(source: str | Path, live: bool) -> str:
    return f"cosim: {'live ' if live else ''}{Path(source).name}"
