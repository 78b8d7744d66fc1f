"""The set-up dialogue with the rule-based interpreter: hand-written answers with known
truth, re-asking after unusable answers, what stays unknown, and the scenario entry."""

from __future__ import annotations

import tomllib

import pytest

from agents.hems.agent import run_dialogue
from agents.hems.entry import home_toml
from agents.hems.evaluate import score
from agents.hems.rules import RuleInterpreter
from agents.hems.schema import SPECS, HouseholdParameters, Spec
from cosim.config import parse_config

# a resident who says things the way people do; truth written down separately
ANSWERS: dict[str, list[str]] = {
    "pv_kwp": ["yes, about 4 kWp on the roof"],
    "battery_kwh": ["the installer said 13,500 Wh"],
    "battery_kw": ["5 kW I think"],
    "ev_kwh": ["It's a Kia with a 64 kWh battery"],
    "ev_kw": ["a 32 amp wallbox"],
    "ev_arrival_h": ["usually around half past six in the evening"],
    "ev_departure_h": ["7:45 am on weekdays"],
    "ev_target_soc": ["at least 80%"],
    "ev_daily_km": ["roughly 25 miles"],
    "ev_v2g": ["no, it only charges"],
    "heat_pump_kw": ["no, we don't have one, gas boiler"],
    "flexible_share": ["maybe 20 percent"],
    "flexible_window_h": ["they can wait 3 hours"],
    "generator_kw": ["nope"],
}
TRUTH = HouseholdParameters(
    pv_kwp=4.0, battery_kwh=13.5, battery_kw=5.0, ev_kwh=64.0, ev_kw=7.4, ev_arrival_h=18.5,
    ev_departure_h=7.75, ev_target_soc=0.8, ev_daily_km=40.2, ev_v2g=False,
    flexible_share=0.2, flexible_window_h=3.0)


def scripted(answers: dict[str, list[str]], log: list[tuple[str, int, str]] | None = None):
    def respond(spec: Spec, question: str, attempt: int) -> str:
        if log is not None:
            log.append((spec.name, attempt, question))
        said = answers[spec.name]
        return said[min(attempt, len(said) - 1)]
    return respond


def test_rules_retrieve_hand_written_answers() -> None:
    asked: list[tuple[str, int, str]] = []
    outcome = run_dialogue(RuleInterpreter(), scripted(ANSWERS, asked))
    rows = score(TRUTH, outcome.values)
    wrong = [r for r in rows if not r["correct"]]
    assert not wrong, wrong
    assert outcome.unknown == []
    # no heat pump: its comfort band is never asked about
    assert not {"comfort_low_c", "comfort_high_c"} & {name for name, _, _ in asked}
    assert outcome.parameters().heat_pump_kw == 0.0


def test_unusable_answers_are_asked_again_then_recorded_unknown() -> None:
    answers = dict(ANSWERS)
    answers["ev_arrival_h"] = ["whenever", "6 pm or 7 pm", "6 pm"]  # vague, contradictory, ok
    answers["ev_departure_h"] = ["early", "it depends", "no idea"]  # never usable
    answers["ev_kwh"] = ["either 40 or 60 kWh", "60 kWh"]
    asked: list[tuple[str, int, str]] = []
    outcome = run_dialogue(RuleInterpreter(), scripted(answers, asked), max_retries=2)
    assert outcome.values["ev_arrival_h"] == 18.0
    assert outcome.values["ev_kwh"] == 60.0
    assert "ev_departure_h" in outcome.unknown and "ev_departure_h" not in outcome.values
    assert [a for name, a, _ in asked if name == "ev_departure_h"] == [0, 1, 2]  # bounded
    reasked = [q for name, a, q in asked if name == "ev_kwh" and a == 1][0]
    assert "two different values" in reasked and "kWh" in reasked
    statuses = [t.status for t in outcome.turns if t.parameter == "ev_arrival_h"]
    assert statuses == ["invalid", "invalid", "ok"]
    # an unknown detail of an existing device takes the typical value, flagged as unknown
    assert outcome.parameters().ev_departure_h == 8.0


def test_contradiction_between_answers_is_asked_again() -> None:
    answers = {name: ["no"] for name in ANSWERS}
    answers.update(heat_pump_kw=["a 3 kW one"], comfort_low_c=["21 degrees"],
                   comfort_high_c=["19 degrees", "23 degrees"])
    outcome = run_dialogue(RuleInterpreter(), scripted(answers))
    turns = [t for t in outcome.turns if t.parameter == "comfort_high_c"]
    assert [t.status for t in turns] == ["invalid", "ok"]
    assert "below the lowest" in turns[0].detail
    assert outcome.values["comfort_high_c"] == 23.0


def test_interview_entry_loads_as_a_scenario_household(tmp_path) -> None:
    outcome = run_dialogue(RuleInterpreter(), scripted(ANSWERS))
    text = home_toml(outcome.parameters(), profile=7, unknown=["ev_daily_km"])
    assert "# not known after asking" in text and "ev_daily_km" in text
    raw = tomllib.loads(text)
    raw["households"]["count"] = 1
    raw["profiles"] = {"dataset": "data"}
    home = parse_config(raw, tmp_path / "scenario.toml").households.homes[0]
    assert home.profile == 7
    for name in ("pv_kwp", "battery_kwh", "battery_kw", "ev_kwh", "ev_v2g", "flexible_share",
                 "heat_pump_kw", "generator_kw"):
        assert getattr(home, name) == pytest.approx(getattr(TRUTH, name)), name
    assert home.ev_kw == pytest.approx(7.36)


def test_interview_command_with_rules(tmp_path, monkeypatch, capsys) -> None:
    from cosim.cli import main

    by_question = {spec.question: ANSWERS[spec.name][0] for spec in SPECS if spec.name in ANSWERS}
    monkeypatch.setattr("builtins.input", lambda prompt: by_question[prompt.split("\n")[0]])
    out = tmp_path / "home.toml"
    assert main(["hems", "interview", "--rules", "--profile", "3", "--out", str(out)]) == 0
    raw = tomllib.loads(out.read_text())
    raw["households"]["count"] = 1
    raw["profiles"] = {"dataset": "data"}
    home = parse_config(raw, tmp_path / "s.toml").households.homes[0]
    assert (home.profile, home.ev_kwh, home.battery_kwh) == (3, 64.0, 13.5)
    assert "ev_arrival_h = 18.5" in out.read_text()
    assert out.with_suffix(".json").exists()


def test_interview_stops_cleanly_at_end_of_input(tmp_path, monkeypatch, capsys) -> None:
    from cosim.cli import main

    def eof(prompt: str) -> str:
        raise EOFError
    monkeypatch.setattr("builtins.input", eof)
    out = tmp_path / "home.toml"
    assert main(["hems", "interview", "--rules", "--out", str(out)]) == 2
    assert "end of input" in capsys.readouterr().err
    assert not out.exists()
