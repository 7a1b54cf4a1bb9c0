"""membership_inference: the loss-threshold attack's AUC, its bootstrap interval, the errors, and the figure."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harmonize.audit.membership import (
    membership_auc,
    membership_inference,
    membership_plot,
)
from harmonize.errors import ConfigError


@pytest.mark.parametrize(
    "members, others, expected",
    [
        ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], 1.0),  # every member fitted better: fully distinguishable
        ([0.4, 0.5, 0.6], [0.1, 0.2, 0.3], 0.0),  # every member fitted worse (over-forgotten): also a trace
        ([0.2, 0.2], [0.2, 0.2], 0.5),  # ties count a half
        ([0.1, 0.5], [0.3, 0.7], 0.75),  # 3 of the 4 pairs rank the member lower
    ],
)
def test_auc_cases(members, others, expected):
    assert membership_auc(np.array(members), np.array(others)) == pytest.approx(expected)
    assert membership_inference(members, others, bootstrap=0).auc == pytest.approx(expected)


def test_auc_is_sklearns_roc_auc_of_minus_the_loss():
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.8, 1, 40), rng.normal(1.2, 1, 60)
    labels = np.r_[np.ones(40), np.zeros(60)]
    expected = roc_auc_score(labels, -np.r_[members, others])
    assert membership_inference(members, others, bootstrap=0).auc == pytest.approx(expected)


def test_bootstrap_interval_holds_the_auc_and_narrows_with_more_subjects():
    rng = np.random.default_rng(1)
    few = membership_inference(rng.normal(0, 1, 10), rng.normal(1, 1, 10), bootstrap=400, seed=3)
    many = membership_inference(rng.normal(0, 1, 400), rng.normal(1, 1, 400), bootstrap=400, seed=3)
    for result in (few, many):
        assert result.auc_ci[0] <= result.auc <= result.auc_ci[1]
    assert many.auc_ci[1] - many.auc_ci[0] < (few.auc_ci[1] - few.auc_ci[0]) / 3
    assert many.auc == pytest.approx(0.76, abs=0.03)  # Phi(1 / sqrt(2)) for unit normals one sd apart
    assert (many.n_members, many.n_nonmembers, many.bootstrap, many.confidence) == (400, 400, 400, 0.95)


def test_same_seed_same_interval():
    members, others = [0.1, 0.4, 0.3, 0.9], [0.5, 0.2, 0.8]
    first = membership_inference(members, others, bootstrap=200, seed=7)
    assert membership_inference(members, others, bootstrap=200, seed=7).auc_ci == first.auc_ci


def test_to_dict_flat_keys():
    result = membership_inference([0.1, 0.2], [0.3, 0.4], bootstrap=0)
    figures = result.to_dict()
    assert figures["mia_auc"] == 1.0 and figures["mia_auc_ci"] is None
    assert figures["mia_member_loss"] == pytest.approx(0.15) and figures["mia_nonmember_loss"] == pytest.approx(0.35)


@pytest.mark.parametrize(
    "members, others, kwargs, message",
    [
        ([0.1], [0.2, 0.3], {}, "'member_losses' has 1 loss(es); the attack needs at least 2"),
        ([0.1, 0.2], [], {}, "'nonmember_losses' has 0 loss(es)"),
        ([0.1, np.nan], [0.2, 0.3], {}, "'member_losses' holds 1 non-finite loss(es) (first at position 1)"),
        ([0.1, 0.2], [0.2, 0.3], {"bootstrap": -1}, "'bootstrap' must be an integer >= 0, got -1 (int)"),
        ([0.1, 0.2], [0.2, 0.3], {"confidence": 1.0}, "'confidence' must be a finite number > 0 and < 1, got 1.0"),
    ],
)
def test_errors(members, others, kwargs, message):
    with pytest.raises(ConfigError) as caught:
        membership_inference(members, others, **kwargs)
    assert message in str(caught.value)


def test_bad_arguments_are_all_named_at_once():
    with pytest.raises(ConfigError) as caught:
        membership_inference([0.1, 0.2], [0.2, 0.3], bootstrap=2.5, confidence="high")
    assert caught.value.message == "membership_inference: invalid arguments."
    assert caught.value.problems == ["'bootstrap' must be an integer >= 0, got 2.5 (float)",
                                     "'confidence' must be a finite number > 0 and < 1, got 'high' (str)"]


def test_plot(tmp_path):
    metrics = {"original": {"mia_auc": 0.8, "mia_auc_ci": [0.6, 0.9]}, "ft": {"mia_auc": 0.5, "mia_auc_ci": None}}
    losses = {name: {"member": np.array([1.0, 2.0]), "nonmember": np.array([2.0, 3.0, 4.0])} for name in metrics}
    path = membership_plot(metrics, losses, tmp_path / "figures" / "membership.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="no model given"):
        membership_plot({}, {}, tmp_path / "none.png")
