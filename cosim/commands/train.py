"""`cosim train` and `cosim evaluate`: household policies learned with RLlib, then deployed.

    cosim train CONFIG --algo ippo|ppo-shared|a2c|pg|mappo|mappo-shared [--iterations N] [--out DIR]
                [--backend local|ray [--address ADDR]] [--reward voltage_penalty=10 ...]
    cosim train CONFIG --algo gradmap|ssl|penalty [--days 12 --train-days 8] [--out DIR]
                [--resume DIR]
    cosim evaluate CHECKPOINT CONFIG [--out RUN_DIR] [--start 2026-03-12T00:00:00Z]

`train` writes DIR/checkpoint (RLlib's), DIR/bank.pt (the policies as a bank, one per
household), DIR/training.parquet and DIR/training.png (the curve and the time split), and
DIR/train.json (the settings). With `--backend ray` the environments are sampled by
`--env-runners` Ray actors (default 2) on the cluster at `--address` (or a new local one);
with `local` they are sampled in this process. `evaluate` runs the scenario with every
household on the checkpoint's policies (`policy = "bank"`) and writes the usual run folder,
as `cosim run` does (`--start` moves the scenario to held-out days).

`gradmap`, `ssl` and `penalty` (experiments/gradmap) learn through the differentiable
rollout instead of RLlib, on `--days` days from run.start of which the first `--train-days`
train; they write bank.pt, checkpoint.pt (every 10 iterations and at the end),
training.parquet and training.png, `--resume DIR` continues a stopped run, and `evaluate`
takes that folder. Exit codes as `cosim run`: 2 for bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from cosim.commands.run import _positive, execute


def register(commands: argparse._SubParsersAction) -> None:
    from experiments.gradmap.train import METHODS  # experiments sits above cosim
    from experiments.rl.train import ALGOS, TrainConfig

    defaults = TrainConfig()
    train = commands.add_parser(
        "train", help="train household policies with RLlib",
        description="Train one policy per household with RLlib on the scenario's real step; "
        "writes an RLlib checkpoint, the policies as a bank (bank.pt), a training table and "
        "curve. Algorithms: " + ", ".join(ALGOS) + " (RLlib, experiments/rl/train.py) and "
        + ", ".join(METHODS) + " (gradients through the AC power flow, experiments/gradmap).")
    train.add_argument("config", type=Path, help="scenario TOML file")
    train.add_argument("--algo", choices=[*ALGOS, *METHODS], default=defaults.algo)
    train.add_argument("--iterations", type=_positive, default=None,
                       help="training iterations (default: the algorithm's own)")
    train.add_argument("--episodes", type=_positive, default=defaults.episodes,
                       help="whole episodes sampled per iteration")
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (default: the algorithm's own)")
    train.add_argument("--days", type=_positive, default=12,
                       help="gradmap: scenario days from run.start")
    train.add_argument("--train-days", type=_positive, default=8,
                       help="gradmap: the first days that train; the rest are held out")
    train.add_argument("--hidden", type=_positive, nargs="+", default=list(defaults.hidden))
    train.add_argument("--seed", type=int, default=None,
                       help="RLlib and policy seed (default: the scenario's run.seed)")
    train.add_argument("--reward", nargs="+", default=[], metavar="TERM=PRICE",
                       help="reward prices (cosim.envs.RewardConfig), e.g. "
                       "voltage_penalty=10 carbon_price=0.1")
    train.add_argument("--bidding", action="store_true",
                       help="RLlib algorithms: learn each household's local market bid only, "
                            "its devices on the self-consumption rule")
    train.add_argument("--copies", type=_positive, default=1,
                       help="RLlib algorithms: copies of the scenario stepped as one per env "
                            "runner (--episodes must be a multiple)")
    train.add_argument("--backend", choices=("local", "ray"), default="local")
    train.add_argument("--address", default=None, help="Ray cluster to join (ray backend)")
    train.add_argument("--num-cpus", type=_positive, default=None,
                       help="CPUs for a Ray instance started here")
    train.add_argument("--env-runners", type=int, default=None,
                       help="Ray env runners (default: 0 local, 2 ray)")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="gradmap: continue the run whose checkpoint.pt is in DIR (same "
                            "settings; --iterations counts the whole run)")
    train.add_argument("--out", type=Path, default=None,
                       help="training folder (default runs/train-<name>-<algo>-<time>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=train_command)

    ev = commands.add_parser("evaluate", help="run a scenario on a trained checkpoint")
    ev.add_argument("checkpoint", type=Path, help="the checkpoint folder `cosim train` wrote")
    ev.add_argument("config", type=Path, help="scenario TOML file")
    ev.add_argument("--out", type=Path, default=None,
                    help="run folder (default runs/<name>-<timestamp>)")
    ev.add_argument("--steps", type=_positive, default=None)
    ev.add_argument("--start", default=None, metavar="ISO_TIME",
                    help="run the scenario from this time instead of run.start (held-out "
                    "days)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=evaluate_command)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def reward_config(terms: list[str]) -> object:
    """RewardConfig from TERM=PRICE words; ValueError names the bad word."""
    from cosim.envs import RewardConfig

    known = [f.name for f in fields(RewardConfig)]
    values = {}
    for word in terms:
        name, sep, value = word.partition("=")
        if not sep or name not in known:
            raise ValueError(f"--reward {word}: expected TERM=PRICE with TERM one of {known}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--reward {word}: {value!r} is not a number") from None
    return RewardConfig(**values)


def _out(args: argparse.Namespace, config: object) -> Path:
    """--out, or runs/train-<scenario>-<algo>-<local time>."""
    return args.out or Path("runs") / (f"train-{config.run.name}-{args.algo}-"
                                       f"{dt.datetime.now():%Y%m%d-%H%M%S}")


def _given(args: argparse.Namespace, *names: str) -> dict[str, object]:
    """The options the command line set (the rest keep the algorithm's defaults)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def train_command(args: argparse.Namespace) -> int:
    from cosim.config import ConfigError, load_config
    from experiments.gradmap.train import METHODS

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _error(str(exc))
    if args.algo in METHODS:
        if args.bidding:
            return _error(f"--bidding: {args.algo} trains device setpoints; bids are learned "
                          "by the RLlib algorithms")
        if args.copies > 1:
            return _error(f"--copies: {args.algo} batches its own days; copies are for the "
                          "RLlib algorithms")
        return _gradmap(args, config)
    import ray

    from experiments.rl.train import TrainConfig, train

    try:
        reward = reward_config(args.reward)
        runners = args.env_runners if args.env_runners is not None else (
            2 if args.backend == "ray" else 0)
        settings = TrainConfig(algo=args.algo, episodes=args.episodes,
                               hidden=tuple(args.hidden),
                               seed=config.run.seed if args.seed is None else args.seed,
                               env_runners=runners, bidding=args.bidding,
                               copies=args.copies,
                               **_given(args, "iterations", "lr"))
    except ValueError as exc:
        return _error(str(exc))
    if args.backend == "local" and runners:
        return _error("--env-runners needs --backend ray (local samples in this process)")
    out = _out(args, config)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address if args.backend == "ray" else None,
                 num_cpus=None if args.address else args.num_cpus,
                 include_dashboard=False, log_to_driver=False)
    try:
        outcome = train(config, settings, out, reward, progress=not args.no_progress)
    finally:
        if started:
            ray.shutdown()
    last = outcome.training.iloc[-1]
    print(f"{args.algo} on {config.run.name}: {len(outcome.training)} iterations, "
          f"{int(last.agent_steps):,} agent steps, return per household "
          f"{outcome.training.return_per_household.iloc[0]:.3f} -> "
          f"{last.return_per_household:.3f} per episode")
    print(f"checkpoint {outcome.checkpoint}\nbank       {outcome.bank}\n"
          f"curve      {out / 'training.png'}")
    return 0


def _gradmap(args: argparse.Namespace, config: object) -> int:
    """`cosim train --algo gradmap|ssl|penalty`."""
    from experiments.gradmap.problem import Problem
    from experiments.gradmap.train import GradMAPConfig, train

    try:
        settings = GradMAPConfig(method=args.algo, hidden=tuple(args.hidden),
                                 seed=config.run.seed if args.seed is None else args.seed,
                                 **_given(args, "iterations", "lr"))
        if args.train_days > args.days:
            raise ValueError(f"--train-days {args.train_days} is more than --days {args.days}")
    except ValueError as exc:
        return _error(str(exc))
    out = args.resume if args.resume is not None and args.out is None else _out(args, config)
    problem = Problem.build(config, days=args.days, train_days=args.train_days)
    try:
        outcome = train(problem, settings, out, progress=not args.no_progress,
                        resume=args.resume)
    except (FileNotFoundError, ValueError) as exc:
        if args.resume is None:
            raise
        return _error(str(exc))
    t = outcome.training
    print(f"{args.algo} on {config.run.name}: {len(t)} iterations in {t.wall_s.iloc[-1]:.1f} s, "
          f"cost {t.cost.iloc[0]:,.1f} -> {t.cost.iloc[-1]:,.1f} per day, mean voltage "
          f"violation {t.mean_violation_pu.iloc[-1]:.2e} p.u., largest overload "
          f"{t.max_overload.iloc[-1]:.3f}")
    print(f"bank       {out / 'bank.pt'}\ncurve      {out / 'training.png'}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from agents.policies.bank import PolicyBank
    from cosim.config import ConfigError, load_config
    from cosim.simulation import Simulation
    from experiments.rl.train import load_bank

    try:
        config = load_config(args.config, None if args.start is None else
                             {"run.start": _time(args.start)})
        bank = (PolicyBank.load(args.checkpoint / "bank.pt")
                if (args.checkpoint / "bank.pt").is_file() else load_bank(args.checkpoint))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    n = config.households.count
    if bank.n_agents != n:
        return _error(f"{args.checkpoint}: trained for {bank.n_agents} households, "
                      f"{args.config} has {n}")
    folder = args.out or Simulation.default_folder(config)
    if folder.exists() and any(folder.iterdir()):
        return _error(f"{folder}: exists and is not empty")
    from agents.households import ACTIONS, FIELDS

    folder.mkdir(parents=True, exist_ok=True)
    bank.save(folder / "bank.pt", FIELDS, ACTIONS)
    try:
        sim = Simulation.from_config(config.everyone("bank", (folder / "bank.pt").resolve()),
                                     record=True, out=folder)
    except ConfigError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _error(str(exc))
    shutil.copy(args.config, folder / "scenario.toml")
    return execute(sim, folder, "local", args.steps, not args.no_progress)


def _time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--start {text}: not an ISO time like 2026-03-12T00:00:00Z") \
            from None
