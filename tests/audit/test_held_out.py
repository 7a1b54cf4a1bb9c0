"""audit_held_out_scans: the part of an audit every task shares, with a task adapter that records its calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonize.audit.features import FeatureSet
from harmonize.audit.held_out import audit_held_out_scans
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys


class Model:
    site_index = CategoryIndex(["a", "b"])


class CountingAudit:
    """A task whose score of a scan is its row number, and whose features are that number too."""

    def __init__(self, measure_unseen: bool = True) -> None:
        self.measure_unseen, self.calls = measure_unseen, []

    @staticmethod
    def _features(rows: pd.DataFrame) -> FeatureSet:
        return FeatureSet(np.asarray(rows.index, float)[:, None], None,
                          {Keys.SUBJECT_ID: rows[Keys.SUBJECT_ID].to_numpy()})

    def held_out(self, model, frame, rows, splits, permutations, seed):
        self.calls.append(("held_out", list(rows.index), tuple(splits), permutations, seed))
        return {"n_subjects": len(rows)}, self._features(rows)

    def unseen_rows(self, rows):
        return rows if self.measure_unseen else rows.iloc[:0]

    def unseen(self, model, rows):
        self.calls.append(("unseen", list(rows.index)))
        return self._features(rows), np.asarray(rows.index, float)

    def add_unseen(self, metrics, scores, sites):
        metrics["unseen_score"] = {s: float(scores[sites == s].sum()) for s in sorted(set(sites))}


@pytest.fixture
def frame() -> pd.DataFrame:
    sites = ["a", "a", "b", "b", "c", "c", "d"]
    splits = ["train", "val", "train", "test", "train", "val", "test"]
    return pd.DataFrame({Keys.SUBJECT_ID: [f"s{i}" for i in range(7)], Keys.SITE: sites, Keys.SPLIT: splits},
                        index=pd.Index(range(2, 9), name="row"))


def test_held_out_and_unseen_scans_are_measured_by_the_task(frame):
    task = CountingAudit()
    metrics, features = audit_held_out_scans(Model(), frame, task, permutations=7, seed=3)
    assert task.calls == [("held_out", [3, 5], ("val", "test"), 7, 3), ("unseen", [6, 7, 8])]
    assert metrics == {"n_subjects": 2, "unseen_score": {"c": 13.0, "d": 8.0}, "unseen_sites": ["c", "d"],
                       "n_unseen": 3}
    assert features.features[:, 0].tolist() == [3, 5, 6, 7, 8]  # held-out scans first, then the unseen ones


def test_unseen_sites_the_task_cannot_measure_are_left_out(frame):
    metrics, features = audit_held_out_scans(Model(), frame, CountingAudit(measure_unseen=False), 0, 0)
    assert metrics == {"n_subjects": 2} and len(features) == 2


def test_no_held_out_scan_of_a_training_site_is_refused(frame):
    with pytest.raises(HarmonizeError, match=r"No row of the manifest is in splits \['test'\] of the sites"):
        audit_held_out_scans(Model(), frame[frame[Keys.SITE] != "b"], CountingAudit(), 0, 0, splits=("test",))
