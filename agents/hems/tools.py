"""Validators that read a quantity out of a resident's words: the agent's tools.

Each tool takes free text ("about 13.5 kWh I think", "half past seven in the evening",
"40 miles") and returns the value in the schema's unit (kWh, kW, hour of the day, degC,
fraction, hours, km, yes/no), or raises `ToolError` saying what is wrong in words the
agent can act on: no quantity found, two different quantities (a contradictory answer), a
unit of the wrong dimension, a value out of range. The same functions serve the ReAct
agent (as actions whose errors come back as observations) and the rule-based interpreter
(applied to the whole answer), so both read units the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agents.hems.schema import Spec


class ToolError(ValueError):
    """The text holds no usable value; the message says why (it is shown to the agent)."""


# -- numbers written as words -----------------------------------------------------------

_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_FRACTIONS = {"half": 0.5, "quarter": 0.25, "quarters": 0.25, "third": 1 / 3, "thirds": 1 / 3}
_WORD = r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|" \
        r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|" \
        r"sixty|seventy|eighty|ninety|hundred|thousand)"
_WORD_RUN = re.compile(rf"\b{_WORD}(?:[\s-]+(?:and\s+)?{_WORD})*(?:\s+and\s+an?\s+half)?\b",
                       re.IGNORECASE)


def _word_value(words: str) -> float:
    total, current = 0.0, 0.0
    half = re.search(r"and\s+an?\s+half$", words, re.IGNORECASE)
    words = words[:half.start()] if half else words
    for word in re.split(r"[\s-]+", words.lower()):
        if word in _SMALL:
            current += _SMALL[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word == "thousand":
            total += max(current, 1) * 1000
            current = 0
    return total + current + (0.5 if half else 0.0)


def words_to_digits(text: str) -> str:
    """"thirteen and a half kWh" -> "13.5 kWh"; digits and everything else stay."""
    return _WORD_RUN.sub(lambda m: f"{_word_value(m[0]):g}", text)


_NUMBER = r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?|\.\d+)"


def _to_float(raw: str) -> float:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", raw):
        return float(raw.replace(",", ""))  # thousands separators
    return float(raw.replace(",", "."))  # a decimal comma


# -- quantities with units -----------------------------------------------------------------

# unit spelling (regex) -> factor to the schema's unit, per dimension
_UNITS: dict[str, list[tuple[str, float]]] = {
    "energy": [(r"mwh|megawatt[\s-]?hours?", 1000.0),
               (r"kwh|kw\s?h|kilowatt[\s-]?hours?|units?", 1.0),
               (r"wh|watt[\s-]?hours?", 0.001)],
    # amps at a single-phase 230 V supply: how chargers are often labelled (32 A = 7.4 kW)
    "power": [(r"mw|megawatts?", 1000.0),
              (r"kwp|kw|kva|kilowatts?(?:\s+peak)?", 1.0),
              (r"wp|w|watts?", 0.001),
              (r"a|amps?|amperes?", 0.23)],
    "temperature": [(r"°?\s?f\b|degrees?\s+f(?:ahrenheit)?|fahrenheit", -1.0),
                    (r"°?\s?c\b|degrees?(?:\s+c(?:elsius)?)?|celsius|centigrade", 1.0)],
    "distance": [(r"km|kms|kilomet(?:er|re)s?|k\b", 1.0),
                 (r"mi|miles?", 1.609344)],
    "duration": [(r"h|hrs?|hours?", 1.0), (r"min|mins|minutes?", 1 / 60), (r"days?", 24.0)],
}
_OTHER_DIMENSION = {
    "energy": r"kw(?!\s?h)|kwp|watts?(?![\s-]?hours?)\b",
    "power": r"kwh|kw\s?h|kilowatt[\s-]?hours?|wh",
}


def _quantities(text: str, dimension: str) -> list[tuple[float, bool]]:
    """Every number in the text with its value in the schema unit and whether a unit of
    this dimension followed it (bare numbers are taken in the schema unit)."""
    text = words_to_digits(text)
    # "40 or 60 kWh", "40-60 kWh", "40 to 60 kWh": the unit belongs to both numbers
    text = re.sub(_NUMBER + r"(\s*(?:or|to|-|and)\s*)" + _NUMBER + r"(\s*)([^\W\d]+)",
                  r"\1 \5\2\3\4\5", text)
    found = []
    for m in re.finditer(_NUMBER + r"\s*", text):
        value, rest = _to_float(m[1]), text[m.end():]
        unit = next(((pattern, factor) for pattern, factor in _UNITS.get(dimension, [])
                     if re.match(rf"(?:{pattern})(?![a-z])", rest, re.IGNORECASE)), None)
        other = _OTHER_DIMENSION.get(dimension)
        if unit is None and other and re.match(rf"(?:{other})(?![a-z])", rest, re.IGNORECASE):
            raise ToolError(f"{m[1]} {rest.split()[0]} is not a unit of {dimension}")
        if unit is None:
            found.append((value, False))
        elif unit[1] < 0:  # Fahrenheit
            found.append(((value - 32) * 5 / 9, True))
        else:
            found.append((value * unit[1], True))
    return found


def _one(text: str, dimension: str) -> float:
    """The single quantity of `dimension` in the text; numbers with its unit win over bare
    ones. Two different values are a contradiction, none is a missing answer."""
    found = _quantities(text, dimension)
    with_unit = [v for v, has_unit in found if has_unit]
    values = with_unit or [v for v, _ in found]
    distinct = sorted({round(v, 6) for v in values})
    if not distinct:
        raise ToolError(f"no {dimension} value found in {text!r}")
    if len(distinct) > 1:
        shown = " and ".join(f"{v:g}" for v in distinct)
        raise ToolError(f"two different values ({shown}) in {text!r}; which one is it?")
    return distinct[0]


_NONE = re.compile(r"\b(?:no|nope|none|nothing|don'?t|do not|haven'?t|have not|not|never|"
                   r"without|zero)\b", re.IGNORECASE)


def absent(text: str) -> bool:
    """Whether the answer says the household has no such thing and gives no number."""
    # digits only: "we don't have one" has no quantity in it
    return bool(_NONE.search(text)) and not re.search(r"\d", text)


def energy_kwh(text: str) -> float:
    """Energy in kWh: "13.5 kWh", "13,500 Wh", "thirteen and a half kilowatt hours"."""
    return _one(text, "energy")


def power_kw(text: str) -> float:
    """Power in kW: "7.4 kW", "3000 W", "4 kWp", "32 amps" (single phase at 230 V)."""
    return _one(text, "power")


def temperature_c(text: str) -> float:
    """Temperature in degC: "20 C", "68 F", "twenty degrees"."""
    return _one(text, "temperature")


def distance_km(text: str) -> float:
    """Distance in km: "40 miles" (64.4 km), "25 km"."""
    return _one(text, "distance")


def duration_h(text: str) -> float:
    """Duration in hours: "4 hours", "90 minutes", "half an hour", "a day"."""
    text = re.sub(r"\bhalf\s+an?\s+hour\b", "0.5 hours", text, flags=re.IGNORECASE)
    text = re.sub(r"\ban?\s+(hour|day)\b", r"1 \1", text, flags=re.IGNORECASE)
    text = re.sub(r"\bovernight\b", "12 hours", text, flags=re.IGNORECASE)
    return _one(text, "duration")


def fraction(text: str) -> float:
    """A share in [0, 1]: "80%", "0.8", "80 percent", "full", "three quarters", "half"."""
    # most specific first: "three quarters full" is three quarters, not full
    words = {"three quarters": 0.75, "two thirds": 2 / 3, "a quarter": 0.25, "a third": 1 / 3,
             "half": 0.5, "full": 1.0, "completely": 1.0}
    if not re.search(r"\d", text):
        # spoken shares first: "three quarters" would otherwise read as the number 3
        spoken = [v for w, v in words.items() if re.search(rf"\b{w}\b", text, re.IGNORECASE)]
        if spoken:
            return spoken[0]
    percent = re.findall(_NUMBER + r"\s*(?:%|per\s?cent)", text, re.IGNORECASE)
    if percent:
        values = sorted({_to_float(p) / 100 for p in percent})
    else:
        values = sorted({v if v <= 1 else v / 100 for v, _ in _quantities(text, "fraction")})
    if not values:
        raise ToolError(f"no share or percentage found in {text!r}")
    if len(values) > 1:
        raise ToolError(f"two different shares ({' and '.join(f'{v:g}' for v in values)}) "
                        f"in {text!r}; which one is it?")
    return values[0]


_HOUR_WORD = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_CLOCK = re.compile(
    r"(?<![\d.])(\d{1,2})(?:[:.h](\d{2}))?(?:\s*(a\.?m\.?|p\.?m\.?|o'?clock|h\b))?"
    r"(?:\s+(?:in\s+the\s+)?(morning|afternoon|evening|night|tonight))?", re.IGNORECASE)


def clock_hour(text: str) -> float:
    """Hour of the day in [0, 24): "7:30 pm" -> 19.5, "19:30", "half past seven in the
    evening", "quarter to eight", "noon", "midnight", "0730"."""
    # "seven thirty" must not add up to 37: read spoken hour-and-minute pairs first
    t = re.sub(rf"\b({_HOUR_WORD})[\s-]+(fifteen|thirty|forty[\s-]?five|o'?clock)\b",
               lambda m: f"{_SMALL[m[1]]}:" + {"fifteen": "15", "thirty": "30"}.get(
                   m[2], "00" if "clock" in m[2] else "45"), text.lower())
    t = words_to_digits(t)
    t = re.sub(r"\bnoon|midday\b", "12:00", t)
    t = re.sub(r"\bmidnight\b", "0:00", t)
    t = re.sub(r"(?<!\d)([01]\d|2[0-3])([0-5]\d)(?!\d)", r"\1:\2", t)  # 0730 -> 07:30
    # "half past 7", "quarter past 7", "quarter to 8", "20 past 7", "10 to 8"
    def spoken(m: re.Match[str]) -> str:
        word, relation, hour = m[1], m[2], int(m[3])
        minutes = {"half": 30, "quarter": 15}.get(word) or int(float(word))
        if relation == "to":
            hour, minutes = (hour - 1) % 24, 60 - minutes
        return f"{hour}:{minutes:02d}"
    t = re.sub(r"\b(half|quarter|\d{1,2})\s+(?:minutes\s+)?(past|after|to)\s+(\d{1,2})\b",
               spoken, t)
    hours = set()
    for m in _CLOCK.finditer(t):
        hour, minute = int(m[1]), int(m[2] or 0)
        suffix, part = (m[3] or "").replace(".", ""), m[4]
        if not (m[2] or suffix or part):
            continue  # a bare number is not a time ("2 cars")
        if hour > 24 or minute > 59:
            continue
        if suffix.startswith("p") or (part in ("afternoon", "evening", "night", "tonight")
                                       and hour < 12):
            hour = hour % 12 + 12
        elif suffix.startswith("a") or part == "morning":
            hour = hour % 12
        hours.add((hour + minute / 60) % 24)
    if not hours:
        raise ToolError(f"no time of day found in {text!r}; say e.g. 7:30 pm")
    if len(hours) > 1:
        shown = " and ".join(f"{h:g} h" for h in sorted(hours))
        raise ToolError(f"two different times ({shown}) in {text!r}; which one is it?")
    return hours.pop()


def yes_no(text: str) -> bool:
    """Yes or no: "yes", "it can", "nope", "I don't think so"."""
    no = re.search(r"\b(?:no|nope|not|don'?t|doesn'?t|can'?t|cannot|false|never)\b", text,
                   re.IGNORECASE)
    yes = re.search(r"\b(?:yes|yeah|yep|sure|true|it can|it does|of course|definitely)\b", text,
                    re.IGNORECASE)
    if bool(no) == bool(yes):
        raise ToolError(f"neither a clear yes nor a clear no in {text!r}")
    return not no


# kind of parameter -> (tool name, tool); the names are what the ReAct agent calls
TOOLS: dict[str, tuple[str, Callable[[str], float | bool]]] = {
    "energy": ("energy_kwh", energy_kwh),
    "power": ("power_kw", power_kw),
    "clock": ("clock_hour", clock_hour),
    "temperature": ("temperature_c", temperature_c),
    "fraction": ("fraction", fraction),
    "duration": ("duration_h", duration_h),
    "distance": ("distance_km", distance_km),
    "yes_no": ("yes_no", yes_no),
}
TOOL_BY_NAME: dict[str, Callable[[str], float | bool]] = dict(TOOLS.values())


def check_range(spec: Spec, value: float | bool) -> float | bool:
    """The value if it lies in the parameter's range, else `ToolError` naming the range."""
    if spec.kind == "yes_no":
        if not isinstance(value, bool):
            raise ToolError(f"{spec.name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f"{spec.name} must be a number, got {value!r}")
    value = float(value)
    if spec.kind == "clock" and value == 24:
        value = 0.0
    if not spec.low <= value <= spec.high:
        raise ToolError(f"{spec.name} = {value:g} {spec.unit} is outside {spec.low:g} to "
                        f"{spec.high:g} {spec.unit}")
    return value
