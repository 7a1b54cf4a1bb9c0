"""The scaling benchmark at its smallest size (2 and 4 sites)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from benchmarks.common import Workers
from benchmarks.sites import SitesSettings, run_sites

SMALLEST = SitesSettings.for_size("smallest")


def test_rows_hold_each_site_count_with_time_ratios_and_probes_trained_in_parallel():
    lines = []
    result = run_sites(SMALLEST, report=lines.append, workers=Workers(jobs=2, threads=2))
    assert [r["sites"] for r in result.rows] == [2, 4]
    assert result.rows[0]["time_vs_first"] == 1.0
    for row in result.rows:
        assert row["ms_per_iteration"] > 0
        assert row["time_vs_first"] > 0 and row["time_vs_plain"] > 0
        low, high = map(float, row["time_vs_first_spread"].split("–"))
        # the median lies between the quartiles, which are printed to 3 decimals
        assert 0 < low - 5e-4 <= row["time_vs_first"] <= high + 5e-4
        assert row["chance"] == pytest.approx(1 / row["sites"])
        assert 0.0 <= row["site_probe_bacc"] <= 1.0
        assert math.isfinite(row["age_mae"])
    (target,) = result.targets
    assert target.name == "time with 4 sites <= 1.1x time with 2"
    assert target.met == (result.rows[-1]["time_vs_first"] <= 1.1)
    # the probes, reported as each finished, then the table
    assert sorted(line.split(":")[0] for line in lines[:2]) == ["  sites 2", "  sites 4"]
    assert lines[2].startswith("== Scaling with the number of sites")
    assert "the probes' models trained in 2 parallel processes, each with 1 torch thread" in result.description


def test_timing_alone_skips_the_cohorts():
    result = run_sites(replace(SMALLEST, probe=False), report=lambda line: None)
    assert "site_probe_bacc" not in result.rows[0]


@pytest.mark.parametrize("counts", [(2, 5), (1, 2), (2, 12)])
def test_site_counts_must_divide_the_subjects(counts):
    with pytest.raises(ValueError, match=r"site_counts \[.*\]: each must be >= 2, divide total_subjects=24"):
        run_sites(replace(SMALLEST, site_counts=counts), report=lambda line: None)
