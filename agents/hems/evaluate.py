"""Parameter-retrieval accuracy of the set-up dialogue against simulated residents.

Each simulated household (persona x seed, with hidden true parameters) is interviewed once
per condition: the rule-based baseline and the 2 x 2 ablation of the LLM agent (ReAct on
or off, few-shot on or off). The residents' answers depend only on (household, parameter,
attempt), so every condition reads the same answers to the same questions.

Scoring: every parameter that applies to the true household (each device size, and a
device's details when it has the device) counts once; it is right when the dialogue's
value lies within the parameter's tolerance of the truth (`Spec.close`), and wrong when it
differs, stayed unknown or was never asked (a device missed at its size question). The
accuracy is the share right over all scored parameters (a micro-average).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from tqdm import tqdm

from agents.hems.agent import Interpreter, LLMInterpreter, run_dialogue
from agents.hems.llm import ChatClient
from agents.hems.resident import SimulatedResident, households
from agents.hems.rules import RuleInterpreter
from agents.hems.schema import GATES, SPECS, HouseholdParameters

# (condition, react, few_shot); react None: the rule-based baseline, no model
CONDITIONS: tuple[tuple[str, bool | None, bool | None], ...] = (
    ("rules", None, None),
    ("react+few-shot", True, True),
    ("react", True, False),
    ("direct+few-shot", False, True),
    ("direct", False, False),
)
PAPER_ACCURACY = 0.88  # Michelon, Zhou, Morstyn (arXiv 2501.07919), ReAct + few-shot


@dataclass(frozen=True)
class EvalConfig:
    personas: int = 4  # the first N of resident.PERSONAS (at most 8)
    seeds: int = 2  # households per persona
    max_retries: int = 1  # re-asks per parameter after an unusable answer
    conditions: tuple[str, ...] = tuple(name for name, _, _ in CONDITIONS)
    resident_temperature: float = 0.7  # seeded: varied phrasing, same answers every run


@dataclass
class EvalResult:
    dialogues: pd.DataFrame  # one row per question asked
    scores: pd.DataFrame  # one row per scored parameter
    calls: int  # chat requests made
    wall_s: float

    def accuracy(self, by: str) -> pd.DataFrame:
        """Accuracy (share right) with `by` as rows and the conditions as columns."""
        table = self.scores.pivot_table(index=by, columns="condition", values="correct",
                                        aggfunc="mean", sort=False)
        if by == "parameter":  # in the order the dialogue asks them
            table = table.reindex([s.name for s in SPECS if s.name in table.index])
        return table[[c for c in self.conditions if c in table.columns]]

    @property
    def conditions(self) -> list[str]:
        return list(dict.fromkeys(self.scores["condition"]))

    def overall(self) -> pd.Series:
        return self.scores.groupby("condition", sort=False)["correct"].mean()

    def ablation(self) -> pd.DataFrame:
        """The 2 x 2 table: ReAct on/off (rows) x few-shot on/off (columns)."""
        overall = self.overall()
        cells = {(react, shot): overall.get(name) for name, react, shot in CONDITIONS
                 if react is not None}
        return pd.DataFrame(
            {"few-shot on": [cells[(True, True)], cells[(False, True)]],
             "few-shot off": [cells[(True, False)], cells[(False, False)]]},
            index=pd.Index(["ReAct on", "ReAct off"], name="agent"))

    def markdown(self) -> str:
        """The result tables in Markdown, as printed and as kept in BENCHMARKS.md."""
        n = self.scores.groupby("condition", sort=False).size()
        lines = ["Overall accuracy (share of scored parameters retrieved within tolerance; "
                 f"paper, ReAct + few-shot: {PAPER_ACCURACY:.0%}):", ""]
        lines += _markdown(pd.DataFrame({"accuracy": self.overall(), "scored": n}))
        lines += ["", "2 x 2 ablation (LLM agent; the rule baseline is in the table above):", ""]
        lines += _markdown(self.ablation())
        lines += ["", "Per parameter:", ""]
        counts = self.scores.groupby("parameter", sort=False)["household"].nunique()
        per = self.accuracy("parameter")
        per.insert(0, "households", counts.reindex(per.index))
        lines += _markdown(per)
        lines += ["", "Per persona:", ""]
        lines += _markdown(self.accuracy("persona"))
        return "\n".join(lines)


def _markdown(table: pd.DataFrame) -> list[str]:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if pd.isna(v) else f"{v:.2f}"
        return str(v)

    index = table.index.name or ""
    rows = [f"| {index} | " + " | ".join(map(str, table.columns)) + " |",
            "|---|" + "---:|" * len(table.columns)]
    rows += [f"| {name} | " + " | ".join(cell(v) for v in row) + " |"
             for name, row in zip(table.index, table.itertuples(index=False))]
    return rows


def score(truth: HouseholdParameters, values: dict[str, float | bool]) -> list[dict]:
    """One row per parameter that applies to the true household."""
    rows = []
    for spec in SPECS:
        if not spec.is_gate and not getattr(truth, GATES[spec.device]):
            continue
        got, want = values.get(spec.name), getattr(truth, spec.name)
        rows.append({"parameter": spec.name, "truth": float(want),
                     "value": None if got is None else float(got),
                     "correct": spec.close(got, want)})
    return rows


def evaluate(client: ChatClient, config: EvalConfig = EvalConfig(),
             progress: bool = True) -> EvalResult:
    """Interview every simulated household under every condition; see the module doc."""
    start, calls0 = time.perf_counter(), client.calls
    interpreters: dict[str, Interpreter] = {}
    for name, react, shot in CONDITIONS:
        if name in config.conditions:
            interpreters[name] = (RuleInterpreter() if react is None else
                                  LLMInterpreter(client, react=bool(react), few_shot=bool(shot)))
    residents = households(config.personas, config.seeds)
    dialogue_rows, score_rows = [], []
    with tqdm(total=len(residents) * len(interpreters), desc="hems evaluate", unit="dialogue",
              disable=not progress) as bar:
        for k, (persona, seed, truth) in enumerate(residents):
            resident = SimulatedResident(client, persona, truth, seed,
                                         temperature=config.resident_temperature)
            for name, interpreter in interpreters.items():
                outcome = run_dialogue(interpreter, resident, max_retries=config.max_retries)
                tags = {"condition": name, "household": k, "persona": persona.name,
                        "seed": seed}
                dialogue_rows += [{**tags, **row,
                                   "value": None if row["value"] is None else float(row["value"]),
                                   "truth": _truth(truth, row["parameter"])}
                                  for row in outcome.rows()]
                score_rows += [{**tags, **row} for row in score(truth, outcome.values)]
                bar.update()
    return EvalResult(pd.DataFrame(dialogue_rows), pd.DataFrame(score_rows),
                      client.calls - calls0, time.perf_counter() - start)


def _truth(truth: HouseholdParameters, name: str) -> float:
    return float(getattr(truth, name))
