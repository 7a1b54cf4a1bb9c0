"""Tests of harmonize.data.preprocess.config: the settings are checked, the summary reads right."""

from __future__ import annotations

from pathlib import Path

import pytest

from harmonize.data.preprocess import PreprocessConfig, PreprocessResult
from harmonize.errors import ConfigError

from .conftest import CONFIG


def test_config_is_checked():
    assert CONFIG.target_spacing == (1.5, 1.5, 1.5) and CONFIG.mask_method == "otsu"
    assert PreprocessConfig(target_spacing=[2, 2, 3]).target_spacing == (2.0, 2.0, 3.0)
    with pytest.raises(ConfigError) as err:
        PreprocessConfig(target_spacing=-1, target_shape=(16, 16), landmarks_cutoff=(0.9, 0.1), mask_method="otsuu")
    assert err.value.problems[:3] == [
        "'target_spacing' must be one finite number > 0 or a sequence of 3 of them, got -1 (int)",
        "'target_shape' must be a sequence of 3 integers >= 1, got (16, 16) (tuple)",
        "'landmarks_cutoff' must be a (low, high) pair of finite numbers >= 0 and <= 1 with low < high, got (0.9, 0.1) "
        "(tuple)"]
    assert err.value.problems[3].startswith("Argument 'mask_method': By 'otsuu', did you mean 'otsu'?")



def test_the_summary_names_the_step():
    whole = PreprocessResult(Path("out/manifest.csv"), processed=3, cached=1, landmarks={"A": Path("a.npy")},
                             seconds=2.04)
    assert whole.format().splitlines() == ["preprocessed manifest: out/manifest.csv",
                                           "scans: 4 (processed 3, cached 1) in 2.0 s",
                                           "landmarks: 1 site(s) from their training scans"]
    fit = PreprocessResult(None, processed=2, cached=0, landmarks={"A": Path("a.npy"), "B": Path("pooled.npy")},
                           pooled_sites=("B",), step="fit")
    assert fit.format().splitlines() == ["fit: landmarks fitted; the shards may run now",
                                         "scans: 2 (processed 2, cached 0) in 0.0 s",
                                         "landmarks: 1 site(s) from their training scans",
                                         "sites without training scans (pooled landmarks): B"]
    shard = PreprocessResult(Path("out/shards/1-of-2/manifest.csv"), processed=1, cached=0, step="shard 1/2")
    assert shard.format().startswith("shard 1/2 preprocessed manifest: out/shards/1-of-2/manifest.csv\n")
