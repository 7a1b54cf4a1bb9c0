"""age_statistics: mean and spread of the training ages."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.bundle import age_statistics
from harmonize.data.manifest import read_manifest
from harmonize.errors import HarmonizeError


def test_mean_and_std_of_the_training_rows(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    ages = frame.loc[frame["split"] == "train", "age"].to_numpy(float)
    mean, std = age_statistics(tiny_cohort)
    assert len(ages) == 12
    assert mean == pytest.approx(np.mean(ages)) and std == pytest.approx(np.std(ages))


def test_no_training_row_is_an_error(tiny_cohort, tmp_path):
    folder = tiny_cohort.parent
    text = tiny_cohort.read_text().replace(",train\n", ",val\n")
    text = text.replace("images/", f"{folder}/images/").replace("labels/", f"{folder}/labels/")
    path = tmp_path / "no_train.csv"
    path.write_text(text)
    with pytest.raises(HarmonizeError, match="No training row of .*no_train.csv has an age"):
        age_statistics(path)
