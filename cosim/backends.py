"""Where actors live: in this process (local) or as Ray actors (ray).

Both backends run the same actor classes and offer the same operations: start the actors,
run a plan (phases of one or two steps, each calling some actors on the outputs of others),
put a message from the driver where actors can read it, fetch outputs, and call a method on
every actor. A call returns two things: a tiny status (None, or the error the actor raised)
and the phase output. The driver waits for the statuses only; outputs stay where they are
(the local object, or the Ray object store) and are handed to the next phase's actors as
they are, so the driver never relays household data.

Every phase has a timeout, and it holds even when an actor blocks (sleeps, or waits in a
solver): on the local backend a watchdog thread interrupts the actor (driven from the main
thread, the actors run there and the watchdog signals it; driven from another thread, they
run in a worker thread while the driver watches the clock); on Ray the driver waits phase
by phase. When it expires, or an actor fails or dies, the error names the step, the phase
and the actors.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from cosim.actors.base import PhaseOutput

if TYPE_CHECKING:  # Ray workers import this module: keep it light
    from cosim.records import Writer
    from cosim.scenario import ActorSpec


ONE_HOST_PER_CPU = 30_000
"""On one machine, up to this many households per CPU run in a single Ray host (the
shards `shard_size = "auto"` makes for one CPU each hold at least as many,
cosim.config.AUTO_MIN_SHARD, unless capped for records)."""

# Hosts of finished runs, emptied and kept for this driver's next run in the same Ray
# session (the key): a host process new in every run pays for touching its memory the
# first time. At 10,000 households on the 2-core VM, in turns in one process, a new host
# took 35,000-44,000 page faults and 0.3-1.1 s of system time a run against a warm
# process's 1,000-7,000 and 0.05-0.23 s, and Ray / local was 1.76-1.81 with new hosts
# against 1.13-1.36 with kept ones (2026-12-03, two sets of six and seven turns). At most
# one per CPU, and one more, are kept.
_IDLE_HOSTS: dict[str, list[object]] = {}
# seconds a host has to empty itself at shutdown; one that is still in a call (a hang
# that timed out) or dead is killed instead
RELEASE_TIMEOUT_S = 1.0


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


# the signal the watchdog interrupts the main thread with (a real-time one where there are
# any: nothing else is likely to use it)
_SIGNAL = getattr(signal, "SIGRTMAX", getattr(signal, "SIGUSR2", None))


class _Overrun(BaseException):
    """Raised in the main thread by the watchdog's signal when the actor call running there
    overran its phase's timeout (a BaseException, so that `checked` lets it through)."""


_watched: weakref.WeakSet = weakref.WeakSet()  # local backends with a watchdog
_previous_handler: object = None  # the signal's handler before ours (called on)


def _interrupt(signum: int, frame: object) -> None:
    """The signal's handler, in the main thread: interrupt the actor call that overran
    (nothing, if it has ended since the watchdog looked). It stays installed once set: a
    watchdog's last signal must never meet the default action, which ends the process."""
    for backend in list(_watched):
        if backend._late is not None and backend._late is backend._doing:
            raise _Overrun
    if callable(_previous_handler):
        _previous_handler(signum, frame)


def _watch(backend: weakref.ref, stop: threading.Event) -> None:
    """A local backend's watchdog: signal the main thread when the call it runs overran.
    Ends when `stop` is set or the backend is gone."""
    while not stop.wait(LocalBackend.WATCH_S):
        self = backend()
        if self is None:
            return
        doing = self._doing
        if (doing is not None and doing is not self._late
                and time.monotonic() > doing[3] + self._timeout):
            self._late = doing
            signal.pthread_kill(threading.main_thread().ident, _SIGNAL)
        del self  # (not held while waiting)


class LocalBackend:
    """Actors as plain objects in this process, called one after another in name order.

    Driven from the main thread, the calls run there, and a watchdog thread that wakes four
    times a second interrupts an actor that overran the timeout, with a signal: the
    handler raises in the actor's code, also while it sleeps or waits on a lock. (Handing
    each step to a worker thread instead cost 10-30% of a six-house step on the 2-core
    VMs: the threads' wake-ups, 2026-12-02.) Driven from another thread (signals reach the
    main thread only), the calls run in one worker thread and the driver waits on them
    with a deadline. Either way an actor that overran leaves the backend refusing further
    steps. (Code that never returns to the interpreter, holding its lock or not checking
    for signals, cannot be interrupted in-process: use the Ray backend to isolate it.)
    """

    name = "local"
    WATCH_S = 0.25  # how often the watchdog (or the waiting driver) looks at the clock

    def __init__(self) -> None:
        self.actors: dict[str, object] = {}
        self._worker: _Worker | None = None
        self._doing: tuple[int, str, str, float] | None = None  # step, phase, actor, start
        self._broken: str | None = None
        self._timeout = float("inf")  # of the plan the main thread runs (inf: none)
        self._late: tuple[int, str, str, float] | None = None  # the call being interrupted
        self._watching: threading.Event | None = None  # set: the watchdog stops

    def start(self, specs: Sequence[ActorSpec], households: int = 0) -> None:
        """Build the actors in this process (`households` sizes Ray's layout only)."""
        for spec in specs:
            self.actors[spec.name] = spec.cls(spec.name, **spec.kwargs)
        if (_SIGNAL is not None and hasattr(signal, "pthread_kill")
                and threading.current_thread() is threading.main_thread()):
            global _previous_handler
            if signal.getsignal(_SIGNAL) is not _interrupt:
                _previous_handler = signal.signal(_SIGNAL, _interrupt)
            _watched.add(self)
            self._watching = threading.Event()
            # the watchdog holds the backend weakly: the actors' last reference must not
            # be dropped on its thread (freeing them there aborted the process at exit)
            threading.Thread(target=_watch, args=(weakref.ref(self), self._watching),
                             name="cosim-watchdog", daemon=True).start()

    def run(self, plan: Plan, outputs: dict[Key, object], timeout: float,
            wall: dict[str, float], fetched: Collection[str] | None = None) -> None:
        """Run the plan's phases in order, adding each output to `outputs`. (`fetched`,
        the phases whose outputs the driver reads, matters to Ray only.)"""
        if self._broken:
            raise RuntimeError(f"the local backend is unusable: {self._broken}")
        if self._watching is not None and threading.current_thread() is threading.main_thread():
            self._timeout = timeout
            try:
                self._run(plan, outputs, wall)
            except _Overrun:
                step, phase, name, _ = self._late
                self._broken = f"{name} was interrupted at step {step}, phase {phase}"
                raise PhaseTimeout(step, phase, [name],
                                   f"no answer within {timeout:g} s") from None
            finally:
                self._doing, self._timeout = None, float("inf")
            return
        if self._worker is None:
            self._worker = _Worker()
        future = self._worker.submit(self._run, plan, outputs, wall)
        wait = self.WATCH_S  # the driver wakes rarely: its checks would compete with the actors
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
                wait = min(left, self.WATCH_S)

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

    def call_all_later(self, names: Sequence[str], method: str, *args: object
                       ) -> Callable[[], dict[str, object]]:
        """`call_all` whose answer the returned function gives. Here the call runs now:
        the actors must not run beside the next step."""
        values = self.call_all(names, method, *args)
        return lambda: values

    def records_later(self, names: Sequence[str], folder: str, first: int, last: int,
                      time: object, threads: int = 1
                      ) -> tuple[Callable[[], dict], Callable[[], None] | None]:
        """The actors' records of steps first..last, as `RayBackend.records_later` gives
        them: here their chunks as buffered, for the driver's writer thread to encode
        beside the stepping, and nothing written elsewhere."""
        return self.call_all_later(names, "drain_records"), None

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        return list(outputs)

    detach = fetch  # (outputs are the objects themselves: nothing is kept elsewhere)

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.stop()  # a blocked worker is a daemon: it cannot hold the exit
        self._worker = None
        if self._watching is not None:
            self._watching.set()
            self._watching = None
            _watched.discard(self)


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
            # nothing of the job stays here: the backend's last reference must not be
            # dropped on this thread (see _watch)
            job = future = fn = args = None


class RayBackend:
    """The same actor classes, on Ray: actors live in a few host processes spread over the
    cluster. Groups of shards, each with the market operator serving it, are dealt
    round-robin over the hosts (one per CPU; on a single machine one host in all while
    the households are few, `start`); the other actors share one host (or the only
    one). A host runs its
    actors' calls of consecutive phases in one task (in plan order), up to the first
    call that reads what another host makes later (`_tasks`), so a step costs about
    three tasks per host rather than one per actor and phase.

    A whole plan is submitted at once: every task takes the object references of its
    sources, so Ray starts it as soon as they exist and the driver never sits between two
    tasks. The driver then waits until every task has finished, failing when none has
    for the timeout, and checks every actor's status. A timeout names the late task's
    first phase and its actors (which of them hangs, Ray cannot tell).

    A host keeps what its actors make; a phase's outputs go to Ray's object store only
    when another host or the driver reads them (`fetched`), or when the driver asks
    (`fetch`, `detach`). At shutdown the hosts are emptied and kept for the driver's next
    run (`_IDLE_HOSTS`).
    """

    name = "ray"
    encodes_records = True  # hosts off the driver's machine encode theirs: set by `start`
    # every host writes its actors' records into the run folder itself: set by `start`
    writes_records = False
    # `Simulation.run` hands over several steps as one plan: each plan costs the driver's
    # round trips to the hosts (3-4 ms at 10,000 households on the 2-core VM, more than a
    # step's work at 100), which one plan per step paid every step
    batches_steps = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 shard_hosts: int | None = None) -> None:
        import ray

        self.ray = ray
        self.address, self.num_cpus = address, num_cpus
        self.shard_hosts = shard_hosts
        self.hosts: dict[str, object] = {}  # host name -> Ray actor handle
        self.host_of: dict[str, str] = {}  # actor name -> host name
        self.host_nodes: dict[str, str] = {}  # host name -> the Ray node it runs on
        self.here = ""  # the driver's node

    def start(self, specs: Sequence[ActorSpec], households: int = 0,
              timeout: float = 300.0) -> None:
        """Join (or start) Ray on first use, then create the actor hosts (how many
        depends on the machine and the number of households)."""
        if not self.ray.is_initialized():
            kwargs = dict(include_dashboard=False, ignore_reinit_error=True,
                          log_to_driver=True, configure_logging=False)
            if self.address:
                self.ray.init(address=self.address, **kwargs)
            else:
                # Ray runs its workers at niceness 15, below the driver: then the driver's
                # records writer, encoding beside the stepping, took the cores from the
                # hosts that step (10,000 households, 2 cores, five turns each: 1.13-1.75 s
                # against 1.28-1.46 s at niceness 0). A cluster keeps its own setting
                # (RAY_worker_niceness=0 where it is started does the same).
                self.ray.init(address="local", num_cpus=self.num_cpus,
                              _system_config={"worker_niceness": 0}, **kwargs)
        cpus = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        one_node = sum(node["Alive"] for node in self.ray.nodes()) == 1
        # Every process boundary a step crosses costs a hop through the driver (several
        # ms on a busy machine), and every host is a process that shares the cores with
        # the driver and Ray's own. So one machine runs every actor in one host while
        # the households come to at most ONE_HOST_PER_CPU per CPU, and one host per CPU
        # beyond that (2 cores, one run each, one host against three: 1.3x against 2.1x
        # the local backend's time at 30,000 households, 1.3x against 1.7x at 60,000,
        # but 2.8x against 1.5x at 100,000). A cluster gets one host per CPU, spread
        # over its nodes. With several hosts the other actors share one of their own.
        n_hosts = self.shard_hosts or (
            1 if one_node and households <= ONE_HOST_PER_CPU * cpus else cpus)
        # Hosts on other machines encode their actors' records where they live, in
        # parallel, and they cross the network compressed (one host would leave it to
        # the driver's writer thread: encoding would hold up its next step). Hosts on the
        # driver's machine write them into the run folder themselves, each on a thread
        # of its own beside its stepping, as the local backend's writer does
        # (`write_records_later`): handing the driver 10,000 households' records (58 MB
        # per 24 steps) cost the host more than the writing.
        self.encodes_records = n_hosts > 1
        # a group (shards and the market operator serving them) stays in one host, so its
        # bids and clearing results never leave the process
        grouped: dict[str, list[ActorSpec]] = {}
        for spec in specs:
            if spec.group is not None or spec.name.startswith("shard"):
                grouped.setdefault(spec.group or spec.name, []).append(spec)
        groups: dict[str, list[ActorSpec]] = {"host-services": [
            s for s in specs if s.group is None and not s.name.startswith("shard")]}
        if n_hosts == 1:
            groups = {"host-all": list(specs)}
        else:
            for k, members in enumerate(grouped.values()):
                groups.setdefault(f"host-shards-{k % n_hosts}", []).extend(members)
        # the "records" group runs `records_written` and `records_encoded` on a thread of
        # its own, beside steps
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = self.ray.remote(concurrency_groups={"records": 1})(_Host)
        session = self._session()
        for key in [k for k in _IDLE_HOSTS if k != session]:  # (an earlier Ray's: gone)
            del _IDLE_HOSTS[key]
        idle = _IDLE_HOSTS.setdefault(session, [])
        actors = {}  # host -> its actors, as _Host takes them
        for host, members in groups.items():
            if members:
                actors[host] = [(m.cls, m.name, m.kwargs) for m in members]
                self.host_of |= {m.name: host for m in members}
        kept = {}  # kept hosts take the actors first (their answer is `ping`'s)
        for host in list(actors)[:len(idle)]:
            self.hosts[host] = idle.pop()
            kept[host] = self.hosts[host].rebuild.remote(actors[host])
        ready = set(self.ray.wait(list(kept.values()), num_returns=len(kept),
                                  timeout=timeout)[0]) if kept else set()
        # kept hosts that took their actors -> their node
        kept_on = {host: self.ray.get(ref)[1] for host, ref in kept.items()
                   if ref in ready and self._answered(ref)}
        # new hosts go to the nodes holding the fewest of this run's hosts so far, pinned
        # there (Ray's "SPREAD", and a soft node affinity alike, are preferences: on the
        # two-node test cluster they put all of a run's hosts on one node at times)
        load = dict.fromkeys(sorted(n["NodeID"] for n in self.ray.nodes() if n["Alive"]
                                    and n["Resources"].get("CPU", 0) > 0), 0) or {
            self.ray.get_runtime_context().get_node_id(): 0}
        for node in kept_on.values():
            load[node] = load.get(node, 0) + 1
        pings = {}
        for host, members in actors.items():
            ref = kept.get(host)
            if host in kept_on:
                pings[host] = ref
                continue
            if ref is not None:  # a kept host that died since (its node lost, say)
                self.ray.kill(self.hosts[host], no_restart=True)
            node = min(load, key=load.get)
            load[node] += 1
            # no CPU reservation, so hosts can outnumber cores
            self.hosts[host] = remote.options(
                name=None, num_cpus=0, max_restarts=0, scheduling_strategy=(
                    NodeAffinitySchedulingStrategy(node, soft=False))).remote(members)
            pings[host] = self.hosts[host].ping.remote()
        nodes = self._wait_all(pings, -1, "start", timeout)
        self.host_nodes = {host: node for host, (_, node) in zip(pings, nodes)}
        self.here = self.ray.get_runtime_context().get_node_id()
        self.writes_records = all(node == self.here for node in self.host_nodes.values())

    def run(self, plan: Plan, outputs: dict[Key, object], timeout: float,
            wall: dict[str, float], fetched: Collection[str] | None = None) -> None:
        """Run the plan's phases, adding each output to `outputs`; `fetched`: the phases
        whose outputs the driver reads (None: all)."""
        tasks = _tasks(plan, self.host_of)
        read_by: dict[Key, set[str]] = {}  # output -> the hosts that read it
        for task in tasks:
            for *_, sources in task.calls:
                for key in sources:
                    read_by.setdefault(key, set()).add(task.host)
        submitted = [(task, self._submit(task, outputs, read_by, fetched)) for task in tasks]
        # A task's clock starts when the tasks before it (those it reads from, and its
        # host's previous one) have finished: it is late when it has not finished a
        # timeout after that (`Simulation.run` plans no more steps than take a quarter of
        # it, so a late task is one whose call hangs)
        t = time.perf_counter()
        start, finished = time.monotonic(), {}
        waiting = {status: k for k, (_, status) in enumerate(submitted)}
        while waiting:
            ready = {k: max([start] + [finished[j] for j in tasks[k].after])
                     for k in waiting.values() if tasks[k].after <= finished.keys()}
            first = min(ready, key=ready.get)
            done, _ = self.ray.wait(list(waiting), num_returns=1,
                                    timeout=max(0.0, ready[first] + timeout - time.monotonic()))
            if not done:
                self._late(tasks[first], timeout)
            finished[waiting.pop(done[0])] = time.monotonic()
        statuses = self._get([status for _, status in submitted],
                             [task for task, _ in submitted])
        for status in statuses:  # the first failure in plan order is the cause
            if status is not None:
                step, phase, name, reason, detail = status
                raise PhaseError(step, phase, [name], reason, detail)
        wall["step_wait"] += time.perf_counter() - t

    def _submit(self, task: _Task, outputs: dict[Key, object],
                read_by: dict[Key, set[str]], fetched: Collection[str] | None) -> object:
        """Submit a host task; its outputs join `outputs`. Returns its status's ref."""
        refs: list[object] = []
        recipe = []
        for step, phase, name, sources in task.calls:
            picks = []
            for key in sources:
                slot = None if key in task.made else outputs[key]
                if slot is None or (isinstance(slot, _Kept) and slot.host == task.host):
                    picks.append((-1, key))  # in the host's own outputs
                    continue
                if isinstance(slot, _Kept):  # made by another host in an earlier plan
                    slot = outputs[key] = self._export([slot])[0]
                if slot.ref not in refs:
                    refs.append(slot.ref)
                picks.append((refs.index(slot.ref), slot.name))
            recipe.append((step, phase, name, picks))
        # a phase's outputs leave the host only when another host, or the driver, reads
        # them: the others stay in the host, where later calls read them
        sent = [(step, phase, names) for (step, phase), names in task.names.items()
                if fetched is None or phase in fetched or any(
                    read_by.get((name, phase, step), set()) - {task.host} for name in names)]
        host = self.hosts[task.host]
        if sent:
            status, *made = host.run.options(num_returns=1 + len(sent)).remote(
                recipe, sent, *refs)
        else:
            status, made = host.run.remote(recipe, [], *refs), []
        for key in task.made:
            outputs[key] = _Kept(task.host, key)
        for ref, (step, phase, names) in zip(made, sent):  # one object per phase, so that
            # reading one output deserialises only its phase's
            outputs |= {(name, phase, step): _Slot(ref, name) for name in names}
        return status

    @staticmethod
    def _late(task: _Task, timeout: float) -> None:
        """Raise the PhaseTimeout of a task that did not finish. It names the task's first
        step and phase and its actors, in call order (which of them hangs, Ray cannot
        tell), and the steps and phases the task runs."""
        step, phase = task.calls[0][:2]
        last = task.calls[-1][0]
        steps = f"step {step}" if last == step else f"steps {step}-{last}"
        phases = list(dict.fromkeys(p for _, p, _, _ in task.calls))
        raise PhaseTimeout(step, phase, task.actors(), f"no answer within {timeout:g} s "
                           f"(the host's task runs {steps}: {', '.join(phases)})")

    def put(self, name: str, output: PhaseOutput) -> object:
        """A driver's output, readable by actors as a source."""
        return _Slot(self.ray.put({name: output}), name)

    def call_all(self, names: Sequence[str], method: str, *args: object) -> dict[str, object]:
        """Call a method on several actors at once (hosts run in parallel)."""
        return self.call_all_later(names, method, *args)()

    def call_all_later(self, names: Sequence[str], method: str, *args: object
                       ) -> Callable[[], dict[str, object]]:
        """`call_all`, submitted now: every host runs it after what was submitted before
        and before what comes after (the next step), and the returned function, called
        on any thread, waits for the answer. The driver goes on meanwhile."""
        refs = {host: self.hosts[host].call.remote(method, members, *args)
                for host, members in self._by_host(names).items()}

        def answer() -> dict[str, object]:
            out: dict[str, object] = {}
            for values in self._wait_all(refs, -1, method, 300.0):
                out |= values
            return out
        return answer

    def records_later(self, names: Sequence[str], folder: str, first: int, last: int,
                      time: object, threads: int = 1
                      ) -> tuple[Callable[[], dict], Callable[[], None] | None]:
        """The actors' records of steps first..last, asked for now: (the function that
        gives those the driver writes, actor name -> table -> Parquet bytes or chunks;
        the function that waits until the others are on disk, or None). Hosts on the
        driver's node write theirs into the run `folder` themselves (all of them with
        `writes_records`); the others encode theirs beside their steps (with
        `encodes_records`; one host alone hands its chunks to the driver's writer thread).
        A host elsewhere no longer makes the hosts here send theirs: at 100,000
        households on two nodes, the driver writing every host's parts took the run
        18-30 s against 5-7 s on the local backend."""
        at_home = {n for n in names if self.writes_records
                   or self.host_nodes.get(self.host_of[n]) == self.here}
        here = [n for n in names if n in at_home]
        elsewhere = [n for n in names if n not in at_home]
        written = (self.write_records_later(here, folder, first, last, time, threads)
                   if here else None)
        if not elsewhere:
            return dict, written
        if self.encodes_records:
            return self.encoded_records_later(elsewhere, first, last, time), written
        return self.call_all_later(elsewhere, "drain_records"), written

    def write_records_later(self, names: Sequence[str], folder: str, first: int, last: int,
                            time: object, threads: int = 1) -> Callable[[], None]:
        """Each host hands its actors' records of steps first..last (`names`) to a thread
        of its own that writes them into the run `folder` (`writes_records`: the hosts
        are on this machine), and goes on stepping. The returned function, called on any
        thread, waits until every part is on disk, or raises the writing's error.
        `threads`: parts written at once on this machine (the last flush, with no step
        beside it), shared among the hosts."""
        by_host = self._by_host(names)
        each = max(1, threads // len(by_host)) if by_host else 1
        refs = {host: self.hosts[host].write_records.remote(members, folder, first, last,
                                                             time, each)
                for host, members in by_host.items()}

        def written() -> None:
            self._wait_all(refs, -1, "write_records", 300.0)  # handed over
            self._wait_all({host: self.hosts[host].records_written.options(
                concurrency_group="records").remote() for host in refs},
                -1, "write_records", 300.0)
        return written

    def encoded_records_later(self, names: Sequence[str], first: int, last: int,
                              time: object) -> Callable[[], dict[str, dict[str, object]]]:
        """Each host hands its actors' records of steps first..last (`names`) to a thread
        of its own that encodes them to Parquet beside its stepping (`encodes_records`:
        hosts on other machines; encoded on the host's stepping thread, they held up its
        next steps). The returned function, called on any thread, waits for them: actor
        name -> table -> Parquet bytes."""
        refs = {host: self.hosts[host].encode_records.remote(members, first, last, time)
                for host, members in self._by_host(names).items()}

        def encoded() -> dict[str, dict[str, object]]:
            self._wait_all(refs, -1, "encode_records", 300.0)  # handed over
            out: dict[str, dict[str, object]] = {}
            for values in self._wait_all({host: self.hosts[host].records_encoded.options(
                    concurrency_group="records").remote(first) for host in refs},
                    -1, "encode_records", 300.0):
                out |= values
            return out
        return encoded

    def _by_host(self, names: Sequence[str]) -> dict[str, list[str]]:
        """The actors `names`, host by host."""
        by_host: dict[str, list[str]] = {}
        for name in names:
            by_host.setdefault(self.host_of[name], []).append(name)
        return by_host

    def fetch(self, outputs: Sequence[object]) -> list[object]:
        outputs = self.detach(outputs)
        values = self.ray.get([slot.ref for slot in outputs])
        return [value[slot.name] for value, slot in zip(values, outputs)]

    def detach(self, outputs: Sequence[object]) -> list[object]:
        """The outputs, those still kept in their hosts copied out to the object store
        (a host keeps its outputs only for the steps around the one it runs)."""
        exported = iter(self._export([slot for slot in outputs if isinstance(slot, _Kept)]))
        return [next(exported) if isinstance(slot, _Kept) else slot for slot in outputs]

    def _export(self, kept: Sequence[_Kept]) -> list[_Slot]:
        """Outputs kept in their hosts, copied to the object store (one call per host)."""
        by_host: dict[str, list[Key]] = {}
        for slot in kept:
            by_host.setdefault(slot.host, []).append(slot.key)
        refs = {host: self.hosts[host].export.remote(keys) for host, keys in by_host.items()}
        return [_Slot(refs[slot.host], slot.key) for slot in kept]

    def kill(self, name: str) -> None:
        """Kill the host of an actor (tests use it to check a run survives by resuming)."""
        self.ray.kill(self.hosts[self.host_of[name]], no_restart=True)

    def shutdown(self) -> None:
        """Empty the hosts and keep them for the next run (`_IDLE_HOSTS`); kill those that
        do not answer within RELEASE_TIMEOUT_S, or that failed to empty."""
        handles = list(self.hosts.values())
        self.hosts.clear()
        self.host_of.clear()
        self.host_nodes.clear()
        if not handles:
            return
        released = {handle.release.remote(): handle for handle in handles}
        done, _ = self.ray.wait(list(released), num_returns=len(released),
                                timeout=RELEASE_TIMEOUT_S)
        idle = _IDLE_HOSTS.setdefault(self._session(), [])
        # (as many as a run starts: one per CPU, and one for the other actors)
        most = max(1, int(self.ray.cluster_resources().get("CPU", 1))) + 1
        for ref, handle in released.items():
            if ref in done and len(idle) < most and self._answered(ref):
                idle.append(handle)
            else:
                self.ray.kill(handle, no_restart=True)

    def _answered(self, ref: object) -> bool:
        """Whether a host call finished without an error."""
        try:
            self.ray.get(ref)
        except Exception:  # (a dead host, or a write of its that failed: not kept)
            return False
        return True

    def _session(self) -> str:
        """This driver's Ray session: hosts kept in one are no use in another."""
        context = self.ray.get_runtime_context()
        return f"{context.gcs_address}/{context.get_job_id()}"

    def _members(self, host: str) -> list[str]:
        return sorted(n for n, h in self.host_of.items() if h == host)

    def _get(self, refs: list[object], tasks: list[_Task]) -> list:
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as exc:
            task = next(task for ref, task in zip(refs, tasks) if _died(self.ray, ref))
            step, phase = task.calls[0][:2]
            raise ActorDied(step, phase, task.actors(), f"the actor died ({type(exc).__name__}); "
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
    """One actor's output inside its host's output of a phase (a dict keyed by actor
    name)."""

    __slots__ = ("ref", "name")

    def __init__(self, ref: object, name: str) -> None:
        self.ref, self.name = ref, name


class _Kept:
    """An output that stays in the host that made it (`_Host.export` copies it out)."""

    __slots__ = ("host", "key")

    def __init__(self, host: str, key: Key) -> None:
        self.host, self.key = host, key


class _Task:
    """Calls that one host runs in one Ray task: consecutive phases of its actors."""

    __slots__ = ("host", "calls", "made", "names", "after")

    def __init__(self, host: str) -> None:
        self.host = host
        self.calls: list[tuple[int, str, str, Sequence[Key]]] = []  # step, phase, actor, sources
        self.made: set[Key] = set()
        self.names: dict[tuple[int, str], list[str]] = {}  # (step, phase) -> its actors
        self.after: set[int] = set()  # the tasks of the plan it waits for

    def add(self, step: int, phase: str, name: str, sources: Sequence[Key]) -> None:
        self.calls.append((step, phase, name, sources))
        self.made.add((name, phase, step))
        self.names.setdefault((step, phase), []).append(name)

    def actors(self) -> list[str]:
        return list(dict.fromkeys(name for _, _, name, _ in self.calls))


def _tasks(plan: Plan, host_of: dict[str, str]) -> list[_Task]:
    """The plan's calls as host tasks, in submission order. A call joins its host's latest
    task unless it reads an output of a task begun after that one, so a run of phases
    whose inputs stay in one host is one task: a hop between processes (Ray resolves
    each through the driver) costs milliseconds on a busy machine, more than most
    phases. Tasks then read only from tasks before them, so they cannot wait on each
    other in a circle, and each actor's calls keep the plan's order."""
    tasks: list[_Task] = []
    latest: dict[str, int] = {}  # host -> its latest task
    made_by: dict[Key, int] = {}  # output -> its task
    for step, phase, calls in plan:
        for name, sources in calls:
            host = host_of[name]
            k = latest.get(host)
            if k is None or any(made_by.get(key, -1) > k for key in sources):
                tasks.append(_Task(host))
                if k is not None:
                    tasks[-1].after.add(k)
                k = latest[host] = len(tasks) - 1
            tasks[k].add(step, phase, name, sources)
            tasks[k].after |= {made_by[key] for key in sources if key in made_by} - {k}
            made_by[(name, phase, step)] = k
    return tasks


class _Host:
    """A Ray actor process hosting several co-simulation actors."""

    def __init__(self, members: list[tuple[type, str, dict]]) -> None:
        self.actors = {name: cls(name, **kwargs) for cls, name, kwargs in members}
        self.made: dict[Key, PhaseOutput] = {}  # outputs of the last steps run here
        self._writer: Writer | None = None  # writes or encodes records, when asked
        self._encoded: dict[int, dict] = {}  # first step -> encode_records' parts

    def rebuild(self, members: list[tuple[type, str, dict]]) -> tuple[list[str], str]:
        """A kept host (RayBackend.shutdown) takes a new run's actors; returns `ping`'s
        answer."""
        self.__init__(members)
        return self.ping()

    def release(self) -> None:
        """Drop the actors and what they made, once every write is done (re-raising a
        failed one), before the host is kept for another run."""
        if self._writer is not None:
            self._writer.close()
        # (no gc.collect: a full collection took 0.24 s in a host, over its modules)
        self.actors, self.made, self._writer, self._encoded = {}, {}, None, {}

    def ping(self) -> tuple[list[str], str]:
        """The actors' names, and the node this host runs on."""
        import ray

        return ([actor.ping() for actor in self.actors.values()],
                ray.get_runtime_context().get_node_id())

    def write_records(self, names: list[str], folder: str, first: int, last: int,
                      time: object, threads: int = 1) -> None:
        """Hand the actors' records of steps first..last to this host's writer thread,
        which writes them into the run folder (RayBackend.write_records_later), `threads`
        parts at once."""
        from cosim.records import RunFolder, Writer

        parts = {(table, name): chunks for name in names for table, chunks in
                 self.actors[name].drain_records().items()}
        if self._writer is None:
            self._writer = Writer()
        self._writer.submit(RunFolder(folder).write, parts, first, last, time, threads)

    def encode_records(self, names: list[str], first: int, last: int, time: object
                       ) -> None:
        """Hand the actors' records of steps first..last to this host's writer thread,
        which encodes them to Parquet beside the steps (RayBackend.encoded_records_later);
        `records_encoded(first)` hands them over."""
        from cosim.records import Writer, encode_table

        drained = {name: self.actors[name].drain_records() for name in names}

        def encode() -> None:
            self._encoded[first] = {
                name: {table: data for table, chunks in tables.items()
                       if (data := encode_table(chunks, first, last, time)) is not None}
                for name, tables in drained.items()}
        if self._writer is None:
            self._writer = Writer()
        self._writer.submit(encode)

    def records_encoded(self, first: int) -> dict[str, dict[str, object]]:
        """The records `encode_records` was handed for the steps from `first`, once
        encoded (run in the "records" concurrency group: beside the steps); re-raise an
        encoding's error."""
        self._writer.wait()
        return self._encoded.pop(first)

    def records_written(self) -> None:
        """Wait until every write handed over so far is done (run in the "records"
        concurrency group: beside the steps); re-raise a write's error."""
        if self._writer is not None:
            self._writer.wait()

    def run(self, recipe: list, sent: list[tuple[int, str, list[str]]], *outputs: dict
            ) -> tuple:
        """Run a task's calls (step, phase, actor, picks) in order, each on its sources:
        picked out of the source hosts' outputs, or (-1) out of this host's own. Returns
        a status, None or the first failure as (step, phase, actor, reason, traceback),
        and then for each (step, phase, actors) of `sent` their outputs, actor name ->
        output. A recipe may span many steps: what it made two steps back, and does not
        send, is dropped as it goes."""
        status, current = None, None
        kept = {(name, phase, step) for step, phase, names in sent for name in names}
        for step, phase, name, picks in recipe:
            if step != current:  # a call reads its step's outputs and the step before's
                current = step
                self.made = {k: v for k, v in self.made.items() if k[2] >= step - 2 or k in kept}
            try:
                sources = [self.made[k] if i < 0 else outputs[i][k] for i, k in picks]
            except KeyError as exc:  # an earlier actor's failure left it out
                status = (step, phase, name, f"KeyError: no output {exc}", "")
                break
            error, out = checked(self.actors[name], phase, step, *sources)
            if error is not None:
                status = (step, phase, name, *error)
                break
            self.made[(name, phase, step)] = out
        leaving = [{name: self.made[(name, phase, step)] for name in names
                    if (name, phase, step) in self.made} for step, phase, names in sent]
        # the steps around the last one are all a later task, or the driver, can ask for
        oldest = recipe[-1][0] - 2
        self.made = {k: v for k, v in self.made.items() if k[2] >= oldest}
        if not sent:  # (one return value: Ray's, not a tuple of one)
            return status
        return status, *leaving

    def export(self, keys: list[Key]) -> dict[Key, PhaseOutput]:
        """Outputs this host made, for the driver or another host."""
        return {key: self.made[key] for key in keys}

    def call(self, method: str, names: list[str], *args: object) -> dict[str, object]:
        return {name: getattr(self.actors[name], method)(*args) for name in names}
