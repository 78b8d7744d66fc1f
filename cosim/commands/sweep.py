"""`cosim sweep`: the cross product of a scenario's variants, run as parallel Ray tasks.

    cosim sweep CONFIG --set households.count=100,1000 --set tariff.import_price=0.25,0.35
                       [--out DIR] [--backend local|ray] [--address ADDR] [--num-cpus N]

Each `--set KEY=V1,V2,...` names a scenario key (dotted, as in the TOML) and its values;
the variants are every combination, each the scenario with those keys overridden. Values
are read as TOML literals (`100`, `0.25`, `true`, `[17, 21]`, `"text"`), a bare word as text;
commas inside brackets or quotes do not split. Every variant is validated before anything
runs: a bad key or value is exit code 2, naming the variant, and nothing is written.

Each variant runs as one task - the whole simulation on the local backend inside it, with
its records in `OUT/<k>-<key=value...>/` as `cosim run` writes them - on Ray
(`--backend ray`, the default: a local instance of `--num-cpus` CPUs, or the cluster at
`--address`; one CPU per task, so a cluster runs as many variants at once as it has CPUs),
or one after another in this process (`--backend local`). Across nodes OUT must be a
filesystem every node sees. A variant that fails (an error in its run, or a power flow that
did not converge) is reported with its reason, and the others complete. `OUT/sweep.parquet`
has one row per variant: its keys, its status ("complete", "not converged", "failed"), the
error if any, its folder, its wall time and every entry of its run summary.

Exit codes: 0 every variant completed; 1 some failed; 2 bad input; 3 none failed but some
had steps whose power flow did not converge.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from cosim.commands.run import _positive, refuse_external
from cosim.config import ConfigError, ScenarioConfig, load_config

Variant = dict[str, Any]  # dotted key -> value


def register(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep", help="run the cross product of a scenario's variants in parallel",
        description=__doc__.split("\n\n", 1)[0] + " Exit codes: 0 all complete, 1 some "
        "failed, 2 bad input, 3 some did not converge.")
    sweep.add_argument("config", type=Path, help="scenario TOML file")
    sweep.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                       help="a scenario key and its values (repeat for a cross product)")
    sweep.add_argument("--out", type=Path, default=None,
                       help="sweep folder (default runs/sweep-<name>-<timestamp>)")
    sweep.add_argument("--backend", choices=("local", "ray"), default="ray")
    sweep.add_argument("--address", default=None,
                       help="Ray cluster to join, e.g. auto or host:6379")
    sweep.add_argument("--num-cpus", type=_positive, default=None,
                       help="CPUs for a Ray instance started here")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(func=sweep_command)


def parse_set(text: str) -> tuple[str, list[Any]]:
    """"key=v1,v2" -> (key, [v1, v2]) with each value read as a TOML literal."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError(f"--set {text!r}: write KEY=V1,V2,... (e.g. households.count=10,20)")
    return key, [_literal(v) for v in _split(values)]


def _split(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: text


def variants(sets: list[str]) -> list[Variant]:
    """Every combination of the `--set` values, in the order given (the last key fastest)."""
    pairs = [parse_set(s) for s in sets]
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--set names {next(k for k in keys if keys.count(k) > 1)} twice")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in pairs))]


def label(k: int, variant: Variant) -> str:
    """The variant's folder name: its index and its settings, filesystem-safe."""
    text = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in variant.items())
    return f"{k:03d}-" + re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)[:80]


def run_variant(config_path: Path, variant: Variant, folder: Path) -> dict[str, Any]:
    """Run one variant to its end with records in `folder`; never raises: the row of
    sweep.parquet (status, error, wall time, summary)."""
    from cosim.backends import LocalBackend
    from cosim.simulation import Simulation

    start = time.perf_counter()
    row: dict[str, Any] = {"status": "failed", "error": "", "folder": str(folder)}
    try:
        config = load_config(config_path, variant)
        sim = Simulation.from_config(config, LocalBackend(), record=True, out=folder)
        shutil.copy(config_path, folder / "scenario.toml")
        summary = sim.run(progress=False)
        row |= summary
        row["status"] = "not converged" if summary["nonconverged_steps"] else "complete"
    except Exception as exc:  # noqa: BLE001 - a failed variant is reported, the rest go on
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["wall_s"] = time.perf_counter() - start
    return row


def sweep_command(args: argparse.Namespace) -> int:
    try:
        if not args.sets:
            raise ConfigError("give at least one --set KEY=V1,V2,...")
        grid = variants(args.sets)
        configs: list[ScenarioConfig] = []
        for k, variant in enumerate(grid):
            try:
                configs.append(load_config(args.config, variant))
            except ConfigError as exc:
                raise ConfigError(f"variant {k} ({variant}): {exc}") from None
        for config in configs:
            refuse_external(config, args.config, "`cosim sweep`")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / (f"sweep-{configs[0].run.name}-"
                                      f"{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    folders = [out / label(k, v) for k, v in enumerate(grid)]
    print(f"sweep of {len(grid)} variants of {args.config} on the {args.backend} backend "
          f"-> {out}")
    rows = run_all(args.config, grid, folders, args.backend, args.address, args.num_cpus,
                   progress=not args.no_progress)
    table = pd.DataFrame([{"variant": k, **{key: str(value) for key, value in v.items()},
                           **row} for k, (v, row) in enumerate(zip(grid, rows))])
    table.to_parquet(out / "sweep.parquet", index=False)
    for k, row in enumerate(rows):
        if row["status"] != "complete":
            print(f"variant {k} {grid[k]}: {row['status']}"
                  + (f": {row['error']}" if row["error"] else ""), file=sys.stderr)
    done = sum(r["status"] == "complete" for r in rows)
    print(f"{done} of {len(rows)} variants complete; table {out / 'sweep.parquet'}")
    if any(r["status"] == "failed" for r in rows):
        return 1
    return 3 if done < len(rows) else 0


def run_all(config: Path, grid: list[Variant], folders: list[Path], backend: str = "ray",
            address: str | None = None, num_cpus: int | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
    """Run every variant (one task each on Ray, or one after another here); the rows of
    sweep.parquet in variant order. Ray is started (a local instance of `num_cpus`, or the
    cluster at `address`) unless it already runs, and stopped again if started here."""
    if backend == "local":
        return [run_variant(config, v, f) for v, f in
                tqdm(list(zip(grid, folders)), desc="sweep", unit="variant",
                     disable=not progress)]
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_variant)
        config = config.resolve()
        pending = {task.remote(config, v, f.resolve()): k
                   for k, (v, f) in enumerate(zip(grid, folders))}
        rows: list[dict[str, Any] | None] = [None] * len(grid)
        with tqdm(total=len(grid), desc="sweep", unit="variant", disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ready[0])
                try:
                    rows[k] = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - the task itself died (a node lost)
                    rows[k] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                               "folder": str(folders[k]), "wall_s": float("nan")}
                bar.update()
        return rows  # type: ignore[return-value]
    finally:
        if started:
            ray.shutdown()
