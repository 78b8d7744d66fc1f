"""The load model: shipped weights, sampling, limits, day-to-day consistency, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.profiles.behaviour import Behaviour
from agents.profiles.loadmodel import DEFAULT_PATH, LoadModel, limit_power
from agents.profiles.realdata import STEPS, eulv_days
from agents.profiles.train import train

from .conftest import TINY

WEEKS = np.array([d % 7 >= 5 for d in range(28)])


@pytest.fixture(scope="module")
def shipped():
    return LoadModel.load()


def test_shipped_weights_are_small_plain_state_dicts():
    assert DEFAULT_PATH.stat().st_size < 500_000
    data = torch.load(DEFAULT_PATH, weights_only=True)  # no pickled classes inside
    assert sorted(data["generators"]) == [f"{t}/{k}" for t in ("weekday", "weekend")
                                          for k in range(4)]
    assert all(isinstance(v, torch.Tensor) for g in data["generators"].values()
               for v in g.values())


def test_samples_are_valid_days(shipped):
    sample = shipped.sample(50, WEEKS, seed=1)
    assert sample.kw.shape == (50, 28, STEPS)
    assert (sample.kw >= 0).all() and sample.kw.max() <= shipped.max_kw + 1e-9
    np.testing.assert_allclose(sample.kw.sum(axis=2) / 4, sample.daily_kwh, rtol=1e-9)
    for kind in ("weekday", "weekend"):
        cols = WEEKS == (kind == "weekend")
        assert sample.cluster[:, cols].max() < shipped.behaviour.n_clusters(kind)
    again = shipped.sample(50, WEEKS, seed=1)
    np.testing.assert_array_equal(sample.kw, again.kw)
    assert not np.allclose(sample.kw, shipped.sample(50, WEEKS, seed=2).kw)


def test_one_home_stays_consistent_over_days(shipped):
    """Daily energy of the same home is correlated from day to day, and homes differ."""
    e = shipped.sample(300, WEEKS, seed=3).daily_kwh
    lag1 = np.corrcoef(e[:, :-1].ravel(), e[:, 1:].ravel())[0, 1]
    between = np.var(e.mean(axis=1)) / np.var(e)
    assert lag1 > 0.3 and between > 0.3
    # ... and its magnitude matches the feeder's real homes.
    real = eulv_days().daily_kwh()
    assert abs(np.median(e) / np.median(real) - 1) < 0.25


def test_power_limit_keeps_each_days_energy():
    rng = np.random.default_rng(0)
    kw = rng.gamma(0.3, 1.0, (20, 96)) * 3
    kw[0, 10] = 40.0
    limited = limit_power(kw, 4.0)
    assert limited.max() <= 4.0 + 1e-12 and (limited >= 0).all()
    np.testing.assert_allclose(limited.sum(axis=1), kw.sum(axis=1))
    untouched = kw.max(axis=1) <= 4.0
    np.testing.assert_array_equal(limited[untouched], kw[untouched])


def test_behaviour_state_round_trip(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m.pt")
    loaded = LoadModel.load(path)
    b, c = tiny_model.behaviour, loaded.behaviour
    np.testing.assert_allclose(b.r_quantiles, c.r_quantiles)
    for key in b.cluster_trans:
        np.testing.assert_allclose(b.cluster_trans[key], c.cluster_trans[key])
        np.testing.assert_allclose(c.cluster_trans[key].sum(axis=1), 1.0)
        np.testing.assert_allclose(c.bracket_trans[key].sum(axis=1), 1.0)
    np.testing.assert_array_equal(tiny_model.sample(5, WEEKS, 0).kw, loaded.sample(5, WEEKS, 0).kw)


def test_training_is_deterministic(tiny_model):
    again = train(TINY, progress=False)
    for key, gen in tiny_model.generators.items():
        for name, value in gen.state_dict().items():
            assert torch.equal(value, again.generators[key].state_dict()[name]), (key, name)
    assert tiny_model.meta["test_homes"] == again.meta["test_homes"]
    np.testing.assert_array_equal(tiny_model.behaviour.r_quantiles, again.behaviour.r_quantiles)


def test_clusters_separate_what_they_claim(tiny_model):
    """K-means assignment of a generated day mostly gives back the cluster that made it."""
    gen = torch.Generator().manual_seed(0)
    for kind in ("weekday", "weekend"):
        for k in range(tiny_model.behaviour.n_clusters(kind)):
            shapes = tiny_model.sample_shapes(kind, k, 200, gen)
            np.testing.assert_allclose(shapes.sum(axis=1), 1.0)
            assert (tiny_model.behaviour.assign(shapes, kind) == k).mean() > 0.5


def test_fit_needs_multi_day_homes():
    from agents.profiles.errors import ProfileError

    one_day_homes = eulv_days()
    one_day_homes.weekend[::2] = True
    with pytest.raises(ProfileError, match="several consecutive days"):
        Behaviour.fit(one_day_homes, clusters=2, brackets=4, seed=0)
