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


def test_label_values_outside_the_classes_name_the_scans():
    """Before, a label 5 for 4 classes met training only as an index error of the loss's one-hot encoding."""
    import pytest

    from harmonize.errors import ConfigError, HarmonizeError

    batch = _batch()
    batch[Keys.LABEL][2, 0, 1, 1, 1] = 5
    batch[Keys.LABEL][1, 0, 0, 0, 0] = 7  # subject 'b' has no label map (has_label False): not checked
    prepare = PrepareTargetBatch(Keys.LABEL, labelled_key=Keys.HAS_LABEL, missing_value=-1, num_classes=4)
    with pytest.raises(HarmonizeError) as info:
        prepare(batch)
    assert info.value.message.startswith("Label maps of 1 scan(s) hold values outside the 4 classes 0..3 of the "
                                         "network ('label')")
    assert info.value.problems == ["subject c: values [5]"]
    batch[Keys.LABEL][2, 0, 1, 1, 1] = 3
    _, target = prepare(batch)
    assert target[1].eq(-1).all() and target[2].max() == 3
    with pytest.raises(ConfigError, match=r"'num_classes' must be an integer >= 1, got 0 \(int\)"):
        PrepareTargetBatch(Keys.LABEL, num_classes=0)
    with pytest.raises(ConfigError, match=r"'num_classes' must be an integer >= 1, got 2.5 \(float\)"):
        PrepareTargetBatch(Keys.LABEL, num_classes=2.5)
