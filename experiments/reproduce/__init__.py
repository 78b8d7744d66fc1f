"""Reproductions of the seed papers' tables (issue 14): `cosim reproduce NAME`.

Each reproduction is a module of this package with

    add_arguments(parser)   its command-line options (beyond NAME)
    main(args) -> int       run it: print its table beside the paper's numbers, write
                            table.md and table.csv under the run folder; exit 2 on bad input

`REPRODUCTIONS` lists only the reproductions that exist; a name is added here when its
module is written, never before.
"""

from __future__ import annotations

# name: (module of this package, one-line description)
REPRODUCTIONS: dict[str, tuple[str, str]] = {
    "mahtm": ("experiments.reproduce.mahtm",
              "MAHTM (Cuadrado et al., ICLR 2023 workshop), Table 2: shared-parameter A2C "
              "and PG, a centralised critic and the optimum on the three-layer market"),
    "facmac": ("experiments.reproduce.facmac",
               "factored critic (Charbonnier et al., 2023/2025): training time to a target "
               "for 2-30 homes, FACMAC against independent and marginal-reward learners"),
}
