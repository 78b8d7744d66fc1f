"""Command groups of the `cosim` command line; each module has `register(subparsers)`."""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable

Command = Callable[[argparse.Namespace], int]


def exit_2_on(error: str) -> Callable[[Command], Command]:
    """A command whose `error` ("module:Class", imported only when the command runs, so that
    `cosim --help` stays fast) ends in one line naming what is wrong and exit code 2, not a
    traceback."""
    module, name = error.split(":")

    def wrap(command: Command) -> Command:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            cls = getattr(importlib.import_module(module), name)
            try:
                return command(args)
            except cls as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return run
    return wrap
