"""The Ray backend on a two-node cluster: same records as local, resume after a killed
actor, and timeouts that name the late actor."""

from __future__ import annotations

import pandas as pd
import pytest

from cosim.backends import ActorDied, LocalBackend, RayBackend
from cosim.scenario import build
from cosim.simulation import NotConverged, Simulation

from .conftest import small, synthetic_profiles
from .test_simulation import _assert_same_records, _tables, assert_times_out


def _scenario(config):
    return build(config, synthetic_profiles(homes=30))


class _WritingRay(RayBackend):
    """The Ray backend with every host writing its actors' records into the run folder
    itself, as hosts on the driver's machine do: the test cluster's two nodes are
    processes of this machine, so the hosts on either one can."""

    def start(self, *args, **kwargs):
        super().start(*args, **kwargs)
        self.writes_records = True


@pytest.mark.parametrize("backend", [RayBackend, _WritingRay],
                         ids=["by-node", "hosts-write"])
def test_ray_records_equal_local_records_on_two_nodes(ray_cluster, small_config, tmp_path,
                                                      backend, monkeypatch):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    scenario = _scenario(small_config)
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    monkeypatch.chdir(tmp_path)  # a relative run folder, as `cosim run` makes by default
    Simulation(scenario, backend(), "ray").run(progress=False)
    _assert_same_records(_tables(tmp_path / "local"), _tables(tmp_path / "ray"))
    manifest = pd.read_json(tmp_path / "ray" / "manifest.json", typ="series")
    assert manifest["backend"] == "ray"


@pytest.mark.parametrize("design", ["mahtm", "stackelberg"])
def test_market_designs_give_the_same_records_on_ray(ray_cluster, design, tmp_path):
    """The upstream phase (MAHTM's layer 3) and a Stackelberg leader's telemetry from
    shards on other nodes, like everything else, give the local backend's records."""
    changes = {"mahtm": dict(markets={"mechanism": "mahtm"}, aggregators={"count": 0}),
               "stackelberg": dict(aggregators={"count": 1, "pricing": "stackelberg"})}
    scenario = _scenario(small(run={"steps": 4}, **changes[design]))
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    Simulation(scenario, RayBackend(), tmp_path / "ray").run(progress=False)
    tables = ("households", "trades", "markets", "prices", "system") + (
        ("upstream",) if design == "mahtm" else ("stackelberg", "positions"))
    for table in tables:
        assert (tmp_path / "local" / table).exists() == (tmp_path / "ray" / table).exists()
        if not (tmp_path / "local" / table).exists():  # (nothing traded, say)
            continue
        local, ray = (pd.read_parquet(tmp_path / run / table).reset_index(drop=True)
                      for run in ("local", "ray"))
        pd.testing.assert_frame_equal(local.drop(columns=["wall_s"], errors="ignore"),
                                      ray.drop(columns=["wall_s"], errors="ignore"),
                                      check_exact=True, obj=f"{design} {table}")


@pytest.mark.parametrize("backend", [RayBackend, _WritingRay],
                         ids=["by-node", "hosts-write"])
def test_killed_actor_then_resume_equals_uninterrupted_run(ray_cluster, bank_config,
                                                           tmp_path, backend):
    # the policy bank acts on each household's own voltage of the step before: a resume
    # must restore that observation from the checkpoint, or the records differ
    scenario = _scenario(bank_config)
    Simulation(scenario, LocalBackend(), tmp_path / "full").run(progress=False)

    def kill_after_step_5(sim, step):
        if step == 5:
            sim.backend.kill("shard-0001")

    with pytest.raises(ActorDied, match=r"step 6, phase \w+: shard-0001.*: the actor died"):
        Simulation(scenario, backend(), tmp_path / "killed").run(
            progress=False, after_step=kill_after_step_5)
    # the checkpoint after step 3 is what survives; resume on fresh actors
    assert sorted(pd.read_parquet(tmp_path / "killed" / "system")["step"]) == [0, 1, 2, 3]
    Simulation.resume(tmp_path / "killed", backend(),
                      profiles=synthetic_profiles(homes=30)).run(progress=False)
    _assert_same_records(_tables(tmp_path / "full"), _tables(tmp_path / "killed"))


class _CountingRay(RayBackend):
    """The Ray backend, noting how many steps each plan spans and the hosts it ran on."""

    def run(self, plan, outputs, timeout, wall, fetched=None):
        self.spans = getattr(self, "spans", []) + [len({step for step, *_ in plan})]
        self.used = getattr(self, "used", set()) | set(self.host_of.values())
        return super().run(plan, outputs, timeout, wall, fetched)


class _NotingRay(RayBackend):
    """The Ray backend, noting its hosts' actor ids."""

    def start(self, *args, **kwargs):
        super().start(*args, **kwargs)
        self.ids = sorted(handle._actor_id.hex() for handle in self.hosts.values())


def test_a_second_run_takes_the_first_runs_hosts_and_gives_its_records(
        ray_cluster, small_config, tmp_path):
    """A run's hosts are emptied and kept when it closes; the next run in this process
    takes them (their actors built anew) and records what the first did."""
    import ray

    scenario = _scenario(small_config)
    first, second = _NotingRay(), _NotingRay()
    Simulation(scenario, first, tmp_path / "first").run(progress=False)
    Simulation(scenario, second, tmp_path / "second").run(progress=False)
    assert second.ids == first.ids
    _assert_same_records(_tables(tmp_path / "first"), _tables(tmp_path / "second"))
    # a host that died is not kept: the next run starts a new one in its place
    third = _NotingRay()
    sim = Simulation(scenario, third, tmp_path / "third")
    sim.reset()
    dead = next(iter(third.hosts.values()))
    ray.kill(dead, no_restart=True)
    sim.close()
    fourth = _NotingRay()
    Simulation(scenario, fourth, tmp_path / "fourth").run(progress=False)
    assert dead._actor_id.hex() not in fourth.ids
    assert len(fourth.ids) == len(first.ids)
    # nor is one that died while kept: the next run replaces it and records the same
    from cosim.backends import _IDLE_HOSTS

    gone = next(h for hosts in _IDLE_HOSTS.values() for h in hosts)
    ray.kill(gone, no_restart=True)
    fifth = _NotingRay()
    Simulation(scenario, fifth, tmp_path / "fifth").run(progress=False)
    assert gone._actor_id.hex() not in fifth.ids and len(fifth.ids) == len(first.ids)
    _assert_same_records(_tables(tmp_path / "first"), _tables(tmp_path / "fifth"))


class _PlacedRay(RayBackend):
    """The Ray backend, noting on which node each host ran."""

    def start(self, *args, **kwargs):
        super().start(*args, **kwargs)
        self.placed = dict(self.host_nodes)


def test_new_hosts_go_one_to_each_node(ray_cluster, small_config, tmp_path):
    """With no kept hosts, a run's two hosts (the shards', the other actors') start one on
    each node (Ray's "SPREAD" put them on one node at times), and record what the local
    backend does."""
    import ray

    from cosim.backends import _IDLE_HOSTS

    for hosts in _IDLE_HOSTS.values():  # (earlier tests' hosts, wherever they are)
        while hosts:
            ray.kill(hosts.pop(), no_restart=True)
    scenario = _scenario(small(households={"shard_size": 60}))
    backend = _PlacedRay()
    Simulation(scenario, backend, tmp_path / "ray").run(progress=False)
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    assert len(backend.placed) == 2
    assert len(set(backend.placed.values())) == 2
    assert set(backend.placed.values()) == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    _assert_same_records(_tables(tmp_path / "local"), _tables(tmp_path / "ray"))


def test_a_failure_inside_a_plan_of_several_steps_keeps_the_steps_before_it(
        ray_cluster, small_config, tmp_path):
    """`run` hands Ray the steps up to each checkpoint (every 4 here) as one plan, after a
    first step alone. A shard that fails at step 6, inside the plan of steps 4-7, leaves
    steps 0-5 on disk as the local backend's records, and the run failed at step 6."""
    import json

    import ray

    from cosim.backends import PhaseError

    from . import slow_actors

    ray.cloudpickle.register_pickle_by_value(slow_actors)
    scenario = _scenario(small_config)
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    for spec in scenario.actors:
        if spec.name == "shard-0001":
            spec.cls = slow_actors.FaultyShard
    backend = _CountingRay()
    with pytest.raises(PhaseError, match=r"step 6, phase dispatch: shard-0001:.*inverter fault"):
        Simulation(scenario, backend, tmp_path / "ray").run(progress=False)
    # step 0's first phases; step 0 alone (and step 1's first phases), to time a step;
    # steps 1-3; step 4's first phases (after the checkpoint); steps 4-7
    assert backend.spans == [1, 2, 3, 1, 4]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed_step"] == 6
    local, ray_ = _tables(tmp_path / "local"), _tables(tmp_path / "ray")
    assert sorted(ray_["system"]["step"]) == list(range(6))
    _assert_same_records({k: v[v["step"] < 6].reset_index(drop=True)
                          for k, v in local.items()}, ray_)


def test_ray_stops_at_the_step_that_did_not_converge_inside_a_plan(ray_cluster, tmp_path):
    """The nonconvergence of step 2 (of the plan of steps 2 and 3) stops the run there, as
    on the local backend: steps 0-2 are on disk, step 2 marked."""
    import json

    from .test_run_status import _heavy

    sim = Simulation(_scenario(_heavy("stop")), _CountingRay(), tmp_path)
    with pytest.raises(NotConverged, match=r"step 2: the power flow of scenario 'heavy'"):
        sim.run(progress=False)
    assert sim.backend.spans[-1] == 2  # steps 2 and 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed_step"] == 2
    system = pd.read_parquet(tmp_path / "system")
    assert list(system["step"]) == [0, 1, 2] and list(system["converged"]) == [1, 1, 0]


def test_ray_timeout_holds_and_names_the_late_actor_and_phase(ray_cluster, small_config,
                                                              tmp_path):
    """A shard that hangs at step 2 fails the run within the timeout (and a second), named
    with its task's first step and phase, the host's actors and the steps and phases the
    task runs: stepped one step at a time, and inside a plan of several steps (`run` hands
    Ray as many steps as took a quarter of the timeout as one plan)."""
    import json
    import time

    import ray

    from cosim.backends import PhaseTimeout

    from . import slow_actors

    ray.cloudpickle.register_pickle_by_value(slow_actors)
    config = small_config.model_copy(update={"run": small_config.run.model_copy(
        update={"phase_timeout_s": 2.0})})
    scenario = _scenario(config)
    for spec in scenario.actors:
        if spec.name == "shard-0000":
            spec.cls = slow_actors.HangingShard
    sim = Simulation(scenario, RayBackend(), tmp_path / "stepped")
    assert_times_out(sim, 2, r"step 2, phase decide: shard-0000(, [\w-]+)*: no answer "
                             r"within 2 s \(the host's task runs step 2: decide, ", 2.0)
    sim.close()
    sim = Simulation(scenario, _CountingRay(), tmp_path / "run")
    sim.reset()
    start = time.monotonic()
    # (the shards' host waits for the services' host at every step, so the task that
    # hangs runs step 2 alone; on one host it would run the plan's steps)
    with pytest.raises(PhaseTimeout, match=r"step 2, phase observe: shard-0000(, [\w-]+)*: "
                                           r"no answer within 2 s \(the host's task runs step "
                                           r"2: observe, decide, "):
        sim.run(progress=False)
    assert time.monotonic() - start < 2.0 + 2.0  # (and step 0 before the plan)
    assert sim.backend.spans[-1] > 1  # the plan held steps 1 to 2 or 3
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["failed_step"] == 2
    sim.close()


def test_one_host_gives_the_local_records_and_steps_back(ray_cluster, small_config, tmp_path):
    """Every actor on one host (the layout of a small machine): outputs that no other host
    reads stay in it. The records are the local backend's, and a snapshot taken before
    three more steps (long enough for the host to drop what it kept of that step) comes
    back to give what the local backend gives."""
    import numpy as np

    from agents.households import ACTIONS

    scenario = _scenario(small_config)
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    backend = _CountingRay(shard_hosts=1)
    Simulation(scenario, backend, tmp_path / "ray").run(progress=False)
    assert backend.used == {"host-all"} and max(backend.spans) == 4  # (steps 4-7, 8-11)
    _assert_same_records(_tables(tmp_path / "local"), _tables(tmp_path / "ray"))

    config = small(households={"policy": "external"})
    rng = np.random.default_rng(5)
    actions = [rng.uniform(-1, 1, (60, len(ACTIONS))) for _ in range(5)]
    gave = []
    for backend in (LocalBackend(), RayBackend(shard_hosts=1)):
        sim = Simulation.from_config(config, backend, record=False,
                                     profiles=synthetic_profiles(homes=30))
        sim.reset()
        sim.step(actions[0])
        snapshot = sim.snapshot()
        for a in actions[1:4]:
            sim.step(a)
        sim.restore(snapshot)
        result = sim.step(actions[4])
        gave.append((result.system, sim.observations(), sim.costs()))
        sim.close()
    (system, obs, costs), (ray_system, ray_obs, ray_costs) = gave
    assert system == ray_system
    np.testing.assert_array_equal(obs, ray_obs)
    for a, b in zip(costs, ray_costs):
        np.testing.assert_array_equal(a, b)
