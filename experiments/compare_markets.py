"""The same households on the same day under each market design, side by side.

Runs a scenario once per market mechanism (the P2P double auction with uniform k-pricing
and with pay-as-bid, MAHTM's three layers, the cooperative game's shared meter), everything
else equal, and prints per design: households' bills, peer-to-peer volume, self-consumption
(the share of PV used behind the meters and in the local markets rather than exported),
grid imports, emissions and the feeder's voltage range; with `--plot`, the same as bars.

    python -m experiments.compare_markets experiments/configs/lv_55.toml --plot runs/markets.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cosim.config import ConfigError, load_config
from cosim.simulation import Simulation

DESIGNS = {
    "double auction (uniform, k=0.5)": {"markets.mechanism": "double_auction"},
    "double auction (pay as bid)": {"markets.mechanism": "double_auction",
                                    "markets.double_auction.pricing": "pay_as_bid"},
    "MAHTM (three layers)": {"markets.mechanism": "mahtm"},
    "cooperative (shared meter)": {"markets.mechanism": "cooperative"},
}
COLUMNS = {  # summary key or derived column -> (heading, format)
    "household_cost": ("bills", "{:.2f}"),
    "p2p_kwh": ("P2P kWh", "{:.1f}"),
    "self_consumption": ("self-cons.", "{:.1%}"),
    "import_kwh": ("import kWh", "{:.1f}"),
    "household_emissions_kg": ("kgCO2", "{:.2f}"),
    "v_min_pu": ("v min", "{:.4f}"),
    "v_max_pu": ("v max", "{:.4f}"),
}


def compare(config_path: str, steps: int | None = None) -> dict[str, dict[str, float]]:
    """Each design's run summary, with self-consumption added."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, overrides) in enumerate(DESIGNS.items()):
            config = load_config(config_path, overrides | (
                {"run.steps": steps} if steps else {}))
            summary = Simulation.from_config(config, out=Path(tmp) / str(k)).run(
                progress=False)
            if summary.get("nonconverged_steps"):
                raise RuntimeError(f"{name}: {summary['nonconverged_steps']} steps did not "
                                   "converge; the comparison would hide them")
            pv = summary["pv_kwh"] - summary["curtailed_kwh"]
            summary["self_consumption"] = (pv - summary["export_kwh"]) / pv if pv > 0 else 0.0
            out[name] = summary
    return out


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["household_cost", "p2p_kwh", "self_consumption", "household_emissions_kg"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4))
    names = list(results)
    for ax, key in zip(axes, keys):
        ax.bar(range(len(names)), [results[n][key] for n in names],
               color=["C0", "C1", "C2", "C3"])
        ax.set_title(COLUMNS[key][0])
        ax.set_xticks(range(len(names)), [n.split(" (")[0] + "\n(" + n.split(" (")[1]
                                          for n in names], fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=None, help="run only the first steps")
    parser.add_argument("--plot", type=Path, default=None, help="write a bar chart here")
    args = parser.parse_args(argv)
    try:
        results = compare(args.config, args.steps)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'design':<32}" + "".join(f"{h:>12}" for h, _ in COLUMNS.values()))
    for name, s in results.items():
        print(f"{name:<32}" + "".join(f"{f.format(s[k]):>12}" for k, (_, f) in COLUMNS.items()))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
