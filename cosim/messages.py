"""Messages exchanged on the bus: frozen dataclasses with columnar numpy payloads.

One message carries a whole shard or market (one row per household, market or grid
connection), never one Python object per household. Every message has (step, sender)
and a class-level topic; payload arrays are validated on construction (a row each, a
column per entry for 2-D payloads such as forecasts and actions; equal row counts, right
dtype, finite where a number is required) and each class has an Arrow schema for the
optional messages table. Errors name the sender and the field.

Units: kW, kvar, kWh per step, currency/kWh, kgCO2/kWh, per-unit voltages.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa


class MessageError(ValueError):
    """A malformed message; names the sender, the message type and the field."""


@dataclass(frozen=True)
class Message:
    step: int
    sender: str
    recipient: str = dataclasses.field(default="", kw_only=True)  # "" = every subscriber

    topic: ClassVar[str] = ""
    # payload field -> (numpy dtype, must be finite), or (dtype, finite, 2) for a 2-D
    # payload: one row per household or market, a column per entry
    ARRAYS: ClassVar[dict[str, tuple]] = {}
    # scalar field -> (arrow type, must be finite)
    SCALARS: ClassVar[dict[str, tuple[pa.DataType, bool]]] = {}
    _specs: ClassVar[tuple[tuple[str, np.dtype, bool, int], ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # ARRAYS as (field, numpy dtype, must be finite, dimensions), read once per class
        cls._specs = tuple((name, np.dtype(dtype), finite, ndim[0] if ndim else 1)
                           for name, (dtype, finite, *ndim) in cls.ARRAYS.items())

    def __post_init__(self) -> None:
        length = None
        checked = []  # the float payloads that must be finite
        for name, dtype, finite, dims in self._specs:
            try:
                value = np.array(getattr(self, name), dtype=dtype)  # a copy: ours alone
            except (TypeError, ValueError) as exc:
                raise self._error(name, f"cannot be read as {dtype}: {exc}") from None
            if value.ndim != dims:
                raise self._error(name, f"must be {dims}-D, got shape {value.shape}")
            if length is None:
                length = len(value)
            elif len(value) != length:
                raise self._error(name, f"has {len(value)} rows, the message has {length}")
            if finite and dtype.kind == "f":
                checked.append(value.ravel())
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        if checked:
            # One sum for all of them: it is finite only if every term is (a NaN or an
            # infinity carries through a sum). A check per payload cost a few microseconds
            # each, a third of a small step's messaging. A sum that overflows, or is not
            # finite, is checked payload by payload, which names the field and row.
            with np.errstate(over="ignore", invalid="ignore"):  # (inf - inf, overflow)
                total = np.add.reduce(checked[0] if len(checked) == 1
                                      else np.concatenate(checked))
            if not math.isfinite(total):
                for name, dtype, finite, _ in self._specs:
                    value = getattr(self, name)
                    if finite and dtype.kind == "f" and not np.isfinite(value).all():
                        row = int(np.argwhere(~np.isfinite(value))[0][0])
                        raise self._error(name, f"is not finite at row {row} ({value[row]})")
        for name, (_, finite) in self.SCALARS.items():
            if not finite:  # (some scalars are properties: read them only to check them)
                continue
            value = getattr(self, name)
            if isinstance(value, float) and not np.isfinite(value):
                raise self._error(name, f"is not finite ({value})")

    def _error(self, field: str, reason: str) -> MessageError:
        return MessageError(
            f"{type(self).__name__} from {self.sender!r} at step {self.step}: {field} {reason}")

    @property
    def rows(self) -> int:
        first = next(iter(self.ARRAYS), None)
        return 0 if first is None else len(getattr(self, first))

    @classmethod
    def schema(cls) -> pa.Schema:
        """Arrow schema of `to_arrow()`: step, sender, the scalars, then the payload."""
        fields = [pa.field("step", pa.int64()), pa.field("sender", pa.string())]
        fields += [pa.field(n, t) for n, (t, _) in cls.SCALARS.items()]
        fields += [pa.field(n, pa.from_numpy_dtype(np.dtype(d)) if not ndim
                            else pa.list_(pa.from_numpy_dtype(np.dtype(d))))
                   for n, (d, _, *ndim) in cls.ARRAYS.items()]
        return pa.schema(fields)

    def to_arrow(self) -> pa.Table:
        """The payload as a table, one row per payload row (one row if there is none)."""
        n = max(self.rows, 1) if self.ARRAYS else 1
        columns = {"step": np.full(n, self.step), "sender": [self.sender] * n}
        columns |= {name: [getattr(self, name)] * n for name in self.SCALARS}
        columns |= {name: list(getattr(self, name)) if getattr(self, name).ndim > 1
                    else getattr(self, name) for name in self.ARRAYS}
        return pa.Table.from_pydict(columns, schema=self.schema())

    def replace(self, **changes: object) -> Message:
        return dataclasses.replace(self, **changes)

    def require(self, step: int, field: str, low: float, high: float, meaning: str) -> None:
        """Check a field against [low, high) for a receiver; the error names the sender,
        the step and the first row out of range (by its household, in messages that carry
        a `household` column)."""
        values = getattr(self, field)
        bad = (values < low) | (values >= high)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            row = f"household {self.household[k]}" if hasattr(self, "household") else f"row {k}"
            raise MessageError(f"{type(self).__name__} from {self.sender!r} at step {step}: "
                               f"{row}: {meaning} {values[k]} (allowed {low:g} to {high:g})")


@dataclass(frozen=True)
class PriceSignal(Message):
    """Prices a party offers per market (microgrid): what buyers pay, sellers receive, now
    and as a forecast over the next steps (column 0 is this step; fewer columns near the
    end of the run)."""

    market: np.ndarray
    buy_price: np.ndarray  # currency/kWh paid to import
    sell_price: np.ndarray  # currency/kWh received for export
    buy_forecast: np.ndarray  # [markets, horizon] currency/kWh
    sell_forecast: np.ndarray  # [markets, horizon] currency/kWh

    topic: ClassVar[str] = "price"
    ARRAYS: ClassVar = {"market": ("int64", False), "buy_price": ("float64", True),
                        "sell_price": ("float64", True), "buy_forecast": ("float64", True, 2),
                        "sell_forecast": ("float64", True, 2)}


@dataclass(frozen=True)
class Weather(Message):
    """Exogenous weather for the step."""

    temperature_c: float
    ghi_w_m2: float

    topic: ClassVar[str] = "exogenous"
    SCALARS: ClassVar = {"temperature_c": (pa.float64(), True), "ghi_w_m2": (pa.float64(), True)}


@dataclass(frozen=True)
class MarketData(Message):
    """Exogenous wholesale price and grid carbon intensity for the step."""

    wholesale_price: float  # currency/kWh
    carbon_intensity: float  # kgCO2/kWh

    topic: ClassVar[str] = "exogenous"
    SCALARS: ClassVar = {"wholesale_price": (pa.float64(), True),
                         "carbon_intensity": (pa.float64(), True)}


@dataclass(frozen=True)
class ActionBatch(Message):
    """Raw actions for a shard's externally driven households (the `external` policy), one
    row each in `agents.households.ACTIONS` order, and the bids of its `bidder` households
    (where each one's limit price lies between its export price, 0, and its import price,
    1; NaN for the others); sent by the driver of `Simulation.step`."""

    household: np.ndarray
    action: np.ndarray  # [households, len(ACTIONS)], battery and EV in [-1, 1], others [0, 1]
    bid: np.ndarray  # [households], in [0, 1] for bidders, NaN for external households

    topic: ClassVar[str] = "actions"
    ARRAYS: ClassVar = {"household": ("int64", False), "action": ("float64", True, 2),
                        "bid": ("float64", False)}


@dataclass(frozen=True)
class BidBatch(Message):
    """One shard's orders for the step: quantity > 0 buys, < 0 sells, each at the limit
    price of the household's own marginal value of energy. Not checked for finite values
    here: the market rejects a bad order with a reason and clears everyone else's."""

    household: np.ndarray
    market: np.ndarray
    quantity_kwh: np.ndarray
    limit_price: np.ndarray

    topic: ClassVar[str] = "bids"
    ARRAYS: ClassVar = {"household": ("int64", False), "market": ("int64", False),
                        "quantity_kwh": ("float64", False), "limit_price": ("float64", False)}


@dataclass(frozen=True)
class ClearingResult(Message):
    """What a market operator cleared for one shard's orders: per household the filled
    peer-to-peer quantity (kWh, + bought), the price it traded at and the payment
    (currency, + paid by the household), and why its order was rejected (a code into
    markets.mechanism.REJECTIONS, 0 accepted). What is not filled the household settles
    upstream after dispatch."""

    household: np.ndarray
    market: np.ndarray
    traded_kwh: np.ndarray
    price: np.ndarray  # the price the household traded at, 0 where nothing traded
    payment: np.ndarray
    rejected: np.ndarray

    topic: ClassVar[str] = "clearing"
    ARRAYS: ClassVar = {"household": ("int64", False), "market": ("int64", False),
                        "traded_kwh": ("float64", True), "price": ("float64", True),
                        "payment": ("float64", True), "rejected": ("int8", False)}


@dataclass(frozen=True)
class MarketResult(Message):
    """Each market's clearing: price (nan where nothing traded), traded volume, the
    accepted bid and offered quantities, and what was left unmatched for the layer above
    (kWh)."""

    market: np.ndarray
    price: np.ndarray
    volume_kwh: np.ndarray
    demand_kwh: np.ndarray  # bid to buy
    supply_kwh: np.ndarray  # offered to sell
    unmatched_demand_kwh: np.ndarray
    unmatched_supply_kwh: np.ndarray

    topic: ClassVar[str] = "markets"
    ARRAYS: ClassVar = {"market": ("int64", False), "price": ("float64", False),
                        "volume_kwh": ("float64", True), "demand_kwh": ("float64", True),
                        "supply_kwh": ("float64", True),
                        "unmatched_demand_kwh": ("float64", True),
                        "unmatched_supply_kwh": ("float64", True)}


@dataclass(frozen=True)
class UpstreamPrices(Message):
    """What a market's residual (its households' metered grid energy, after the local
    market) costs and earns upstream, per market (currency/kWh), and the share of it that
    went to or came from the grid rather than other microgrids (MAHTM's layer 3)."""

    market: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray
    import_grid_share: np.ndarray
    export_grid_share: np.ndarray

    topic: ClassVar[str] = "upstream"
    ARRAYS: ClassVar = {"market": ("int64", False), "import_price": ("float64", True),
                        "export_price": ("float64", True),
                        "import_grid_share": ("float64", True),
                        "export_grid_share": ("float64", True)}


@dataclass(frozen=True)
class MemberState(Message):
    """Telemetry a shard sends at the end of a day: each household's device state (kWh
    stored in battery and car, indoor temperature in C, appliance energy waiting per age,
    kWh), which an aggregator leading a Stackelberg game needs to predict its members'
    response to the next day's tariff."""

    household: np.ndarray
    battery_kwh: np.ndarray
    ev_kwh: np.ndarray
    indoor_c: np.ndarray
    backlog_kwh: np.ndarray  # [households, window]

    topic: ClassVar[str] = "telemetry"
    ARRAYS: ClassVar = {"household": ("int64", False), "battery_kwh": ("float64", True),
                        "ev_kwh": ("float64", True), "indoor_c": ("float64", True),
                        "backlog_kwh": ("float64", True, 2)}


@dataclass(frozen=True)
class InjectionBatch(Message):
    """One shard's net power at each grid connection it has households at, summed over
    them, generation positive: one row per connection, what the power flow takes."""

    connection: np.ndarray  # index into the grid actor's connections
    p_kw: np.ndarray
    q_kvar: np.ndarray

    topic: ClassVar[str] = "injections"
    ARRAYS: ClassVar = {"connection": ("int64", False), "p_kw": ("float64", True),
                        "q_kvar": ("float64", True)}


@dataclass(frozen=True)
class MeterBatch(Message):
    """What each household's meter exchanged with the grid over the step, after the market
    and dispatch (kWh, + imported): the energy its retailer bills."""

    household: np.ndarray
    grid_kwh: np.ndarray

    topic: ClassVar[str] = "meters"
    ARRAYS: ClassVar = {"household": ("int64", False), "grid_kwh": ("float64", True)}


@dataclass(frozen=True)
class GridState(Message):
    """The power-flow answer for the step: each copy of the scenario's summary (one copy
    unless `Simulation.from_config(copies=N)`; one row per copy) and connection voltages.
    The step's totals over the copies (sums; the worst voltages and loading; converged
    only if every copy did) are derived from them."""

    iterations: int  # the most any copy took
    balance_kw: float  # injections + substation - losses - feeder loads (should be ~0)
    worst_bus: str  # lowest voltage; without convergence, that of a first-order estimate
    connection_v_pu: np.ndarray  # [copies, grid connections], nan where not converged
    copy_converged: np.ndarray  # [copies]
    copy_violations: np.ndarray  # nodes outside the voltage limits
    copy_v_min_pu: np.ndarray  # nan where not converged
    copy_v_max_pu: np.ndarray
    copy_substation_kw: np.ndarray
    copy_substation_kvar: np.ndarray
    copy_losses_kw: np.ndarray
    copy_losses_kvar: np.ndarray
    copy_max_loading: np.ndarray  # highest line current over its rating (nan: none)
    copy_overloaded_lines: np.ndarray  # lines above their rating

    @property
    def converged(self) -> bool:
        return bool(self.copy_converged.all())

    @property
    def substation_kw(self) -> float:
        return float(self.copy_substation_kw.sum())

    @property
    def substation_kvar(self) -> float:
        return float(self.copy_substation_kvar.sum())

    @property
    def losses_kw(self) -> float:
        return float(self.copy_losses_kw.sum())

    @property
    def losses_kvar(self) -> float:
        return float(self.copy_losses_kvar.sum())

    @property
    def v_min_pu(self) -> float:
        return float(self.copy_v_min_pu.min())

    @property
    def v_max_pu(self) -> float:
        return float(self.copy_v_max_pu.max())

    @property
    def violations(self) -> int:
        return int(self.copy_violations.sum())

    @property
    def max_loading(self) -> float:
        return float(self.copy_max_loading.max())

    @property
    def overloaded_lines(self) -> int:
        return int(self.copy_overloaded_lines.sum())

    topic: ClassVar[str] = "grid"
    ARRAYS: ClassVar = {"connection_v_pu": ("float64", False, 2),
                        "copy_converged": ("bool", False),
                        "copy_violations": ("int64", False),
                        "copy_v_min_pu": ("float64", False),
                        "copy_v_max_pu": ("float64", False),
                        "copy_substation_kw": ("float64", False),
                        "copy_substation_kvar": ("float64", False),
                        "copy_losses_kw": ("float64", False),
                        "copy_losses_kvar": ("float64", False),
                        "copy_max_loading": ("float64", False),
                        "copy_overloaded_lines": ("int64", False)}
    # the totals are properties, written to the messages table as the fields are
    SCALARS: ClassVar = {"converged": (pa.bool_(), False), "iterations": (pa.int64(), False),
                         "substation_kw": (pa.float64(), False),
                         "substation_kvar": (pa.float64(), False),
                         "losses_kw": (pa.float64(), False), "losses_kvar": (pa.float64(), False),
                         "balance_kw": (pa.float64(), False), "v_min_pu": (pa.float64(), False),
                         "v_max_pu": (pa.float64(), False), "violations": (pa.int64(), False),
                         "worst_bus": (pa.string(), False), "max_loading": (pa.float64(), False),
                         "overloaded_lines": (pa.int64(), False)}


ALL_MESSAGES: tuple[type[Message], ...] = (
    PriceSignal, Weather, MarketData, ActionBatch, BidBatch, ClearingResult, MarketResult,
    UpstreamPrices, MemberState, InjectionBatch, MeterBatch, GridState)
