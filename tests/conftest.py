"""Shared fixtures: feeders are loaded once per test session."""

from __future__ import annotations

import functools

import pytest

from grid import Feeder, load_feeder


@functools.cache
def _feeder(name: str) -> Feeder:
    return load_feeder(name)


@pytest.fixture(scope="session")
def feeder_cache():
    """Callable name -> Feeder, loading each shipped feeder at most once per session."""
    return _feeder
