"""Tests of harmonize.data.manifest.problem: how a problem names its row, column and file."""

from __future__ import annotations

from harmonize.data.manifest import ManifestProblem


def test_problem_str():
    assert str(ManifestProblem("bad", row=3, column="age", file="/x.nii")) == "row 3, column 'age', file '/x.nii': bad"
    assert str(ManifestProblem("whole file")) == "whole file"
