"""Tests of harmonize.data.preprocess.pool: worker processes give the very bytes one process gives."""

from __future__ import annotations

import subprocess
import sys

import pytest
import SimpleITK as sitk
import torch

from harmonize.data.preprocess.pool import PRELOAD, ScanPool
from harmonize.data.preprocess.stages import Outcome
from harmonize.errors import ConfigError

from .conftest import run, tree_hashes


def _bookkeeping(path) -> bool:
    return path.name.startswith(".harmonize")


def test_two_jobs_write_the_same_bytes_and_cache_as_one(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=2, n_train=1, unseen=("siteD",))
    one = run(manifest, tmp_path / "one", jobs=1)
    two = run(manifest, tmp_path / "two", jobs=2)
    assert (one.processed, one.cached) == (two.processed, two.cached) == (6, 0)
    assert two.pooled_sites == ("siteD",)
    expected = tree_hashes(tmp_path / "one", _bookkeeping)
    # per scan: spatial, mask, image, label, record; 3 landmarks, their index and fit record; manifest and marker
    assert len(expected) == 6 * 5 + 5 + 2
    assert tree_hashes(tmp_path / "two", _bookkeeping) == expected
    again = run(manifest, tmp_path / "two", jobs=1)
    assert (again.processed, again.cached) == (0, 6)  # the workers' cache records serve one process
    assert tree_hashes(tmp_path / "two", _bookkeeping) == expected


def test_jobs_must_be_a_positive_integer(make_cohort, tmp_path):
    with pytest.raises(ConfigError) as info:
        ScanPool(0)
    assert info.value.problems == ["'jobs' must be an integer >= 1, got 0 (int): the worker processes"]
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(ConfigError, match="preprocess_manifest: invalid arguments.\n  - 'jobs' must be an integer"):
        run(manifest, tmp_path / "out", jobs=0)
    assert not (tmp_path / "out").exists()


def _threads(scan: str) -> Outcome:
    """A stage that reports a worker's torch and SimpleITK threads."""
    threads = {"torch": torch.get_num_threads(), "sitk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}
    return Outcome(record=threads, spatial_key=scan)


def test_workers_compute_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ScanPool(2) as pool:
            outcomes = pool.map(_threads, ["a", "b", "c"])
    finally:
        torch.set_num_threads(before)
    assert [o.spatial_key for o in outcomes] == ["a", "b", "c"]
    assert all(o.record == {"torch": 1, "sitk": 1} for o in outcomes)


def test_the_workers_modules_leave_monai_out():
    # the fork server imports them before the first scan starts: MONAI's import alone took 2.6 s of it
    code = f"import sys, {PRELOAD[0]}; print('monai' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
