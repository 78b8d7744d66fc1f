"""The validators the HEMS agent calls as tools, and the parameter schema they fill."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.hems.schema import SPEC, SPECS, HouseholdParameters
from agents.hems.tools import (
    ToolError,
    absent,
    check_range,
    clock_hour,
    distance_km,
    duration_h,
    energy_kwh,
    fraction,
    power_kw,
    temperature_c,
    yes_no,
)


@pytest.mark.parametrize(("text", "hours"), [
    ("7:30 pm", 19.5),
    ("around 7:30pm I'd say", 19.5),
    ("19:30", 19.5),
    ("0730", 7.5),
    ("half past seven in the evening", 19.5),
    ("seven thirty pm", 19.5),
    ("quarter to eight in the morning", 7.75),
    ("about 6 in the evening", 18.0),
    ("8 am", 8.0),
    ("12 pm", 12.0),
    ("12 am", 0.0),
    ("noon", 12.0),
    ("midnight", 0.0),
])
def test_clock_hour_reads_times_of_day(text: str, hours: float) -> None:
    assert clock_hour(text) == pytest.approx(hours)


@pytest.mark.parametrize(("tool", "text", "value"), [
    (energy_kwh, "13.5 kWh", 13.5),
    (energy_kwh, "the installer said 13,500 Wh", 13.5),
    (energy_kwh, "thirteen and a half kilowatt hours", 13.5),
    (energy_kwh, "It's a 60 kWh Kia", 60.0),
    (energy_kwh, "0.5 MWh", 500.0),
    (power_kw, "a 7.4 kW wallbox", 7.4),
    (power_kw, "3,000 W", 3.0),
    (power_kw, "4 kWp on the roof", 4.0),
    (power_kw, "32 amps", 7.36),
    (distance_km, "40 miles", 64.37376),
    (distance_km, "25 km", 25.0),
    (temperature_c, "68 F", 20.0),
    (temperature_c, "68 degrees Fahrenheit", 20.0),
    (temperature_c, "twenty degrees", 20.0),
    (fraction, "80%", 0.8),
    (fraction, "80 percent", 0.8),
    (fraction, "0.8", 0.8),
    (fraction, "three quarters full", 0.75),
    (duration_h, "90 minutes", 1.5),
    (duration_h, "half an hour", 0.5),
    (duration_h, "4 hours", 4.0),
])
def test_units_are_converted_to_the_schema_unit(tool, text: str, value: float) -> None:
    assert tool(text) == pytest.approx(value)


def test_yes_no_and_absence() -> None:
    assert yes_no("yes it can") is True
    assert yes_no("no, it only charges") is False
    with pytest.raises(ToolError, match="neither"):
        yes_no("maybe")
    assert absent("No, we don't have one")
    assert not absent("we have a 5 kWh one")


@pytest.mark.parametrize(("tool", "text", "match"), [
    (energy_kwh, "either 40 or 60 kWh", "two different values"),
    (energy_kwh, "between 40 and 60 kWh", "two different values"),
    (clock_hour, "at 6 pm or 7 pm", "two different times"),
    (power_kw, "a 10 kWh battery", "not a unit of power"),
    (energy_kwh, "no idea really", "no energy value"),
    (clock_hour, "whenever I like", "no time of day"),
    (fraction, "not much", "no share"),
])
def test_unparseable_or_contradictory_text_is_an_error(tool, text: str, match: str) -> None:
    with pytest.raises(ToolError, match=match):
        tool(text)


def test_check_range_names_the_range() -> None:
    assert check_range(SPEC["ev_kw"], 7.4) == 7.4
    with pytest.raises(ToolError, match=r"ev_kw = 40 kW is outside 0 to 22 kW"):
        check_range(SPEC["ev_kw"], 40)
    with pytest.raises(ToolError, match="must be a number"):
        check_range(SPEC["ev_kw"], True)
    assert check_range(SPEC["ev_arrival_h"], 24) == 0.0  # 24:00 is midnight


def test_schema_covers_every_home_key_and_checks_consistency() -> None:
    from cosim.config import HomeConfig

    names = {s.name for s in SPECS}
    assert set(HomeConfig.model_fields) - {"profile", "policy"} <= names
    assert all(s.low <= s.default <= s.high for s in SPECS if s.kind != "yes_no")
    with pytest.raises(ValidationError, match="give both or neither"):
        HouseholdParameters(battery_kwh=10.0)
    with pytest.raises(ValidationError, match="comfort_low_c"):
        HouseholdParameters(heat_pump_kw=3.0, comfort_low_c=23.0, comfort_high_c=20.0)
    with pytest.raises(ValidationError):
        HouseholdParameters(pv_kwp=500.0)


def test_tolerance_is_relative_for_sizes_and_absolute_for_times() -> None:
    assert SPEC["ev_kwh"].close(63.0, 60.0)  # within 10 %
    assert not SPEC["ev_kwh"].close(70.0, 60.0)
    assert SPEC["ev_arrival_h"].close(19.6, 19.5)
    assert not SPEC["ev_arrival_h"].close(7.5, 19.5)  # am for pm is wrong
    assert not SPEC["pv_kwp"].close(None, 4.0)  # unknown is wrong
    assert SPEC["pv_kwp"].close(0.0, 0.0)
