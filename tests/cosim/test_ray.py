"""The Ray backend on a two-node cluster: same records as local, resume after a killed
actor, and timeouts that name the late actor."""

from __future__ import annotations

import pandas as pd
import pytest

from cosim.backends import ActorDied, LocalBackend, RayBackend
from cosim.scenario import build
from cosim.simulation import Simulation

from .conftest import synthetic_profiles
from .test_simulation import _assert_same_records, _tables, assert_times_out


def _scenario(config):
    return build(config, synthetic_profiles(homes=30))


def test_ray_records_equal_local_records_on_two_nodes(ray_cluster, small_config, tmp_path):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    scenario = _scenario(small_config)
    Simulation(scenario, LocalBackend(), tmp_path / "local").run(progress=False)
    Simulation(scenario, RayBackend(), tmp_path / "ray").run(progress=False)
    _assert_same_records(_tables(tmp_path / "local"), _tables(tmp_path / "ray"))
    manifest = pd.read_json(tmp_path / "ray" / "manifest.json", typ="series")
    assert manifest["backend"] == "ray"


def test_killed_actor_then_resume_equals_uninterrupted_run(ray_cluster, bank_config,
                                                           tmp_path):
    # the policy bank acts on each household's own voltage of the step before: a resume
    # must restore that observation from the checkpoint, or the records differ
    scenario = _scenario(bank_config)
    Simulation(scenario, LocalBackend(), tmp_path / "full").run(progress=False)

    def kill_after_step_5(sim, step):
        if step == 5:
            sim.backend.kill("shard-0001")

    with pytest.raises(ActorDied, match=r"step 6, phase \w+: shard-0001.*: the actor died"):
        Simulation(scenario, RayBackend(), tmp_path / "killed").run(
            progress=False, after_step=kill_after_step_5)
    # the checkpoint after step 3 is what survives; resume on fresh actors
    assert sorted(pd.read_parquet(tmp_path / "killed" / "system")["step"]) == [0, 1, 2, 3]
    Simulation.resume(tmp_path / "killed", RayBackend(),
                      profiles=synthetic_profiles(homes=30)).run(progress=False)
    _assert_same_records(_tables(tmp_path / "full"), _tables(tmp_path / "killed"))


def test_ray_timeout_holds_and_names_the_late_actor_and_phase(ray_cluster, small_config,
                                                              tmp_path):
    import ray

    from . import slow_actors

    ray.cloudpickle.register_pickle_by_value(slow_actors)
    config = small_config.model_copy(update={"run": small_config.run.model_copy(
        update={"phase_timeout_s": 2.0})})
    scenario = _scenario(config)
    for spec in scenario.actors:
        if spec.name == "shard-0000":
            spec.cls = slow_actors.HangingShard
    sim = Simulation(scenario, RayBackend(), tmp_path)
    # the late host's actors are named (the hanging one and any host-mates)
    assert_times_out(sim, 2, r"step 2, phase decide: shard-0000(, shard-\d+)*: no answer "
                             r"within 2 s", 2.0)
    sim.close()
