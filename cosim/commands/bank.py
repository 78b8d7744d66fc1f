"""`cosim bank`: policy banks for a scenario's `bank` households.

    cosim bank init CONFIG --out FILE [--hidden 64 64] [--seed S]

`init` writes a bank of freshly initialised, independent policies, one per household of
the scenario (household k uses agent k), laid out for the households' local observation
and actions. The trainers (RLlib, GradMAP) start from such a bank and save theirs the same
way; a scenario points at one with `[policies.bank] path`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    bank = commands.add_parser("bank", help="policy banks: one policy per household"
                               ).add_subparsers(dest="bank_command", required=True,
                                                metavar="BANK_COMMAND")
    init = bank.add_parser("init", help="a freshly initialised bank for a scenario")
    init.add_argument("config", type=Path, help="scenario TOML file")
    init.add_argument("--out", type=Path, required=True, help="bank file to write (.pt)")
    init.add_argument("--hidden", type=int, nargs="+", default=[64, 64],
                      help="hidden layer widths (default 64 64)")
    init.add_argument("--seed", type=int, default=None,
                      help="initialisation seed (default: the scenario's run.seed)")
    init.set_defaults(func=init_command)


def init_command(args: argparse.Namespace) -> int:
    from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
    from agents.policies.bank import PolicyBank
    from cosim.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if any(h <= 0 for h in args.hidden) or (args.seed is not None and args.seed < 0):
        print("error: --hidden widths must be positive and --seed non-negative",
              file=sys.stderr)
        return 2
    n = config.households.count
    seed = config.run.seed if args.seed is None else args.seed
    bank = PolicyBank(n, len(FIELDS), len(ACTIONS), hidden=tuple(args.hidden),
                      squash=SIGNED_ACTIONS, seed=seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bank.save(args.out, FIELDS, ACTIONS)
    print(f"{args.out}: {n} independent policies {len(FIELDS)} -> "
          f"{' -> '.join(map(str, args.hidden))} -> {len(ACTIONS)} (seed {seed})")
    return 0
