"""Simulated residents: a persona, hidden true parameters, and answers written by an LLM.

A `Persona` sets how much the resident knows about energy (expert to non-technical) and
how much they talk. `sample_truth` draws a household's true parameters (which devices it
has, and realistic sizes, times and preferences). For each question the resident's LLM
gets the persona and one fact, the true value phrased the way such a person would know
it (an expert says "13.5 kWh", a non-technical resident may remember "13,500 watt-hours"
or "half past seven in the evening", in Fahrenheit or miles), and answers in its own
words. The agent never sees the truth; the evaluation compares against it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agents.hems.llm import ChatClient
from agents.hems.schema import GATES, HouseholdParameters, Spec

Expertise = Literal["expert", "informed", "layperson", "non_technical"]
Verbosity = Literal["terse", "chatty"]


@dataclass(frozen=True)
class Persona:
    expertise: Expertise
    verbosity: Verbosity

    @property
    def name(self) -> str:
        return f"{self.expertise}/{self.verbosity}"


# in the order `--personas N` takes them: the first four span every expertise level
PERSONAS: tuple[Persona, ...] = (
    Persona("expert", "terse"), Persona("informed", "chatty"),
    Persona("layperson", "terse"), Persona("non_technical", "chatty"),
    Persona("expert", "chatty"), Persona("informed", "terse"),
    Persona("layperson", "chatty"), Persona("non_technical", "terse"),
)

_STYLE = {
    "expert": "You know your equipment well and give exact figures with units.",
    "informed": "You roughly know your equipment and give figures with units.",
    "layperson": "You are not technical; you repeat figures the way you remember them.",
    "non_technical": "You know little about energy and speak in everyday words, but you "
                     "mention the fact you were given.",
}
_TALK = {"terse": "Answer in one short sentence.",
         "chatty": "Answer in two sentences; you like to add a remark about your day."}

_EXAMPLE_TURNS = {
    verbosity: [
        {"role": "user", "content": "Fact: Your car's battery capacity is 60 kWh.\n"
         "Adviser: How big is your car's battery?"},
        {"role": "assistant", "content": "It's 60 kWh." + (
            " We mostly use the car for the school run." if verbosity == "chatty" else "")},
        {"role": "user", "content": "Fact: You do not have a heat pump.\n"
         "Adviser: Do you have a heat pump? If so, what is its rating?"},
        {"role": "assistant", "content": "No, we don't have one." + (
            " The house has gas heating." if verbosity == "chatty" else "")}]
    for verbosity in ("terse", "chatty")}

_NOUN = {"pv": "solar panels", "battery": "a home battery", "ev": "an electric car",
         "heat_pump": "a heat pump", "flexible": "appliances that could run later",
         "generator": "a generator or micro-CHP"}


def sample_truth(rng: np.random.Generator) -> HouseholdParameters:
    """A household's true parameters: devices drawn with realistic shares, values from the
    sizes and habits such devices and residents have."""
    def pick(options: list) -> object:
        return options[int(rng.integers(len(options)))]

    v: dict[str, object] = {}
    if rng.random() < 0.6:
        v["pv_kwp"] = pick([2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0])
    if rng.random() < 0.4:
        v["battery_kwh"], v["battery_kw"] = pick([(5.0, 2.5), (6.5, 3.3), (10.0, 5.0),
                                                  (13.5, 5.0)])
    if rng.random() < 0.6:
        v["ev_kwh"] = pick([40.0, 52.0, 58.0, 64.0, 77.0, 82.0])
        v["ev_kw"] = pick([3.7, 7.4, 11.0])
        v["ev_arrival_h"] = pick([16.5, 17.0, 17.5, 18.0, 18.5, 19.0, 19.5, 20.0, 21.0])
        v["ev_departure_h"] = pick([6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0])
        v["ev_target_soc"] = pick([0.7, 0.8, 0.9, 1.0])
        v["ev_daily_km"] = pick([15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0])
        v["ev_v2g"] = bool(rng.random() < 0.3)
    if rng.random() < 0.5:
        v["heat_pump_kw"] = pick([1.5, 2.0, 2.5, 3.0, 4.0, 5.0])
        low = pick([18.0, 19.0, 20.0, 21.0])
        v["comfort_low_c"], v["comfort_high_c"] = low, low + pick([2.0, 3.0, 4.0])
    if rng.random() < 0.6:
        v["flexible_share"] = pick([0.1, 0.2, 0.3])
        v["flexible_window_h"] = pick([2.0, 3.0, 4.0, 6.0, 8.0])
    if rng.random() < 0.15:
        v["generator_kw"] = pick([1.0, 2.0, 3.0, 5.0])
    return HouseholdParameters.model_validate(v)


_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve").split()


def _spoken_clock(hour: float) -> str:
    h, m = int(hour), round((hour % 1) * 60)
    part = "in the morning" if h < 12 else ("in the afternoon" if h < 17 else "in the evening")
    h12 = _WORDS[h % 12 or 12]
    return {0: f"{h12} o'clock", 30: f"half past {h12}", 15: f"quarter past {h12}"}.get(
        m, f"{h12} {m}") + f" {part}"


def render(spec: Spec, value: float | bool, persona: Persona,
           rng: np.random.Generator) -> str:
    """The true value as this resident knows it: exact for an expert, in other units or
    words the less expert the resident (the agent must convert them)."""
    plain = {"expert": 0, "informed": 0, "layperson": 1, "non_technical": 2}[persona.expertise]
    level = min(2, max(0, plain - int(rng.integers(0, 2))))  # some residents know better
    x = float(value)
    forms: dict[str, list[str]] = {
        "energy": [f"{x:g} kWh", f"{x * 1000:,.0f} Wh", f"{x * 1000:,.0f} watt-hours"],
        "power": ([f"{x:g} kW", f"{x * 1000:,.0f} W", f"{x / 0.23:.0f} amps"]
                  if spec.name == "ev_kw" else
                  [f"{x:g} kW", f"{x * 1000:,.0f} W", f"{x * 1000:,.0f} watts"]),
        "clock": [f"{int(x):02d}:{round(x % 1 * 60):02d}",
                  f"{int(x) % 12 or 12}:{round(x % 1 * 60):02d} {'pm' if x >= 12 else 'am'}",
                  _spoken_clock(x)],
        "temperature": [f"{x:g} degrees Celsius", f"{x:g} degrees",
                        f"{x * 9 / 5 + 32:g} Fahrenheit"],
        "fraction": [f"{x * 100:g}%", f"{x * 100:g} percent", f"{x * 100:g} percent"],
        "duration": [f"{x:g} hours", f"{x:g} hours", f"{x * 60:g} minutes"],
        "distance": [f"{x:g} km", f"{x / 1.609344:.0f} miles", f"{x / 1.609344:.0f} miles"],
    }
    if spec.kind == "yes_no":
        return "yes" if value else "no"
    return forms[spec.kind][level]


def fact(spec: Spec, truth: HouseholdParameters, persona: Persona,
         rng: np.random.Generator) -> str:
    """The one fact the resident's LLM is given for this question."""
    gate = getattr(truth, GATES[spec.device])
    if not gate:
        return f"You do not have {_NOUN[spec.device]}."
    value = getattr(truth, spec.name)
    if spec.kind == "yes_no":
        return ("Your car charger can send power back to the house." if value else
                "Your car charger can only charge the car, not send power back.")
    what = spec.description.split(";")[0]  # "; 0 = none" is for the agent, not a fact
    return f"Your {what} is {render(spec, value, persona, rng)}."


class SimulatedResident:
    """Answers the agent's questions with an LLM that knows one true fact per question.

    Answers are a pure function of (persona, truth, seed, parameter, attempt): the same
    question asked again in another ablation cell gets the same answer, so the cells
    compare their interpreters on identical dialogues."""

    def __init__(self, client: ChatClient, persona: Persona, truth: HouseholdParameters,
                 seed: int, temperature: float = 0.7, max_tokens: int = 40) -> None:
        self.client, self.persona, self.truth, self.seed = client, persona, truth, seed
        self.temperature, self.max_tokens = temperature, max_tokens
        self._cache: dict[tuple[str, int], str] = {}

    def _seed(self, *parts: object) -> int:
        # Python's hash() of a str changes between runs; this must not
        text = "/".join(str(p) for p in (self.seed, self.persona.name, *parts))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")

    def __call__(self, spec: Spec, question: str, attempt: int) -> str:
        key = (spec.name, attempt)
        if key not in self._cache:
            rng = np.random.default_rng(self._seed(spec.name))
            known = fact(spec, self.truth, self.persona, rng)
            again = (" The adviser did not understand your last answer: say it again "
                     "clearly, with the figure." if attempt else "")
            # two worked turns: without them a small model recites its instructions
            # instead of answering, or drops the figure
            messages = [
                {"role": "system", "content": "You play a home owner answering an energy "
                 f"adviser. {_STYLE[self.persona.expertise]} {_TALK[self.persona.verbosity]} "
                 "Use only the fact you are given; never invent other figures."},
                *_EXAMPLE_TURNS[self.persona.verbosity],
                {"role": "user", "content": f"Fact: {known}{again}\nAdviser: {question}"}]
            text = self.client.chat(messages, max_tokens=self.max_tokens,
                                    temperature=self.temperature,
                                    seed=self._seed(spec.name, attempt))
            self._cache[key] = " ".join(text.split()) or "..."
        return self._cache[key]


def households(personas: int, seeds: int) -> list[tuple[Persona, int, HouseholdParameters]]:
    """The evaluation's residents: each of the first `personas` personas with `seeds`
    households each, every household's truth drawn from its own seeded generator."""
    out = []
    for seed in range(seeds):
        for k, persona in enumerate(PERSONAS[:personas]):
            rng = np.random.default_rng([seed, k])
            out.append((persona, seed, sample_truth(rng)))
    return out
