"""`cosim data`: generate household data sets, train the load model, validate it.

    cosim data generate CONFIG --homes N --days D --out DIR
    cosim data train [--out FILE] [--seed S] [--csv FILE ...]
    cosim data validate [--model FILE] [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cosim.commands import exit_2_on

# bad input (ProfileError) is one line and exit code 2
_safe = exit_2_on("agents.profiles.errors:ProfileError")


def register(commands: argparse._SubParsersAction) -> None:
    from agents.profiles.gan import GanConfig
    from agents.profiles.train import TrainConfig
    from agents.profiles.validate import ValidateConfig

    data = commands.add_parser("data", help="household profiles: generate, train, validate"
                               ).add_subparsers(dest="data_command", required=True,
                                                metavar="DATA_COMMAND")

    gen = data.add_parser("generate", help="write homes, households and exogenous tables")
    gen.add_argument("config", type=Path, help="generator config (TOML), e.g. "
                     "experiments/configs/profiles/default.toml")
    gen.add_argument("--homes", type=int, default=None, help="overrides the config's homes")
    gen.add_argument("--days", type=int, default=None, help="overrides the config's days")
    gen.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    gen.add_argument("--out", type=Path, required=True, help="output folder")
    gen.set_defaults(func=_safe(generate_command))

    t, g = TrainConfig(), GanConfig()
    train = data.add_parser("train", help="fit the load model on the shipped real profiles")
    train.add_argument("--out", type=Path, default=None,
                       help="model file (default: the shipped agents/profiles/weights/"
                       "load_model.pt)")
    train.add_argument("--seed", type=int, default=t.seed)
    train.add_argument("--clusters", type=int, default=t.clusters)
    train.add_argument("--brackets", type=int, default=t.brackets)
    train.add_argument("--richardson-homes", type=int, default=t.richardson_homes)
    train.add_argument("--richardson-days", type=int, default=t.richardson_days)
    train.add_argument("--no-eulv", action="store_true", help="leave out the feeder's profiles")
    train.add_argument("--eulv-day-type", default=t.eulv_day_type,
                       choices=("weekday", "weekend"))
    train.add_argument("--csv", default=None, help="extra load CSV, one column per home (kW)")
    train.add_argument("--csv-units", default=t.csv_units, choices=("kW", "W"))
    train.add_argument("--csv-fill", default=t.csv_fill, choices=("none", "linear"),
                       help="gaps: an error (none) or linear interpolation up to --csv-max-gap-s")
    train.add_argument("--csv-max-gap-s", type=float, default=t.csv_max_gap_s)
    train.add_argument("--csv-timezone", default=t.csv_timezone)
    train.add_argument("--test-share", type=float, default=t.test_share)
    train.add_argument("--gan-steps", type=int, default=g.steps)
    train.set_defaults(func=_safe(train_command))

    v = ValidateConfig()
    val = data.add_parser("validate", help="synthetic against held-out real load, with TSTR")
    val.add_argument("--model", type=Path, default=None, help="model file (default: shipped)")
    val.add_argument("--homes", type=int, default=v.homes, help="synthetic homes")
    val.add_argument("--days", type=int, default=v.days, help="synthetic days per home")
    val.add_argument("--seed", type=int, default=v.seed)
    val.add_argument("--richardson-homes", type=int, default=None,
                     help="regenerate at most this many richardsonpy homes per split (faster)")
    val.add_argument("--json", type=Path, default=None, help="also write the metrics as JSON")
    val.add_argument("--plot", type=Path, default=None, help="write percentile bands as PNG")
    val.set_defaults(func=_safe(validate_command))



def generate_command(args: argparse.Namespace) -> int:
    from agents.profiles.config import load_config
    from agents.profiles.generate import generate

    cfg = load_config(args.config, homes=args.homes, days=args.days, seed=args.seed)
    manifest = generate(cfg, args.out, config_file=args.config)
    print(f"wrote {cfg.homes} homes x {cfg.days} days ({manifest['steps']} steps of "
          f"{cfg.dt_s} s, {cfg.load.model} load) to {args.out} in {manifest['wall_s']:.2f} s")
    return 0


def train_command(args: argparse.Namespace) -> int:
    from agents.profiles.gan import GanConfig
    from agents.profiles.loadmodel import DEFAULT_PATH
    from agents.profiles.train import TrainConfig, train

    cfg = TrainConfig(
        seed=args.seed, clusters=args.clusters, brackets=args.brackets, eulv=not args.no_eulv,
        eulv_day_type=args.eulv_day_type, richardson_homes=args.richardson_homes,
        richardson_days=args.richardson_days, csv=args.csv, csv_units=args.csv_units,
        csv_fill=args.csv_fill, csv_max_gap_s=args.csv_max_gap_s,
        csv_timezone=args.csv_timezone, test_share=args.test_share,
        gan=GanConfig(steps=args.gan_steps))
    start = time.perf_counter()
    model = train(cfg)
    path = model.save(args.out or DEFAULT_PATH)
    days = model.meta["days"]
    print(f"trained on {days['train']} home-days ({days['train_weekday']} weekday, "
          f"{days['train_weekend']} weekend), {days['test']} held out, in "
          f"{time.perf_counter() - start:.0f} s")
    for kind, names in model.cluster_names().items():
        sizes = [model.meta["cluster_days"][f"{kind}/{k}"] for k in range(len(names))]
        print(f"  {kind} clusters: " + ", ".join(f"{n} ({s} days)" for n, s in zip(names, sizes)))
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    from agents.profiles.loadmodel import DEFAULT_PATH, LoadModel
    from agents.profiles.validate import ValidateConfig, plot_bands, real_data, validate

    path = args.model or DEFAULT_PATH
    model = LoadModel.load(path)
    cfg = ValidateConfig(homes=args.homes, days=args.days, seed=args.seed,
                         richardson_homes=args.richardson_homes)
    real = real_data(model, cfg.richardson_homes)
    report = validate(model, cfg, real=real, model_name=str(path))
    print(report.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"per_type": report.per_type,
                                         "consistency": report.consistency}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_bands(model, real, cfg, args.plot)}")
    return 0
