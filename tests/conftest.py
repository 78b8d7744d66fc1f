"""Shared fixtures: feeders are loaded once per test session, and Ray runs as one
two-node cluster per session (ray.cluster_utils.Cluster), so every Ray test is multi-node."""

from __future__ import annotations

import functools

import pytest

import cosim  # noqa: F401 - first: MKL's reproducible mode (cosim/__init__.py)
from grid import Feeder, load_feeder


@functools.cache
def _feeder(name: str) -> Feeder:
    return load_feeder(name)


@pytest.fixture(scope="session")
def feeder_cache():
    """Callable name -> Feeder, loading each shipped feeder at most once per session."""
    return _feeder


@pytest.fixture(scope="session")
def ray_cluster():
    """A two-node Ray cluster (one CPU each, no dashboard) shared by the whole session."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
