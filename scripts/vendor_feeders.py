"""Copy the EPRI test feeders from ../shared/feeders into grid/feeders as package data.

Only the files a master script actually reads are shipped (followed through `redirect`,
`compile`, `buscoords` and `file=` references), with DSS comments and blank lines removed:
the data is what we ship. Every stripped feeder is then solved in OpenDSS beside its original
and the node voltages must agree exactly, so stripping can never change the physics.

Run from the repository root:  python scripts/vendor_feeders.py [SHARED_FEEDERS_DIR]
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import opendssdirect as odd

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "grid" / "feeders"

# shipped name -> (source folder, master file)
FEEDERS = {
    "ieee13": ("13Bus", "IEEE13Nodeckt.dss"),
    "ieee123": ("123Bus", "IEEE123Master.dss"),
    "eulv": ("LVTestCase", "Master.dss"),
    "ieee8500": ("8500-Node", "Master.dss"),
}
# Files the master does not reference itself: IEEE 123's coordinates, and all 100 of the
# European LV feeder's daily profiles (its loads use 55; the profile generator trains on all).
EXTRA = {
    "ieee123": ["BusCoords.dat"],
    "eulv": [f"Daily_1min_100profiles/load_profile_{k}.txt" for k in range(1, 101)],
}

_REF = re.compile(r"\b(?:redirect|compile|buscoords)\s+\(?([^\s)]+)\)?|file=([^\s)]+)", re.I)


def strip_comments(text: str) -> str:
    """Remove `!` and `//` comments and blank lines from DSS script text."""
    out = []
    for line in text.splitlines():
        cut = len(line)
        for marker in ("!", "//"):
            pos = line.find(marker)
            if pos != -1:
                cut = min(cut, pos)
        line = line[:cut].rstrip()
        if line.strip():
            out.append(line)
    return "\n".join(out) + "\n" if out else ""


def _inline_stub(path: Path, text: str) -> str:
    """A file that only redirects elsewhere (13Bus/IEEELineCodes.DSS -> ../) is replaced by
    its target, so every shipped feeder folder is self-contained."""
    lines = text.splitlines()
    match = _REF.fullmatch(lines[0].strip()) if len(lines) == 1 else None
    if match and lines[0].strip().lower().startswith("redirect"):
        target = (path.parent / match.group(1)).resolve()
        return _inline_stub(target, strip_comments(target.read_text(errors="replace")))
    return text


def _resolve(folder: Path, name: str) -> Path:
    """Case-insensitive lookup: the EPRI scripts were written on Windows."""
    direct = folder / name
    if direct.exists():
        return direct
    for path in folder.iterdir():
        if path.name.lower() == name.lower():
            return path
    raise FileNotFoundError(f"{folder / name} (referenced from a master script)")


def vendor(src_root: Path, name: str) -> None:
    folder_name, master = FEEDERS[name]
    src = src_root / folder_name
    dst = DEST / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    queue = [master, *EXTRA.get(name, [])]
    seen: set[str] = set()
    while queue:
        rel = queue.pop()
        if rel.lower() in seen:
            continue
        seen.add(rel.lower())
        path = _resolve(src, rel)
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in {".dss", ".txt"} and "profile" not in path.name.lower():
            text = _inline_stub(path, strip_comments(path.read_text(errors="replace")))
            for match in _REF.finditer(text):
                queue.append((match.group(1) or match.group(2)).strip("\"'"))
            target.write_text(text)
        else:
            target.write_bytes(path.read_bytes())
    # Drop redirects to files that were nothing but comments.
    for path in dst.rglob("*"):
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
            for script in dst.rglob("*"):
                if script.is_file() and script.suffix.lower() in {".dss", ".txt"}:
                    lines = script.read_text().splitlines(keepends=True)
                    kept = [ln for ln in lines if path.name.lower() not in ln.lower()]
                    if kept != lines:
                        script.write_text("".join(kept))
    _check_same_solution(src / master, dst / master)
    print(f"{name}: {len(list(dst.rglob('*')))} files")


def _solve(master: Path) -> dict[str, complex]:
    ctx = odd.dss.NewContext()
    ctx.Text.Command("clear")
    ctx.Text.Command(f'compile "{master}"')
    ctx.Solution.Solve()
    volts = np.asarray(ctx.Circuit.AllBusVolts()).view(complex)
    return dict(zip(ctx.Circuit.AllNodeNames(), volts))


def _check_same_solution(original: Path, stripped: Path) -> None:
    a, b = _solve(original), _solve(stripped)
    if a.keys() != b.keys():
        raise SystemExit(f"{stripped}: node set differs from {original}")
    worst = max(abs(a[k] - b[k]) for k in a)
    if worst != 0.0:
        raise SystemExit(f"{stripped}: voltages differ from {original} by {worst} V")


def main() -> None:
    src_root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "feeders"
    DEST.mkdir(parents=True, exist_ok=True)
    for name in FEEDERS:
        vendor(src_root, name)
    shutil.copy(src_root / "LICENSE-EPRI.txt", DEST / "LICENSE-EPRI.txt")


if __name__ == "__main__":
    main()
