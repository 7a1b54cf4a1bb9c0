"""measure_model / segmentation_scores / membership_rows: what harmonize forget measures of a model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from harmonize.data.dataset import make_dataset
from harmonize.data.forget_list import forget_rows
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys
from harmonize.workflows.forget_measure import measure_model, membership_rows, segmentation_scores
from harmonize.workflows.forget_settings import ForgetSettings
from harmonize.workflows.segmentation_audit import dice_summary, segmentation_features


def test_segmentation_scores_are_each_scans_loss_and_dice(segmenter, forget_frame):
    rows = forget_frame[forget_frame[Keys.SPLIT] == "test"].iloc[::-1]  # any order: the scores follow the rows
    losses, dice = segmentation_scores(segmenter, rows)
    assert losses.shape == (3,) and dice.shape == (3, 3)
    _, audited = segmentation_features(segmenter, rows)
    np.testing.assert_allclose(dice, audited, rtol=1e-6)  # the audit's per-scan Dice
    item = make_dataset(rows.iloc[[1]], site_index=segmenter.site_index, transform=segmenter.transform)[0]
    with torch.no_grad():
        logits = segmenter.network(item[Keys.IMAGE][None])
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, torch.as_tensor(item[Keys.LABEL])[None])
    assert losses[1] == pytest.approx(float(expected), rel=1e-5)


def test_measure_model_of_a_segmentation_model(segmenter, forget_frame):
    flags = forget_rows(forget_frame)
    metrics, losses = measure_model(segmenter, forget_frame, flags, ForgetSettings(bootstrap=20))
    forgotten, held = membership_rows(forget_frame, flags)
    member, forget_dice = segmentation_scores(segmenter, forgotten)
    np.testing.assert_allclose(losses["member"], member)
    np.testing.assert_allclose(losses["nonmember"], segmentation_scores(segmenter, held)[0])
    assert metrics["forget_dice"] == pytest.approx(dice_summary(forget_dice, ("csf", "gm", "wm"))[0])
    assert metrics["mia_member_loss"] == pytest.approx(float(np.mean(member)))
    assert (metrics["mia_n_members"], metrics["mia_n_nonmembers"]) == (3, 6)
    assert 0 <= metrics["retain_dice"] <= 1 and 0 <= metrics["mean_dice"] <= 1 and metrics["task"] == "segmentation"


def test_membership_needs_two_held_out_scans_of_the_withdrawn_sites(forget_frame):
    flags = forget_rows(forget_frame)
    forgotten, held = membership_rows(forget_frame, flags)
    assert len(forgotten) == 3 and len(held) == 6 and set(held[Keys.SPLIT]) == {"val", "test"}
    sites = set(forgotten[Keys.SITE])
    fewer = forget_frame.drop(index=held.index[1:])
    message = f"The manifest has 1 held-out (val/test) scan(s) of the withdrawn subjects' sites {sorted(sites)}: "
    with pytest.raises(HarmonizeError, match=re.escape(message)):
        membership_rows(fewer, forget_rows(fewer))
