"""`cosim grid`: feeder facts and the power-flow demo."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    grid = commands.add_parser("grid", help="feeders and power flow").add_subparsers(
        dest="grid_command", required=True, metavar="GRID_COMMAND")

    info = grid.add_parser("info", help="facts about a feeder")
    info.add_argument("feeder", help="ieee13, ieee123, eulv, ieee8500 or a master .dss file")
    info.add_argument("--loads", action="store_true", help="also list every load")
    info.add_argument("--lines", action="store_true", help="also list every line")
    info.set_defaults(func=info_command)

    solve = grid.add_parser("solve", help="power-flow demo over random load scenarios")
    solve.add_argument("feeder", help="ieee13, ieee123, eulv, ieee8500 or a master .dss file")
    solve.add_argument("--scenarios", type=int, default=64)
    solve.add_argument("--scale-min", type=float, default=0.5)
    solve.add_argument("--scale-max", type=float, default=1.5)
    solve.add_argument("--seed", type=int, default=0)
    solve.add_argument("--device", default="cpu")
    solve.add_argument("--show", type=int, default=8, help="scenarios to print")
    solve.add_argument("--plot", type=Path, default=None, help="write a PNG voltage profile")
    solve.set_defaults(func=solve_command)


def info_command(args: argparse.Namespace) -> int:
    from grid import load_feeder

    feeder = load_feeder(args.feeder)
    summary = feeder.summary()
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    if args.loads:
        print()
        print(feeder.load_table().to_string(index=False))
    if args.lines:
        print()
        print(feeder.line_table().to_string(index=False))
    return 0


def solve_command(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from grid import PowerFlow, load_feeder
    from grid.plot import save_summary

    t0 = time.perf_counter()
    feeder = load_feeder(args.feeder)
    pf = PowerFlow(feeder, device=args.device)
    t1 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    scale = np.ones((args.scenarios + 1, len(feeder.loads)))
    scale[1:] = rng.uniform(args.scale_min, args.scale_max, (args.scenarios, len(feeder.loads)))
    result = pf.solve(load_scale=torch.as_tensor(scale, device=args.device))
    t2 = time.perf_counter()

    base = feeder.node_base_kv * 1e3
    v0 = result.voltages[0].detach().cpu().numpy()
    deviation = float(np.nanmax(np.abs(v0 - feeder.v_solved) / base))
    vpu = result.vmag_pu.detach().cpu().numpy()
    print(f"feeder {feeder.name}: {len(feeder.nodes)} nodes, {len(feeder.loads)} loads, "
          f"{pf.n_ports} ports after Kron reduction (built in {t1 - t0:.2f} s)")
    print(f"solved {len(scale)} scenarios in {(t2 - t1) * 1e3:.1f} ms: "
          f"{int(result.converged.sum())} converged, "
          f"{float(result.iterations.float().mean()):.1f} iterations on average")
    print(f"base case vs OpenDSS's own solution: max deviation {deviation:.2e} p.u.")
    print()
    print(f"{'scenario':>8} {'load kW':>10} {'losses kW':>10} {'Vmin pu':>8} {'Vmax pu':>8} "
          f"{'violations':>10}")
    for k in range(min(len(scale), args.show)):
        print(f"{('base' if k == 0 else k):>8} {result.load_power[k].real.item():>10.1f} "
              f"{result.losses[k].real.item():>10.2f} {np.nanmin(vpu[k]):>8.4f} "
              f"{np.nanmax(vpu[k]):>8.4f} {int(result.violations[k]):>10}")
    if args.plot:
        worst = int(np.nanargmin(np.nanmin(vpu, axis=1)))
        path = save_summary(args.plot, feeder, result, scenario=worst)
        print(f"\nplot of the scenario with the lowest voltage ({worst}): {path}")
    return 0
