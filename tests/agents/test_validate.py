"""The validation table: regenerated on a small sample here; the full run is marked slow."""

from __future__ import annotations

import numpy as np
import pytest

from agents.profiles.loadmodel import LoadModel
from agents.profiles.validate import ValidateConfig, real_data, validate


def test_validation_table_on_a_small_sample(tiny_model):
    real = real_data(tiny_model, richardson_homes=None, progress=False)
    assert set(real.test.home).isdisjoint(real.train.home)
    report = validate(tiny_model, ValidateConfig(homes=40, days=14, trees=50), real=real,
                      progress=False)
    for kind in ("weekday", "weekend"):
        m = report.per_type[kind]
        assert m["real_days"] == int((real.test.weekend == (kind == "weekend")).sum()) > 0
        assert m["synthetic_days"] == 40 * (10 if kind == "weekday" else 4)
        # Classifiers trained on either side beat guessing on held-out real days.
        assert m["chance"] == 0.5 and m["real_real"] > 0.6 and m["tstr"] > 0.55
        assert 0 < m["band_coverage"] < 1 and m["pearson_mean"] > 0.3
        assert m["mean_rmse_kw"] < 0.5 and m["std_rmse_kw"] < 1.0
        assert m["daily_kwh_p50_synthetic"] == pytest.approx(m["daily_kwh_p50_real"], rel=0.5)
    table = report.table()
    for label in ("band error p10 / p50 / p90", "per-step mean error", "per-step std error",
                  "Pearson r", "cluster accuracy, real/real", "cluster accuracy, TSTR",
                  "lag-1 correlation"):
        assert label in table
    gap = report.per_type["weekday"]["real_real"] - report.per_type["weekday"]["tstr"]
    assert f"{100 * gap:.1f}" in table
    assert report.passed() == all(m["tstr"] >= m["real_real"] - 0.1
                                  for m in report.per_type.values())


def test_shipped_model_on_a_sample_of_real_homes():
    model = LoadModel.load()
    report = validate(model, ValidateConfig(homes=100, days=14, trees=100, richardson_homes=4),
                      progress=False)
    for m in report.per_type.values():
        assert m["tstr"] > m["chance"] + 0.2 and m["real_real"] > m["chance"] + 0.2
        assert m["pearson_mean"] > 0.8
    c = report.consistency
    assert c["lag1_synthetic"] > 0.2 and c["between_synthetic"] > 0.2


@pytest.mark.slow
def test_shipped_model_meets_the_tstr_target():
    model = LoadModel.load()
    report = validate(model, ValidateConfig(), progress=False)
    print(report.table())
    assert report.passed(), report.table()
    assert np.isfinite(report.consistency["lag1_real"])
