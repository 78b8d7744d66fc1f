"""Simulated residents without a model: their hidden truths, how they phrase the facts, and
that every ablation cell hears the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from agents.hems.resident import PERSONAS, Persona, fact, households, render
from agents.hems.schema import SPEC, HouseholdParameters
from agents.hems.tools import TOOLS


def test_households_are_seeded_and_valid() -> None:
    first, again = households(4, 2), households(4, 2)
    assert [t for _, _, t in first] == [t for _, _, t in again]
    assert len({t.model_dump_json() for _, _, t in first}) > 1  # not all the same house
    assert [p for p, _, _ in first[:4]] == list(PERSONAS[:4])
    assert all(isinstance(t, HouseholdParameters) for _, _, t in first)


@pytest.mark.parametrize("name", ["battery_kwh", "ev_kw", "ev_arrival_h", "comfort_low_c",
                                  "ev_target_soc", "flexible_window_h", "ev_daily_km"])
@pytest.mark.parametrize("persona", PERSONAS[:4])
def test_every_phrasing_of_a_fact_holds_the_true_value(name: str, persona: Persona) -> None:
    # the facts a resident is told are readable by the validators, so a resident who
    # repeats them can be understood; the LLM's rewording is what is tested in evaluate
    spec = SPEC[name]
    value = {"battery_kwh": 13.5, "ev_kw": 7.4, "ev_arrival_h": 18.5, "comfort_low_c": 20.0,
             "ev_target_soc": 0.8, "flexible_window_h": 3.0, "ev_daily_km": 40.0}[name]
    for seed in range(6):
        text = render(spec, value, persona, np.random.default_rng(seed))
        assert spec.close(TOOLS[spec.kind][1](text), value), text


def test_less_expert_residents_use_other_units() -> None:
    spec = SPEC["battery_kwh"]
    expert = {render(spec, 13.5, PERSONAS[0], np.random.default_rng(s)) for s in range(20)}
    novice = {render(spec, 13.5, PERSONAS[3], np.random.default_rng(s)) for s in range(20)}
    assert expert == {"13.5 kWh"}
    assert any("Wh" in t and "kWh" not in t for t in novice)


def test_fact_for_a_missing_device() -> None:
    truth = HouseholdParameters(pv_kwp=3.0)
    rng = np.random.default_rng(0)
    assert fact(SPEC["ev_kwh"], truth, PERSONAS[0], rng) == "You do not have an electric car."
    assert "3 kW" in fact(SPEC["pv_kwp"], truth, PERSONAS[0], rng)


def test_answers_are_cached_and_seeded_per_question() -> None:
    from agents.hems.llm import ChatClient, Endpoint
    from agents.hems.resident import SimulatedResident
    from tests.agents.test_hems_endpoint import FakeServer

    server = FakeServer(["It's 13.5 kWh."])
    try:
        client = ChatClient(Endpoint(url=server.url))
        truth = HouseholdParameters(battery_kwh=13.5, battery_kw=5.0)
        resident = SimulatedResident(client, PERSONAS[2], truth, seed=1)
        spec = SPEC["battery_kwh"]
        assert resident(spec, spec.question, 0) == "It's 13.5 kWh."
        resident(spec, "asked differently", 0)  # another cell, same question: cached
        resident(spec, "Sorry ...", 1)  # asked again: a new answer
        assert len(server.requests) == 2
        first, second = (body for _, body in server.requests)
        assert first["seed"] != second["seed"] and first["temperature"] == 0.7
        assert "Fact: Your home battery capacity is" in first["messages"][-1]["content"]
        assert "13.5" not in str(first["messages"][0])  # the truth only in the fact
        # a fresh resident with the same seed sends the same request
        SimulatedResident(client, PERSONAS[2], truth, seed=1)(spec, spec.question, 0)
        assert server.requests[2][1] == first
    finally:
        server.close()
