"""Tests of harmonize.data.manifest.summary: the age range every site covers."""

from __future__ import annotations

import pandas as pd
import pytest

from harmonize.data.manifest import overlap_range
from harmonize.keys import Keys


@pytest.mark.parametrize(
    ("ages", "expected"),
    [({"A": [20, 60], "B": [30, 70]}, (30.0, 60.0)),
     ({"A": [20, 40], "B": [40, 70], "C": [10, 90]}, (40.0, 40.0)),
     ({"A": [20, 30], "B": [40, 70]}, None),
     ({"A": [25.5, 80]}, (25.5, 80.0))],
)
def test_overlap_range(ages, expected):
    frame = pd.DataFrame([{Keys.SITE.value: s, Keys.AGE.value: a} for s, values in ages.items() for a in values])
    assert overlap_range(frame) == expected


def test_overlap_range_empty_and_other_key():
    assert overlap_range(pd.DataFrame({Keys.SITE.value: [], Keys.AGE.value: []})) is None
    frame = pd.DataFrame({"scanner": ["x", "x", "y"], "tiv": [1.0, 2.0, 1.5], Keys.SITE.value: ["a"] * 3})
    assert overlap_range(frame, key="tiv", by="scanner") == (1.5, 1.5)
