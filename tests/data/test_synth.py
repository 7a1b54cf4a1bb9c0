"""The synthetic multi-site cohort: files, ground truth, determinism, anatomy, scanners and errors."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from harmonize.data.synth import (
    COHORT_NAME,
    MANIFEST_NAME,
    SiteProfile,
    SynthConfig,
    cohort_manifest_text,
    draw_site_profiles,
    generate_cohort,
    tissue_labels,
)
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import OutputWriteError

SMALL = SynthConfig(n_sites=2, subjects_per_site=3, shape=16, seed=3)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def volumes(manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject: label volumes in ml (CSF, GM, WM), ages, and whether male."""
    rows = read_manifest(manifest)
    vols = []
    for row in rows:
        label = nib.load(manifest.parent / row["label"])
        ml = float(np.prod(label.header.get_zooms()[:3])) / 1000
        counts = np.bincount(np.asarray(label.dataobj).ravel(), minlength=4)
        vols.append(counts[1:] * ml)
    ages = np.array([float(row["age"]) for row in rows])
    male = np.array([row["sex"] == "M" for row in rows])
    return np.array(vols), ages, male


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def aging_cohort(tmp_path_factory) -> Path:
    """2 sites x 12 subjects at 32^3 (6.25 mm voxels), for the anatomy checks."""
    config = SynthConfig(n_sites=2, subjects_per_site=12, shape=32, seed=1)
    return generate_cohort(tmp_path_factory.mktemp("aging"), config)


def test_tiny_cohort_has_the_manifest_files_and_ground_truth(tiny_cohort):
    rows = read_manifest(tiny_cohort)
    assert list(rows[0]) == ["subject_id", "image", "label", "site", "age", "sex", "split"]
    assert len(rows) == 18 and len({r["subject_id"] for r in rows}) == 18
    assert sorted({r["site"] for r in rows}) == ["site0", "site1", "site2"]
    for site in ("site0", "site1", "site2"):
        splits = [r["split"] for r in rows if r["site"] == site]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (4, 1, 1)
        assert sorted(r["sex"] for r in rows if r["site"] == site) == ["F"] * 3 + ["M"] * 3
    cohort = json.loads((tiny_cohort.parent / COHORT_NAME).read_text())
    assert cohort["seed"] == 0 and cohort["config"]["subjects_per_site"] == 6
    assert [s["name"] for s in cohort["sites"]] == ["site0", "site1", "site2"]
    expected_affine = np.array(cohort["template"]["affine"])
    for row, subject in zip(rows, cohort["subjects"]):
        assert subject["subject_id"] == row["subject_id"] and subject["age"] == float(row["age"])
        assert {"atrophy", "deformation", "acquisition"} <= set(subject)
        image = nib.load(tiny_cohort.parent / row["image"])
        label = nib.load(tiny_cohort.parent / row["label"])
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == (24, 24, 24)
        np.testing.assert_allclose(image.affine, expected_affine)
        np.testing.assert_allclose(label.affine, expected_affine)
        assert int(image.header["sform_code"]) == 1 and np.linalg.det(image.affine[:3, :3]) > 0
        values = set(np.unique(np.asarray(label.dataobj)).tolist())
        assert values == {0, 1, 2, 3}
        data = image.get_fdata()
        assert np.isfinite(data).all() and (data[np.asarray(label.dataobj) == 0] == 0).all()


def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path):
    first = all_files(generate_cohort(tmp_path / "a", SMALL).parent)
    again = all_files(generate_cohort(tmp_path / "b", SMALL).parent)
    assert first == again and len(first) == 3 + 2 * 6  # + the record of outputs
    other = all_files(generate_cohort(tmp_path / "c", dataclasses.replace(SMALL, seed=4)).parent)
    assert other.keys() == first.keys()
    differing = [name for name in first if first[name] != other[name]]
    assert len(differing) == len(first) - 1  # every image, label, the manifest and the sidecar change


def test_grey_matter_shrinks_and_csf_grows_with_age(aging_cohort):
    vols, ages, _ = volumes(aging_cohort)
    total = vols.sum(1)
    # Measured at seed 1: r(age, GM/total) = -0.92, r(age, CSF/total) = 0.93, r(age, CSF) = 0.87 and
    # r(age, GM) = -0.48 (absolute volumes also vary with head size).
    assert stats.pearsonr(ages, vols[:, 1] / total)[0] < -0.8
    assert stats.pearsonr(ages, vols[:, 0] / total)[0] > 0.8
    assert stats.pearsonr(ages, vols[:, 0])[0] > 0.7
    assert stats.pearsonr(ages, vols[:, 1])[0] < -0.3


def test_atrophy_parameters_grow_with_age(aging_cohort):
    cohort = json.loads((aging_cohort.parent / COHORT_NAME).read_text())
    ages = [s["age"] for s in cohort["subjects"]]
    thinning = [s["atrophy"]["gm_thinning"] for s in cohort["subjects"]]
    ventricles = [s["atrophy"]["ventricle_dilation_mm"] for s in cohort["subjects"]]
    # Measured: Spearman 0.94 (thinning) and 0.95 (ventricles).
    assert stats.spearmanr(ages, thinning)[0] > 0.85
    assert stats.spearmanr(ages, ventricles)[0] > 0.85


def test_male_heads_are_larger(aging_cohort, tiny_cohort):
    for manifest in (aging_cohort, tiny_cohort):
        vols, _, male = volumes(manifest)
        total = vols.sum(1)
        # About 15% in volume (5% linear) on average; measured 1.13 (aging) and 1.11 (tiny).
        assert total[male].mean() > 1.08 * total[~male].mean()


def test_each_site_has_its_own_contrast(tiny_cohort):
    """Per-scan CSF/WM and WM/GM intensity ratios differ between sites more than within them."""
    features: dict[str, list[list[float]]] = {}
    for row in read_manifest(tiny_cohort):
        image = nib.load(tiny_cohort.parent / row["image"]).get_fdata()
        label = np.asarray(nib.load(tiny_cohort.parent / row["label"]).dataobj)
        wm, gm, csf = (np.median(image[label == k]) for k in (3, 2, 1))
        features.setdefault(row["site"], []).append([csf / wm, wm / gm])
    groups = [np.array(f) for f in features.values()]
    # Measured at seed 0: site means of CSF/WM 0.366, 0.410, 0.387 (within-site std 0.014 to 0.017; ANOVA
    # p = 0.0013) and of WM/GM 1.321, 1.292, 1.325 (p = 0.012), with 6 scans per site.
    assert stats.f_oneway(*(g[:, 0] for g in groups)).pvalue < 0.01
    assert stats.f_oneway(*(g[:, 1] for g in groups)).pvalue < 0.05
    # The scale of the scanner does not decide: every site's images are in their own arbitrary unit.
    cohort = json.loads((tiny_cohort.parent / COHORT_NAME).read_text())
    assert len({round(s["intensity_scale"], 3) for s in cohort["sites"]}) == 3


def test_site_effect_zero_gives_identical_scanners():
    sites = draw_site_profiles(SynthConfig(n_sites=3, site_effect=0.0))
    assert {(s.tissue_intensities, s.gamma, s.blur_fwhm_mm, s.noise_std, s.intensity_scale) for s in sites} == {
        ((0.27, 0.65, 0.87), 1.0, (0.0, 0.0, 0.0), 0.01, 1.0)
    }


def test_biased_sites_have_partly_overlapping_age_windows(tiny_cohort_biased):
    cohort = json.loads((tiny_cohort_biased.parent / COHORT_NAME).read_text())
    windows = [tuple(s["age_range"]) for s in cohort["sites"]]
    # 3 windows of 32.5 years over 20-85, each sharing half its width with the next.
    assert windows == [(20.0, 52.5), (36.25, 68.75), (52.5, 85.0)]
    for (low, high), (next_low, next_high) in zip(windows, windows[1:]):
        assert (high - next_low) / (high - low) == pytest.approx(0.5)
    for row in read_manifest(tiny_cohort_biased):
        low, high = windows[int(row["site"][-1])]
        assert low <= float(row["age"]) <= high


def test_biased_training_subjects_only_keep_the_same_training_draws():
    import io

    import pandas as pd

    def frame(**changes):
        config = SynthConfig(n_sites=3, subjects_per_site=20, biased=True, seed=2, **changes)
        return pd.read_csv(io.StringIO(cohort_manifest_text(config)))

    every, train_only = frame(), frame(biased_splits=("train",))
    train = every["split"] == "train"
    assert train_only[train].equals(every[train])  # the same training subjects: one age draw per subject
    held_out = train_only[~train]
    # held-out subjects of every site span the cohort's ages, not their site's window
    assert held_out.groupby("site")["age"].agg(lambda a: a.max() - a.min()).min() > 40
    assert every[~train].groupby("site")["age"].agg(lambda a: a.max() - a.min()).max() < 33
    with pytest.raises(ConfigError) as err:
        SynthConfig(biased_splits=("train", "dev"))
    assert err.value.problems == ["biased_splits: ['dev'] are not splits (train, val, test)"]


def test_default_sites_overlap_broadly():
    sites = draw_site_profiles(SynthConfig(n_sites=4))
    lows, highs = zip(*(s.age_range for s in sites))
    assert max(lows) < 30 and min(highs) > 75  # every pair shares at least 45 of the 65 years


def test_up_to_64_sites_are_distinct_and_adding_sites_keeps_the_first_ones():
    sites = draw_site_profiles(SynthConfig(n_sites=64))
    assert len(sites) == 64 and sites[0].name == "site00" and sites[63].name == "site63"
    assert len({s.bias_coefficients for s in sites}) == 64
    fewer = draw_site_profiles(SynthConfig(n_sites=10))
    assert [s.bias_coefficients for s in fewer] == [s.bias_coefficients for s in sites[:10]]


def test_flipped_sites_store_the_same_anatomy_in_another_orientation(tmp_path):
    plain = generate_cohort(tmp_path / "plain", SMALL)
    flipped = generate_cohort(tmp_path / "flipped", dataclasses.replace(SMALL, vary_orientation=True))
    for row in read_manifest(plain):
        a = nib.load(plain.parent / row["image"])
        b = nib.load(flipped.parent / row["image"])
        assert nib.aff2axcodes(b.affine) == (("L", "A", "S") if row["site"] == "site1" else ("R", "A", "S"))
        canonical = nib.as_closest_canonical(b)
        np.testing.assert_allclose(canonical.affine, a.affine, atol=1e-6)
        np.testing.assert_array_equal(canonical.get_fdata(), a.get_fdata())


def test_explicit_site_profiles_are_used(tmp_path):
    sites = (
        SiteProfile("scannerA", (30.0, 40.0), noise_std=0.0),
        SiteProfile("scannerB", (60.0, 70.0), tissue_intensities=(0.1, 0.5, 0.9), noise_std=0.0),
    )
    manifest = generate_cohort(tmp_path, SynthConfig(subjects_per_site=3, shape=16, sites=sites))
    rows = read_manifest(manifest)
    assert {r["site"] for r in rows} == {"scannerA", "scannerB"}
    assert all(30 <= float(r["age"]) <= 40 for r in rows if r["site"] == "scannerA")


def test_regenerating_into_a_previous_cohort_needs_overwrite_and_replaces_it(tmp_path):
    generate_cohort(tmp_path, SynthConfig(n_sites=2, subjects_per_site=4, shape=16))
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    with pytest.raises(HarmonizeError, match=r"is not empty: it holds the outputs of an earlier run \(18 file\(s\)\).*--overwrite"):
        generate_cohort(tmp_path, SMALL)
    assert (tmp_path / MANIFEST_NAME).read_bytes() == before  # refused before touching anything
    manifest = generate_cohort(tmp_path, SMALL, overwrite=True)
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(read_manifest(manifest)) == 6 and len(images) == 6  # no stale subjects left


def test_a_non_empty_directory_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HarmonizeError, match=f"The output directory {tmp_path} is not empty: it holds 1 file.s. harmonize did not write .notes.txt."):
        generate_cohort(tmp_path, SMALL)
    assert not (tmp_path / MANIFEST_NAME).exists()
    generate_cohort(tmp_path, SMALL, overwrite=True)
    assert (tmp_path / MANIFEST_NAME).exists() and (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(HarmonizeError, match="is a file, not a folder"):
        generate_cohort(tmp_path / "notes.txt", SMALL)


def test_invalid_settings_are_all_listed_on_construction():
    with pytest.raises(ConfigError) as err:
        SynthConfig(n_sites=1, subjects_per_site=2, shape=8, val_fraction=0.6, test_fraction=0.5)
    assert err.value.message == "SynthConfig: invalid arguments."
    assert err.value.problems == [
        "'n_sites' must be an integer >= 2 and <= 64, got 1 (int)",
        "'subjects_per_site' must be an integer >= 3, got 2 (int)",
        "'shape' must be an integer >= 16, got 8 (int)",
        "'val_fraction' + 'test_fraction' must be < 1 to leave some training subjects, got 0.6 + 0.5",
    ]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"n_sites": "4"}, "'n_sites' must be an integer >= 2 and <= 64, got '4' (str)"),
    ({"seed": -1}, "'seed' must be an integer >= 0, got -1 (int)"),
    ({"biased_overlap": 1.0}, "'biased_overlap' must be a finite number >= 0 and < 1, got 1.0 (float)"),
    ({"male_fraction": 1.5}, "'male_fraction' must be a finite number >= 0 and <= 1, got 1.5 (float)"),
    ({"site_effect": float("nan")}, "'site_effect' must be a finite number >= 0 and <= 3, got nan (float)"),
    ({"age_range": (50.0, 20.0)}, "'age_range' must be a (low, high) pair of finite numbers >= 0 with low < high, got "
                                  "(50.0, 20.0) (tuple)"),
])
def test_each_bad_setting_is_named_with_its_value(changes, expected):
    with pytest.raises(ConfigError) as err:
        SynthConfig(**changes)
    assert err.value.problems == [expected]


def test_tissue_labels_threshold_the_background():
    tissues = np.zeros((3, 2, 1, 1), dtype=np.float32)
    tissues[:, 0, 0, 0] = (0.1, 0.15, 0.2)  # sums to 0.45: background
    tissues[:, 1, 0, 0] = (0.2, 0.3, 0.1)  # sums to 0.6: grey matter wins
    np.testing.assert_array_equal(tissue_labels(tissues)[:, 0, 0], [0, 2])


def test_invalid_site_profiles_are_all_listed():
    sites = (SiteProfile("a", (50.0, 40.0)), SiteProfile("a", (20.0, 30.0), tissue_intensities=(0.2, 0.8)))
    with pytest.raises(ConfigError) as err:
        generate_cohort("unused", SynthConfig(sites=sites))
    message = str(err.value)
    assert "site names must be unique, got ['a', 'a']" in message
    assert ("site 'a': 'age_range' must be a (low, high) pair of finite numbers >= 0 with low <= high, got (50.0, "
            "40.0) (tuple)") in message
    assert ("site 'a': 'tissue_intensities' must be a sequence of 3 finite numbers >= 0, got (0.2, 0.8) (tuple) "
            "(CSF, GM, WM)") in message


def test_every_problem_of_a_site_profile_is_listed_at_once():
    profile = SiteProfile("b", (-1.0, 30.0), tissue_intensities=(0.2, 0.5, -0.9), gamma=0.0, blur_fwhm_mm=(1.0, 2.0),
                          bias_coefficients=("x",), bias_order=-1, noise_std=-0.1, intensity_scale=float("inf"),
                          flip_axes=(0, 0))
    assert SiteProfile("c", (20.0, 30.0)).problems() == []
    assert [p.split(" must ")[0] for p in profile.problems()] == [
        f"site 'b': '{name}'" for name in ("age_range", "tissue_intensities", "gamma", "blur_fwhm_mm",
                                            "bias_coefficients", "bias_order", "noise_std", "intensity_scale",
                                            "flip_axes")]
    assert profile.problems()[-1] == "site 'b': 'flip_axes' must be a sequence of distinct integers >= 0 and <= 2, " \
                                     "got (0, 0) (tuple)"


def test_shipped_embedded_manifest_is_what_synth_writes_by_default():
    """data_manifests/embedded_cohort.csv documents the default cohort: it must stay in sync with the generator."""
    from pathlib import Path

    from harmonize.data.synth import cohort_manifest_text

    shipped = Path(__file__).resolve().parents[2] / "data_manifests" / "embedded_cohort.csv"
    assert shipped.read_text() == cohort_manifest_text()


def test_manifest_text_matches_the_generated_cohort(tiny_cohort):
    from harmonize.data.synth import cohort_manifest_text

    from ..conftest import TINY_SEED, TINY_SHAPE, TINY_SITES, TINY_SUBJECTS_PER_SITE

    config = SynthConfig(n_sites=TINY_SITES, subjects_per_site=TINY_SUBJECTS_PER_SITE, shape=TINY_SHAPE, seed=TINY_SEED)
    assert tiny_cohort.read_text() == cohort_manifest_text(config)


def test_held_out_split_trains_on_the_rest():
    from harmonize.data.synth import _split_labels, held_out_split

    fractions = held_out_split(32 / 60)
    assert fractions["val_fraction"] + fractions["test_fraction"] == pytest.approx(32 / 60)
    labels = _split_labels(60, rng=np.random.default_rng(0), **fractions)
    assert {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))} == {
        "test": 20, "train": 28, "val": 12}


def test_a_full_disk_names_the_file_and_leaves_no_partial_cohort(tmp_path, monkeypatch):
    real = Path.write_bytes
    calls = []

    def full_disk(self, data):
        calls.append(self)
        if len(calls) == 3:
            real(self, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    out = tmp_path / "cohort"
    with pytest.raises(OutputWriteError, match=r"Cannot write .*images/site0-sub001.nii.gz: No space left on device "
                                               r"\(the disk is full: free space, or choose an --out on another disk\)"):
        generate_cohort(out, SMALL)
    assert not out.exists()  # the folder it created is gone with the two files written before the failure
