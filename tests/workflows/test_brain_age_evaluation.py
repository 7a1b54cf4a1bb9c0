"""evaluate_brain_age and brain_age_features on networks trained on the tiny cohort."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonize import defaults
from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys
from harmonize.workflows.audit import summary_line
from harmonize.workflows.brain_age import train_brain_age
from harmonize.workflows.brain_age_evaluation import brain_age_features, evaluate_brain_age

from .conftest import brain_age_settings


def test_evaluation_reports_every_figure(trained_brain_age, tiny_cohort):
    for method, model in trained_brain_age.items():
        metrics = evaluate_brain_age(model, tiny_cohort)
        assert metrics["chance"] == pytest.approx(1 / 3)
        assert 0.0 <= metrics["site_probe_bacc"] <= 1.0
        assert math.isfinite(metrics["age_mae"]) and metrics["age_mae"] >= 0
        assert set(metrics["age_mae_per_site"]) == {"site0", "site1", "site2"}
        assert metrics["n_subjects"] == 6
        assert ("domain_head_acc" in metrics) == (method != "none")
        assert "refit_head_acc" not in metrics  # no re-fit in these runs
        assert model.method == method and model.taps == model.settings.taps


def test_evaluation_reports_the_refitted_heads_accuracy_and_the_gates_evidence(tiny_cohort):
    settings = brain_age_settings("unlearning")
    settings.unlearning.head_refit_steps = 5
    model = train_brain_age(tiny_cohort, settings)
    metrics = evaluate_brain_age(model, tiny_cohort)
    assert metrics["refit_head_acc"] == model.history[-1]["refit_acc_site"]
    assert 0.0 <= metrics["refit_head_acc"] <= 1.0
    assert "site_evidence" not in metrics  # no gate
    settings.unlearning.evidence_margin = 0.0  # measured; switched off only if the features tell less than age & sex
    gated = train_brain_age(tiny_cohort, settings)
    metrics = evaluate_brain_age(gated, tiny_cohort)
    first_unlearning_epoch = gated.history[gated.handler.warmup.epochs]
    assert metrics["site_evidence"] == first_unlearning_epoch["evidence_site"]
    assert -1.0 <= metrics["site_evidence"] <= 1.0
    assert metrics["site_unlearned"] == (metrics["site_evidence"] >= 0.0)
    assert ("refit_head_acc" in metrics) == metrics["site_unlearned"]  # a switched-off site is not re-fitted
    assert "the training features told the site" in summary_line("unlearning", metrics)


def test_network_predicts_years_around_the_training_mean(trained_brain_age, tiny_cohort):
    frame = read_manifest(tiny_cohort)
    fs = brain_age_features(trained_brain_age["none"], frame)
    assert fs.features.shape == (6, 16 + defaults.AGE_HIDDEN)  # the default taps: features and hidden layer
    train_mean = frame[frame[Keys.SPLIT] == "train"][Keys.AGE].mean()
    assert abs(np.mean(fs.predictions) - train_mean) < 25
