"""The reconstruction-unlearning benchmark with the tiny settings, and its target checks."""

from __future__ import annotations

import math

import pytest

from benchmarks.common import with_intervals
from benchmarks.recon import (
    FIGURES,
    ReconSettings,
    _over_seeds,
    _seed_rows,
    _targets,
    run_recon,
)


def test_rows_hold_the_references_and_every_method_over_seeds():
    settings = ReconSettings.for_size("smallest")
    assert (settings.profile, settings.seeds) == ("tiny", 2)
    result = run_recon(settings, report=lambda line: None)
    assert [r["method"] for r in result.rows] == ["original", "oracle", "ft", "ga_l1_ft", "nl", "nl_ft"]
    for row in result.rows:
        assert len(row["per_seed"]) == 2
        for seed in row["per_seed"]:
            assert all(math.isfinite(seed[k]) for k in ("bta_psnr", "kta_psnr", "ua_psnr"))
            assert seed["seconds"] > 0 and seed["time_vs_oracle"] > 0 and seed["iterations"] > 0
            assert seed["cpu_seconds"] > 0 and seed["cpu_time_vs_oracle"] > 0
        mean = sum(seed["bta_psnr"] for seed in row["per_seed"]) / 2
        assert row["bta_psnr"].startswith(f"{mean:.2f} [")  # the mean, then its interval
    original, oracle = result.rows[:2]
    assert all(s["bta_vs_original"] == 0.0 for s in original["per_seed"])
    assert all(s["kta_vs_oracle"] == 0.0 and s["iterations_vs_oracle"] == 1.0 for s in oracle["per_seed"])
    assert "retain_ok" not in original
    assert all(isinstance(r["forget_ok"], bool) and isinstance(r["wall_ok"], bool) for r in result.rows[2:])
    # tiny: oracle 3 iterations; ga_l1_ft: forget stage over 4 + 6 slices (3 batches), FT over 6 (2 batches)
    ga_l1_ft = result.rows[3]
    assert [s["iterations"] for s in ga_l1_ft["per_seed"]] == [5, 5] and ga_l1_ft["iterations"] == "5 [5, 5]"
    assert len(result.targets) == 5


def test_seed_rows_and_means_judge_the_targets():
    table = [{"method": "original", "bta_psnr": 24.0, "kta_psnr": 24.0, "ua_psnr": 27.0, "iterations": 600,
              "seconds": 40.0, "cpu_seconds": 30.0},
             {"method": "oracle", "bta_psnr": 24.0, "kta_psnr": 22.0, "ua_psnr": 21.0, "iterations": 600,
              "seconds": 40.0, "cpu_seconds": 30.0}]
    seeds = [table + [{"method": "ga_l1_ft", "bta_psnr": 24.0 - d, "kta_psnr": 22.0, "ua_psnr": 21.0 + 2 * d,
                       "iterations": 60, "seconds": 8.0, "cpu_seconds": 2.7}] for d in (0.1, 0.2, 0.3)]
    row = _over_seeds([_seed_rows(t)[2] for t in seeds])
    assert row["bta_vs_original"] == pytest.approx(-0.2) and row["ua_vs_oracle"] == pytest.approx(0.4)
    low, high = row["bta_vs_original_ci"]
    assert low == pytest.approx(-0.2 - 4.3027 * 0.1 / 3**0.5, abs=1e-4) and high > -0.2
    assert row["iterations_vs_oracle"] == pytest.approx(0.1) and row["time_vs_oracle"] == pytest.approx(0.2)
    assert row["cpu_time_vs_oracle"] == pytest.approx(0.09) and row["cpu_seconds"] == pytest.approx(2.7)
    # judged on the means: iterations (10 %) meet the time target, the wall time (20 %) does not
    assert (row["retain_ok"], row["forget_ok"], row["time_ok"], row["wall_ok"]) == (True, True, True, False)
    assert with_intervals(row, FIGURES)["bta_vs_original"].startswith("-0.20 [")


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile must be one of"):
        ReconSettings(profile="huge").experiment()


def _row(method, bta, kta, ua, time, wall=None):
    wall = time if wall is None else wall
    return {"method": method, "bta_vs_original": bta, "kta_vs_oracle": kta, "ua_vs_oracle": ua,
            "iterations_vs_oracle": time, "time_vs_oracle": wall, "cpu_time_vs_oracle": wall,
            "retain_ok": abs(bta) <= 0.3, "forget_ok": abs(kta) <= 0.5 and abs(ua) <= 0.5,
            "time_ok": time <= 0.1, "wall_ok": wall <= 0.1}


def test_targets_need_one_method_meeting_all_three():
    rows = [_row("ft", -0.1, 1.4, 4.7, 0.09), _row("ga_l1_ft", -2.6, -0.4, -0.3, 0.12)]
    forget, retain, timing, wall, together = _targets(rows)
    assert (forget.met, forget.measured) == (True, "ga_l1_ft")
    assert (retain.met, timing.met, wall.met, together.met) == (True, True, True, False)
    assert together.why.startswith("Missed because no method meets all three at once: ft retain -0.10 dB")
    rows.append(_row("nl_ft", 0.2, 0.3, -0.2, 0.05))
    assert _targets(rows)[4].met and _targets(rows)[4].measured == "nl_ft"


def test_all_three_at_once_needs_the_wall_time_too():
    rows = [_row("ga_l1_ft", -0.2, 0.0, 0.3, 0.10, wall=0.14)]
    _, _, timing, wall, together = _targets(rows)
    assert timing.met and not wall.met and not together.met
    assert wall.why == ("Missed: the closest method is ga_l1_ft retain -0.20 dB, forget KTA +0.00 / UA +0.30 dB from "
                        "the oracle, 10.0% of its iterations, 14.0% of its wall time, 14.0% of its CPU time.")


def test_a_missed_criterion_names_the_closest_method():
    _, retain, _, _, _ = _targets([_row("ft", -0.5, 0.0, 0.0, 0.05), _row("nl", -3.0, 0.0, 0.0, 0.05)])
    assert not retain.met
    assert retain.why.startswith("Missed: the closest method is ft retain -0.50 dB")
