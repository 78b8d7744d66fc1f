"""`cosim viz` and `cosim report`: look at a run, in the browser or as pictures.

    cosim viz RUN_DIR [--port N]          replay a run folder in a Mesa SolaraViz page
    cosim viz CONFIG --live [--port N]    run a scenario step by step in the page
    cosim report RUN_DIR [--steps 0 40]   PNGs and a Markdown summary in RUN_DIR/report

Exit codes: 0 done (the viewer: stopped with Ctrl-C), 2 bad input (a run folder missing
tables or written by an older version, a bad scenario file, no free port).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_PORT = 8765


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {value}")
    return value


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a step number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    viz = commands.add_parser(
        "viz", help="watch a run in the browser (Mesa SolaraViz)",
        description="Serve a Mesa SolaraViz page of a run folder (replay) or of a scenario "
        "run live: the feeder map, time series, a household inspector, play, step and seek.")
    viz.add_argument("source", type=Path, help="run folder, or with --live a scenario TOML")
    viz.add_argument("--live", action="store_true",
                     help="run the scenario (local backend) as the page steps it")
    viz.add_argument("--out", type=Path, default=None,
                     help="run folder of a live run (default runs/<name>-live-<time>)")
    viz.add_argument("--host", default="127.0.0.1", help="address to serve on")
    viz.add_argument("--port", type=_port, default=DEFAULT_PORT,
                     help=f"port (default {DEFAULT_PORT}; if in use, the next free one; 0: "
                     "any free port)")
    viz.set_defaults(func=viz_command)

    report = commands.add_parser(
        "report", help="PNG plots and a Markdown summary of a run",
        description="Write RUN_DIR/report/: voltage profiles along the feeder, a bus x time "
        "voltage heat map, prices, trades, stored-energy bands and bills, and report.md "
        "linking them.")
    report.add_argument("run_dir", type=Path, help="run folder (written by `cosim run`)")
    report.add_argument("--steps", type=_step, nargs="+", default=None,
                        help="steps of the voltage profiles (default: the lowest-voltage "
                        "step, the highest and the last)")
    report.add_argument("--out", type=Path, default=None,
                        help="folder for the report (default RUN_DIR/report)")
    report.set_defaults(func=report_command)


def viz_command(args: argparse.Namespace) -> int:
    from cosim.config import ConfigError
    from cosim.viz.records import RunFolderError
    from cosim.viz.server import PortError, free_port

    if args.live and args.source.is_dir():
        print(f"error: {args.source} is a folder: --live runs a scenario file; replay a "
              "run folder without --live", file=sys.stderr)
        return 2
    if not args.live and args.source.is_file():
        print(f"error: {args.source} is a file: replay takes a run folder; run a scenario "
              "live with --live", file=sys.stderr)
        return 2
    try:
        port = free_port(args.host, args.port)
    except PortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.port not in (0, port):
        print(f"port {args.port} is in use: serving on port {port} instead")

    from cosim.viz.model import FeederModel
    from cosim.viz.page import configure, page_title
    from cosim.viz.server import serve

    params = {"source": str(args.source), "live": args.live}
    if args.live and args.out is not None:
        params["live_folder"] = str(args.out)
    try:
        model = FeederModel(**params)
    except (RunFolderError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    records = model.records
    configure(model, params, page_title(args.source, args.live))
    print(f"{records.path}: {records.n_households} households on "
          f"{model.layout.feeder.name}, {records.n_steps} of {records.steps_total} steps "
          f"recorded{' (live)' if args.live else ''}")
    print(f"viewer at http://{args.host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        serve(args.host, port)
    finally:
        model.close()
    return 0


def report_command(args: argparse.Namespace) -> int:
    from cosim.viz.records import RunRecords
    from cosim.viz.report import write_report

    try:
        records = RunRecords(args.run_dir)
        markdown = write_report(records, args.out or args.run_dir / "report", args.steps)
    except ValueError as exc:  # RunFolderError, or a step the run did not record
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {markdown}")
    return 0
