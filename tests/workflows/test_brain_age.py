"""train_brain_age / evaluate_brain_age on the tiny cohort: every method trains and is audited."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonize.keys import Keys
from harmonize.workflows.brain_age import (
    BrainAgeSettings,
    _labelled_subset,
    brain_age_features,
    evaluate_brain_age,
    train_brain_age,
)
from harmonize.data.manifest import read_manifest
from harmonize.workflows.unlearning import UnlearningSettings

#: A slim encoder for 24^3 volumes (three poolings: 24 -> 3).
CHANNELS = (8, 8, 8, 8)


def _settings(method: str, **kwargs) -> BrainAgeSettings:
    unlearning = UnlearningSettings(method=method, warmup_epochs=1, beta=1.0)
    return BrainAgeSettings(unlearning=unlearning, max_epochs=2, channels=CHANNELS, feature_dim=16, batch_size=6,
                            **kwargs)


@pytest.fixture(scope="module")
def trained(tiny_cohort):
    return {m: train_brain_age(tiny_cohort, _settings(m)) for m in ("none", "unlearning", "dann")}


def test_evaluation_reports_every_figure(trained, tiny_cohort):
    for method, model in trained.items():
        metrics = evaluate_brain_age(model, tiny_cohort)
        assert metrics["chance"] == pytest.approx(1 / 3)
        assert 0.0 <= metrics["site_probe_bacc"] <= 1.0
        assert math.isfinite(metrics["age_mae"]) and metrics["age_mae"] >= 0
        assert set(metrics["age_mae_per_site"]) == {"site0", "site1", "site2"}
        assert metrics["n_subjects"] == 6
        assert ("domain_head_acc" in metrics) == (method != "none")


def test_unlearning_changes_the_network_and_logs_history(trained):
    none, unlearned = trained["none"], trained["unlearning"]
    assert none.handler is None and none.history == []
    assert [h["epoch"] for h in unlearned.history] == [1.0, 2.0]
    assert "confusion_loss_site" in unlearned.history[-1]
    assert "confusion_loss_site" not in unlearned.history[0]  # the warm-up epoch trains the heads only
    diffs = [not torch.equal(a, b) for a, b in zip(none.network.parameters(), unlearned.network.parameters())]
    assert any(diffs)


def test_network_predicts_years_around_the_training_mean(trained, tiny_cohort):
    frame = read_manifest(tiny_cohort)
    fs = brain_age_features(trained["none"], frame)
    assert fs.features.shape == (6, 16)
    train_mean = frame[frame[Keys.SPLIT] == "train"][Keys.AGE].mean()
    assert abs(np.mean(fs.predictions) - train_mean) < 25


def test_labelled_subset_keeps_a_fraction_of_each_site(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    train = frame[frame[Keys.SPLIT] == "train"]
    keep = _labelled_subset(train, 0.5, seed=0)
    per_site = train[train[Keys.SUBJECT_ID].isin(keep)].groupby(Keys.SITE).size()
    assert per_site.to_dict() == {"site0": 2, "site1": 2, "site2": 2}
    assert _labelled_subset(train, 1.0, seed=0) is None
    assert keep == _labelled_subset(train, 0.5, seed=0)


def test_semi_supervised_run_trains(tiny_cohort):
    model = train_brain_age(tiny_cohort, _settings("unlearning", labelled_fraction=0.25))
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
