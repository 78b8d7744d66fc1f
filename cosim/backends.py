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


def _calls(plan: Plan, phase: str) -> Sequence[tuple[str, object]]:
    return next(calls for p, calls in plan if p == phase)


def _sources(routes: Sequence[tuple[str, str, bool]], current: dict, previous: dict) -> list:
    return [current[(s, p)] if now else previous[(s, p)] for s, p, now in routes
            if now or (s, p) in previous]


class LocalBackend:
    """Actors as plain objects in this process, called one after another in name order."""

    name = "local"

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
    """The same actor classes as Ray actors; shards spread over the cluster's nodes.

    A whole step is submitted at once: each call takes the object references of its
    sources, so Ray starts it as soon as they exist and the driver never sits between two
    phases. The driver then checks the phases' statuses in order, each against its timeout.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        import ray

        self.ray = ray
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, ignore_reinit_error=True,
                          log_to_driver=True, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
        self.handles: dict[str, object] = {}

    def start(self, specs: Sequence[ActorSpec], timeout: float = 300.0) -> None:
        remote = {}
        for spec in specs:
            cls = remote.setdefault(spec.cls, self.ray.remote(_Hosted))
            # spread over the cluster's nodes; actors hold no CPU reservation, so a 2-core
            # machine can host more actors than cores (they take turns within a step)
            self.handles[spec.name] = cls.options(
                num_cpus=0, max_restarts=0, scheduling_strategy="SPREAD").remote(
                spec.cls, spec.name, spec.kwargs)
        pings = {name: h.ping.remote() for name, h in self.handles.items()}
        self._check(pings, -1, "start", timeout, statuses=False)

    def run_step(self, step: int, plan: Plan, previous: dict, timeout: float,
                 wall: dict[str, float]) -> dict[tuple[str, str], object]:
        current: dict[tuple[str, str], object] = {}
        statuses: dict[tuple[str, str], object] = {}
        for phase, calls in plan:
            for name, routes in calls:
                status, output = self.handles[name].run.options(num_returns=2).remote(
                    phase, step, *_sources(routes, current, previous))
                statuses[(phase, name)], current[(name, phase)] = status, output
        # One wait and one fetch for the whole step: the driver's round trips, not the
        # actors, are what a small step costs on Ray. Each phase still gets its timeout,
        # and a late or failed actor is reported with the first phase it held up.
        t = time.perf_counter()
        refs = list(statuses.values())
        ready, pending = self.ray.wait(refs, num_returns=len(refs),
                                       timeout=timeout * len(plan))
        if pending:
            waiting = set(pending)
            first = next(phase for phase, _ in plan
                         if any(statuses[(phase, n)] in waiting for n, _ in _calls(plan, phase)))
            late = [n for n, _ in _calls(plan, first) if statuses[(first, n)] in waiting]
            raise PhaseTimeout(step, first, late, f"no answer within {timeout:g} s")
        values = self._get(statuses, step)
        for (phase, name), status in values.items():
            _raise(step, phase, name, status)
        wall["step_wait"] += time.perf_counter() - t
        return current

    def _get(self, refs: dict[tuple[str, str], object], step: int) -> dict:
        try:
            return dict(zip(refs, self.ray.get(list(refs.values()))))
        except self.ray.exceptions.RayActorError:
            for (phase, name), ref in refs.items():  # find the first that died
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayActorError as exc:
                    raise ActorDied(step, phase, [name], f"the actor died "
                                    f"({type(exc).__name__}); resume the run from its last "
                                    "checkpoint") from None
            raise

    def call_all(self, names: Sequence[str], method: str, *args: object) -> dict[str, object]:
        """Call a method on several actors at once (they run in parallel)."""
        refs = {name: getattr(self.handles[name], method).remote(*args) for name in names}
        return dict(zip(refs, self._check(refs, -1, method, 300.0, statuses=False)))

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        return self.ray.get(list(outputs))

    def kill(self, name: str) -> None:
        """Kill one actor (used by tests to check that a run survives it by resuming)."""
        self.ray.kill(self.handles[name], no_restart=True)

    def shutdown(self) -> None:
        for handle in self.handles.values():
            self.ray.kill(handle, no_restart=True)
        self.handles.clear()

    def _check(self, refs: dict[str, object], step: int, phase: str, timeout: float,
               statuses: bool = True) -> list[object]:
        """Wait for `refs` (name -> reference) within the timeout and fetch them; with
        statuses=True each value is an actor's status, raised if it reports an error."""
        ready, pending = self.ray.wait(list(refs.values()), num_returns=len(refs),
                                       timeout=timeout)
        if pending:
            late = [name for name, ref in refs.items() if ref in set(pending)]
            raise PhaseTimeout(step, phase, late, f"no answer within {timeout:g} s")
        try:
            values = self.ray.get(list(refs.values()))
        except self.ray.exceptions.RayActorError:
            for name, ref in refs.items():  # find which one died
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayActorError as exc:
                    raise ActorDied(step, phase, [name], f"the actor died "
                                    f"({type(exc).__name__}); resume the run from its last "
                                    "checkpoint") from None
            raise
        if statuses:
            for name, status in zip(refs, values):
                _raise(step, phase, name, status)
        return values


class _Hosted:
    """The Ray-side wrapper: builds the actor and exposes its phase call with a status."""

    def __init__(self, cls: type, name: str, kwargs: dict) -> None:
        self.actor = cls(name, **kwargs)

    def ping(self) -> str:
        return self.actor.ping()

    def run(self, phase: str, step: int, *sources: PhaseOutput
            ) -> tuple[Status, PhaseOutput | None]:
        return checked(self.actor, phase, step, *sources)

    def drain_records(self, first: int, last: int, time: object) -> dict:
        return self.actor.drain_records(first, last, time)

    def state_dict(self) -> dict:
        return self.actor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state)


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
