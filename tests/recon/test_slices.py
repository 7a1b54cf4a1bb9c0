"""Tests of the retain/forget reconstruction sets (anatomy shift and site scenarios)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, ManifestError
from harmonize.keys import Keys, MaskType
from harmonize.recon.slices import (
    KspaceSettings,
    anatomy_shift_splits,
    central_axial_slices,
    manifest_groups,
    site_forget_splits,
    volume_items,
)

SIZE = 32
SAMPLE_KEYS = {Keys.IMAGE, Keys.TARGET, Keys.KSPACE, Keys.MASKED_KSPACE, Keys.SAMPLING_MASK, Keys.FORGET,
               Keys.VOLUME_ID, Keys.SLICE_INDEX}



@pytest.fixture(scope="module")
def splits():
    return anatomy_shift_splits(3, 2, 1, 1, slices_per_volume=2, size=SIZE, seed=0)


def test_anatomy_shift_sets(splits) -> None:
    assert splits.sizes() == {"retain_train": 6, "forget_train": 4, "retain_test": 2, "forget_test": 2}
    sample = splits.retain_train[0]
    assert set(sample) == SAMPLE_KEYS
    assert sample[Keys.IMAGE].shape == sample[Keys.TARGET].shape == (1, SIZE, SIZE)
    assert sample[Keys.KSPACE].shape == (1, SIZE, SIZE, 2)
    assert [bool(s[Keys.FORGET]) for s in splits.retain_train + splits.retain_test] == [False] * 8
    assert [bool(s[Keys.FORGET]) for s in splits.forget_train + splits.forget_test] == [True] * 6
    ids = {name: {s[Keys.VOLUME_ID] for s in getattr(splits, name)} for name in splits.sizes()}
    assert ids["retain_train"] == {"brain-train-000", "brain-train-001", "brain-train-002"}
    assert not ids["retain_train"] & ids["retain_test"] and not ids["forget_train"] & ids["forget_test"]
    for s in splits.retain_train[:2]:  # one volume: its target peaks at 1
        assert s[Keys.SLICE_INDEX] in (0, 1)
    assert max(float(s[Keys.TARGET].max()) for s in splits.retain_train[:2]) == pytest.approx(1.0)


def test_zero_filled_input_is_degraded_but_close(splits) -> None:
    for sample in splits.retain_train[:2] + splits.forget_train[:2]:
        error = float((sample[Keys.IMAGE] - sample[Keys.TARGET]).pow(2).mean())
        assert 1e-5 < error < 0.05


def test_sets_are_seeded_and_independent(splits) -> None:
    again = anatomy_shift_splits(3, 2, 1, 1, slices_per_volume=2, size=SIZE, seed=0)
    torch.testing.assert_close(again.forget_test[0][Keys.IMAGE], splits.forget_test[0][Keys.IMAGE])
    more_forget = anatomy_shift_splits(3, 3, 1, 1, slices_per_volume=2, size=SIZE, seed=0)
    torch.testing.assert_close(more_forget.retain_train[5][Keys.TARGET], splits.retain_train[5][Keys.TARGET])
    other = anatomy_shift_splits(3, 2, 1, 1, slices_per_volume=2, size=SIZE, seed=1)
    assert not torch.allclose(other.retain_train[0][Keys.TARGET], splits.retain_train[0][Keys.TARGET])


def test_volume_items_with_coils_random_mask_and_no_kspace() -> None:
    volume = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32) * 3
    settings = KspaceSettings(mask_type=MaskType.RANDOM, num_coils=4, keep_kspace=False)
    items = volume_items(volume, "v1", True, settings, np.random.default_rng(0), {Keys.SITE: "A"})
    assert len(items) == 2 and Keys.KSPACE not in items[0] and Keys.MASKED_KSPACE not in items[0]
    assert items[0][Keys.SITE] == "A" and items[1][Keys.SLICE_INDEX] == 1
    assert max(float(i[Keys.TARGET].max()) for i in items) == pytest.approx(1.0)  # scaled by the volume max
    kept = volume_items(volume, "v1", True, KspaceSettings(num_coils=4), np.random.default_rng(0))
    assert kept[0][Keys.KSPACE].shape == (4, 16, 16, 2)
    with pytest.raises(ValueError, match=r"volume 'v2' must be \(slices, H, W\), got shape \(16, 16\)"):
        volume_items(volume[0], "v2", False, settings, np.random.default_rng(0))


def test_bad_counts_and_settings() -> None:
    with pytest.raises(ConfigError) as err:
        anatomy_shift_splits(0, 2, 1, 0)
    assert err.value.problems == ["'retain_train' must be an integer >= 1, got 0 (int)",
                                  "'forget_test' must be an integer >= 1, got 0 (int)"]
    with pytest.raises(ConfigError) as err:  # checked on construction, every problem at once
        KspaceSettings(num_coils=0, acceleration=2, center_fraction=0.6)
    assert err.value.problems == [
        "'center_fraction' x 'acceleration' must be < 1 (the centre alone would exceed the 1/R budget), got 0.6 x 2",
        "'num_coils' must be an integer >= 1, got 0 (int)",
    ]


def test_site_scenario_from_manifest(tiny_cohort: Path) -> None:
    frame = read_manifest(tiny_cohort)
    site = sorted(frame[Keys.SITE].unique())[1]
    splits = site_forget_splits(tiny_cohort, forget_site=site, size=16, slices_per_volume=2)
    sizes = splits.sizes()
    train_rows = frame[frame[Keys.SPLIT] == "train"]
    assert sizes["forget_train"] == 2 * int((train_rows[Keys.SITE] == site).sum())
    assert sizes["retain_train"] == 2 * int((train_rows[Keys.SITE] != site).sum())
    assert {s[Keys.SITE] for s in splits.forget_train + splits.forget_test} == {site}
    assert site not in {s[Keys.SITE] for s in splits.retain_train + splits.retain_test}
    assert all(bool(s[Keys.FORGET]) for s in splits.forget_train)
    assert splits.retain_train[0][Keys.VOLUME_ID] == splits.retain_train[0][Keys.SUBJECT_ID]


def test_manifest_groups_use_the_forget_column_and_report_problems(tiny_cohort: Path) -> None:
    frame = read_manifest(tiny_cohort).copy()
    sites = sorted(frame[Keys.SITE].unique())
    frame[Keys.FORGET] = frame[Keys.SITE] == sites[0]
    groups = manifest_groups(frame)
    assert set(groups["forget_train"][Keys.SITE]) == {sites[0]}
    with pytest.raises(ManifestError, match=r"forget_site 'nowhere' is not a site of the manifest; its sites are"):
        manifest_groups(frame, forget_site="nowhere")
    with pytest.raises(ManifestError, match="has no 'forget' column: pass forget_site= one of"):
        manifest_groups(frame.drop(columns=[Keys.FORGET]))
    with pytest.raises(ManifestError) as err:
        manifest_groups(frame[frame[Keys.SPLIT] == "train"])
    assert "retain_test: no rows (forget=False, split=test)" in str(err.value)


def test_central_axial_slices(tiny_cohort: Path) -> None:
    path = read_manifest(tiny_cohort)[Keys.IMAGE].iloc[0]
    slab = central_axial_slices(path, size=16, num_slices=3)
    assert slab.shape == (3, 16, 16) and slab.min() >= 0.0 and slab.max() <= 1.0
    assert (slab > 0.1).mean() > 0.1
    with pytest.raises(ManifestError, match="Cannot read image"):
        central_axial_slices(Path(path).with_name("missing.nii.gz"), 16, 1)


def test_dataframe_manifest_needs_no_file() -> None:
    frame = pd.DataFrame({Keys.SITE: ["a", "b"], Keys.SPLIT: ["train", "train"], Keys.IMAGE: ["x", "y"]})
    with pytest.raises(ManifestError, match="cannot form all four"):
        manifest_groups(frame, forget_site="a")
