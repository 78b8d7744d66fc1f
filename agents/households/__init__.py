"""Households: devices composed per home, MAHTM's types, placement on a feeder, and the
local observation each home's energy management system acts on."""

from agents.households.composition import (
    ACTIONS,
    SIGNED_ACTIONS,
    HouseholdInputs,
    Households,
    HouseholdState,
    Setpoints,
)
from agents.households.dataset import HouseholdSeries, households_from_homes
from agents.households.observation import FIELDS, observe
from agents.households.placement import Placement, PlacementError, place
from agents.households.typology import HouseholdType, classify, draw_types, has_battery, has_pv

__all__ = ["ACTIONS", "FIELDS", "SIGNED_ACTIONS", "HouseholdInputs", "HouseholdSeries",
           "HouseholdState", "HouseholdType", "Households", "Placement", "PlacementError",
           "Setpoints", "classify", "draw_types", "has_battery", "has_pv",
           "households_from_homes", "observe", "place"]
