"""What every benchmark shares: the machine it ran on, its output flags, and where its
table and raw results go (a run folder, and optionally its section of BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import torch


def machine_info(device: str) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": dt.date.today().isoformat(),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }
    try:  # from the package's metadata: importing it would load OpenDSS (grid.feeder)
        info["opendssdirect"] = importlib.metadata.version("opendssdirect.py")
    except importlib.metadata.PackageNotFoundError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--out and --update-benchmarks, the same for every benchmark."""
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json and table.md (default runs/bench-...)")
    parser.add_argument("--update-benchmarks", type=Path, default=None, metavar="MD",
                        help="write the table into this BENCHMARKS.md")


def save(name: str, args: argparse.Namespace, table: str, results: dict,
         start: str, end: str) -> Path:
    """Print the table; write table.md and results.json into args.out (default
    runs/bench-<name>-<time>); replace the section between `start` and `end` of
    args.update_benchmarks when given. Returns the folder."""
    print(table)
    out = args.out or Path("runs") / f"bench-{name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out}/table.md and results.json")
    if args.update_benchmarks:
        replace_section(args.update_benchmarks, table, start, end)
        print(f"updated {args.update_benchmarks}")
    return out


def replace_section(path: Path, section: str, start: str, end: str) -> None:
    """Put `section` (which begins with `start` and ends with `end`) into the markdown file,
    replacing the previous one, or appending it; the rest of the file stays as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
