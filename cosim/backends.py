"""Where actors live: in this process (local) or as Ray actors (ray).

Both backends run the same actor classes and offer the same three operations: start the
actors, call a phase on some of them, and wait at the phase barrier. A call returns two
things: a tiny status (None, or the error the actor raised) and the phase output. The
engine waits for the statuses only; outputs stay where they are (the local object, or the
Ray object store) and are handed to the next phase's actors as they are, so the driver
never relays household data.

Every barrier has a timeout. When it expires, or an actor fails or dies, the error names the
step, the phase and the actors.
"""

from __future__ import annotations

import _thread
import threading
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cosim.actors.base import PhaseOutput

if TYPE_CHECKING:  # Ray workers import this module: keep it light
    from cosim.scenario import ActorSpec


class PhaseError(RuntimeError):
    """An actor failed in a phase; the message names the step, phase and actor."""

    def __init__(self, step: int, phase: str, actors: Sequence[str], reason: str,
                 detail: str = "") -> None:
        self.step, self.phase, self.actors = step, phase, list(actors)
        self.detail = detail  # the actor's traceback, where there is one
        super().__init__(f"step {step}, phase {phase}: {', '.join(actors)}: {reason}")


class PhaseTimeout(PhaseError):
    """Actors did not answer a phase within its timeout."""


class ActorDied(PhaseError):
    """An actor process died (Ray); resume the run from its last checkpoint."""


Status = tuple[str, str] | None
"""None, or an actor's error as (one-line reason, traceback)."""


def checked(actor: object, phase: str, step: int, *sources: PhaseOutput
            ) -> tuple[Status, PhaseOutput | None]:
    """Run a phase and turn an exception into a status, so the engine learns which actor
    failed, and why, without fetching any output."""
    try:
        return None, actor.run(phase, step, *sources)
    except Exception as exc:  # noqa: BLE001 - reported by the engine as a PhaseError
        return (f"{type(exc).__name__}: {exc}", traceback.format_exc()), None


def _raise(step: int, phase: str, name: str, status: Status) -> None:
    if status is not None:
        raise PhaseError(step, phase, [name], *status)


Plan = Sequence[tuple[str, Sequence[tuple[str, Sequence[tuple[str, str, bool]]]]]]
"""A step: for each phase in order, each participating actor with its sources, given as
(source actor, source phase, whether from this step rather than the previous one)."""


def _sources(routes: Sequence[tuple[str, str, bool]], current: dict, previous: dict) -> list:
    return [current[(s, p)] if now else previous[(s, p)] for s, p, now in routes
            if now or (s, p) in previous]


class LocalBackend:
    """Actors as plain objects in this process, called one after another in name order."""

    name = "local"
    encodes_records = False  # the engine's writer thread encodes, beside the stepping

    def __init__(self) -> None:
        self.actors: dict[str, object] = {}
        self._watchdog = _Watchdog()

    def start(self, specs: Sequence[ActorSpec]) -> None:
        for spec in specs:
            self.actors[spec.name] = spec.cls(spec.name, **spec.kwargs)

    def run_step(self, step: int, plan: Plan, previous: dict, timeout: float,
                 wall: dict[str, float]) -> dict[tuple[str, str], object]:
        """Run the phases of one step in order; returns (actor, phase) -> output."""
        current: dict[tuple[str, str], object] = {}
        for phase, calls in plan:
            t = time.perf_counter()
            for name, routes in calls:
                with self._watchdog.armed(timeout, step, phase, name):
                    status, result = checked(self.actors[name], phase, step,
                                             *_sources(routes, current, previous))
                _raise(step, phase, name, status)
                current[(name, phase)] = result
            wall[phase] += time.perf_counter() - t
        return current

    def call_all(self, names: Sequence[str], method: str, *args: object) -> dict[str, object]:
        """Call a method on several actors; returns name -> value."""
        return {name: getattr(self.actors[name], method)(*args) for name in names}

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        return list(outputs)

    def shutdown(self) -> None:
        self._watchdog.stop()


class RayBackend:
    """The same actor classes, on Ray: actors live in a few host processes spread over the
    cluster. Shards are dealt round-robin over one host per CPU; the other actors share one
    host. A host runs a phase for all its actors in one task (in name order), so a step
    costs a few tasks per host rather than one per actor.

    A whole step is submitted at once: every task takes the object references of its
    sources, so Ray starts it as soon as they exist and the driver never sits between two
    phases. The driver then waits once, and checks every actor's status phase by phase. A
    timeout names the actors of the late host (which of them hangs, Ray cannot tell).
    """

    name = "ray"
    encodes_records = True  # each host encodes its actors' records where they live

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 shard_hosts: int | None = None) -> None:
        import ray

        self.ray = ray
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, ignore_reinit_error=True,
                          log_to_driver=True, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
        self.shard_hosts = shard_hosts
        self.hosts: dict[str, object] = {}  # host name -> Ray actor handle
        self.host_of: dict[str, str] = {}  # actor name -> host name

    def start(self, specs: Sequence[ActorSpec], timeout: float = 300.0) -> None:
        shards = [s for s in specs if s.name.startswith("shard")]
        n_hosts = self.shard_hosts or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        groups: dict[str, list[ActorSpec]] = {"host-services": [
            s for s in specs if not s.name.startswith("shard")]}
        for k, spec in enumerate(shards):
            groups.setdefault(f"host-shards-{k % n_hosts}", []).append(spec)
        remote = self.ray.remote(_Host)
        for host, members in groups.items():
            if not members:
                continue
            # spread over the nodes; no CPU reservation, so hosts can outnumber cores
            self.hosts[host] = remote.options(
                name=None, num_cpus=0, max_restarts=0, scheduling_strategy="SPREAD").remote(
                [(m.cls, m.name, m.kwargs) for m in members])
            self.host_of |= {m.name: host for m in members}
        pings = {host: h.ping.remote() for host, h in self.hosts.items()}
        self._wait_all(pings, -1, "start", timeout)

    def run_step(self, step: int, plan: Plan, previous: dict, timeout: float,
                 wall: dict[str, float]) -> dict[tuple[str, str], object]:
        current: dict[tuple[str, str], object] = {}
        statuses: dict[tuple[str, str], tuple[object, list[str]]] = {}
        for phase, calls in plan:
            by_host: dict[str, list] = {}
            for name, routes in calls:
                by_host.setdefault(self.host_of[name], []).append((name, routes))
            for host, members in by_host.items():
                refs: list[object] = []
                recipe = []
                for name, routes in members:
                    picks = []
                    for slot in _sources(routes, current, previous):
                        if slot.ref not in refs:
                            refs.append(slot.ref)
                        picks.append((refs.index(slot.ref), slot.name))
                    recipe.append((name, picks))
                status, output = self.hosts[host].run.options(num_returns=2).remote(
                    phase, step, recipe, *refs)
                names = [name for name, _ in members]
                statuses[(phase, host)] = (status, names)
                current |= {(name, phase): _Slot(output, name) for name in names}
        # One wait and one fetch for the whole step: the driver's round trips, not the
        # actors, are what a small step costs on Ray. A late or failed actor is reported
        # with the first phase it held up.
        t = time.perf_counter()
        refs = [ref for ref, _ in statuses.values()]
        _, pending = self.ray.wait(refs, num_returns=len(refs), timeout=timeout * len(plan))
        if pending:
            waiting = set(pending)
            (phase, _), (_, names) = next(
                (key, value) for key, value in statuses.items() if value[0] in waiting)
            late = [n for (p, _), (ref, ns) in statuses.items()
                    if p == phase and ref in waiting for n in ns]
            raise PhaseTimeout(step, phase, late, f"no answer within {timeout:g} s")
        values = self._get({key: ref for key, (ref, _) in statuses.items()}, statuses, step)
        for (phase, _), status in values.items():
            if status is not None:
                name, reason, detail = status
                raise PhaseError(step, phase, [name], reason, detail)
        wall["step_wait"] += time.perf_counter() - t
        return current

    def call_all(self, names: Sequence[str], method: str, *args: object) -> dict[str, object]:
        """Call a method on several actors at once (hosts run in parallel)."""
        by_host: dict[str, list[str]] = {}
        for name in names:
            by_host.setdefault(self.host_of[name], []).append(name)
        refs = {host: self.hosts[host].call.remote(method, members, *args)
                for host, members in by_host.items()}
        out: dict[str, object] = {}
        for values in self._wait_all(refs, -1, method, 300.0):
            out |= values
        return out

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        values = self.ray.get([slot.ref for slot in outputs])
        return [value[slot.name] for value, slot in zip(values, outputs)]

    def kill(self, name: str) -> None:
        """Kill the host of an actor (tests use it to check a run survives by resuming)."""
        self.ray.kill(self.hosts[self.host_of[name]], no_restart=True)

    def shutdown(self) -> None:
        for handle in self.hosts.values():
            self.ray.kill(handle, no_restart=True)
        self.hosts.clear()
        self.host_of.clear()

    def _members(self, host: str) -> list[str]:
        return sorted(n for n, h in self.host_of.items() if h == host)

    def _get(self, refs: dict, statuses: dict, step: int) -> dict:
        try:
            return dict(zip(refs, self.ray.get(list(refs.values()))))
        except self.ray.exceptions.RayActorError:
            for (phase, host), ref in refs.items():  # the first phase a dead host held up
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayActorError as exc:
                    raise ActorDied(step, phase, statuses[(phase, host)][1],
                                    f"the actor died ({type(exc).__name__}); resume the run "
                                    "from its last checkpoint") from None
            raise

    def _wait_all(self, refs: dict[str, object], step: int, what: str,
                  timeout: float) -> list[object]:
        """Wait for host calls (host -> reference) within the timeout and fetch them."""
        _, pending = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        if pending:
            late = [n for host, ref in refs.items() if ref in set(pending)
                    for n in self._members(host)]
            raise PhaseTimeout(step, what, late, f"no answer within {timeout:g} s")
        try:
            return self.ray.get(list(refs.values()))
        except self.ray.exceptions.RayActorError as exc:
            raise ActorDied(step, what, list(refs), f"an actor host died "
                            f"({type(exc).__name__})") from None


class _Slot:
    """One actor's output inside its host's phase output (a dict keyed by actor name)."""

    __slots__ = ("ref", "name")

    def __init__(self, ref: object, name: str) -> None:
        self.ref, self.name = ref, name


class _Host:
    """A Ray actor process hosting several co-simulation actors."""

    def __init__(self, members: list[tuple[type, str, dict]]) -> None:
        self.actors = {name: cls(name, **kwargs) for cls, name, kwargs in members}

    def ping(self) -> list[str]:
        return [actor.ping() for actor in self.actors.values()]

    def run(self, phase: str, step: int, recipe: list, *outputs: dict
            ) -> tuple[tuple[str, str, str] | None, dict[str, PhaseOutput]]:
        """Run a phase for the hosted actors in `recipe` order, each on its sources picked
        out of the source hosts' outputs; stops at the first failure and reports it."""
        results: dict[str, PhaseOutput] = {}
        for name, picks in recipe:
            sources = [outputs[i][src] for i, src in picks]
            status, out = checked(self.actors[name], phase, step, *sources)
            if status is not None:
                return (name, *status), results
            results[name] = out
        return None, results

    def call(self, method: str, names: list[str], *args: object) -> dict[str, object]:
        return {name: getattr(self.actors[name], method)(*args) for name in names}


class _Watchdog:
    """Interrupts the main thread when a local phase call overruns its timeout.

    One thread for the whole run, checking a deadline the main thread sets around each call;
    nothing is created per call. A lock makes "fire" and "disarm" exclusive, so an interrupt
    can only be pending when the call really did overrun.
    """

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._fired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cosim-watchdog", daemon=True)
        self._thread.start()

    def armed(self, timeout: float, step: int, phase: str, name: str) -> _Armed:
        return _Armed(self, timeout, step, phase, name)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self._deadline = None
                    self._fired = True
                    _thread.interrupt_main()

    def stop(self) -> None:
        self._stop.set()


class _Armed:
    def __init__(self, dog: _Watchdog, timeout: float, step: int, phase: str,
                 name: str) -> None:
        self.dog, self.timeout, self.step, self.phase, self.name = dog, timeout, step, phase, name

    def __enter__(self) -> None:
        with self.dog._lock:
            self.dog._fired = False
            self.dog._deadline = time.monotonic() + self.timeout

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        with self.dog._lock:
            self.dog._deadline = None
            fired, self.dog._fired = self.dog._fired, False
        if not fired:
            return False
        if kind is not KeyboardInterrupt:
            try:  # the interrupt is still pending: let it arrive here, not elsewhere
                time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        raise PhaseTimeout(self.step, self.phase, [self.name],
                           f"no answer within {self.timeout:g} s") from None
