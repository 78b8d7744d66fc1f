"""The deterministic baseline: the validators applied to the whole answer, no model.

It reads what the tools can read (numbers with units, clock times, shares, yes/no, "we
don't have one" for a device size) and nothing else, so it is the floor an LLM interpreter
has to beat, and it needs no endpoint (`cosim hems interview --rules`).
"""

from __future__ import annotations

import re

from agents.hems.agent import Reading
from agents.hems.schema import Spec
from agents.hems.tools import TOOLS, ToolError, absent, check_range

_DONT_KNOW = re.compile(r"\b(?:don'?t know|do not know|no idea|not sure|can'?t remember|"
                        r"cannot remember|no clue|dunno)\b", re.IGNORECASE)


class RuleInterpreter:
    """Reads an answer with the validators of `agents.hems.tools` alone."""

    name = "rules"

    def interpret(self, spec: Spec, question: str, answer: str) -> Reading:
        tool_name, tool = TOOLS[spec.kind]
        if spec.is_gate and absent(answer) and not _DONT_KNOW.search(answer):
            return Reading("ok", 0.0, trace=[{"rule": "absent"}])
        try:
            value = check_range(spec, tool(answer))
        except ToolError as exc:
            if _DONT_KNOW.search(answer) and not re.search(r"\d", answer):
                return Reading("unknown", detail="the resident does not know",
                               trace=[{"rule": "dont_know"}])
            return Reading("invalid", detail=str(exc), trace=[{"tool": tool_name,
                                                                 "error": str(exc)}])
        return Reading("ok", value, trace=[{"tool": tool_name, "result": value}])
