"""Figures over seeds: means, t-intervals, per-seed entries and the paired comparison, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from harmonize.audit.seed_summary import mean_interval, paired_comparison, summarise_seeds
from harmonize.errors import ConfigError

#: Student t quantile 0.975 with 2 degrees of freedom: 0.95 / sqrt(2 * 0.975 * 0.025).
T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def _seed(seed, probe, mae, per_site, p=None, note="first"):
    return {"seed": seed, "site_probe_bacc": probe, "site_probe_p": p, "age_mae": mae, "n_subjects": 12,
            "age_mae_per_site": per_site, "unseen_sites": [f"s{seed}"], "age_probe_note": note}


METHOD = [_seed(0, 0.4, 5.0, {"a": 1.0, "b": 2.0}, p=0.1), _seed(1, 0.5, 6.0, {"a": 3.0, "b": 2.0}, note="second"),
          _seed(2, 0.6, float("nan"), {"a": 5.0, "b": 2.0}, p=0.3)]
BASELINE = [_seed(2, 0.6, 6.5, {}), _seed(0, 0.5, 5.5, {}), _seed(1, 0.7, 6.0, {})]  # paired by seed, not order


def test_means_intervals_and_per_seed():
    summary = summarise_seeds(METHOD)
    half = T_975_2 * 0.1 / math.sqrt(3)  # sd of 0.4, 0.5, 0.6 is 0.1
    assert summary["site_probe_bacc"] == pytest.approx(0.5)
    assert summary["site_probe_bacc_ci"] == pytest.approx([0.5 - half, 0.5 + half])
    # two seeds measured the MAE (NaN: not measured): mean 5.5, sd sqrt(0.5), t(0.975, 1) = 12.7062
    assert summary["age_mae"] == pytest.approx(5.5)
    assert summary["age_mae_ci"] == pytest.approx([5.5 - 12.7062047 * 0.5, 5.5 + 12.7062047 * 0.5])
    assert summary["site_probe_p"] == pytest.approx(0.2) and summary["site_probe_p_ci"] is not None
    assert summary["n_subjects"] == 12 and isinstance(summary["n_subjects"], int)
    assert summary["n_subjects_ci"] == pytest.approx([12.0, 12.0])
    assert summary["age_mae_per_site"] == pytest.approx({"a": 3.0, "b": 2.0})
    assert "age_mae_per_site_ci" not in summary
    assert summary["unseen_sites"] == ["s0"] and summary["age_probe_note"] == "first"  # the first seed's
    flags = summarise_seeds([{"site_unlearned": v, "same": True} for v in (True, False, True)])
    assert flags["site_unlearned"] == [True, False, True] and flags["same"] is True  # each seed's where they differ
    assert summary["per_seed"] == METHOD and summary["per_seed"][0] is not METHOD[0]
    assert "seed" not in summary
    assert list(summary)[:3] == ["site_probe_bacc", "site_probe_bacc_ci", "site_probe_p"]


def test_one_seed_keeps_the_shape():
    summary = summarise_seeds(METHOD[:1])
    assert summary["site_probe_bacc"] == 0.4 and summary["site_probe_bacc_ci"] is None
    assert summary["site_probe_p"] == 0.1 and summary["per_seed"] == METHOD[:1]
    assert set(summary) == set(summarise_seeds(METHOD))
    comparison = paired_comparison(METHOD[:1], BASELINE)
    assert comparison["site_probe_bacc"] == {"difference": pytest.approx(-0.1), "p": None}


def test_paired_comparison_by_seed():
    comparison = paired_comparison(METHOD, BASELINE)
    # differences -0.1, -0.2, 0.0: t = -0.1 / (0.1 / sqrt 3) = -sqrt 3; with 2 df, p = 1 - |t| / sqrt(2 + t^2)
    assert comparison["site_probe_bacc"]["difference"] == pytest.approx(-0.1)
    assert comparison["site_probe_bacc"]["p"] == pytest.approx(1 - math.sqrt(3 / 5))
    # age MAE: seed 2 unmeasured, so seeds 0 and 1 only: differences -0.5 and 0.0
    assert comparison["age_mae"]["difference"] == pytest.approx(-0.25)
    assert comparison["age_mae"]["p"] == pytest.approx(0.5)  # t = -1 with 1 df
    assert comparison["n_subjects"] == {"difference": 0.0, "p": None}  # the differences do not vary
    assert comparison["site_probe_p"] == {"difference": None, "p": None}  # the baseline measured no p
    assert set(comparison) == {"site_probe_bacc", "site_probe_p", "age_mae", "n_subjects"}


def test_mean_interval_without_numbers():
    assert mean_interval([None, float("nan")]) == (None, None)
    assert mean_interval([2.0]) == (2.0, None)


def test_errors():
    with pytest.raises(ConfigError, match="give the figures of at least one seed"):
        summarise_seeds([])
    with pytest.raises(ConfigError, match=r"'confidence' must be a finite number > 0 and < 1, got 95 \(int\)"):
        summarise_seeds(METHOD, confidence=95)
    with pytest.raises(ConfigError, match="the baseline's figures of entry 0 have no 'seed' to pair them by"):
        paired_comparison(METHOD, [{"age_mae": 1.0}])
    with pytest.raises(ConfigError, match="the method has seed 0 twice"):
        paired_comparison([METHOD[0], METHOD[0]], BASELINE)
