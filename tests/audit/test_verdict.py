"""The report's opening sentence: a difference only where the paired p over seeds supports it, else said plainly."""

from __future__ import annotations

import math

import pytest

from harmonize.audit.seed_summary import paired_comparison, summarise_seeds
from harmonize.audit.verdict import comparison_verdict, format_p, with_interval


def _method(probes, maes, seeds=(0, 1, 2)):
    return [{"seed": s, "site_probe_bacc": p, "age_mae": m} for s, p, m in zip(seeds, probes, maes)]


def _summaries(**per_seed):
    summaries = {name: summarise_seeds(entries) for name, entries in per_seed.items()}
    for name in summaries:
        if name != "none" and "none" in per_seed:
            summaries[name]["vs_none"] = paired_comparison(per_seed[name], per_seed["none"])
    return summaries


BASE = _method((0.45, 0.50, 0.40), (5.0, 5.2, 4.8))


def test_a_supported_difference():
    # differences -0.12, -0.16, -0.08: mean -0.12, sd 0.04, t = -0.12 / (0.04 / sqrt 3) = -5.196, 2 df: p = 0.0351
    unlearning = _method((0.33, 0.34, 0.32), (5.1, 5.3, 4.9))
    text = comparison_verdict(_summaries(none=BASE, unlearning=unlearning, dann=BASE))
    assert text.startswith("Unlearning lowered the site probe from 0.45 [0.33, 0.57] to 0.33 [0.31, 0.35] "
                           "(paired p = 0.035 over 3 seeds) at an age MAE of 1.02x the baseline's (paired p n/a)")
    raised = comparison_verdict(_summaries(none=unlearning, dann=BASE))
    assert raised.startswith("Dann raised the site probe from 0.33 [0.31, 0.35] to 0.45")


def test_with_ages_the_verdict_reads_the_probe_given_age_and_sex():
    def conditional(entries, probes, floor=0.30):
        return [{**e, "site_probe_conditional": p, "site_probe_floor": floor} for e, p in zip(entries, probes)]

    unlearning = conditional(_method((0.30, 0.31, 0.29), (5.1, 5.3, 4.9)), (0.31, 0.30, 0.32))
    text = comparison_verdict(_summaries(none=conditional(BASE, (0.50, 0.48, 0.52)), unlearning=unlearning))
    assert text.startswith("Unlearning lowered the site probe given age & sex (age & sex alone: 0.30) from 0.50 "
                           "[0.45, 0.55] to 0.31 [0.29, 0.33] (paired p < 0.001 over 3 seeds)")


def test_no_supported_difference():
    other = _method((0.40, 0.52, 0.44), (5.0, 5.0, 5.3))
    text = comparison_verdict(_summaries(none=BASE, unlearning=other))
    probe_p, mae_p = _p_two_df([-0.05, 0.02, 0.04]), _p_two_df([0.0, -0.2, 0.5])
    assert text == ("Over 3 seeds the numbers do not support a difference in the site probe between unlearning and "
                    "the baseline (0.45 [0.33, 0.57] without harmonisation, 0.45 [0.30, 0.61] with unlearning; paired "
                    f"p = {probe_p:.3f}); unlearning's age MAE is 1.02x the baseline's (paired p = {mae_p:.3f}).")


def test_the_verdict_says_where_the_gate_left_the_baseline():
    gated = [{**entry, "site_unlearned": seed != 1} for seed, entry in enumerate(_method((0.40, 0.50, 0.44),
                                                                                      (5.0, 5.2, 5.3)))]
    text = comparison_verdict(_summaries(none=BASE, unlearning=gated))
    assert text.endswith("On 1 of 3 seeds (1) the site was not unlearned: after the warm-up the training features told "
                         "it less than the evidence margin beyond age and sex, so the network is the baseline's (the "
                         "evidence gate).")
    assert "not unlearned" not in comparison_verdict(_summaries(none=BASE, unlearning=_method((0.4,) * 3, (5.0,) * 3)))


def _p_two_df(differences):
    """Two-sided p of a paired t-test on three differences (2 df): 1 - |t| / sqrt(2 + t^2)."""
    mean = sum(differences) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    t = mean / (sd / math.sqrt(3))
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_one_seed_supports_nothing():
    text = comparison_verdict(_summaries(none=BASE[:1], combat=_method((0.30,), (5.0,))))
    assert text == ("One seed per method: these numbers cannot support a difference between combat and the baseline "
                    "(site probe 0.45 without harmonisation, 0.30 with combat, age MAE 1.00x the baseline's); run "
                    "with --seeds 3 or more.")


def test_without_a_comparison():
    assert comparison_verdict(_summaries(unlearning=BASE)).startswith("No network was trained without")
    assert comparison_verdict(_summaries(none=BASE)).startswith("Only the baseline ('none') was trained")


@pytest.mark.parametrize("value, interval, expected", [(0.3333, [0.31, 0.355], "0.33 [0.31, 0.35]"),
                                                       (0.3333, None, "0.33"), (None, None, "n/a")])
def test_with_interval(value, interval, expected):
    assert with_interval(value, interval, 2) == expected


def test_format_p():
    assert (format_p(0.0004), format_p(0.0123), format_p(None)) == ("p < 0.001", "p = 0.012", "p n/a")


def test_with_interval_takes_a_format_spec_and_the_missing_text():
    assert with_interval(-0.2, (-0.43, 0.031), "+.2f") == "-0.20 [-0.43, +0.03]"
    assert with_interval(None, None, ".3f", missing="—") == "—"
