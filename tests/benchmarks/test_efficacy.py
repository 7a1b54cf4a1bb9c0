"""The efficacy benchmark at its smallest size (the quick demo's comparison over two seeds) and its targets' logic."""

from __future__ import annotations

import math

import pytest

from benchmarks.common import Workers
from benchmarks.efficacy import EfficacySettings, run_efficacy, scenario_targets

SMALLEST = EfficacySettings.for_size("smallest")


@pytest.fixture(scope="module")
def result():
    return run_efficacy(SMALLEST, report=lambda line: None, workers=Workers(jobs=1, threads=1))


def test_rows_hold_each_method_with_means_intervals_and_every_seed(result):
    assert [(r["scenario"], r["method"]) for r in result.rows] == [
        ("balanced", "none"), ("balanced", "unlearning"), ("balanced", "erasure")]
    for row in result.rows:
        probe = float(row["site_probe_bacc"].split(" [")[0])
        low, high = (float(v) for v in row["site_probe_bacc"].split(" [")[1].rstrip("]").split(", "))
        assert 0.0 <= probe <= 1.0 and low <= probe <= high  # the mean of two seeds inside its interval
        assert math.isfinite(float(row["age_mae"].split(" [")[0]))
        assert len(row["probe_minus_floor"].split(", ")) == 2  # one figure per seed
    assert result.rows[0]["mae_ratio"] == pytest.approx(1.0)
    assert [t.name.split(":")[1].split()[0] for t in result.targets] == ["unlearning", "erasure"]
    assert "on 2 seeds per method" in result.description


def _seed(conditional, floor, spread=2.0):
    return {"site_probe_bacc": 0.5, "site_probe_floor": floor, "site_probe_conditional": conditional,
            "site_bias_spread": spread}


def _row(method, seeds, mae, unseen, ratio=1.0):
    return {"method": method, "chance": 0.25, "per_seed": seeds, "age_mae": mae, "unseen_site_mae": unseen,
            "mae_ratio": ratio}


def test_targets_judge_every_seed_and_the_means():
    none = _row("none", [_seed(0.60, 0.30, spread=8.0), _seed(0.50, 0.30, spread=6.0)], 6.0, 7.0)
    good = _row("unlearning", [_seed(0.34, 0.30, spread=3.0), _seed(0.35, 0.30, spread=2.0)],
                6.2, 6.9, ratio=6.2 / 6.0)
    bad = _row("erasure", [_seed(0.40, 0.30, spread=9.0), _seed(0.33, 0.30, spread=1.0)], 6.6, 7.5, ratio=1.1)
    harm, unlearning, erasure = scenario_targets("biased", [none, good, bad])
    assert harm.met and harm.measured == "probe - floor +0.300, +0.200"
    assert unlearning.met  # judged by the conditional probe; the features-only probe (0.5) is not read
    assert unlearning.measured == "near floor 2/2, spread below 2/2, MAE 1.03x, unseen 6.90 vs 7.00 y"
    assert not erasure.met
    assert erasure.why == ("Missed: the probe is more than 0.05 above its floor on 1 of 2 seeds; the site bias "
                           "spread is not below none's on 1 seeds; age MAE is 1.10x none's; the unseen-site MAE "
                           "7.50 y is above none's 7.00 y.")


def test_balanced_and_control_have_no_harm_target_and_control_judges_only_the_cost():
    none = _row("none", [_seed(0.32, 0.30, spread=1.0)], 6.0, 7.0)
    unlearning = _row("unlearning", [_seed(0.31, 0.30, spread=5.0)], 6.0, 7.0)
    (control,) = scenario_targets("control", [none, unlearning])
    assert control.met and control.name.startswith("control: unlearning costs nothing:")
    above = _row("unlearning", [_seed(0.45, 0.30, spread=5.0)], 6.2, 7.0, ratio=6.2 / 6.0)
    (control,) = scenario_targets("control", [none, above])
    assert control.met  # no scanner to remove: the probe and the spread are not judged
    costly = _row("unlearning", [_seed(0.31, 0.30)], 6.6, 7.2, ratio=1.1)
    (control,) = scenario_targets("control", [none, costly])
    assert not control.met and control.why == ("Missed: age MAE is 1.10x none's; the unseen-site MAE 7.20 y is "
                                               "above none's 7.00 y.")
    (balanced,) = scenario_targets("balanced", [none, unlearning])
    assert not balanced.met and "spread is not below none's on 1 seeds" in balanced.why
    missing = _row("unlearning", [_seed(0.31, 0.30, spread=None)], 6.0, 7.0)
    assert scenario_targets("balanced", [none, missing])[0].met  # no age two sites share: not judged
    assert scenario_targets("balanced", [unlearning]) == []  # no baseline, nothing to judge
