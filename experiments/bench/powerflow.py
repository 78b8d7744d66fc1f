"""Benchmark: the batched Z-bus power flow against OpenDSS, side by side, same scenarios.

Every repeat times each contender in turn on the same random load scenarios (each load
scaled independently, uniform in [0.5, 1.5]), so machine noise hits all of them alike;
the table reports medians and the median of the per-repeat ratios.

OpenDSS runs through OpenDSSDirect.py in two ways and the faster one is the peer:
- snapshot: set every load, SolveNoControl, read all node voltages; one case at a time.
- time series: the cases as loadshape points in yearly mode, one Solve per point, reading
  all node voltages after each; OpenDSS's documented path for many load states, which
  also gives it a warm start from the previous case.

Ours is timed per batch size, and once more the way the co-simulation calls it: batch 1,
each case warm-started from the previous one's answer, against OpenDSS's time-series
path on the same cases. The accuracy reported for a row is that of the very solves it
timed, against OpenDSS at tolerance 1e-12 (up to `check_rows` of them); the rest of each
result is dropped before the next solve, as a caller streaming through scenarios drops it
(`_Kept`). The build time is PowerFlow's construction (the Kron reduction, or the sparse
LU on large feeders).

    cosim bench powerflow [--feeder ieee123] [--batches 1 64 1024] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from experiments.bench.common import add_output_arguments, machine_info, save
from grid import PowerFlow, load_feeder
from grid.reference import OpenDSSReference
from grid.result import PowerFlowResult
from grid.runtime import tune_cpu_allocator

MARK = "<!-- bench:powerflow:{key} -->"
END = "<!-- /bench:powerflow:{key} -->"


@dataclass
class Config:
    feeder: str = "ieee123"
    batches: tuple[int, ...] = (1, 64, 1024)
    repeats: int = 5
    opendss_cases: int = 256  # cases OpenDSS solves per repeat and path
    seed: int = 0
    device: str = "cpu"
    compile: bool = False  # also time the torch.compile'd iteration
    tols: tuple[float, ...] = (1e-9, 1e-6)  # our convergence tolerances to time
    warm_cases: int = 64  # batch-1 warm-started solves per repeat (0: skip)
    check_rows: int = 32  # timed solves per row checked against a tight OpenDSS


@dataclass
class Result:
    config: Config
    machine: dict[str, str]
    rows: list[dict[str, float]] = field(default_factory=list)
    opendss: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    gradient: dict[str, float] = field(default_factory=dict)
    build_s: dict[str, float] = field(default_factory=dict)
    path: str = "dense"  # or "sparse": how PowerFlow applied Zb (chosen by feeder size)
    warm: list[dict[str, float]] = field(default_factory=list)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


Solved = dict[int, torch.Tensor]  # scenario index -> its node voltages from a timed solve


# One timing of ours spans at least this long: a single batch of 1,024 takes about 10 ms,
# where OpenDSS's 256 cases per repeat take 40-120 ms, and a window that short is swayed
# by the machine's hiccups more than OpenDSS's.
MIN_WINDOW_S = 0.04


def _time_ours(pf: PowerFlow, scale: torch.Tensor, batch: int, device: str, rows: int
               ) -> tuple[float, Solved]:
    """Solves per second for one batch size (at least 64 solves, and batches back to back
    for at least MIN_WINDOW_S, as OpenDSS's cases take about as long), and the node
    voltages of the first `rows` scenarios those solves produced."""
    rounds = max(1, 64 // batch)
    cases = scale.shape[0]
    kept = _Kept(rows)
    _sync(device)
    start = time.perf_counter()
    k = 0
    while k < rounds or time.perf_counter() - start < MIN_WINDOW_S:
        lo = (k * batch) % max(cases - batch + 1, 1)
        result = pf.solve(load_scale=scale[lo: lo + batch])
        result.voltages  # noqa: B018 - all node voltages are part of a solve
        kept.add(lo, result)
        k += 1
    _sync(device)
    elapsed = time.perf_counter() - start
    return k * batch / elapsed, kept.solved()


def _time_warm(pf: PowerFlow, scale: torch.Tensor, cases: int, device: str, rows: int
               ) -> tuple[float, Solved]:
    """Solves per second at batch 1 with each case warm-started from the previous
    case's answer, as a co-simulation steps through time."""
    kept, previous = _Kept(rows), None
    _sync(device)
    start = time.perf_counter()
    for k in range(cases):
        previous = pf.solve(load_scale=scale[k: k + 1], initial=previous)
        previous.voltages  # noqa: B018
        kept.add(k, previous)
    _sync(device)
    elapsed = time.perf_counter() - start
    return cases / elapsed, kept.solved()


class _Kept:
    """What a timing loop keeps of each solve: whether it converged, and copies of the
    node voltages of scenarios 0 to rows - 1; the result itself is dropped, as a caller
    streaming through scenarios (a co-simulation, a Monte Carlo run reducing each batch)
    drops it. (Until 2026-12-02 the checked voltages were views of the results, which
    kept each row's timed results alive until its next repeat: at batch 1,024 on IEEE
    123 a solve's 7.6 MB of outputs then landed partly on fresh pages, whose first touch
    on a 2-core VM cost about 0.6 ms per MB, about as long as the solve itself.)"""

    def __init__(self, rows: int) -> None:
        self.rows, self.converged, self.voltages = rows, [], {}

    def add(self, lo: int, result: PowerFlowResult) -> None:
        self.converged.append(result.converged)
        hi = min(lo + result.batch, self.rows)
        if lo < hi and any(k not in self.voltages for k in range(lo, hi)):
            v = result.voltages[: hi - lo].detach().clone()
            for j in range(hi - lo):
                self.voltages.setdefault(lo + j, v[j])

    def solved(self) -> Solved:
        """The kept voltages; a timed scenario that did not converge is an error."""
        if not all(bool(c.all()) for c in self.converged):
            raise RuntimeError("benchmark scenarios did not all converge")
        return self.voltages


def _time_snapshot(ref: OpenDSSReference, scale: np.ndarray) -> float:
    start = time.perf_counter()
    for row in scale:
        ref.solve_case(row)
    return len(scale) / (time.perf_counter() - start)


def _time_series(ref: OpenDSSReference, scale: np.ndarray) -> float:
    ref.prepare_series(scale)
    start = time.perf_counter()
    ref.run_series()
    return len(scale) / (time.perf_counter() - start)


def _gradient_ratio(pf: PowerFlow, scale: torch.Tensor, device: str, repeats: int) -> dict:
    """Backward over forward time for a voltage-limit penalty plus losses, batch-wide."""
    forward, backward = [], []
    for _ in range(repeats):
        x = scale.clone().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        res = pf.solve(load_scale=x)
        v = res.vmag_pu.nan_to_num(1.0)
        loss = (torch.relu(v - 1.05).square() + torch.relu(0.95 - v).square()).sum()
        loss = loss + res.losses.real.sum() * 1e-3
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        forward.append(t1 - t0)
        backward.append(t2 - t1)
    f, b = statistics.median(forward), statistics.median(backward)
    return {"batch": scale.shape[0], "forward_s": f, "backward_s": b, "ratio": b / f}


def _variants(cfg: Config) -> dict[str, dict[str, bool]]:
    """Our contenders and their PowerFlow options: the default (on the CPU the compiled
    loop of `grid.single`, on a GPU torch), torch's own iteration on the CPU, and with
    --compile torch's iteration fused by torch.compile."""
    cpu = not cfg.device.startswith("cuda")
    out = {"default": {}}
    if cpu:
        out["torch"] = {"compiled_cpu": False}
    if cfg.compile:
        out["torch.compile"] = {"compiled_cpu": False, "compile": True}
    return out


def run(cfg: Config, progress: bool = True) -> Result:
    tune_cpu_allocator()
    feeder = load_feeder(cfg.feeder)
    rng = np.random.default_rng(cfg.seed)
    pool = max(max(cfg.batches), cfg.opendss_cases, cfg.warm_cases, 64)
    scale_np = rng.uniform(0.5, 1.5, (pool, len(feeder.loads)))
    scale = torch.as_tensor(scale_np, device=cfg.device)
    variants, build_s = {}, {}
    for kind, kwargs in _variants(cfg).items():
        for tol in cfg.tols:
            start = time.perf_counter()
            variants[(kind, tol)] = PowerFlow(feeder, device=cfg.device, tol=tol, **kwargs)
            build_s[f"{kind} {tol:g}"] = time.perf_counter() - start
    snapshot = OpenDSSReference(feeder, tolerance=1e-4)  # OpenDSS's default tolerance
    series = OpenDSSReference(feeder, tolerance=1e-4)
    dss_cases = scale_np[: cfg.opendss_cases]
    warm_cases = scale_np[: cfg.warm_cases]

    # Warm-up: first calls pay for allocation, caches and any compilation.
    for pf in variants.values():
        for b in cfg.batches:
            pf.solve(load_scale=scale[:b])
    _time_snapshot(snapshot, dss_cases[:16])

    times: dict[object, list[float]] = {}
    solved: dict[object, Solved] = {}

    def timed(key: object, rate_and_rows: tuple[float, Solved]) -> None:
        times.setdefault(key, []).append(rate_and_rows[0])
        solved[key] = rate_and_rows[1]
        bar.update()

    warm_keys = [("warm", tol) for tol in cfg.tols] if cfg.warm_cases else []
    steps = cfg.repeats * (2 + len(variants) * len(cfg.batches) + 2 * len(warm_keys))
    bar = tqdm(total=steps, desc=f"bench powerflow {cfg.feeder}", disable=not progress)
    for _ in range(cfg.repeats):
        times.setdefault("snapshot", []).append(_time_snapshot(snapshot, dss_cases))
        bar.update()
        times.setdefault("series", []).append(_time_series(series, dss_cases))
        bar.update()
        for key, pf in variants.items():
            for b in cfg.batches:
                timed((*key, b), _time_ours(pf, scale, b, cfg.device, cfg.check_rows))
        for key in warm_keys:
            times.setdefault(("series", key), []).append(_time_series(series, warm_cases))
            bar.update()
            timed(key, _time_warm(variants[("default", key[1])], scale, cfg.warm_cases,
                                  cfg.device, cfg.check_rows))
    bar.close()

    result = Result(config=cfg, machine=machine_info(cfg.device), build_s=build_s,
                    path="sparse" if next(iter(variants.values())).sparse else "dense")
    med = {k: statistics.median(times[k]) for k in ("snapshot", "series")}
    result.opendss = {"snapshot_solves_per_s": med["snapshot"],
                      "series_solves_per_s": med["series"]}
    # Accuracy against a tight OpenDSS solve, of the very solves timed above.
    tight = OpenDSSReference(feeder, tolerance=1e-12)
    base = feeder.node_base_kv * 1e3
    reference: dict[int, np.ndarray] = {}

    def max_error(rows: Solved) -> float:
        worst = 0.0
        for k in sorted(rows)[: cfg.check_rows]:
            if k not in reference:
                reference[k] = tight.solve_case(scale_np[k])[0]
            v = rows[k].cpu().numpy()
            worst = max(worst, float(np.nanmax(np.abs(v - reference[k]) / base)))
        return worst

    check = scale_np[: cfg.check_rows]
    v_def = np.array([snapshot.solve_case(row)[0] for row in check])
    v_ref = np.array([tight.solve_case(row)[0] for row in check])
    iterations = {}
    for tol in cfg.tols:
        ours = variants[("default", tol)].solve(
            load_scale=torch.as_tensor(check, device=cfg.device))
        iterations[tol] = float(ours.iterations.float().mean())
    result.accuracy = {
        "ours_mean_iterations": {str(t): i for t, i in iterations.items()},
        "opendss_default_tol_max_error_pu": float(np.nanmax(np.abs(v_def - v_ref) / base)),
    }

    best = [max(s, t) for s, t in zip(times["snapshot"], times["series"])]
    for (kind, tol), _ in variants.items():
        for b in cfg.batches:
            ours = times[(kind, tol, b)]
            result.rows.append({
                "variant": kind,
                "tol": tol,
                "batch": b,
                "max_error_pu": max_error(solved[(kind, tol, b)]),
                "solves_per_s": statistics.median(ours),
                "ratio_vs_snapshot": statistics.median(
                    o / s for o, s in zip(ours, times["snapshot"])),
                "ratio_vs_fastest_opendss": statistics.median(
                    o / s for o, s in zip(ours, best)),
            })
    for key in warm_keys:
        ours, peer = times[key], times[("series", key)]
        result.warm.append({
            "tol": key[1],
            "cases": cfg.warm_cases,
            "max_error_pu": max_error(solved[key]),
            "solves_per_s": statistics.median(ours),
            "opendss_series_solves_per_s": statistics.median(peer),
            "ratio_vs_opendss_series": statistics.median(o / p for o, p in zip(ours, peer)),
        })
    grad_batch = min(max(cfg.batches), 1024)
    result.gradient = _gradient_ratio(variants[("default", cfg.tols[0])], scale[:grad_batch],
                                      cfg.device, cfg.repeats)
    return result


def markdown(result: Result) -> str:
    cfg, m = result.config, result.machine
    key = _key(cfg.device, cfg.feeder)
    lines = [
        MARK.format(key=key),
        f"### Power flow, {cfg.feeder}, {cfg.device} ({m['date']})",
        "",
        f"Machine: {m['cpu']}" + (f"; GPU {m['gpu']}" if "gpu" in m else "")
        + f"; torch {m['torch']} ({m['torch_threads']} threads); "
        f"OpenDSSDirect.py {m.get('opendssdirect', '?')}. Command: `cosim bench powerflow "
        f"--feeder {cfg.feeder} --device {cfg.device} --batches "
        f"{' '.join(map(str, cfg.batches))}{' --compile' if cfg.compile else ''}"
        + "".join(f" --{name.replace('_', '-')} {getattr(cfg, name)}"
                  for name in ("repeats", "opendss_cases", "warm_cases", "check_rows")
                  if getattr(cfg, name) != getattr(Config(), name)) + "`.",
        "",
        f"OpenDSS (one core, default tolerance 1e-4), {cfg.opendss_cases} cases per repeat: "
        f"snapshot path {result.opendss['snapshot_solves_per_s']:,.0f} solves/s, "
        f"time-series path {result.opendss['series_solves_per_s']:,.0f} solves/s.",
        "",
        "| ours | tol | max error (p.u.) | batch | solves/s | x OpenDSS snapshot "
        "| x fastest OpenDSS path |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row['variant']} | {row['tol']:g} | {row['max_error_pu']:.1e} | {row['batch']} "
            f"| {row['solves_per_s']:,.0f} | {row['ratio_vs_snapshot']:.1f} "
            f"| {row['ratio_vs_fastest_opendss']:.1f} |"
        )
    if result.warm:
        lines += [
            "",
            f"Batch 1, each case warm-started from the previous one (the co-simulation's "
            f"path), {cfg.warm_cases} cases, against OpenDSS's time-series path on the same "
            "cases:",
            "",
            "| tol | max error (p.u.) | solves/s | OpenDSS time series solves/s "
            "| x OpenDSS time series |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {w['tol']:g} | {w['max_error_pu']:.1e} | {w['solves_per_s']:,.0f} "
            f"| {w['opendss_series_solves_per_s']:,.0f} | {w['ratio_vs_opendss_series']:.2f} |"
            for w in result.warm
        ]
    acc, grad = result.accuracy, result.gradient
    lines += [
        "",
        f"Build (PowerFlow construction, {result.path} path): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in result.build_s.items()) + ".",
        f"Max error: node voltages of the timed solves (up to {cfg.check_rows} per row) "
        "against OpenDSS at tolerance 1e-12; OpenDSS itself at its default tolerance is off by "
        f"{acc['opendss_default_tol_max_error_pu']:.1e} p.u. Mean iterations: "
        + ", ".join(f"{i:.1f} at tol {t}" for t, i in acc["ours_mean_iterations"].items())
        + ".",
        f"Gradient (implicit adjoint), batch {grad['batch']}: forward "
        f"{grad['forward_s'] * 1e3:.1f} ms, backward {grad['backward_s'] * 1e3:.1f} ms, "
        f"backward/forward = {grad['ratio']:.2f}.",
        END.format(key=key),
    ]
    return "\n".join(lines) + "\n"


def _key(device: str, feeder: str = "ieee123") -> str:
    """The BENCHMARKS.md section: one per device, and one per other feeder on it."""
    kind = "gpu" if device.startswith("cuda") else "cpu"
    return kind if feeder == "ieee123" else f"{kind}-{Path(feeder).stem}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Config()
    parser.add_argument("--feeder", default=d.feeder, help="shipped feeder name or .dss path")
    parser.add_argument("--batches", type=int, nargs="+", default=list(d.batches))
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--opendss-cases", type=int, default=d.opendss_cases)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda")
    parser.add_argument("--compile", action="store_true",
                        help="also time the torch.compile'd iteration")
    parser.add_argument("--tols", type=float, nargs="+", default=list(d.tols),
                        help="our convergence tolerances to time")
    parser.add_argument("--warm-cases", type=int, default=d.warm_cases,
                        help="batch-1 warm-started solves per repeat (0 to skip)")
    parser.add_argument("--check-rows", type=int, default=d.check_rows,
                        help="timed solves per row checked against a tight OpenDSS")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = Config(
        feeder=args.feeder, batches=tuple(args.batches), repeats=args.repeats,
        opendss_cases=args.opendss_cases, seed=args.seed, device=args.device,
        compile=args.compile, tols=tuple(args.tols), warm_cases=args.warm_cases,
        check_rows=args.check_rows,
    )
    result = run(cfg)
    key = _key(cfg.device, cfg.feeder)
    save(f"powerflow-{key}", args, markdown(result),
         {**asdict(result), "config": asdict(cfg)},
         MARK.format(key=key), END.format(key=key))
    return 0


if __name__ == "__main__":  # without the CLI's imports (RLlib): what a bare GPU machine runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
