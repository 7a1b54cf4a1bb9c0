"""labelled_subset: the semi-supervised draw keeps a fraction of every site, reproducibly."""

from __future__ import annotations

from harmonize.data.labelled_subset import labelled_subset
from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys


def test_keeps_a_fraction_of_each_site(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    train = frame[frame[Keys.SPLIT] == "train"]
    keep = labelled_subset(train, 0.5, seed=0)
    per_site = train[train[Keys.SUBJECT_ID].isin(keep)].groupby(Keys.SITE).size()
    assert per_site.to_dict() == {"site0": 2, "site1": 2, "site2": 2}
    assert keep == labelled_subset(train, 0.5, seed=0)
    assert keep != labelled_subset(train, 0.5, seed=1)  # the seed changes the draw


def test_every_site_keeps_at_least_one_subject(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    train = frame[frame[Keys.SPLIT] == "train"]
    keep = labelled_subset(train, 0.01, seed=0)
    assert train[train[Keys.SUBJECT_ID].isin(keep)].groupby(Keys.SITE).size().to_dict() == {
        "site0": 1, "site1": 1, "site2": 1}


def test_fraction_one_keeps_every_label(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    assert labelled_subset(frame[frame[Keys.SPLIT] == "train"], 1.0, seed=0) is None
