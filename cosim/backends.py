"""Where actors live: in this process (local) or as Ray actors (ray).

Both backends run the same actor classes and offer the same operations: start the actors,
run a plan (phases of one or two steps, each calling some actors on the outputs of others),
put a message from the driver where actors can read it, fetch outputs, and call a method on
every actor. A call returns two things: a tiny status (None, or the error the actor raised)
and the phase output. The driver waits for the statuses only; outputs stay where they are
(the local object, or the Ray object store) and are handed to the next phase's actors as
they are, so the driver never relays household data.

Every phase has a timeout, and it holds even when an actor blocks (sleeps, or waits in a
solver): on the local backend the actors run in a worker thread while the driver watches
the clock; on Ray the driver waits phase by phase. When it expires, or an actor fails or
dies, the error names the step, the phase and the actors.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
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

Key = tuple[str, str, int]
"""An output: (actor, phase, step). Driver inputs use the actor name "driver/<recipient>"."""

Plan = Sequence[tuple[int, str, Sequence[tuple[str, Sequence[Key]]]]]
"""Phases in order, as (step, phase, calls); a call is (actor, the outputs it reads, in
sender order)."""


def checked(actor: object, phase: str, step: int, *sources: PhaseOutput
            ) -> tuple[Status, PhaseOutput | None]:
    """Run a phase and turn an exception into a status, so the driver learns which actor
    failed, and why, without fetching any output."""
    try:
        return None, actor.run(phase, step, *sources)
    except Exception as exc:  # noqa: BLE001 - reported by the driver as a PhaseError
        return (f"{type(exc).__name__}: {exc}", traceback.format_exc()), None


class LocalBackend:
    """Actors as plain objects in this process, called one after another in name order.

    The calls run in one worker thread; the driver waits on them with a deadline, so an
    actor that blocks fails its phase on time. (Code that holds the interpreter lock and
    never lets go cannot be interrupted in-process: use the Ray backend to isolate it.) A
    worker that overran is abandoned, still blocked, and the backend refuses further steps.
    """

    name = "local"
    encodes_records = False  # the driver's writer thread encodes, beside the stepping

    def __init__(self) -> None:
        self.actors: dict[str, object] = {}
        self._worker: _Worker | None = None
        self._doing: tuple[int, str, str, float] | None = None  # step, phase, actor, start
        self._broken: str | None = None

    def start(self, specs: Sequence[ActorSpec]) -> None:
        for spec in specs:
            self.actors[spec.name] = spec.cls(spec.name, **spec.kwargs)
        self._worker = _Worker()

    def run(self, plan: Plan, outputs: dict[Key, object], timeout: float,
            wall: dict[str, float]) -> None:
        """Run the plan's phases in order, adding each output to `outputs`."""
        if self._broken:
            raise RuntimeError(f"the local backend is unusable: {self._broken}")
        future = self._worker.submit(self._run, plan, outputs, wall)
        wait = 0.25  # the driver wakes rarely: its checks would compete with the actors
        while True:
            try:
                future.result(timeout=wait)
                return
            except TimeoutError:
                doing = self._doing
                left = wait if doing is None else doing[3] + timeout - time.monotonic()
                if left <= 0:
                    step, phase, name, _ = doing
                    self._broken = f"{name} still blocks step {step}, phase {phase}"
                    raise PhaseTimeout(step, phase, [name],
                                       f"no answer within {timeout:g} s") from None
                wait = min(left, 0.25)

    def _run(self, plan: Plan, outputs: dict[Key, object], wall: dict[str, float]) -> None:
        for step, phase, calls in plan:
            t = time.perf_counter()
            for name, sources in calls:
                self._doing = (step, phase, name, time.monotonic())
                status, result = checked(self.actors[name], phase, step,
                                         *(outputs[key] for key in sources))
                self._doing = None
                if status is not None:
                    raise PhaseError(step, phase, [name], *status)
                outputs[(name, phase, step)] = result
            wall[phase] += time.perf_counter() - t

    def put(self, name: str, output: PhaseOutput) -> object:
        """A driver's output, readable by actors as a source."""
        return output

    def call_all(self, names: Sequence[str], method: str, *args: object) -> dict[str, object]:
        """Call a method on several actors; returns name -> value."""
        return {name: getattr(self.actors[name], method)(*args) for name in names}

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        return list(outputs)

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.stop()  # a blocked worker is a daemon: it cannot hold the exit
        self._worker = None


class _Worker:
    """One daemon thread running submitted calls in order (a thread pool's workers are
    joined at interpreter exit, so one blocked call would keep the process alive)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="cosim-actors", daemon=True).start()

    def submit(self, fn: object, *args: object) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting driver
                future.set_exception(exc)


class RayBackend:
    """The same actor classes, on Ray: actors live in a few host processes spread over the
    cluster. Groups of shards, each with the market operator serving it, are dealt
    round-robin over one host per CPU; the other actors share one host. A host runs a
    phase for all its actors in one task (in name order), so a step costs a few tasks per
    host rather than one per actor.

    A whole plan is submitted at once: every task takes the object references of its
    sources, so Ray starts it as soon as they exist and the driver never sits between two
    phases. The driver then waits phase by phase, each within the timeout of the phase
    before it finishing, and checks every actor's status. A timeout names the actors of the
    late host (which of them hangs, Ray cannot tell).
    """

    name = "ray"
    encodes_records = True  # each host encodes its actors' records where they live

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 shard_hosts: int | None = None) -> None:
        import ray

        self.ray = ray
        self.address, self.num_cpus = address, num_cpus
        self.shard_hosts = shard_hosts
        self.hosts: dict[str, object] = {}  # host name -> Ray actor handle
        self.host_of: dict[str, str] = {}  # actor name -> host name

    def start(self, specs: Sequence[ActorSpec], timeout: float = 300.0) -> None:
        """Join (or start) Ray on first use, then create the actor hosts."""
        if not self.ray.is_initialized():
            kwargs = dict(include_dashboard=False, ignore_reinit_error=True,
                          log_to_driver=True, configure_logging=False)
            if self.address:
                self.ray.init(address=self.address, **kwargs)
            else:
                self.ray.init(address="local", num_cpus=self.num_cpus, **kwargs)
        n_hosts = self.shard_hosts or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        # a group (shards and the market operator serving them) stays in one host, so its
        # bids and clearing results never leave the process
        grouped: dict[str, list[ActorSpec]] = {}
        for spec in specs:
            if spec.group is not None or spec.name.startswith("shard"):
                grouped.setdefault(spec.group or spec.name, []).append(spec)
        groups: dict[str, list[ActorSpec]] = {"host-services": [
            s for s in specs if s.group is None and not s.name.startswith("shard")]}
        for k, members in enumerate(grouped.values()):
            groups.setdefault(f"host-shards-{k % n_hosts}", []).extend(members)
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

    def run(self, plan: Plan, outputs: dict[Key, object], timeout: float,
            wall: dict[str, float]) -> None:
        statuses: list[tuple[int, str, dict[object, list[str]]]] = []
        for step, phase, calls in plan:
            by_host: dict[str, list] = {}
            for name, sources in calls:
                by_host.setdefault(self.host_of[name], []).append((name, sources))
            refs_of_phase: dict[object, list[str]] = {}
            for host, members in by_host.items():
                refs: list[object] = []
                recipe = []
                for name, sources in members:
                    picks = []
                    for key in sources:
                        slot = outputs[key]
                        if slot.ref not in refs:
                            refs.append(slot.ref)
                        picks.append((refs.index(slot.ref), slot.name))
                    recipe.append((name, picks))
                status, output = self.hosts[host].run.options(num_returns=2).remote(
                    phase, step, recipe, *refs)
                names = [name for name, _ in members]
                refs_of_phase[status] = names
                outputs |= {(name, phase, step): _Slot(output, name) for name in names}
            statuses.append((step, phase, refs_of_phase))
        # The driver's round trips, not the actors, are what a small step costs on Ray, so
        # a phase's statuses are fetched together; each phase has its own deadline.
        t = time.perf_counter()
        for step, phase, refs in statuses:
            _, pending = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
            if pending:
                late = [n for ref in pending for n in refs[ref]]
                raise PhaseTimeout(step, phase, late, f"no answer within {timeout:g} s")
            for status in self._get(refs, step, phase):
                if status is not None:
                    name, reason, detail = status
                    raise PhaseError(step, phase, [name], reason, detail)
        wall["step_wait"] += time.perf_counter() - t

    def put(self, name: str, output: PhaseOutput) -> object:
        """A driver's output, readable by actors as a source."""
        return _Slot(self.ray.put({name: output}), name)

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

    def _get(self, refs: dict[object, list[str]], step: int, phase: str) -> list:
        try:
            return self.ray.get(list(refs))
        except self.ray.exceptions.RayActorError as exc:
            dead = next(names for ref, names in refs.items() if _died(self.ray, ref))
            raise ActorDied(step, phase, dead, f"the actor died ({type(exc).__name__}); "
                            "resume the run from its last checkpoint") from None

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


def _died(ray: object, ref: object) -> bool:
    try:
        ray.get(ref)
    except ray.exceptions.RayActorError:
        return True
    return False


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
