"""What every actor shares: phase dispatch, deterministic randomness, buffered records,
and checkpointable state.

An actor is a plain Python object. The local backend calls it directly; the Ray backend
wraps the same class with `ray.remote`. Phase methods take the step and the messages the
actor subscribes to (sorted by sender) and return the messages it publishes. Records are
buffered inside the actor and drained by the engine at checkpoints, so they never travel
with the step-by-step traffic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cosim.messages import Message
from cosim.records import Chunks, chunk

# signal: prices and exogenous data; observe: households take in this step's signals and
# last step's grid state; decide: policies bid; clear: local markets; dispatch: setpoints,
# injections and meters; upstream: the layer above prices what the local markets left (the
# metered residual); physics: the power flow; settle: bills and ledgers
PHASES = ("signal", "observe", "decide", "clear", "dispatch", "upstream", "physics",
          "settle")


@dataclass
class PhaseOutput:
    """What one actor returns from one phase: its messages, and in the settle phase its
    money ledger (net money received per party, currency), totals the engine sums over
    actors (kWh, currency, kg) and checks it takes the worst of."""

    messages: list[Message] = field(default_factory=list)
    ledger: dict[str, float] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)


class Actor:
    """Base class. Subclasses set SUBSCRIBES (phase -> topics read) and PUBLISHES
    (phase -> topics written) and implement a method per phase they take part in."""

    SUBSCRIBES: ClassVar[dict[str, tuple[str, ...]]] = {}
    PUBLISHES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        # one independent stream per actor, derived from the scenario seed and the name
        entropy = [seed] + [ord(c) for c in name]
        self.rng = np.random.default_rng(np.random.SeedSequence(entropy))
        self._records: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.recording = True  # off for training: nothing is buffered

    @classmethod
    def phases(cls) -> tuple[str, ...]:
        return tuple(p for p in PHASES if hasattr(cls, p))

    def run(self, phase: str, step: int, *sources: PhaseOutput) -> PhaseOutput:
        """Run one phase on the outputs of the actors this one listens to (in sender
        order), keeping the messages of its topics that are broadcast or addressed to it."""
        topics = self.SUBSCRIBES.get(phase, ())
        inbox = [m for out in sources for m in out.messages if m.topic in topics
                 and m.recipient in ("", self.name)]
        out = getattr(self, phase)(step, inbox)
        return out if isinstance(out, PhaseOutput) else PhaseOutput(messages=list(out or []))

    def record(self, table: str, **columns: object) -> None:
        """Buffer rows for a records table; scalars broadcast to the array columns."""
        if self.recording:
            self._records[table].append(chunk(**columns))

    def drain_records(self) -> dict[str, Chunks]:
        """Rows buffered since the last drain, per records table, as buffered: the caller
        encodes them (cosim.records), on a writer thread beside the steps; nothing is
        copied here."""
        out = {table: chunks for table, chunks in self._records.items() if chunks}
        self._records.clear()
        return out

    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue from here; extended by subclasses."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._records.clear()

    def set_recording(self, on: bool) -> None:
        self.recording = on
        self._records.clear()

    def ping(self) -> str:
        return self.name


def only(inbox: list[Message], kind: type[Message]) -> list[Message]:
    """The messages of one type, in delivery (sender) order."""
    return [m for m in inbox if isinstance(m, kind)]
