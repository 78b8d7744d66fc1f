"""Heat pumps heating 1R1C houses, for many households at once, with a comfort band.

House model (one thermal resistance R to outdoors, one capacitance C), solved exactly over a
step of dt hours with the heat input held constant:

    T_in' = a T_in + (1 - a) (T_out + R (COP p_el + gains)),   a = exp(-dt / (R C))

T in degrees C, R in K/kW (1 / heat-loss coefficient), C in kWh/K, p_el the heat pump's
electric power in kW, gains the internal and solar heat gains in kW. COP = `cop` +
`cop_slope` (T_out - 7 C), at least 1: constant with the default slope 0 (FACMAC uses 3), or
falling with colder air as for an air-source unit.

Comfort band: [`comfort_low_c`, `comfort_high_c`] during `comfort_hours` (default FACMAC's
07-10 and 17-22 h, 20 +/- 2 C) and the wider set-back band [`setback_low_c`,
`setback_high_c`] otherwise, judged at the end of each step. The feasible power interval is
the one that ends the step inside the band, clipped to [0, `power_kw`], so any action keeps
comfort whenever the heat pump can; when it cannot (too cold for its rating, or too warm
without cooling), `discomfort_kh` reports the degree-hours outside the band. The low end
also pre-heats: a house must never be so cold that full power from the next step on would
miss a band that rises within `PREHEAT_H` hours (the set-back ending at 07:00), assuming the
outdoor temperature and gains of now. Without it a house left at the set-back all night
could not reach the morning band in one step.

With the profile data set: T_out is `outdoor_temp_c`, and R = 1 / `heat_loss_kw_per_k`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch

from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import DeviceError, OnDevice, Parameters, to_interval

COMFORT_HOURS = ((7.0, 10.0), (17.0, 22.0))
COP_REFERENCE_C = 7.0  # outdoor temperature at which COP equals `cop`
PREHEAT_H = 12.0  # how far ahead the low end of the power interval looks for a rising band
MAX_HOURS_KEPT = 4096  # clock hours whose band and pre-heat schedule are kept (`_per_hour`)
T = TypeVar("T")


class HeatInputs(NamedTuple):
    """Exogenous inputs of one step (scalars broadcast over households)."""

    outdoor_c: torch.Tensor | float
    hour_end: torch.Tensor | float  # local clock hour at the end of the step
    gains_kw: torch.Tensor | float = 0.0  # internal and solar heat gains


@dataclass(frozen=True)
class HeatPump(OnDevice):
    """One heat pump and house per household; without a heat pump `power_kw` is zero (the
    house still cools and warms with the weather, and no discomfort is counted)."""

    power_kw: torch.Tensor  # electric rating
    cop: torch.Tensor  # at 7 C outdoors
    cop_slope: torch.Tensor  # per K of outdoor temperature
    resistance_k_per_kw: torch.Tensor
    capacitance_kwh_per_k: torch.Tensor
    comfort_low_c: torch.Tensor
    comfort_high_c: torch.Tensor
    setback_low_c: torch.Tensor
    setback_high_c: torch.Tensor
    comfort_hours: tuple[tuple[float, float], ...] = COMFORT_HOURS

    @classmethod
    def create(
        cls,
        households: Sequence[object],
        power_kw: object,
        resistance_k_per_kw: object = 5.0,
        capacitance_kwh_per_k: object = 5.0,
        cop: object = 3.0,
        cop_slope: object = 0.0,
        comfort_low_c: object = 18.0,
        comfort_high_c: object = 22.0,
        setback_low_c: object = 16.0,
        setback_high_c: object = 24.0,
        comfort_hours: Sequence[tuple[float, float]] = COMFORT_HOURS,
    ) -> HeatPump:
        """Validated fleet. Defaults: FACMAC's band and COP; R = 5 K/kW (a heat-loss
        coefficient of 200 W/K) and C = 5 kWh/K (ISO 13790 'medium' mass, 100 m2), a time
        constant of 25 h. `comfort_hours`: (start, end) clock hours, shared by all; a
        window with start > end spans midnight."""
        p = Parameters("heat_pump", households, power_kw=power_kw, cop=cop, cop_slope=cop_slope,
                       resistance_k_per_kw=resistance_k_per_kw,
                       capacitance_kwh_per_k=capacitance_kwh_per_k, comfort_low_c=comfort_low_c,
                       comfort_high_c=comfort_high_c, setback_low_c=setback_low_c,
                       setback_high_c=setback_high_c)
        p.finite().non_negative("power_kw").positive("resistance_k_per_kw",
                                                     "capacitance_kwh_per_k")
        p.check(p["cop"] < 1, "cop", "must be at least 1")
        p.ordered("comfort_low_c", "comfort_high_c").ordered("setback_low_c", "setback_high_c")
        hours = tuple((float(a), float(b)) for a, b in comfort_hours)
        for a, b in hours:
            if not (0 <= a <= 24 and 0 <= b <= 24 and a != b):
                raise DeviceError(f"heat_pump comfort_hours: window ({a}, {b}) must be two "
                                  f"different clock hours in [0, 24]")
        return cls(**p.values, comfort_hours=hours)

    def coefficient(self, outdoor_c: torch.Tensor | float) -> torch.Tensor:
        """COP at `outdoor_c`, at least 1."""
        t = torch.as_tensor(outdoor_c, dtype=torch.float64, device=self.cop.device)
        return torch.clamp(self.cop + self.cop_slope * (t - COP_REFERENCE_C), min=1.0)

    def _occupied(self, hour: torch.Tensor | float) -> torch.Tensor:
        """True where local clock `hour` falls in a comfort window."""
        h = torch.remainder(torch.as_tensor(hour, dtype=torch.float64,
                                            device=self.comfort_low_c.device), 24.0)
        occupied = torch.zeros_like(h, dtype=torch.bool)
        for start, end in self.comfort_hours:
            inside = (h >= start) & (h < end) if start < end else (h >= start) | (h < end)
            occupied = occupied | inside
        return occupied

    def band(self, hour: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) comfort limits in degrees C at local clock `hour`. The same tensors
        for the same clock hour (callers must not change them in place)."""
        limits = (self.comfort_low_c, self.setback_low_c, self.comfort_high_c,
                  self.setback_high_c)
        return self._per_hour("_band_by_hour", hour, 0.0, lambda: self._band(hour),
                              cacheable=not any(t.requires_grad for t in limits))

    def _band(self, hour: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        occupied = self._occupied(hour)
        return (torch.where(occupied, self.comfort_low_c, self.setback_low_c),
                torch.where(occupied, self.comfort_high_c, self.setback_high_c))

    def _per_hour(self, name: str, hour: torch.Tensor | float, dt_h: float,
                  make: Callable[[], T], cacheable: bool = True) -> T:
        """make(), kept per clock hour and step length where the hour is one number: a
        co-simulation step asks for the same hour's band three times (observation,
        limits, discomfort), and each answer is a dozen small tensor operations. A batch
        of hours (a learner's rollout, a plan) is computed afresh."""
        one = isinstance(hour, (int, float)) or (
            isinstance(hour, torch.Tensor) and hour.dim() == 0 and not hour.requires_grad)
        if not (cacheable and one):
            return make()
        cache = self.__dict__.setdefault(name, {})  # not a field: `replace` starts afresh
        key = (float(hour), dt_h)
        if key not in cache:
            if len(cache) >= MAX_HOURS_KEPT:
                cache.clear()
            cache[key] = make()
        return cache[key]

    def decay(self, dt_h: float) -> torch.Tensor:
        """exp(-dt / RC): the share of the indoor-outdoor difference left after a step.
        Kept per step length, as every step needs it twice (unless R or C need gradients)."""
        r, c = self.resistance_k_per_kw, self.capacitance_kwh_per_k
        if r.requires_grad or c.requires_grad:
            return torch.exp(-dt_h / (r * c))
        cache = self.__dict__.setdefault("_decay", {})  # not a field: `replace` starts afresh
        if dt_h not in cache:
            cache[dt_h] = torch.exp(-dt_h / (r * c))
        return cache[dt_h]

    def _response(self, indoor_c: torch.Tensor, dt_h: float,
                  inputs: HeatInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(end temperature with the heat pump off, K of end temperature per kW electric)."""
        r = self.resistance_k_per_kw
        a = self.decay(dt_h)
        free = a * indoor_c + (1 - a) * (inputs.outdoor_c + r * inputs.gains_kw)
        return free, (1 - a) * r * self.coefficient(inputs.outdoor_c)

    def preheat_c(self, dt_h: float, inputs: HeatInputs) -> torch.Tensor:
        """The lowest temperature (C) at the end of this step from which full power can
        still meet every band low of the next `PREHEAT_H` hours, at today's outdoor
        temperature and gains: max over k of (low_k - T_full) / a^k + T_full, where T_full
        is the temperature full power settles at and a the per-step decay.

        Only two lows occur (comfort and set-back), and for each the term is monotone in k
        (falling while T_full is above the low, rising otherwise), so the maximum over k is
        taken at the first or last step ahead in that band: [households] work, not
        [steps ahead, households]."""
        r = self.resistance_k_per_kw
        a = self.decay(dt_h)
        full_c = inputs.outdoor_c + r * (self.coefficient(inputs.outdoor_c) * self.power_kw
                                         + inputs.gains_kw)
        need = torch.full_like(full_c * a, -math.inf)
        schedule = self._per_hour("_ahead_by_hour", inputs.hour_end, dt_h,
                                  lambda: self._ahead(inputs.hour_end, dt_h, a.device))
        for (first, last, any_), low in zip(schedule, (self.comfort_low_c,
                                                       self.setback_low_c)):
            ahead = torch.where(low <= full_c, first, last)
            term = (low - full_c) / a ** ahead + full_c
            need = torch.maximum(need, torch.where(any_, term, -math.inf))
        return need

    def _ahead(self, hour_end: torch.Tensor | float, dt_h: float, device: torch.device
               ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """For the comfort windows, then the set-back hours, of the `PREHEAT_H` hours after
        `hour_end`: the first and last step ahead (1-based, float) inside them, and whether
        any is."""
        steps = max(1, round(PREHEAT_H / dt_h))
        hour = torch.as_tensor(hour_end, dtype=torch.float64, device=device)
        k = torch.arange(1, steps + 1, dtype=torch.float64, device=device)
        occupied = self._occupied(hour + k.reshape(-1, *([1] * hour.dim())) * dt_h)
        out = []
        for inside in (occupied, ~occupied):
            first = inside.to(torch.int8).argmax(0).to(torch.float64) + 1
            last = steps - inside.flip(0).to(torch.int8).argmax(0).to(torch.float64)
            out.append((first, last, inside.any(0)))
        return out[0], out[1]

    def limits(self, indoor_c: torch.Tensor, dt_h: float,
               inputs: HeatInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Electric power interval (kW) that ends the step inside the comfort band and warm
        enough to pre-heat for the next one (`preheat_c`), clipped to [0, power_kw]: the
        whole rating is allowed when the band is out of reach, and the band of now wins
        over pre-heating."""
        free, gain = self._response(indoor_c, dt_h, inputs)
        low, high = self.band(inputs.hour_end)
        low = torch.maximum(low, self.preheat_c(dt_h, inputs))
        zero = torch.zeros_like(free)
        hi = torch.minimum(torch.maximum((high - free) / gain, zero), self.power_kw)
        lo = torch.minimum(torch.maximum((low - free) / gain, zero), hi)
        return lo, hi

    def from_action(self, action: torch.Tensor, indoor_c: torch.Tensor, dt_h: float,
                    inputs: HeatInputs) -> torch.Tensor:
        """Raw action in [0, 1] mapped affinely onto the feasible interval."""
        lo, hi = self.limits(indoor_c, dt_h, inputs)
        return to_interval(action, lo, hi, signed=False)

    def step(self, indoor_c: torch.Tensor, power_kw: torch.Tensor, dt_h: float,
             inputs: HeatInputs) -> torch.Tensor:
        """Indoor temperature at the end of the step."""
        free, gain = self._response(indoor_c, dt_h, inputs)
        return free + gain * power_kw

    def discomfort_kh(self, indoor_next: torch.Tensor, hour_end: torch.Tensor | float,
                      dt_h: float) -> torch.Tensor:
        """Degree-hours outside the band over the step (judged at its end); zero for
        households without a heat pump."""
        low, high = self.band(hour_end)
        outside = torch.relu(low - indoor_next) + torch.relu(indoor_next - high)
        return outside * dt_h * (self.power_kw > 0)

    def flows(self, indoor_c: torch.Tensor, power_kw: torch.Tensor, dt_h: float,
              inputs: HeatInputs) -> EnergyFlows:
        """Bookkeeping: electricity + ambient heat + gains = heat stored in the house (C dT)
        + heat lost to outdoors (the integral of (T_in - T_out) / R over the step, from the
        exact solution of the ODE)."""
        r, c = self.resistance_k_per_kw, self.capacitance_kwh_per_k
        cop = self.coefficient(inputs.outdoor_c)
        heat_kw = cop * power_kw + inputs.gains_kw
        a = self.decay(dt_h)
        settle_c = inputs.outdoor_c + r * heat_kw  # where the house would end up
        lost = (settle_c - inputs.outdoor_c) / r * dt_h + c * (indoor_c - settle_c) * (1 - a)
        stored = c * (self.step(indoor_c, power_kw, dt_h, inputs) - indoor_c)
        source = ((cop - 1) * power_kw + inputs.gains_kw) * dt_h
        shape = stored.shape
        return EnergyFlows(torch.broadcast_to(source, shape),
                           torch.broadcast_to(power_kw * dt_h, shape), stored,
                           torch.broadcast_to(lost, shape), torch.zeros_like(stored))
