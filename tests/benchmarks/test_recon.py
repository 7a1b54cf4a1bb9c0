"""The reconstruction-unlearning benchmark with the tiny settings, and its target checks."""

from __future__ import annotations

import math

import pytest

from benchmarks.recon import ReconSettings, _targets, run_recon


def test_rows_hold_the_references_and_every_method_with_finite_psnr():
    result = run_recon(ReconSettings.for_size("smallest"), report=lambda line: None)
    assert [r["method"] for r in result.rows] == ["original", "oracle", "ft", "ga_l1_ft", "nl", "nl_ft"]
    for row in result.rows:
        assert all(math.isfinite(row[k]) for k in ("bta_psnr", "kta_psnr", "ua_psnr"))
        assert row["seconds"] > 0 and row["time_vs_oracle"] > 0
    original, oracle = result.rows[:2]
    assert original["bta_vs_original"] == 0.0 and oracle["kta_vs_oracle"] == 0.0 and oracle["time_vs_oracle"] == 1.0
    assert "retain_ok" not in original
    assert all(isinstance(r["forget_ok"], bool) for r in result.rows[2:])
    assert len(result.targets) == 4


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile must be one of"):
        ReconSettings(profile="huge").experiment()


def _row(method, bta, kta, ua, time):
    return {"method": method, "bta_vs_original": bta, "kta_vs_oracle": kta, "ua_vs_oracle": ua,
            "time_vs_oracle": time, "retain_ok": abs(bta) <= 0.3, "forget_ok": abs(kta) <= 0.5 and abs(ua) <= 0.5,
            "time_ok": time <= 0.1}


def test_targets_need_one_method_meeting_all_three():
    rows = [_row("ft", -0.1, 1.4, 4.7, 0.09), _row("ga_l1_ft", -2.6, -0.4, -0.3, 0.12)]
    forget, retain, timing, together = _targets(rows)
    assert (forget.met, forget.measured) == (True, "ga_l1_ft")
    assert (retain.met, timing.met, together.met) == (True, True, False)
    assert together.why.startswith("Missed because no method meets all three at once: ft retain -0.10 dB")
    rows.append(_row("nl_ft", 0.2, 0.3, -0.2, 0.05))
    assert _targets(rows)[3].met and _targets(rows)[3].measured == "nl_ft"


def test_a_missed_criterion_names_the_closest_method():
    _, retain, _, _ = _targets([_row("ft", -0.5, 0.0, 0.0, 0.05), _row("nl", -3.0, 0.0, 0.0, 0.05)])
    assert not retain.met
    assert retain.why.startswith("Missed: the closest method is ft retain -0.50 dB")
