"""labelled_subjects: the semi-supervised subset, per site, the same as train_brain_age's."""

from __future__ import annotations

import pytest

from harmonize.bundle import labelled_subjects
from harmonize.data.labelled_subset import labelled_subset
from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError


def test_every_label_kept_at_fraction_one(tiny_cohort):
    assert labelled_subjects(tiny_cohort, 1.0) is None


def test_fraction_of_each_site(tiny_cohort):
    keep = labelled_subjects(tiny_cohort, 0.25, seed=3)
    frame = read_manifest(tiny_cohort)
    train = frame[frame["split"] == "train"]
    assert len(keep) == 3  # one of the four training subjects of each of the three sites
    assert {s.split("-")[0] for s in keep} == {"site0", "site1", "site2"}
    assert keep == labelled_subset(train, 0.25, 3)
    assert labelled_subjects(tiny_cohort, 0.25, seed=3) == keep


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_fraction_outside_range(tiny_cohort, fraction):
    with pytest.raises(ConfigError, match=rf"'labelled_fraction' must be a finite number > 0 and <= 1, got {fraction}"):
        labelled_subjects(tiny_cohort, fraction)
