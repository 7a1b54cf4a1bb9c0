"""PrepareTargetBatch: image + target, with unlabelled samples blanked for MaskedLoss."""

from __future__ import annotations

import math

import torch

from harmonize.keys import Keys
from harmonize.workflows.prepare_batch import PrepareTargetBatch


def _batch():
    return {
        Keys.IMAGE: torch.zeros(3, 1, 4, 4, 4),
        Keys.AGE: torch.tensor([30.0, 40.0, 50.0]),
        Keys.LABEL: torch.ones(3, 1, 4, 4, 4, dtype=torch.int64),
        Keys.HAS_LABEL: torch.tensor([True, False, True]),
        Keys.SUBJECT_ID: ["a", "b", "c"],
    }


def test_age_target_is_a_column():
    image, target = PrepareTargetBatch(Keys.AGE)(_batch())
    assert image.shape == (3, 1, 4, 4, 4)
    assert target.shape == (3, 1) and target.dtype == torch.float32
    assert target.view(-1).tolist() == [30.0, 40.0, 50.0]


def test_labelled_ids_blank_the_others_with_nan():
    _, target = PrepareTargetBatch(Keys.AGE, labelled_ids={"a", "c"})(_batch())
    values = target.view(-1).tolist()
    assert values[0] == 30.0 and values[2] == 50.0 and math.isnan(values[1])


def test_label_maps_without_label_are_filled_with_ignore_value():
    _, target = PrepareTargetBatch(Keys.LABEL, labelled_key=Keys.HAS_LABEL, missing_value=-1)(_batch())
    assert target.dtype == torch.int64
    assert (target[1] == -1).all() and (target[0] == 1).all() and (target[2] == 1).all()


def test_batch_is_not_modified():
    batch = _batch()
    PrepareTargetBatch(Keys.LABEL, labelled_key=Keys.HAS_LABEL, missing_value=-1)(batch)
    assert (batch[Keys.LABEL] == 1).all()
