"""The efficacy benchmark at its smallest size: every method's row, parallel runs, and the targets' logic."""

from __future__ import annotations

import math

import pytest

from benchmarks.common import Workers
from benchmarks.efficacy import (
    EfficacySettings,
    _targets,
    run_efficacy,
    site_balanced_batch_size,
)

SMALLEST = EfficacySettings.for_size("smallest")
METHODS = ["none", "unlearning fused", "unlearning alternating", "unlearning refit", "dann", "combat"]


@pytest.fixture(scope="module")
def sequential():
    """The smallest run, one run after another in this process, 1 torch thread."""
    return run_efficacy(SMALLEST, report=lambda line: None, workers=Workers(jobs=1, threads=1))


def test_rows_hold_every_method_with_sane_figures(sequential):
    result = sequential
    assert [r["method"] for r in result.rows] == METHODS
    for row in result.rows:
        assert row["cohort"] == "balanced"
        assert row["chance"] == pytest.approx(1 / 3)
        assert 0.0 <= row["site_probe_bacc"] <= 1.0
        assert row["points_above_chance"] == pytest.approx(100 * (row["site_probe_bacc"] - row["chance"]))
        assert row["age_mae"] > 0 and math.isfinite(row["age_mae"])
        if row["method"] == "combat":  # ComBat writes the scans' true ages back into the features: not measured
            assert row["age_probe_r2"] is None
        else:
            assert math.isfinite(row["age_probe_r2"])
        assert 0.0 <= row["site_probe_floor"] <= 1.0 and 0.0 <= row["site_probe_adjusted"] <= 1.0
        assert row["seconds"] > 0
    heads = [r["domain_head_acc"] for r in result.rows]
    assert heads[0] is None and heads[-1] is None  # none and ComBat train no head
    assert all(0.0 <= h <= 1.0 for h in heads[1:5])
    assert len(result.targets) == 3
    assert "The 5 runs were trained one after another, with 1 torch thread" in result.description


def test_parallel_runs_give_the_rows_and_figures_of_sequential_ones(sequential):
    lines = []
    parallel = run_efficacy(SMALLEST, report=lines.append, workers=Workers(jobs=2, threads=2))
    assert [r["method"] for r in parallel.rows] == METHODS
    figures = [{k: v for k, v in r.items() if k != "seconds"} for r in parallel.rows]
    assert figures == [{k: v for k, v in r.items() if k != "seconds"} for r in sequential.rows]
    assert [t.measured for t in parallel.targets] == [t.measured for t in sequential.targets]
    # one progress line per trained run, in the order they finished; then the table
    assert sorted(line.split(" / ")[1].split(":")[0] for line in lines[:5]) == sorted(METHODS[:5])
    assert lines[5].startswith("== Efficacy")
    assert "The 5 runs were trained in 2 parallel processes, each with 1 torch thread" in parallel.description


@pytest.mark.parametrize("sites, expected", [(1, 8), (3, 9), (4, 8), (5, 10), (32, 32)])
def test_site_balanced_batch_size(sites, expected):
    assert site_balanced_batch_size(sites) == expected


def _row(method, bacc, mae, head=None):
    return {"cohort": "balanced", "method": method, "site_probe_bacc": bacc, "chance": 0.25,
            "points_above_chance": 100 * (bacc - 0.25), "age_mae": mae, "domain_head_acc": head}


def test_targets_meet_at_chance_and_explain_misses():
    rows = [_row("none", 0.60, 6.0), _row("unlearning fused", 0.28, 5.9, 0.26),
            _row("unlearning alternating", 0.55, 6.5, 0.30)]
    fused, alternating = _targets(rows)
    assert fused.met and fused.measured == "+3.0 points, MAE 5.90 vs 6.00 y"
    assert not alternating.met
    assert "the extractor fools the current head" in alternating.why
    assert "age MAE 6.50 y is worse than none's 6.00 y" in alternating.why


def test_a_head_that_still_reads_the_site_is_named():
    rows = [_row("none", 0.60, 6.0), _row("unlearning fused", 0.70, 5.0, 0.90)]
    (fused,) = _targets(rows)
    assert not fused.met
    assert "the domain head still predicts it (0.900)" in fused.why


def test_a_refitted_head_is_named_with_its_accuracy():
    refit = {**_row("unlearning refit", 0.40, 5.8, 0.21), "refit_head_acc": 0.44}
    (row,) = _targets([_row("none", 0.48, 5.8), refit])
    assert not row.met
    assert "a head re-fitted on all training scans' features at the last epoch at 0.440" in row.why
    assert "fools the current head" not in row.why


def test_a_probe_below_chance_counts_as_at_chance():
    (fused,) = _targets([_row("none", 0.60, 6.0), _row("unlearning fused", 0.10, 6.0, 0.25)])
    assert fused.met
