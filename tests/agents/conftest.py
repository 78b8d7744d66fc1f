"""Shared fixtures: a tiny load model trained once per session, small generated data sets."""

from __future__ import annotations

import pytest

from agents.profiles.config import GenerateConfig
from agents.profiles.gan import GanConfig
from agents.profiles.generate import generate, read_dataset
from agents.profiles.train import TrainConfig, train

TINY = TrainConfig(richardson_homes=6, richardson_days=14, clusters=2, brackets=4,
                   gan=GanConfig(steps=60))


@pytest.fixture(scope="session")
def tiny_model():
    """A load model trained in seconds: too small to be good, enough to exercise everything."""
    return train(TINY, progress=False)


@pytest.fixture(scope="session")
def spring_week(tmp_path_factory):
    """40 homes over the week of the spring clock change, every device common, 15-minute
    steps, the shipped load model."""
    out = tmp_path_factory.mktemp("spring")
    cfg = GenerateConfig(homes=40, days=7, seed=3, start="2024-03-28", pv={"share": 0.6},
                         ev={"share": 0.6}, heat={"heat_pump_share": 0.5})
    generate(cfg, out, progress=False)
    return cfg, read_dataset(out)
