"""The dialogue agent: asks for each parameter, reads the answer, validates, asks again.

`Dialogue` walks the schema's parameters in order (a device's details only once the
resident has one), asks each question through a `respond` callback (a terminal, or a
simulated resident), hands the answer to an interpreter and keeps the value only when it
passes the schema's range and the cross-checks against earlier answers. Anything else
(no value in the answer, two values, out of range, a contradiction, a model reply that is
not valid JSON) makes it ask again, at most `max_retries` times; what stays unknown is
recorded, never guessed into the result.

`LLMInterpreter` reads an answer with a chat model, in one of four modes (the paper's
ablation): with ReAct the model reasons and calls the parameter's validator from
`agents.hems.tools` on the part of the answer that holds the value, sees the validator's
result or error as an observation and may try again; without ReAct it must state the
value in the schema's unit itself. Few-shot prompting puts worked examples before the
question. Either way the reply must be JSON of a fixed shape: a reply that is not is
retried with the parse error shown, then reported as `bad_reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.hems.llm import ChatClient
from agents.hems.schema import GATES, SPEC, SPECS, HouseholdParameters, Spec
from agents.hems.tools import TOOL_BY_NAME, TOOLS, ToolError, check_range

Status = Literal["ok", "unknown", "invalid", "bad_reply"]
Value = float | bool


@dataclass
class Reading:
    """An interpreter's reading of one answer: the value (schema unit) when `status` is
    ok; otherwise why not, in `detail`. `trace`: the model's replies and tool calls."""

    status: Status
    value: Value | None = None
    detail: str = ""
    trace: list[dict] = field(default_factory=list)


class Interpreter(Protocol):
    name: str

    def interpret(self, spec: Spec, question: str, answer: str) -> Reading: ...


# -- the model's replies -------------------------------------------------------------------

class _DirectReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float | bool | None


class _ReactReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thought: str
    action: str
    input: str


def _direct_schema() -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["value"],
            "properties": {"value": {"type": ["number", "boolean", "null"]}}}


def _react_schema(tool: str) -> dict:
    # short fields: a long thought from a small model runs out of tokens mid-JSON
    return {"type": "object", "additionalProperties": False,
            "required": ["thought", "action", "input"],
            "properties": {"thought": {"type": "string", "maxLength": 100},
                           "action": {"type": "string", "enum": [tool, "finish", "unknown"]},
                           "input": {"type": "string", "maxLength": 60}}}


_TASK = ("You read a home owner's answer and extract one setting for a home energy "
         "system. A device the owner does not have has size 0.")
_DIRECT = (_TASK + ' Reply with JSON only: {"value": the number in the unit asked (true or '
           'false for yes/no), or null if the answer does not say}.')


def _react_system(tool: str, kind_text: str) -> str:
    return (_TASK + " Think, then act. Reply with JSON only: "
            '{"thought": "...", "action": "...", "input": "..."}. Actions: '
            f'"{tool}" reads {kind_text} from the text in "input" and checks it; '
            '"finish" gives the value in "input" when the owner stated it in the unit asked; '
            '"unknown" when the answer does not say.')


_KIND_TEXT = {"energy": "an energy and converts it to kWh",
              "power": "a power and converts it to kW",
              "clock": "a time of day and converts it to hours 0-24",
              "temperature": "a temperature and converts it to degC",
              "fraction": "a share or percentage and converts it to 0-1",
              "duration": "a duration and converts it to hours",
              "distance": "a distance and converts it to km",
              "yes_no": "a yes or no"}


# Worked examples, one per kind of quantity (the one matching the question is shown, and
# two general ones: a unit conversion and a missing device). Each: setting line, answer,
# the direct reply's value, and the ReAct step (action, input).
@dataclass(frozen=True)
class _Example:
    spec: str
    answer: str
    value: Value | None
    action: str
    input: str
    thought: str


_EXAMPLES: dict[str, _Example] = {
    "energy": _Example("battery_kwh", "the installer said 13,500 Wh", 13.5, "energy_kwh",
                       "13,500 Wh", "The capacity is given in Wh; convert it."),
    "power": _Example("ev_kw", "it's a 32 amp wallbox I believe", 7.36, "power_kw", "32 amp",
                      "Amps at 230 V give the power."),
    "clock": _Example("ev_arrival_h", "usually around half past seven in the evening", 19.5,
                      "clock_hour", "half past seven in the evening", "A time of day."),
    "temperature": _Example("comfort_low_c", "I'd say 68 Fahrenheit", 20.0, "temperature_c",
                            "68 Fahrenheit", "Fahrenheit must become Celsius."),
    "fraction": _Example("ev_target_soc", "I want it at least 90% full", 0.9, "fraction",
                         "90%", "A percentage."),
    "duration": _Example("flexible_window_h", "they can wait an hour and a half", 1.5,
                         "duration_h", "an hour and a half", "A duration."),
    "distance": _Example("ev_daily_km", "around 25 miles a day", 40.2, "distance_km",
                         "25 miles", "Miles must become km."),
    "yes_no": _Example("ev_v2g", "no, it only charges", False, "yes_no", "no, it only charges",
                       "The owner says no."),
    "absent": _Example("generator_kw", "no, we don't have anything like that", 0.0, "finish",
                       "0", "The owner has none, so the size is 0."),
}


def _setting_line(spec: Spec) -> str:
    unit = "" if spec.kind == "yes_no" else f", in {spec.unit}"
    return f"Setting: {spec.describe()}{unit}\nAnswer: "


class LLMInterpreter:
    """Reads answers with a chat model; `react` and `few_shot` select the ablation cell."""

    def __init__(self, client: ChatClient, react: bool = True, few_shot: bool = True,
                 react_steps: int = 3, reply_retries: int = 2,
                 max_tokens: int | None = None) -> None:
        self.client, self.react, self.few_shot = client, react, few_shot
        self.react_steps, self.reply_retries = react_steps, reply_retries
        # a direct reply is one short JSON object; a ReAct step adds a thought and an input
        self.max_tokens = max_tokens or (72 if react else 24)
        self.name = ("react" if react else "direct") + ("+few-shot" if few_shot else "")

    def _examples(self, spec: Spec) -> list[dict[str, str]]:
        if not self.few_shot:
            return []
        chosen = [_EXAMPLES[spec.kind]]
        chosen += [_EXAMPLES[k] for k in ("energy", "absent") if _EXAMPLES[k] not in chosen]
        turns = []
        for ex in chosen:
            turns.append({"role": "user", "content": _setting_line(SPEC[ex.spec]) + ex.answer})
            if self.react:
                # the action only: a successful validator ends the reading, so an
                # observation turn would only lengthen the prompt
                step = {"thought": ex.thought, "action": ex.action, "input": ex.input}
                turns.append({"role": "assistant", "content": json.dumps(step)})
            else:
                turns.append({"role": "assistant", "content": json.dumps({"value": ex.value})})
        return turns

    def interpret(self, spec: Spec, question: str, answer: str) -> Reading:
        tool = TOOLS[spec.kind][0]
        system = _react_system(tool, _KIND_TEXT[spec.kind]) if self.react else _DIRECT
        messages = [{"role": "system", "content": system}, *self._examples(spec),
                    {"role": "user", "content": _setting_line(spec) + answer}]
        trace: list[dict] = []
        steps = self.react_steps if self.react else 1
        last = "no reply"
        for _ in range(steps):
            reply = self._reply(messages, _ReactReply if self.react else _DirectReply,
                                _react_schema(tool) if self.react else _direct_schema(), trace)
            if reply is None:
                return Reading("bad_reply", detail=trace[-1]["error"], trace=trace)
            if not self.react:
                return _finish(spec, reply.value, trace)
            if reply.action == "unknown":
                return Reading("unknown", detail="the model found no value", trace=trace)
            if reply.action == "finish":
                return _finish(spec, _number(reply.input), trace)
            if reply.action not in TOOL_BY_NAME:  # when the endpoint ignores the enum
                observation = f"error: no action {reply.action!r}; use {tool}, finish or unknown"
            else:
                try:
                    value = check_range(spec, TOOL_BY_NAME[reply.action](reply.input))
                    trace.append({"tool": reply.action, "input": reply.input, "result": value})
                    return Reading("ok", value, trace=trace)
                except ToolError as exc:
                    observation = f"error: {exc}"
            trace.append({"tool": reply.action, "input": reply.input, "result": observation})
            last = observation
            messages += [{"role": "assistant", "content": reply.model_dump_json()},
                         {"role": "user", "content": f"Observation: {observation}"}]
        return Reading("invalid", detail=last, trace=trace)

    def _reply(self, messages: list[dict[str, str]], shape: type[BaseModel], schema: dict,
               trace: list[dict]) -> BaseModel | None:
        """The model's reply parsed into `shape`, asking again with the error shown when it
        is not valid JSON of that shape; None after `reply_retries` failed retries."""
        attempt_messages = list(messages)
        for _ in range(1 + self.reply_retries):
            text = self.client.chat(attempt_messages, schema=schema, max_tokens=self.max_tokens)
            try:
                reply = shape.model_validate(json.loads(text))
                trace.append({"reply": text})
                return reply
            except (json.JSONDecodeError, ValidationError) as exc:
                error = (f"not valid JSON: {exc.msg}" if isinstance(exc, json.JSONDecodeError)
                         else f"wrong shape: {exc.errors()[0]['msg']}")
                trace.append({"reply": text, "error": error})
                attempt_messages = [*messages, {"role": "assistant", "content": text},
                                    {"role": "user", "content": f"That reply was {error}. "
                                     "Reply with the JSON object only."}]
        return None


def _number(text: str) -> Value | None:
    text = text.strip().lower()
    if text in ("true", "yes"):
        return True
    if text in ("false", "no"):
        return False
    try:
        return float(text)
    except ValueError:
        return None


def _finish(spec: Spec, value: Value | None, trace: list[dict]) -> Reading:
    if value is None:
        return Reading("unknown", detail="the model gave no value", trace=trace)
    if spec.kind == "yes_no" and not isinstance(value, bool):
        value = bool(value) if value in (0, 1) else value  # 0/1 for false/true is fine
    try:
        return Reading("ok", check_range(spec, value), trace=trace)
    except ToolError as exc:
        return Reading("invalid", detail=str(exc), trace=trace)


# -- the dialogue --------------------------------------------------------------------------

@dataclass
class Turn:
    """One question and answer, and how it was read."""

    parameter: str
    attempt: int  # 0 for the first asking
    question: str
    answer: str
    status: Status
    value: Value | None
    detail: str
    trace: str  # JSON: the model's replies and tool calls


@dataclass
class Outcome:
    """What a dialogue retrieved: the values read (schema units), the parameters that
    stayed unknown after every retry, and every turn."""

    values: dict[str, Value] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def parameters(self) -> HouseholdParameters:
        """Validated parameters. Unknown device sizes mean no device (nothing is assumed
        installed); an unknown detail of a device the resident has takes the schema's
        typical value. Which ones those are stays in `unknown`."""
        values: dict[str, Value] = {}
        for spec in SPECS:
            if spec.is_gate:
                values[spec.name] = self.values.get(spec.name, 0.0)
            elif self.values.get(GATES[spec.device]):
                values[spec.name] = self.values.get(spec.name, spec.typical)
            # else: no device, and its details keep the schema defaults
        return HouseholdParameters.model_validate(values)

    def rows(self) -> list[dict]:
        return [asdict(t) for t in self.turns]


def _contradiction(spec: Spec, value: Value, values: dict[str, Value]) -> str | None:
    """Why `value` cannot stand beside the answers so far, or None."""
    if spec.name in ("battery_kw", "ev_kw") and not value:
        return f"{spec.name} must be above 0 for a device that exists"
    if spec.name == "comfort_high_c" and "comfort_low_c" in values \
            and value < values["comfort_low_c"]:
        return (f"the highest comfortable temperature ({value:g} degC) is below the lowest "
                f"({values['comfort_low_c']:g} degC)")
    if spec.name == "ev_departure_h" and value == values.get("ev_arrival_h"):
        return "the car cannot leave at the time it arrives"
    return None


Respond = Callable[[Spec, str, int], str]  # (parameter, question, attempt) -> answer


_HINT = {"energy": "in kWh", "power": "in kW", "clock": "as a time such as 7:30 pm",
         "temperature": "in degrees Celsius", "fraction": "as a percentage",
         "duration": "in hours", "distance": "in km or miles", "yes_no": "as yes or no"}


def reask(spec: Spec, reading: Reading) -> str:
    """The follow-up question after an unusable answer: what went wrong, and the form."""
    why = {"unknown": "I could not find the value in your answer.",
           "bad_reply": "I could not process your answer.",
           "invalid": f"I could not use that ({reading.detail})."}[reading.status]
    return (f"Sorry, {why} {spec.question} Please answer {_HINT[spec.kind]}, or say if you "
            "do not know.")


def run_dialogue(interpreter: Interpreter, respond: Respond, max_retries: int = 2,
                 on_turn: Callable[[Turn], None] | None = None,
                 only: Sequence[str] | None = None) -> Outcome:
    """Ask for every applicable parameter (of `only`, when given), each at most
    1 + `max_retries` times."""
    outcome = Outcome()
    for spec in SPECS:
        if only is not None and spec.name not in only:
            continue
        if not spec.is_gate and not outcome.values.get(GATES[spec.device]):
            continue  # no such device (or not known to exist): nothing to ask about it
        question = spec.question
        for attempt in range(1 + max_retries):
            answer = respond(spec, question, attempt)
            reading = interpreter.interpret(spec, question, answer)
            if reading.status == "ok":
                assert reading.value is not None
                why = _contradiction(spec, reading.value, outcome.values)
                if why:
                    reading = Reading("invalid", None, why, reading.trace)
            turn = Turn(spec.name, attempt, question, answer, reading.status,
                        reading.value, reading.detail, json.dumps(reading.trace, default=str))
            outcome.turns.append(turn)
            if on_turn:
                on_turn(turn)
            if reading.status == "ok":
                assert reading.value is not None
                outcome.values[spec.name] = reading.value
                break
            question = reask(spec, reading)
        else:
            outcome.unknown.append(spec.name)
    return outcome
