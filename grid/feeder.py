"""Feeders: an OpenDSS circuit read through OpenDSSDirect.py into plain arrays.

`load_feeder` runs the feeder's scripts without their reporting commands (`run_script`),
solves the circuit once with its controls active (regulator taps, capacitor switching),
freezes them there, then disables every load and generating element (generator, PV system,
storage) and reads the system admittance matrix. That Y, the no-load voltages and the load
list, generation included as negative load, are all the power flow needs; the OpenDSS
operating point is kept as `v_solved` so callers can check against it.

Units: admittance in siemens, voltages in volts, power in kW/kvar, base voltages in kV
line-to-neutral, lengths in km.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from grid.daily import Loadshape, ShapedElement, describe
from grid.errors import FeederError

FEEDER_DIR = Path(__file__).resolve().parent / "feeders"
GROUND = -1  # node index used for the ground reference (node 0 in OpenDSS)

# name -> (master script relative to grid/feeders, extra commands run after it)
SHIPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "ieee13": ("ieee13/IEEE13Nodeckt.dss", ()),
    "ieee123": ("ieee123/IEEE123Master.dss", ("buscoords BusCoords.dat",)),
    "eulv": ("eulv/Master.dss", ()),
    "ieee8500": ("ieee8500/Master.dss", ()),
}
ALIASES = {
    "13": "ieee13",
    "123": "ieee123",
    "lv": "eulv",
    "european_lv": "eulv",
    "lvtestcase": "eulv",
    "8500": "ieee8500",
}

# OpenDSS load model -> (Z, I, P) fractions of the nominal P and of the nominal Q. Model 4
# has no ZIP form (its exponents are `cvr_watts` and `cvr_vars`); the Q of models 6 and 7 is
# `fixed_kvar`, not `kvar`.
_LOAD_MODELS: dict[int, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    1: ((0, 0, 1), (0, 0, 1)),  # constant P and Q
    2: ((1, 0, 0), (1, 0, 0)),  # constant impedance
    3: ((0, 0, 1), (1, 0, 0)),  # constant P, quadratic Q
    4: ((0, 0, 0), (0, 0, 0)),  # exponential: P ~ V^cvr_watts, Q ~ V^cvr_vars
    5: ((0, 1, 0), (0, 1, 0)),  # constant current magnitude
    6: ((0, 0, 1), (0, 0, 1)),  # constant P, Q fixed at the base kvar
    7: ((0, 0, 1), (1, 0, 0)),  # constant P, Q from a fixed reactance at the base kvar
}
ZIP_MODEL = 8


@dataclass(frozen=True)
class Load:
    """One OpenDSS load, or a generating element (`kind` "generator", "pvsystem", "storage")
    entered as a load with negative power. `nodes` are node indices of its conductors
    (GROUND for node 0). Powers are totals over the element's phases in kW/kvar, consumed
    (a generator's are negative); voltages in kV and per unit of the branch voltage."""

    name: str  # a load's name; "class.name" for a generating element
    bus: str
    phases: int
    conn: str  # "wye" or "delta"
    nodes: tuple[int, ...]
    kv: float
    kw: float
    kvar: float
    model: int
    zip_p: tuple[float, float, float]  # (Z, I, P) fractions of kw
    zip_q: tuple[float, float, float]  # (Z, I, P) fractions of kvar (of fixed_kvar: 6, 7)
    vminpu: float  # below: OpenDSS interpolates toward constant impedance
    vmaxpu: float  # above: constant impedance
    vlowpu: float  # below: constant impedance at nominal power
    zip_cutoff: float = 0.0  # model 8 only: per-unit voltage where the load drops out
    cvr_watts: float = 1.0  # model 4 only: P ~ V^cvr_watts in the normal band
    cvr_vars: float = 2.0  # model 4 only: Q ~ V^cvr_vars in the normal band
    fixed_kvar: float = 0.0  # models 6 and 7: the base kvar, which OpenDSS's loadmult leaves
    kind: str = "load"  # "load", or the OpenDSS class of a generating element
    daily: str = ""  # a generating element's daily loadshape ("" if none); kw is its snapshot

    def branches(self) -> list[tuple[int, int, float]]:
        """(node a, node b, nominal branch voltage in V) for each branch the load draws on.

        Wye: each phase conductor to the neutral conductor. Delta: conductor to conductor.
        OpenDSS rates 2- and 3-phase loads by line-to-line kV, single-phase ones by the kV
        across their terminals.
        """
        n = self.nodes
        if self.conn == "wye":
            vn = self.kv * 1e3 / (math.sqrt(3) if self.phases > 1 else 1.0)
            return [(n[i], n[self.phases], vn) for i in range(self.phases)]
        vn = self.kv * 1e3
        if self.phases == 1:
            return [(n[0], n[1], vn)]
        return [(n[i], n[(i + 1) % self.phases], vn) for i in range(self.phases)]


@dataclass(frozen=True)
class Line:
    """A line (or switch). `yprim` orders conductors as nodes1 then nodes2."""

    name: str
    bus1: str
    bus2: str
    nodes1: tuple[int, ...]
    nodes2: tuple[int, ...]
    yprim: np.ndarray  # complex, siemens, (2 nc, 2 nc)
    norm_amps: float
    emerg_amps: float
    length_km: float
    is_switch: bool

    @property
    def phases(self) -> int:
        return len(self.nodes1)


@dataclass(frozen=True)
class Source:
    """A voltage source: its terminal nodes and the admittance behind them (Norton form)."""

    name: str
    nodes: tuple[int, ...]
    y: np.ndarray  # complex, siemens, (len(nodes), len(nodes))


@dataclass(frozen=True, eq=False)
class Feeder:
    """An OpenDSS feeder as arrays, with loads disabled and controls frozen.

    `loads` holds the OpenDSS loads and then its generators, PV systems and storage elements
    (`Load.kind` tells them apart), so the power flow treats generation as load of negative
    power and a load_scale column scales each of them alike. Generation is at its snapshot
    output; `daily_shapes` holds the daily loadshape each element names (`Load.daily`), and
    `shaped` those elements with what grid.daily needs to step them through a day as
    OpenDSS's daily mode does.
    """

    name: str
    path: Path
    commands: tuple[str, ...]  # DSS commands run after compiling `path`
    frequency_hz: float
    nodes: tuple[str, ...]  # "bus.phase" in system-Y order
    node_base_kv: np.ndarray  # line-to-neutral base kV, nan where OpenDSS has none
    y: sp.csc_matrix  # system admittance, siemens, loads and generating elements disabled
    v_noload: np.ndarray  # complex volts with every load and generating element disabled
    v_solved: np.ndarray  # complex volts of OpenDSS's own solution, loads and generation
    sources: tuple[Source, ...]
    loads: tuple[Load, ...]
    lines: tuple[Line, ...]
    bus_coords: dict[str, tuple[float, float]]
    graph: nx.Graph = field(repr=False)
    vmin_pu: float = 0.95
    vmax_pu: float = 1.05
    controls_load_scale: float = 1.0  # the loading at which the controls were set
    # the daily loadshapes of generating elements, by name
    daily_shapes: dict[str, Loadshape] = field(default_factory=dict, repr=False)
    shaped: tuple[ShapedElement, ...] = ()  # the generating elements on a daily shape

    @property
    def buses(self) -> list[str]:
        return list(dict.fromkeys(n.rsplit(".", 1)[0] for n in self.nodes))

    def node_index(self, node: str) -> int:
        """Index of a node given as "bus.phase" (case-insensitive)."""
        try:
            return self._node_lookup[node.lower()]
        except KeyError:
            raise KeyError(f"feeder {self.name!r} has no node {node!r}") from None

    def connection_base_v(self, spec: str) -> float:
        """Base voltage (V) of a connection "bus.a" or "bus.a.b": line-to-neutral, or
        line-to-line between two phases."""
        bus, *phases = spec.split(".")
        base = self.node_base_kv[self.node_index(f"{bus}.{phases[0]}")] * 1e3
        return base * (math.sqrt(3.0) if len(phases) == 2 else 1.0)

    def connection_bases_v(self, specs: Sequence[str]) -> np.ndarray:
        """`connection_base_v` of each connection, `[len(specs)]` (V): what a
        connection's voltage is divided by to read it in per unit."""
        return np.array([self.connection_base_v(c) for c in specs], dtype=float)

    def bus_phases(self, bus: str) -> list[int]:
        """Phases (OpenDSS node numbers) present at a bus."""
        return self._bus_phases.get(bus.lower(), [])

    @property
    def source_nodes(self) -> list[int]:
        return [n for s in self.sources for n in s.nodes]

    def load_table(self) -> pd.DataFrame:
        """One row per load: bus, phases ("1.2" etc.), connection, model, nominal power."""
        frame = _frame(self.loads, drop={"nodes"})
        frame.insert(3, "nodes", [".".join(self.nodes[n].rsplit(".", 1)[1] if n >= 0 else "0"
                                           for n in ld.nodes) for ld in self.loads])
        return frame

    def line_table(self) -> pd.DataFrame:
        """One row per line: end buses, phases, ampacity, length and whether a switch."""
        frame = _frame(self.lines, drop={"yprim", "nodes1", "nodes2"})
        frame.insert(3, "phases", [ln.phases for ln in self.lines])
        return frame

    @property
    def consuming(self) -> np.ndarray:
        """[loads] bool: which entries of `loads` are loads proper, not the file's PVSystem,
        Storage and Generator elements (loads of negative power)."""
        return np.array([ld.kind == "load" for ld in self.loads], dtype=bool)

    def summary(self) -> dict[str, object]:
        """Headline facts, as printed by `cosim grid info`."""
        own = self.consuming
        consuming = [ld for ld, c in zip(self.loads, own) if c]
        generating = [ld for ld, c in zip(self.loads, own) if not c]
        kw = sum(ld.kw for ld in consuming)
        kvar = sum(ld.kvar for ld in consuming)
        vpu = np.abs(self.v_solved) / (self.node_base_kv * 1e3)
        vpu = vpu[np.isfinite(vpu)]
        models = pd.Series([ld.model for ld in consuming]).value_counts().sort_index()
        return {
            "name": self.name,
            "path": str(self.path),
            "frequency_hz": self.frequency_hz,
            "buses": len(self.buses),
            "nodes": len(self.nodes),
            "sources": ", ".join(s.name for s in self.sources),
            "loads": len(consuming),
            "loads_wye_delta": f"{sum(ld.conn == 'wye' for ld in consuming)} wye, "
            f"{sum(ld.conn == 'delta' for ld in consuming)} delta",
            "load_models": ", ".join(f"model {m}: {c}" for m, c in models.items()),
            "total_load_kw": round(kw, 3),
            "total_load_kvar": round(kvar, 3),
            "generating_elements": len(generating),
            "total_generation_kw": round(-sum(ld.kw for ld in generating), 3),
            "lines": len(self.lines),
            "switches": sum(ln.is_switch for ln in self.lines),
            "voltage_base_kv_ln": ", ".join(
                f"{v:g}" for v in sorted({round(float(k), 4) for k in self.node_base_kv
                                          if np.isfinite(k)})),
            "solved_vmin_pu": round(float(vpu.min()), 5) if vpu.size else float("nan"),
            "solved_vmax_pu": round(float(vpu.max()), 5) if vpu.size else float("nan"),
            "has_coordinates": bool(self.bus_coords),
        }

    # Derived lookups, built once on first use.
    @property
    def _node_lookup(self) -> dict[str, int]:
        cache = self.__dict__.get("_node_lookup_cache")
        if cache is None:
            cache = {n: i for i, n in enumerate(self.nodes)}
            object.__setattr__(self, "_node_lookup_cache", cache)
        return cache

    @property
    def _bus_phases(self) -> dict[str, list[int]]:
        cache = self.__dict__.get("_bus_phases_cache")
        if cache is None:
            cache = {}
            for n in self.nodes:
                bus, ph = n.rsplit(".", 1)
                cache.setdefault(bus, []).append(int(ph))
            object.__setattr__(self, "_bus_phases_cache", cache)
        return cache


def _frame(records: Sequence[object], drop: set[str]) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in vars(r).items() if k not in drop} for r in records])


def shipped_feeders() -> list[str]:
    """Names of the feeders that ship with the package."""
    return list(SHIPPED)


def feeder_path(name_or_path: str | Path) -> tuple[Path, tuple[str, ...]]:
    """Resolve a shipped feeder name or a path to a master .dss file."""
    key = str(name_or_path).lower()
    key = ALIASES.get(key, key)
    if key in SHIPPED:
        rel, extra = SHIPPED[key]
        return FEEDER_DIR / rel, extra
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FeederError(
            f"feeder file not found: {path} (shipped feeders: {', '.join(SHIPPED)})"
        )
    return path.resolve(), ()


def new_dss_engine() -> object:
    """A private OpenDSS engine (an OpenDSSDirect context), so feeders and reference solves
    never share state. Creating one moves the process to OpenDSS's start-up directory;
    the working directory is put back."""
    _pin_environment()
    import opendssdirect as odd

    cwd = os.getcwd()
    try:
        ctx = odd.dss.NewContext()
    finally:
        os.chdir(cwd)
    # A second guard behind the skipped commands of `run_script`: nothing a feeder does may
    # open an editor on a report (a process-wide DSS C-API setting).
    ctx.Basic.AllowEditor(False)
    return ctx


_PINNED: list[object] = []


def _pin_environment() -> None:
    """Before OpenDSS's library loads: point the C `environ` at a copy that is never freed.

    The library's runtime (Free Pascal) keeps the environment array it sees when it loads
    and reads it again in every new thread that calls it. Adding a variable later (pytest,
    Ray and torch all do) can make the C library move its array and free the old one, and
    the next thread to call OpenDSS, such as a co-simulation's grid actor, then crashed.
    With `environ` pointing at our copy, the C library allocates a new array on the next
    change and leaves this one, and its strings, alone."""
    if _PINNED or sys.platform != "linux" or {"dss", "opendssdirect"} & set(sys.modules):
        return
    libc = ctypes.CDLL(None)
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
    strings = []
    while environ[len(strings)] is not None:
        strings.append(ctypes.create_string_buffer(environ[len(strings)]))
    array = (ctypes.c_char_p * (len(strings) + 1))(
        *(ctypes.cast(b, ctypes.c_char_p) for b in strings), None)
    _PINNED.extend([strings, array])
    ctypes.c_void_p.in_dll(libc, "environ").value = ctypes.addressof(array)


@contextmanager
def dss_context() -> Iterator[object]:
    """A private OpenDSS engine for the duration of a block."""
    ctx = new_dss_engine()
    cwd = os.getcwd()  # `clear` changes the working directory too
    try:
        yield ctx
    finally:
        ctx.Text.Command("clear")
        os.chdir(cwd)


def compile_circuit(ctx: object, path: Path, extra: tuple[str, ...] = ()) -> None:
    """Compile a master script in `ctx` with `run_script`, then run `extra`; DSS errors become
    FeederError naming file and line. The circuit must have buses with base voltages and an
    enabled voltage source."""
    from dss import DSSException

    cwd = os.getcwd()
    try:
        ctx.Text.Command("clear")
        run_script(ctx, path)
        for command in extra:
            ctx.Text.Command(command)
    except DSSException as exc:
        raise FeederError(f"{path}: {exc}") from None
    finally:
        os.chdir(cwd)
    try:
        ctx.Circuit.Name()
    except DSSException:
        raise FeederError(
            f"{path}: no circuit was defined (missing 'New Circuit.<name>')") from None
    if ctx.Circuit.NumNodes() == 0 or not _any_base_voltage(ctx):
        # OpenDSS builds its bus list (and the per-unit bases) in CalcVoltageBases; without
        # it a circuit has no buses, or buses without base voltages.
        raise FeederError(
            f"{path}: the master never runs CalcVoltageBases, so OpenDSS has no bus base "
            "voltages; add 'Set VoltageBases=[...]' (the system's kV levels) and "
            "'CalcVoltageBases' after the circuit's elements"
        )
    names = [n for n in _element_names(ctx, "Vsource") if _enabled(ctx, n)]
    if not names:
        raise FeederError(f"{path}: the feeder has no enabled voltage source (Vsource)")


def _any_base_voltage(ctx: object) -> bool:
    for bus in ctx.Circuit.AllBusNames():
        ctx.Circuit.SetActiveBus(bus)
        if ctx.Bus.kVBase() > 0:
            return True
    return False


# Commands that write files, open windows or run programs. A feeder script is data, so
# loading one must change nothing outside the OpenDSS engine: `run_script` skips these.
SKIPPED_COMMANDS = frozenset({
    "show", "export", "plot", "visualize", "save", "dump", "fileedit", "formedit", "di_plot",
    "comparecases", "yearlycurves", "doscmd", "exportoverloads", "exportvviolations",
    "alignfile", "cvrtloadshapes", "vdiff", "_showcontrolqueue",
})
_QUOTES = {'"': '"', "'": "'", "(": ")", "[": "]", "{": "}"}


def run_script(ctx: object, path: Path, *, is_compile: bool = True,
               _stack: tuple[Path, ...] = ()) -> None:
    """Run a DSS script in `ctx` line by line as OpenDSS's Compile (or Redirect) does, except
    that the commands in SKIPPED_COMMANDS are skipped, here and in every script it compiles
    or redirects to (which this runs itself, for that reason).

    As in OpenDSS: the script runs in its own directory (a Compile stays there and makes it
    the data path; a Redirect returns), a line starting with "/*" opens a block comment that
    the next line containing "*/" closes, and commands may be abbreviated. Errors become
    FeederError naming the file and line.
    """
    from dss import DSSException

    path = path.resolve()
    if path in _stack:
        raise FeederError(f"{_stack[-1]}: redirects back to {path}, which is already running")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise FeederError(f"cannot read DSS script {path}: {exc.strerror}") from None
    back = os.getcwd()
    os.chdir(path.parent)
    if is_compile:
        ctx.Basic.DataPath(str(path.parent))
    commands = _command_names(ctx)
    in_comment = False
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        in_comment = in_comment or line.startswith("/*")
        if in_comment:
            in_comment = "*/" not in line
            continue
        tokens = _tokens(line, 2)
        command = _resolve(tokens[0], commands) if tokens and not tokens[0][0] else ""
        if command in SKIPPED_COMMANDS:
            continue
        if command in ("redirect", "compile"):
            target = _script_target(tokens, path, number)
            run_script(ctx, target, is_compile=command == "compile", _stack=(*_stack, path))
            continue
        try:
            ctx.Text.Command(line)
        except DSSException as exc:
            raise FeederError(f"{path}, line: {number}: {exc}") from None
    if not is_compile:
        os.chdir(back)


def _command_names(ctx: object) -> list[str]:
    """OpenDSS's commands, lower case, in its own order (which settles abbreviations)."""
    return [ctx.Executive.Command(i).lower() for i in range(1, ctx.Executive.NumCommands() + 1)]


def _resolve(token: tuple[str, str], commands: list[str]) -> str:
    """The command a line's first token runs: a full name, or else the first command that
    starts with it, as OpenDSS resolves abbreviations. "" if none."""
    word = token[1].lower()
    if not word or word in commands:
        return word
    return next((c for c in commands if c.startswith(word)), "")


def _tokens(line: str, count: int) -> list[tuple[str, str]]:
    """The first `count` (name, value) parameters of a DSS command line, as OpenDSS's parser
    splits them: separated by blanks or commas, "name=value" or a bare value, values
    optionally quoted with "", '', (), [] or {}."""
    out, i, n = [], 0, len(line)
    while len(out) < count:
        while i < n and line[i] in " \t,":
            i += 1
        if i >= n or line[i] == "!":
            break
        name, value = "", None
        while value is None:
            if i < n and line[i] in _QUOTES:
                end = line.find(_QUOTES[line[i]], i + 1)
                end = n if end < 0 else end
                value, i = line[i + 1: end], end + 1
                break
            j = i
            while j < n and line[j] not in " \t,=":
                j += 1
            word, i = line[i:j], j
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] == "=" and not name:
                name, i = word, i + 1
                while i < n and line[i] in " \t":
                    i += 1
            else:
                value = word
        out.append((name, value))
    return out


def _script_target(tokens: list[tuple[str, str]], script: Path, number: int) -> Path:
    """The file a Compile or Redirect line names, relative to OpenDSS's directory (the
    script's, unless a Compile in it moved on); OpenDSS also tries the name with ".dss"
    appended when it has no extension."""
    name = tokens[1][1] if len(tokens) > 1 else ""
    if not name:
        raise FeederError(f"{script}, line: {number}: Redirect/Compile without a file name")
    target = Path(name).expanduser()
    if not target.is_file() and "." not in name:
        target = target.with_name(target.name + ".dss")
    if not target.is_file():
        raise FeederError(f"{script}, line: {number}: Redirect file not found: \"{name}\"")
    return target


def freeze_controls(ctx: object, load_scale: float = 1.0) -> bool:
    """Solve the compiled circuit in `ctx` with its controls active at `load_scale` x its
    loads, then switch the controls off so the taps and capacitor states stay, and put the
    loads back. True if OpenDSS converged."""
    cmd = ctx.Text.Command
    cmd("set mode=snapshot")
    cmd("set maxcontroliter=100 maxiterations=100")
    # through `set`, which also re-evaluates the loads (the API setter alone does not)
    written = ctx.Solution.LoadMult()
    cmd(f"set loadmult={written * load_scale!r}")
    ctx.Solution.Solve()
    converged = bool(ctx.Solution.Converged())
    cmd(f"set loadmult={written!r}")
    cmd("set controlmode=off")
    return converged


def disable_loads_and_generation(ctx: object, generating: Sequence[str]) -> None:
    """Disable every load in `ctx` and the generating elements named ("class.name", as in
    `Load.name` of a feeder's generation), as `load_feeder` does before it reads Y and the
    no-load voltages: the power flow draws them all itself, so none may be in Y too."""
    ctx.Text.Command("batchedit load..* enabled=no")
    for name in generating:
        ctx.Text.Command(f"{name}.enabled=no")


def load_feeder(
    name_or_path: str | Path,
    *,
    vmin_pu: float = 0.95,
    vmax_pu: float = 1.05,
    tolerance: float = 1e-12,
    controls_load_scale: float = 1.0,
) -> Feeder:
    """Load a shipped feeder ("ieee13", "ieee123", "eulv", "ieee8500") or any OpenDSS master.

    OpenDSS solves the snapshot with its controls, then the controls are frozen and the
    solution is tightened to `tolerance` (relative voltage change) for `v_solved`.
    `controls_load_scale` scales the feeder's loads for the control solve only: the taps
    and capacitor states are those OpenDSS picks at that loading. Regulators set for the
    full design load boost a feeder that carries a tenth of it well above its limits, so a
    scenario whose households draw far less than the feeder's loads sets this to about
    their ratio. `v_solved` is always at the loads as written.
    """
    path, extra = feeder_path(name_or_path)
    if not vmin_pu < vmax_pu:
        raise FeederError(f"{path}: vmin_pu={vmin_pu} must be below vmax_pu={vmax_pu}")
    if not (math.isfinite(controls_load_scale) and controls_load_scale > 0):
        raise FeederError(f"{path}: controls_load_scale={controls_load_scale} must be positive")
    with dss_context() as ctx:
        compile_circuit(ctx, path, extra)
        _reject_unsupported(ctx, path)
        if not freeze_controls(ctx, controls_load_scale):
            raise FeederError(f"{path}: OpenDSS did not converge on the base case")
        ctx.Text.Command(f"set tolerance={tolerance} maxiterations=1000")
        ctx.Solution.SolveNoControl()
        solved = _node_voltages(ctx)
        base_kv, coords = _bus_data(ctx)
        loads_raw = _read_loads(ctx, path)
        generating_raw = _read_generating(ctx, path, solved)
        lines_raw = _read_lines(ctx)
        sources_raw = _read_sources(ctx, path)
        graph = _graph(ctx, coords, {f"line.{ln['name']}": ln["length_km"] for ln in lines_raw})
        shapes = _read_shapes(ctx, {raw["daily"] for raw in generating_raw} - {""})
        shaped = tuple(
            describe(len(loads_raw) + k, raw["name"], -raw["kw"], raw["daily"],
                     shapes[raw["daily"]], lambda p, e=raw["name"]: _query(ctx, f"{e}.{p}"))
            for k, raw in enumerate(generating_raw) if raw["daily"])
        frequency = ctx.Solution.Frequency()
        load_mult = ctx.Solution.LoadMult()

        disable_loads_and_generation(ctx, [raw["name"] for raw in generating_raw])
        ctx.Solution.SolveNoControl()
        nodes = tuple(n.lower() for n in ctx.Circuit.YNodeOrder())
        noload = _node_voltages(ctx)
        data, rows, colptr = ctx.YMatrix.getYsparse()
        y = sp.csc_matrix((data, rows, colptr), shape=(len(nodes), len(nodes)))

    index = {n: i for i, n in enumerate(nodes)}

    def idx(bus: str, node: int) -> int:
        return GROUND if node == 0 else index[f"{bus}.{node}"]

    loads = tuple(
        Load(**{**raw, "nodes": tuple(idx(raw["bus"], k) for k in raw["nodes"]),
                "kw": raw["kw"] * load_mult, "kvar": raw["kvar"] * load_mult})
        for raw in loads_raw
    ) + tuple(
        Load(**{**raw, "nodes": tuple(idx(raw["bus"], k) for k in raw["nodes"])})
        for raw in generating_raw
    )
    lines = tuple(
        Line(**{**raw, "nodes1": tuple(idx(raw["bus1"], k) for k in raw["nodes1"]),
                "nodes2": tuple(idx(raw["bus2"], k) for k in raw["nodes2"])})
        for raw in lines_raw
    )
    sources = tuple(
        Source(name=s["name"], nodes=tuple(idx(s["bus"], k) for k in s["nodes"]), y=s["y"])
        for s in sources_raw
    )
    node_base_kv = np.array([base_kv.get(n.rsplit(".", 1)[0], np.nan) for n in nodes])
    return Feeder(
        name=_feeder_name(name_or_path, path),
        path=path,
        commands=extra,
        frequency_hz=frequency,
        nodes=nodes,
        node_base_kv=node_base_kv,
        y=y,
        v_noload=np.array([noload[n] for n in nodes]),
        v_solved=np.array([solved[n] for n in nodes]),
        sources=sources,
        loads=loads,
        lines=lines,
        bus_coords=coords,
        graph=graph,
        vmin_pu=vmin_pu,
        vmax_pu=vmax_pu,
        controls_load_scale=controls_load_scale,
        daily_shapes=shapes,
        shaped=shaped,
    )


def _feeder_name(name_or_path: str | Path, path: Path) -> str:
    key = str(name_or_path).lower()
    key = ALIASES.get(key, key)
    return key if key in SHIPPED else path.stem


def _element_names(ctx: object, cls: str) -> list[str]:
    ctx.Circuit.SetActiveClass(cls)
    return [f"{cls}.{n}" for n in ctx.ActiveClass.AllNames() or []]


def _enabled(ctx: object, element: str) -> bool:
    ctx.Circuit.SetActiveElement(element)
    return bool(ctx.CktElement.Enabled())


# Elements the Z-bus model does not represent: sources of current, controls that would move
# the generating elements during a solve, and machines with dynamics of their own.
UNSUPPORTED_CLASSES = ("Isource", "VCCS", "InvControl", "ExpControl", "StorageController",
                       "GenDispatcher", "UPFC", "IndMach012", "VSConverter", "GICsource")


def _reject_unsupported(ctx: object, path: Path) -> None:
    """Elements the power flow does not represent must not be silently dropped."""
    for cls in UNSUPPORTED_CLASSES:
        names = [n for n in _element_names(ctx, cls) if _enabled(ctx, n)]
        if names:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise FeederError(
                f"{path}: unsupported element(s) {shown}; disable them or model them as "
                "power-flow injections"
            )


def _node_voltages(ctx: object) -> dict[str, complex]:
    names = [n.lower() for n in ctx.Circuit.YNodeOrder()]
    volts = np.asarray(ctx.Circuit.YNodeVArray()).view(complex)
    return dict(zip(names, volts))


def _bus_data(ctx: object) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    base, coords = {}, {}
    for bus in ctx.Circuit.AllBusNames():
        ctx.Circuit.SetActiveBus(bus)
        kv = ctx.Bus.kVBase()
        base[bus.lower()] = kv if kv > 0 else np.nan
        if ctx.Bus.Coorddefined():
            coords[bus.lower()] = (ctx.Bus.X(), ctx.Bus.Y())
    return base, coords


def _split_bus(spec: str) -> str:
    return spec.split(".", 1)[0].lower()


def _read_loads(ctx: object, path: Path) -> list[dict]:
    out = []
    for name in ctx.Loads.AllNames() or []:
        ctx.Loads.Name(name)
        ctx.Circuit.SetActiveElement(f"Load.{name}")
        if not ctx.CktElement.Enabled():
            continue
        model = ctx.Loads.Model()
        phases = ctx.Loads.Phases()
        conn = "delta" if ctx.Loads.IsDelta() else "wye"
        where = f"{path}: load {name!r}"
        if model == ZIP_MODEL:
            zipv = list(ctx.Loads.ZipV())
            if len(zipv) < 6:
                raise FeederError(f"{where} uses model=8 without ZIPV coefficients")
            zip_p, zip_q = tuple(zipv[0:3]), tuple(zipv[3:6])
            cutoff = float(zipv[6]) if len(zipv) > 6 else 0.0
        elif model in _LOAD_MODELS:
            zip_p, zip_q = _LOAD_MODELS[model]
            cutoff = 0.0
        else:  # OpenDSS itself accepts models 1 to 8 only
            raise FeederError(f"{where} uses load model {model}, which OpenDSS does not define")
        if conn == "delta" and phases == 2:
            raise FeederError(f"{where}: two-phase delta loads are not supported")
        out.append(
            {
                "name": name.lower(),
                "bus": _split_bus(ctx.CktElement.BusNames()[0]),
                "phases": phases,
                "conn": conn,
                "nodes": tuple(ctx.CktElement.NodeOrder()),
                "kv": ctx.Loads.kV(),
                "kw": ctx.Loads.kW(),
                "kvar": ctx.Loads.kvar(),
                "model": model,
                "zip_p": tuple(float(x) for x in zip_p),
                "zip_q": tuple(float(x) for x in zip_q),
                "vminpu": ctx.Loads.Vminpu(),
                "vmaxpu": ctx.Loads.Vmaxpu(),
                "vlowpu": _property(ctx, f"load.{name}.vlowpu"),
                "zip_cutoff": cutoff,
                "cvr_watts": ctx.Loads.CVRwatts(),
                "cvr_vars": ctx.Loads.CVRvars(),
                # OpenDSS holds the Q of models 6 and 7 at the base kvar, outside loadmult
                "fixed_kvar": ctx.Loads.kvar() if model in (6, 7) else 0.0,
            }
        )
    return out


GENERATING_CLASSES = ("Generator", "PVSystem", "Storage")


def _read_generating(ctx: object, path: Path, volts: dict[str, complex]) -> list[dict]:
    """Enabled generators, PV systems and storage elements as loads of negative power, at
    their output in the solved snapshot `volts` (complex node voltages by "bus.node").

    In a snapshot OpenDSS solves all three alike (model 1): constant P and Q between vminpu
    and vmaxpu, outside that band the constant impedance that draws the nominal power at the
    band's edge, and no vlowpu region; model 2 is a constant impedance throughout. That is
    load model 1 or 2 with vlowpu = 0 and the sign reversed. Their nominal output is what
    OpenDSS makes of their parameters: a PVSystem's Pmpp x irradiance x temperature factor
    through its inverter's efficiency curve, cut-in/cut-out and kvar and kVA limits, with pf
    or kvar; a Storage element's kWrated x %discharge (or -%charge) by its state, idling
    losses and the same inverter limits; a Generator's kW and kvar (or pf) x genmult. It is
    read back from the solved snapshot as the power each element draws over its voltage
    region factor, so it is OpenDSS's own evaluation of every parameter, not a copy of it.
    Loadshapes are not followed: the snapshot output is the element's `kw`/`kvar`, and
    `daily` names its daily loadshape for a caller to scale by (its column of load_scale).
    """
    out = []
    for cls in GENERATING_CLASSES:
        for element in _element_names(ctx, cls):
            ctx.Circuit.SetActiveElement(element)
            if not ctx.CktElement.Enabled():
                continue
            where = f"{path}: {element}"

            def prop(name: str) -> str:
                return _query(ctx, f"{element}.{name}")

            phases = ctx.CktElement.NumPhases()
            conn = "delta" if prop("conn").lower().startswith(("d", "ll")) else "wye"
            model = int(float(prop("model")))
            if model not in (1, 2):
                raise FeederError(
                    f"{where} uses model={model}; generating elements are supported as "
                    "model 1 (constant P and Q) or 2 (constant impedance)")
            if cls != "Generator" and "yes" in (prop("balanced").lower(),
                                                prop("limitcurrent").lower()):
                raise FeederError(f"{where}: Balanced=yes and LimitCurrent=yes are not "
                                  "supported")
            if conn == "delta" and phases != 3:
                # OpenDSS gives these a third of the band-edge impedance, a step we do not
                # reproduce
                raise FeederError(f"{where}: {phases}-phase delta generating elements are "
                                  "not supported; connect them wye")
            vmin, vmax = float(prop("vminpu")), float(prop("vmaxpu"))
            if not 0 <= vmin < vmax:
                raise FeederError(f"{where}: needs 0 <= vminpu ({vmin}) < vmaxpu ({vmax})")
            bus = _split_bus(ctx.CktElement.BusNames()[0])
            nodes = tuple(ctx.CktElement.NodeOrder())
            kv = float(prop("kv"))
            powers = np.asarray(ctx.CktElement.Powers()).reshape(-1, 2)[: len(nodes)]
            drawn = complex(*powers.sum(axis=0))  # kVA into the element, all conductors
            raw = {"name": element.lower(), "bus": bus, "phases": phases, "conn": conn,
                   "nodes": nodes, "kv": kv}
            # sum over branches of S(|v|) / S_nominal; nodes are still OpenDSS's numbers here
            factor = 0.0
            for a, b, vn in Load(**raw, kw=0.0, kvar=0.0, model=model, zip_p=(0, 0, 0),
                                 zip_q=(0, 0, 0), vminpu=vmin, vmaxpu=vmax,
                                 vlowpu=0.0).branches():
                r = abs(volts.get(f"{bus}.{a}", 0j) - volts.get(f"{bus}.{b}", 0j)) / vn
                edge = 1.0 if model == 2 else vmin if r <= vmin else vmax if r > vmax else r
                factor += (r / edge) ** 2
            if not factor > 0:
                raise FeederError(f"{where} has no voltage in the solved snapshot")
            nominal = drawn * phases / factor  # one branch per phase
            zip_p, zip_q = _LOAD_MODELS[model]
            out.append({**raw, "kw": nominal.real, "kvar": nominal.imag, "model": model,
                        "zip_p": tuple(map(float, zip_p)), "zip_q": tuple(map(float, zip_q)),
                        "vminpu": vmin, "vmaxpu": vmax, "vlowpu": 0.0,
                        "kind": cls.lower(), "daily": prop("daily").lower()})
    return out


def _read_shapes(ctx: object, names: set[str]) -> dict[str, Loadshape]:
    """The named loadshapes: points at a fixed interval from hour 0, or at the hours a
    shape lists."""
    out = {}
    for name in sorted(names):
        ctx.LoadShape.Name(name)
        mult = np.asarray(ctx.LoadShape.PMult(), dtype=float)
        qmult = np.asarray(ctx.LoadShape.QMult(), dtype=float)
        step = ctx.LoadShape.HrInterval()
        hours = (np.arange(len(mult)) * step if step > 0
                 else np.asarray(ctx.LoadShape.TimeArray(), dtype=float))
        # a shape without Qmult reports [0.0]
        out[name] = Loadshape(hours, mult, max(step, 0.0),
                              qmult=len(qmult) == len(mult) and bool(np.any(qmult != 0)),
                              actual=bool(ctx.LoadShape.UseActual()))
    return out


def _query(ctx: object, prop: str) -> str:
    """The value of "class.name.property" as OpenDSS's `?` command prints it."""
    ctx.Text.Command(f"? {prop}")
    return ctx.Text.Result()


def _property(ctx: object, prop: str) -> float:
    return float(_query(ctx, prop))


# OpenDSS length units: none, mi, kft, km, m, ft, in, cm, mm
_LENGTH_TO_KM = {0: 1.0, 1: 1.609344, 2: 0.3048, 3: 1.0, 4: 1e-3, 5: 0.3048e-3, 6: 0.0254e-3,
                 7: 1e-5, 8: 1e-6}


def _read_lines(ctx: object) -> list[dict]:
    out = []
    for name in ctx.Lines.AllNames() or []:
        ctx.Lines.Name(name)
        ctx.Circuit.SetActiveElement(f"Line.{name}")
        if not ctx.CktElement.Enabled():
            continue
        nc = ctx.CktElement.NumConductors()
        order = list(ctx.CktElement.NodeOrder())
        buses = ctx.CktElement.BusNames()
        yprim = np.asarray(ctx.CktElement.YPrim()).view(complex).reshape(2 * nc, 2 * nc)
        out.append(
            {
                "name": name.lower(),
                "bus1": _split_bus(buses[0]),
                "bus2": _split_bus(buses[1]),
                "nodes1": tuple(order[:nc]),
                "nodes2": tuple(order[nc:]),
                "yprim": yprim,
                "norm_amps": ctx.CktElement.NormalAmps(),
                "emerg_amps": ctx.CktElement.EmergAmps(),
                "length_km": ctx.Lines.Length() * _LENGTH_TO_KM.get(ctx.Lines.Units(), 1.0),
                "is_switch": bool(ctx.Lines.IsSwitch()),
            }
        )
    return out


def _read_sources(ctx: object, path: Path) -> list[dict]:
    out = []
    for element in _element_names(ctx, "Vsource"):
        ctx.Circuit.SetActiveElement(element)
        if not ctx.CktElement.Enabled():
            continue
        nc = ctx.CktElement.NumConductors()
        order = list(ctx.CktElement.NodeOrder())
        if any(order[nc:]):
            raise FeederError(
                f"{path}: {element} is not grounded on its second terminal; only grounded "
                "voltage sources are supported"
            )
        yprim = np.asarray(ctx.CktElement.YPrim()).view(complex).reshape(2 * nc, 2 * nc)
        keep = [i for i, k in enumerate(order[:nc]) if k != 0]
        out.append(
            {
                "name": element.lower(),
                "bus": _split_bus(ctx.CktElement.BusNames()[0]),
                "nodes": tuple(order[i] for i in keep),
                "y": yprim[np.ix_(keep, keep)],
            }
        )
    return out


def _graph(
    ctx: object, coords: dict[str, tuple[float, float]], lengths_km: dict[str, float]
) -> nx.Graph:
    """Bus graph: one edge per power-delivery element between two different buses, with
    the element name, its kind and its length in km (zero for transformers)."""
    graph = nx.Graph()
    for bus in ctx.Circuit.AllBusNames():
        graph.add_node(bus.lower(), pos=coords.get(bus.lower()))
    for element in ctx.Circuit.AllElementNames():
        cls = element.split(".", 1)[0].lower()
        if cls not in {"line", "transformer", "reactor", "autotrans"}:
            continue
        ctx.Circuit.SetActiveElement(element)
        if not ctx.CktElement.Enabled():
            continue
        buses = [_split_bus(b) for b in ctx.CktElement.BusNames()]
        for other in buses[1:]:
            if other != buses[0]:
                graph.add_edge(buses[0], other, element=element.lower(), kind=cls,
                               length_km=lengths_km.get(element.lower(), 0.0))
    return graph
