"""Reproductions of the seed papers' tables (issue 14): `cosim reproduce NAME`.

Each reproduction is a module of this package with

    add_arguments(parser)   its command-line options (beyond NAME)
    main(args) -> int       run it: print its table beside the paper's numbers, write
                            table.md and table.csv under the run folder; exit 2 on bad input

`REPRODUCTIONS` lists only the reproductions that exist; a name is added here when its
module is written, never before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

# name: (module of this package, one-line description)
REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "mahtm": ("experiments.reproduce.mahtm",
              "MAHTM (Cuadrado et al., ICLR 2023 workshop), Table 2: shared-parameter A2C "
              "and PG, a centralised critic and the optimum on the three-layer market"),
    "facmac": ("experiments.reproduce.facmac",
               "factored critic (Charbonnier et al., 2023/2025): training time to a target "
               "for 2-30 homes, FACMAC against independent and marginal-reward learners"),
    "stackelberg": ("experiments.reproduce.stackelberg",
                    "hierarchical P2P and wholesale trading (Wilk et al., 2026): IPPO bids "
                    "under a Stackelberg aggregator, against rule bids and a myopic leader"),
}


def default_folder(name: str) -> Path:
    """runs/reproduce/<name>-<UTC time>: where a reproduction writes without --out."""
    return Path("runs/reproduce") / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"


def common_arguments(parser: argparse.ArgumentParser, name: str, quick: str,
                     seed_default: str = "the scenario's") -> None:
    """--quick (`quick` says what it reduces), --out, --seed and --no-progress."""
    parser.add_argument("--quick", action="store_true", help=f"a reduced run for CI: {quick}")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"run folder (default runs/reproduce/{name}-<time>)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"scenario and training seed (default: {seed_default})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def empty_folder(out: Path) -> bool:
    """Whether `out` can take a new run (absent or an empty folder); else says why on
    stderr."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: --out {out}: exists and is not empty", file=sys.stderr)
        return False
    return True


def script(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
           main: Callable[[argparse.Namespace], int], doc: str) -> None:
    """`python -m experiments.reproduce.<name>`: the module's options, run, exit code."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.reproduce.{name}",
                                     description=doc.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))


def run_and_print(out: Path, go: Callable[[], object], written: str) -> int:
    """Run a reproduction (`go`), then print its table.md and `written` (what it wrote);
    a bad scenario is exit code 2 with its message."""
    from cosim.config import ConfigError

    try:
        go()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "table.md").read_text())
    print(written)
    return 0
