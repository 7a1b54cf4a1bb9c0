"""The forgetting benchmark's rows and target checks (from figures as forget_model returns them)."""

from __future__ import annotations

import pytest

from benchmarks.common import with_intervals
from benchmarks.forgetting import FIGURES, ForgettingSettings, over_seeds, seed_rows, targets


def _figures(auc, mae, probe, seconds=None, cpu=None):
    return {"mia_auc": auc, "forget_mae": 3.0, "retain_mae": 3.5, "age_mae": mae, "site_probe_bacc": probe,
            "chance": 0.25, "seconds": seconds, "cpu_seconds": cpu}


def _metrics(ga_auc, ga_mae, ga_cpu, ga_probe=0.45):
    """One seed's forget_model figures: original, ft, ga and the oracle (1000 s wall, 800 s CPU)."""
    return {"methods": ["ft", "ga"], "models": {
        "original": _figures(0.75, 6.0, 0.40),
        "ft": _figures(0.76, 6.2, 0.30, seconds=150.0, cpu=120.0),
        "ga": _figures(ga_auc, ga_mae, ga_probe, seconds=100.0, cpu=ga_cpu),
        "oracle": _figures(0.65, 6.1, 0.10, seconds=1000.0, cpu=800.0),
    }}


def test_seed_rows_set_each_model_against_the_seed_s_original_and_oracle():
    rows = seed_rows(_metrics(0.68, 6.3, 80.0), original_seconds=1100.0)
    assert [r["method"] for r in rows] == ["original", "ft", "ga", "oracle"]
    original, ft, ga, oracle = rows
    assert original["seconds"] == 1100.0 and original["time_vs_retrain"] is None
    assert original["cpu_time_vs_retrain"] is None and original["mae_vs_original"] == 1.0
    assert ga["auc_vs_oracle"] == pytest.approx(0.03) and ga["mae_vs_original"] == pytest.approx(1.05)
    assert ga["probe_vs_original"] == pytest.approx(0.05)
    assert ga["time_vs_retrain"] == pytest.approx(0.1) and ga["cpu_time_vs_retrain"] == pytest.approx(0.1)
    assert ft["time_vs_retrain"] == pytest.approx(0.15) and ft["cpu_time_vs_retrain"] == pytest.approx(0.15)
    assert oracle["auc_vs_oracle"] == 0.0 and oracle["time_vs_retrain"] == 1.0
    assert ga["probe_rise"] == pytest.approx(0.05)  # the original's probe (0.40) is above chance (0.25)
    # an original whose probe is below chance reads no scanner: a probe is then set against chance
    metrics = _metrics(0.68, 6.3, 80.0, ga_probe=0.28)
    metrics["models"]["original"]["site_probe_bacc"] = 0.10
    ga = seed_rows(metrics)[2]
    assert ga["probe_vs_original"] == pytest.approx(0.18) and ga["probe_rise"] == pytest.approx(0.03)


def test_means_over_seeds_judge_the_checks():
    seeds = [seed_rows(_metrics(auc, mae, cpu)) for auc, mae, cpu in
             ((0.66, 6.0, 100.0), (0.70, 6.3, 160.0), (0.74, 6.6, 220.0))]
    rows = [over_seeds(list(method)) for method in zip(*seeds, strict=True)]
    ga = rows[2]
    assert ga["auc_vs_oracle"] == pytest.approx(0.05) and ga["mae_vs_original"] == pytest.approx(1.05)
    low, high = ga["auc_vs_oracle_ci"]
    assert low == pytest.approx(0.05 - 4.3027 * 0.04 / 3**0.5, abs=1e-4) and high > 0.05
    assert ga["cpu_time_vs_retrain"] == pytest.approx(0.2) and ga["time_vs_retrain"] == pytest.approx(0.1)
    # on the means: AUC within 0.05, MAE 1.05x, CPU 20 % (each at its bound), wall 10 %; probe +0.05
    assert (ga["auc_ok"], ga["mae_ok"], ga["cpu_ok"], ga["wall_ok"], ga["probe_ok"]) == (True,) * 5
    assert "auc_ok" not in rows[0] and "auc_ok" not in rows[3]
    assert with_intervals(ga, FIGURES)["auc_vs_oracle"].startswith("+0.050 [")
    *_, together, probe = targets(rows)
    assert together.met and together.measured == "ga"
    assert probe.met and probe.measured == "every method"


def test_targets_name_the_closest_method_and_an_original_that_remembers_too_little():
    seeds = [seed_rows(_metrics(0.72, 6.9, 300.0, ga_probe=0.5))]
    rows = [over_seeds(list(method)) for method in zip(*seeds, strict=True)]
    remembers, auc, mae, cpu, wall, together, probe = targets(rows)
    assert remembers.met and remembers.measured == "AUC 0.750, +0.100 from the oracle's 0.650"
    assert not auc.met and auc.why.startswith("Missed: the closest method is ga AUC +0.070 from the oracle")
    assert (mae.met, mae.measured) == (True, "ft")
    assert (cpu.met, cpu.measured) == (True, "ft")  # 15 % of the oracle's CPU time; ga 37.5 %
    assert wall.met and wall.measured == "ft, ga"
    assert not together.met and together.why == (
        "Missed because no method meets them all at once: ft AUC +0.110 from the oracle, held-out MAE 1.033x the "
        "original's, 15.0% of retraining's CPU time, 15.0% of retraining's wall time; ga AUC +0.070 from the oracle, "
        "held-out MAE 1.150x the original's, 37.5% of retraining's CPU time, 10.0% of retraining's wall time.")
    assert not probe.met and probe.measured == "rises with ga" and probe.why == "Missed: ga +0.100."
    # an original barely above the oracle: the test of forgetting shows little
    metrics = _metrics(0.68, 6.3, 80.0)
    metrics["models"]["original"]["mia_auc"] = 0.68
    rows = [over_seeds([row]) for row in seed_rows(metrics)]
    assert not targets(rows)[0].met and "train the original longer" in targets(rows)[0].why


def test_sizes():
    full, smallest = ForgettingSettings.for_size("full"), ForgettingSettings.for_size("smallest")
    assert (full.sites, full.subjects_per_site, full.seeds, full.fraction) == (4, 40, 3, 0.1)
    assert full.training(1).seed == 1 and not full.training(1).augment
    assert full.training(1).unlearning.method == "unlearning" and full.training(1).max_epochs == full.epochs
    forgetting = smallest.forgetting(2)
    assert forgetting.oracle and forgetting.seed == 2 and forgetting.bootstrap == 50
    assert smallest.seeds == 2 and smallest.methods == ("ft", "ga")
