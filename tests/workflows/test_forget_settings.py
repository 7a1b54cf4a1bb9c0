"""ForgetSettings, its stages and unlearn_model / retrain_segmentation, on brain-age and segmentation models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from harmonize import defaults
from harmonize.data.forget_list import forget_rows
from harmonize.errors import ConfigError
from harmonize.keys import Keys
from harmonize.losses import StandardisedMSELoss
from harmonize.workflows.forget_measure import measure_model, membership_rows, segmentation_scores
from harmonize.workflows.forget_settings import (
    SEGMENTATION_FORGET_METHODS,
    ForgetSettings,
    ForgetTargetd,
    retrain_segmentation,
    unlearn_brain_age,
    unlearn_model,
)
from harmonize.workflows.model_file import load_model


def test_forget_target_transform():
    transform = ForgetTargetd({"s1"}, before=lambda d: {**d, "seen": True})
    out = transform({Keys.SUBJECT_ID: "s1", Keys.AGE: torch.tensor(42.0)})
    assert out["seen"] and bool(out[Keys.FORGET]) and out[Keys.TARGET].shape == (1,) and float(out[Keys.TARGET]) == 42
    assert not bool(transform({Keys.SUBJECT_ID: "s2", Keys.AGE: torch.tensor(1.0)})[Keys.FORGET])
    labelled = ForgetTargetd({"s1"}, age_target=False)({Keys.SUBJECT_ID: "s1", Keys.LABEL: "l.nii.gz"})
    assert bool(labelled[Keys.FORGET]) and Keys.TARGET.value not in labelled  # a segmentation target is the label


def test_stages_follow_the_model_task(brain_age_model_file, segmenter):
    brain_age = ForgetSettings().stages(load_model(brain_age_model_file))
    assert isinstance(brain_age.loss_function, StandardisedMSELoss) and brain_age.target_key == Keys.TARGET
    assert brain_age.loss_ceiling == defaults.FORGET_LOSS_CEILING
    segmentation = ForgetSettings(segmentation_loss_ceiling=2.0).stages(segmenter)
    assert isinstance(segmentation.loss_function, DiceCELoss) and segmentation.target_key == Keys.LABEL
    assert segmentation.loss_ceiling == 2.0 and segmentation.device == "cpu"
    assert segmentation.oracle_epochs == defaults.FORGET_SEGMENTATION_ORACLE_EPOCHS == 10
    assert ForgetSettings(oracle_epochs=3).stages(segmenter).oracle_epochs == 3
    assert [str(m) for m in SEGMENTATION_FORGET_METHODS] == ["ft", "ga", "ga_l1", "ga_l1_ft"]
    for method in ("nl", "nl_ft"):
        with pytest.raises(ConfigError, match=f"'method': {method} trains on the withdrawn scans with noisy targets"):
            ForgetSettings(method=method).stages(segmenter)
    with pytest.raises(ConfigError, match=r"\['segmentation_loss_ceiling', 'oracle_epochs'\] are for segmentation"):
        ForgetSettings(segmentation_loss_ceiling=1.0, oracle_epochs=2).stages(load_model(brain_age_model_file))


def test_gradient_ascent_raises_the_withdrawn_subjects_error_most(brain_age_model_file, forget_frame):
    flags = forget_rows(forget_frame)
    original = load_model(brain_age_model_file)
    settings = ForgetSettings(method="ga", forget_epochs=3, ga_learning_rate=3e-3, loss_ceiling=None, bootstrap=0)
    unlearned, watch = unlearn_brain_age(original, forget_frame, flags, settings)
    before, _ = measure_model(original, forget_frame, flags, settings)
    after, _ = measure_model(unlearned, forget_frame, flags, settings)
    assert watch.wall > 0 and watch.cpu > 0 and unlearned.seconds == watch.wall
    assert after["forget_mae"] - before["forget_mae"] > 1.0  # years: ascent pushed the withdrawn subjects away
    saved = load_model(brain_age_model_file).network.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in original.network.state_dict().items())  # the original kept


def test_a_subject_whose_loss_reached_the_ceiling_no_longer_pushes_the_ascent(brain_age_model_file, forget_frame):
    flags = forget_rows(forget_frame)
    original = load_model(brain_age_model_file)
    assert ForgetSettings().loss_ceiling == defaults.FORGET_LOSS_CEILING and ForgetSettings().method == "ga"
    # every withdrawn subject's loss is above this ceiling: the ascent has no gradient, no weight moves
    settings = ForgetSettings(method="ga", forget_epochs=3, ga_learning_rate=3e-3, loss_ceiling=1e-9, bootstrap=0)
    unlearned, _ = unlearn_brain_age(original, forget_frame, flags, settings)
    assert all(torch.equal(p, q) for p, q in zip(unlearned.network.parameters(), original.network.parameters()))
    # without a ceiling the same stage moves them
    free, _ = unlearn_brain_age(original, forget_frame, flags, replace(settings, loss_ceiling=None))
    assert not all(torch.equal(p, q) for p, q in zip(free.network.parameters(), original.network.parameters()))


def test_segmentation_ascent_raises_the_withdrawn_scans_loss_and_honours_its_ceiling(segmenter, forget_frame):
    flags = forget_rows(forget_frame)
    forgotten, held = membership_rows(forget_frame, flags)
    weights = {k: v.clone() for k, v in segmenter.network.state_dict().items()}
    settings = ForgetSettings(method="ga", forget_epochs=2, ga_learning_rate=1e-2, bootstrap=0)
    unlearned, watch = unlearn_model(segmenter, forget_frame, flags, settings)
    assert watch.wall > 0 and unlearned.seconds == watch.wall and unlearned.device == segmenter.device
    assert all(torch.equal(v, weights[k]) for k, v in segmenter.network.state_dict().items())  # the original kept
    (member_before, _), (member_after, _) = segmentation_scores(segmenter, forgotten), \
        segmentation_scores(unlearned, forgotten)
    (held_before, _), (held_after, _) = segmentation_scores(segmenter, held), segmentation_scores(unlearned, held)
    rise = np.mean(member_after) - np.mean(member_before)
    assert rise > 0.05 and rise > np.mean(held_after) - np.mean(held_before)  # the withdrawn scans were pushed most
    capped, _ = unlearn_model(segmenter, forget_frame, flags, replace(settings, segmentation_loss_ceiling=1e-9))
    assert all(torch.equal(p, q) for p, q in zip(capped.network.parameters(), segmenter.network.parameters()))


def test_retrain_segmentation_trains_a_fresh_network_on_the_retained_scans(segmenter, forget_frame):
    flags = forget_rows(forget_frame)
    oracle, watch = retrain_segmentation(segmenter, forget_frame, flags, ForgetSettings(oracle_epochs=1))
    assert watch.wall > 0 and watch.cpu > 0 and oracle.seconds == watch.wall and oracle.history == []
    assert oracle.taps == segmenter.taps and oracle.transform is segmenter.transform
    original = dict(segmenter.network.named_parameters())
    assert all(not torch.equal(p, original[n]) for n, p in oracle.network.named_parameters() if p.ndim > 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "oracle"}, "'oracle' is not a forgetting method"),
        ({"method": "sgd"}, "sgd"),
        ({"ft_epochs": 0}, "'ft_epochs' must be an integer >= 1, got 0 (int)"),
        ({"learning_rate": 0.0}, "'learning_rate' must be a finite number > 0, got 0.0 (float)"),
        ({"batch_size": 0}, "'batch_size' must be an integer >= 1, got 0 (int); or None (the training batch size)"),
        ({"bootstrap": -1}, "'bootstrap' must be an integer >= 0, got -1 (int)"),
        ({"loss_ceiling": 0.0}, "'loss_ceiling' must be a finite number > 0 or None, got 0.0 (float)"),
        ({"segmentation_loss_ceiling": -1.0},
         "'segmentation_loss_ceiling' must be a finite number > 0 or None, got -1.0 (float)"),
        ({"oracle_epochs": 0}, ("'oracle_epochs' must be an integer >= 1, got 0 (int); or None (the segmentation "
                                "bundle's max_epochs)")),
    ],
)
def test_settings_errors(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        ForgetSettings(**kwargs)
    assert message in str(caught.value) + str(getattr(caught.value, "problems", ""))
