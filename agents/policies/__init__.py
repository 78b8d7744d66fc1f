"""Household energy-management policies: the self-consumption rule (`rule_based`),
price-responsive MPC (`mpc`, imports cvxpy, so it loads on first use), and the bank of
independent per-agent policies the learners train (`bank`)."""

from __future__ import annotations

import importlib

_HOMES = {"PolicyBank": "bank", "MPC": "mpc", "MPCConfig": "mpc", "MPCError": "mpc",
          "Plan": "mpc", "self_consumption_reserve": "rule_based",
          "self_consumption_setpoints": "rule_based"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(f"agents.policies.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'agents.policies' has no attribute {name!r}")
