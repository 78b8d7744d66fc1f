"""Test-only actors, shipped to Ray workers by value."""

from __future__ import annotations

import time

from cosim.actors.households import HouseholdShard


class HangingShard(HouseholdShard):
    """A shard whose policy hangs at step 2."""

    def decide(self, step, inbox):
        if step == 2:
            time.sleep(30)
        return super().decide(step, inbox)


class FaultyShard(HouseholdShard):
    """A shard whose dispatch fails at step 6 (an inverter fault)."""

    def dispatch(self, step, inbox):
        if step == 6:
            raise RuntimeError("inverter fault")
        return super().dispatch(step, inbox)
