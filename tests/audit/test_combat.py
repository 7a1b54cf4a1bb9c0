"""ComBat through neuroHarmonize: site effects removed, age kept, fewer/unseen sites at apply time, persistence,
and the image-derived measures (tissue volumes, regional intensities)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from harmonize.audit.combat import (
    TISSUE_LABELS,
    ComBatHarmonizer,
    regional_intensities,
    tissue_volumes,
)
from harmonize.audit.combat_features import combat_feature_set
from harmonize.audit.features import FeatureSet
from harmonize.audit.probe import classifier_probe, regressor_probe
from harmonize.errors import ConfigError, HarmonizeError

#: Scans per site, of which the first TRAIN_PER_SITE fit ComBat and the rest are held out.
PER_SITE = 100
TRAIN_PER_SITE = 70
N_FEATURES = 8
#: How far above chance the site probe may stay after ComBat on held-out scans (site effects are estimated
#: from 70 scans per site, so a little residual site information is expected).
CHANCE_MARGIN = 0.15


def _cohort(n_sites: int, seed: int = 0, per_site: int = PER_SITE, d: int = N_FEATURES) -> dict:
    """Features with an age effect, a sex effect, and ComBat's additive + multiplicative site effects."""
    rng = np.random.default_rng(seed)
    site = np.repeat(np.arange(n_sites), per_site)
    n = len(site)
    age = rng.uniform(20, 80, n)
    sex = rng.integers(0, 2, n)
    gamma = rng.normal(0, 2, (n_sites, d))  # additive site effect
    delta = rng.uniform(0.5, 2.0, (n_sites, d))  # multiplicative site effect (scale of the noise)
    x = 5 + np.outer(age - 50, rng.normal(size=d)) * 0.15 + 0.5 * sex[:, None] + gamma[site]
    x = x + delta[site] * rng.normal(size=(n, d))
    train = (np.arange(n) % per_site) < TRAIN_PER_SITE
    return {"x": x, "site": site, "age": age, "sex": sex, "train": train}


def _cov(c: dict, rows: np.ndarray) -> dict:
    return {"age": c["age"][rows], "sex": c["sex"][rows]}


@pytest.fixture(scope="module")
def cohort3() -> dict:
    return _cohort(3)


@pytest.fixture(scope="module")
def fitted3(cohort3: dict) -> ComBatHarmonizer:
    c = cohort3
    return ComBatHarmonizer().fit(c["x"][c["train"]], c["site"][c["train"]], _cov(c, c["train"]))


@pytest.mark.parametrize("n_sites", [2, 4])
def test_site_probe_drops_to_chance_and_age_survives(n_sites: int) -> None:
    c = _cohort(n_sites)
    tr, te = c["train"], ~c["train"]
    harmonizer = ComBatHarmonizer().fit(c["x"][tr], c["site"][tr], _cov(c, tr))
    harmonised = harmonizer.transform(c["x"][te], c["site"][te], _cov(c, te))
    before = classifier_probe(c["x"][te], c["site"][te])
    after = classifier_probe(harmonised, c["site"][te])
    assert before.balanced_accuracy > 0.9
    assert after.chance == pytest.approx(1 / n_sites)
    assert after.balanced_accuracy < after.chance + CHANCE_MARGIN
    r2_before = regressor_probe(c["x"][te], c["age"][te]).r2
    r2_after = regressor_probe(harmonised, c["age"][te]).r2
    assert r2_after > 0.85
    assert r2_after > r2_before - 0.05


def test_site_means_equalised_on_fitting_scans(cohort3: dict) -> None:
    c = cohort3
    out = ComBatHarmonizer(protected=()).fit_transform(c["x"], c["site"])
    means = np.stack([out[c["site"] == s].mean(axis=0) for s in range(3)])
    raw = np.stack([c["x"][c["site"] == s].mean(axis=0) for s in range(3)])
    assert np.ptp(raw, axis=0).max() > 1.0
    # with no covariates and EB, the site means move to (almost) the grand mean
    assert np.ptp(means, axis=0).max() < 0.1 * np.ptp(raw, axis=0).max()


def test_fit_transform_equals_transform(cohort3: dict) -> None:
    c = cohort3
    harmonizer = ComBatHarmonizer()
    out = harmonizer.fit_transform(c["x"], c["site"], _cov(c, slice(None)))
    np.testing.assert_allclose(harmonizer.transform(c["x"], c["site"], _cov(c, slice(None))), out, atol=1e-10)
    assert harmonizer.sites == [0, 1, 2]


@pytest.mark.parametrize("keep_sites", [(0, 2), (1,), (2, 0)])
def test_fewer_sites_at_apply_time(cohort3: dict, fitted3: ComBatHarmonizer, keep_sites: tuple[int, ...]) -> None:
    c = cohort3
    te = ~c["train"]
    full = fitted3.transform(c["x"][te], c["site"][te], _cov(c, te))
    rows = np.concatenate([np.flatnonzero(c["site"][te] == s) for s in keep_sites])  # also in another site order
    idx = np.flatnonzero(te)[rows]
    part = fitted3.transform(c["x"][idx], c["site"][idx], _cov(c, idx))
    np.testing.assert_allclose(part, full[rows], atol=1e-10)
    # a single scan works too
    one = fitted3.transform(c["x"][idx[:1]], c["site"][idx[:1]], _cov(c, idx[:1]))
    np.testing.assert_allclose(one, full[rows[:1]], atol=1e-10)


def test_unseen_site_raises_with_names(cohort3: dict, fitted3: ComBatHarmonizer) -> None:
    c = cohort3
    sites = c["site"].copy()
    sites[:5] = 7
    with pytest.raises(HarmonizeError) as info:
        fitted3.transform(c["x"], sites, _cov(c, slice(None)))
    message = str(info.value)
    assert "site(s) [7] (5 rows)" in message
    assert "fitted on sites [0, 1, 2]" in message
    assert "Refit including" in message and "unseen='passthrough'" in message


def test_passthrough_leaves_unseen_rows_unchanged(
    cohort3: dict, fitted3: ComBatHarmonizer, caplog: pytest.LogCaptureFixture
) -> None:
    c = cohort3
    sites = c["site"].copy()
    sites[:5] = 7
    with caplog.at_level(logging.WARNING, logger="harmonize.audit.combat"):
        out = fitted3.transform(c["x"], sites, _cov(c, slice(None)), unseen="passthrough")
    np.testing.assert_array_equal(out[:5], c["x"][:5])
    known = np.arange(5, len(sites))
    np.testing.assert_allclose(out[known], fitted3.transform(c["x"][known], sites[known], _cov(c, known)), atol=1e-10)
    assert not np.allclose(out[known], c["x"][known])
    assert "5 row(s) of site(s) [7]" in caplog.text
    # the same as a constructor setting
    passthrough = ComBatHarmonizer().load_state_dict({**fitted3.state_dict(), "unseen": "passthrough"})
    np.testing.assert_array_equal(passthrough.transform(c["x"], sites, _cov(c, slice(None)))[:5], c["x"][:5])


def test_string_site_labels(cohort3: dict) -> None:
    c = cohort3
    names = np.array(["prisma", "discovery", "achieva"])[c["site"]]
    harmonizer = ComBatHarmonizer()
    out = harmonizer.fit_transform(c["x"], names, _cov(c, slice(None)))
    assert harmonizer.sites == ["achieva", "discovery", "prisma"]
    # the same model as with integer labels in the same sorted order
    codes = np.array([harmonizer.sites.index(n) for n in names])
    np.testing.assert_allclose(out, ComBatHarmonizer().fit_transform(c["x"], codes, _cov(c, slice(None))), atol=1e-10)
    with pytest.raises(HarmonizeError, match=r"site\(s\) \['trio'\].*\['achieva', 'discovery', 'prisma'\]"):
        harmonizer.transform(c["x"][:2], np.array(["trio", "prisma"]), _cov(c, slice(0, 2)))


def test_constant_feature_passes_through(cohort3: dict) -> None:
    c = cohort3
    x = c["x"].copy()
    x[:, 3] = 0.0  # a dead unit: with it, neuroHarmonize's EB priors would turn every feature into NaN
    out = ComBatHarmonizer().fit_transform(x, c["site"], _cov(c, slice(None)))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 3], 0.0)
    assert not np.allclose(out[:, 0], x[:, 0])


def test_single_feature_without_eb_message(cohort3: dict) -> None:
    c = cohort3
    out = ComBatHarmonizer().fit_transform(c["x"][:, :1], c["site"], _cov(c, slice(None)))
    assert out.shape == (len(c["x"]), 1) and np.isfinite(out).all()


@pytest.mark.parametrize("smooth_terms", [(), ("age",)])
def test_state_dict_and_file_round_trip(cohort3: dict, tmp_path, smooth_terms: tuple[str, ...]) -> None:
    c = cohort3
    tr, te = c["train"], ~c["train"]
    harmonizer = ComBatHarmonizer(smooth_terms=smooth_terms, eb=False).fit(c["x"][tr], c["site"][tr], _cov(c, tr))
    expected = harmonizer.transform(c["x"][te], c["site"][te], _cov(c, te))
    restored = ComBatHarmonizer().load_state_dict(harmonizer.state_dict())
    assert restored.smooth_terms == list(smooth_terms) and restored.eb is False
    np.testing.assert_allclose(restored.transform(c["x"][te], c["site"][te], _cov(c, te)), expected, atol=1e-10)
    path = harmonizer.save(tmp_path / "combat.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["combat.npz"]  # no temporary file left
    loaded = ComBatHarmonizer.load(path)
    np.testing.assert_allclose(loaded.transform(c["x"][te], c["site"][te], _cov(c, te)), expected, atol=1e-10)
    assert loaded.sites == [0, 1, 2] and loaded.protected == ["age", "sex"]


def test_load_errors(tmp_path) -> None:
    with pytest.raises(HarmonizeError, match="does not exist"):
        ComBatHarmonizer.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a model")
    with pytest.raises(HarmonizeError, match="is not a ComBat model saved by harmonize"):
        ComBatHarmonizer.load(tmp_path / "bad.npz")
    with pytest.raises(HarmonizeError, match=r"entries \['version'"):
        ComBatHarmonizer().load_state_dict({})


def test_fit_errors(cohort3: dict) -> None:
    c = cohort3
    x, site, cov = c["x"], c["site"], _cov(c, slice(None))
    with pytest.raises(ConfigError, match=r"at least 2 sites, got \[0\]"):
        ComBatHarmonizer().fit(x, np.zeros(len(x), int), cov)
    lonely = site.copy()
    lonely[0] = 9
    with pytest.raises(ConfigError, match="at least 2 scans") as info:
        ComBatHarmonizer().fit(x, lonely, cov)
    assert "site 9 has 1 scan(s)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        ComBatHarmonizer(protected=("age", "sex", "tiv")).fit(x, site, cov)
    assert "'tiv' is missing (available: ['age', 'sex'])" in str(info.value)
    bad_age = cov["age"].copy()
    bad_age[[3, 4]] = np.nan
    with pytest.raises(ConfigError, match=r"'age' is missing \(NaN or Inf\) in rows \[3, 4\]"):
        ComBatHarmonizer().fit(x, site, {"age": bad_age, "sex": cov["sex"]})
    with pytest.raises(ConfigError, match="'scanner_field' takes a single value within each site"):
        ComBatHarmonizer(protected=("scanner_field",)).fit(x, site, {"scanner_field": 1.5 + site})
    with pytest.raises(ConfigError, match=r"'field' is constant \(3\)"):
        ComBatHarmonizer(protected=("field",)).fit(x, site, {"field": np.full(len(x), 3.0)})
    nan_x = x.copy()
    nan_x[2, 1] = np.inf
    with pytest.raises(ConfigError, match=r"rows \[2\] \(1 rows\) hold NaN or Inf"):
        ComBatHarmonizer().fit(nan_x, site, cov)
    with pytest.raises(ConfigError, match="one label per row"):
        ComBatHarmonizer().fit(x, site[:-1], cov)


def test_settings_and_transform_errors(cohort3: dict, fitted3: ComBatHarmonizer) -> None:
    c = cohort3
    with pytest.raises(ConfigError, match=r"smooth_terms \['tiv'\] are not protected"):
        ComBatHarmonizer(smooth_terms=("tiv",))
    with pytest.raises(ConfigError, match="Argument 'unseen'"):
        ComBatHarmonizer(unseen="ignore")
    with pytest.raises(ConfigError) as info:  # every problem at once
        ComBatHarmonizer(protected=("age", "age"), smooth_terms=("tiv",), unseen="ignore")
    assert info.value.message == "ComBatHarmonizer: invalid arguments." and len(info.value.problems) == 3
    with pytest.raises(HarmonizeError, match="not fitted; call fit"):
        ComBatHarmonizer().transform(c["x"], c["site"], _cov(c, slice(None)))
    with pytest.raises(ConfigError, match="features have 3 columns, but the model was fitted on 8"):
        fitted3.transform(c["x"][:, :3], c["site"], _cov(c, slice(None)))


# ------------------------------------------------------------------------------------------------ feature sets
def _feature_set(c: dict, rows: np.ndarray) -> FeatureSet:
    ids = np.array([f"sub-{i:03d}" for i in range(len(c["x"]))])
    meta = {"subject_id": ids[rows], "site": c["site"][rows], "age": c["age"][rows], "sex": c["sex"][rows]}
    return FeatureSet(c["x"][rows].astype(np.float32), c["age"][rows, None] + 1.0, meta)


def test_combat_feature_set_matches_harmonizer(cohort3: dict, fitted3: ComBatHarmonizer) -> None:
    c = cohort3
    train, test = _feature_set(c, c["train"]), _feature_set(c, ~c["train"])
    out = combat_feature_set(train, test)
    assert out.features.dtype == np.float32 and out.features.shape == test.features.shape
    # fitted on float32 features, so compare loosely with the float64 fit
    expected = fitted3.transform(c["x"][~c["train"]], test.meta["site"], _cov(c, ~c["train"]))
    np.testing.assert_allclose(out.features, expected, atol=1e-3)
    assert out.predictions is test.predictions
    np.testing.assert_array_equal(out.meta["site"], test.meta["site"])


def test_combat_feature_set_unseen_and_missing(cohort3: dict) -> None:
    c = cohort3
    train, test = _feature_set(c, c["train"]), _feature_set(c, ~c["train"])
    test.meta["site"] = test.meta["site"].copy()
    test.meta["site"][:4] = -1
    with pytest.raises(HarmonizeError, match=r"site\(s\) \[-1\] \(4 rows\)"):
        combat_feature_set(train, test)
    out = combat_feature_set(train, test, unseen="passthrough")
    np.testing.assert_array_equal(out.features[:4], test.features[:4])
    with pytest.raises(ConfigError, match="training row"):
        combat_feature_set(test, test)
    train.meta["sex"] = train.meta["sex"].copy()
    train.meta["sex"][[0, 5]] = -1
    with pytest.raises(ConfigError, match=r"'sex' is missing for 2 scan\(s\) \['sub-000', 'sub-005'\]"):
        combat_feature_set(train, _feature_set(c, ~c["train"]))
    # without sex as a covariate it works
    out = combat_feature_set(train, _feature_set(c, ~c["train"]), protected=("age",))
    assert out.features.shape == (90, N_FEATURES)
    with pytest.raises(ConfigError, match=r"metadata has no \['tiv'\]"):
        combat_feature_set(_feature_set(c, c["train"]), _feature_set(c, ~c["train"]), protected=("tiv",))


# ---------------------------------------------------------------------------------------- image-derived measures
def _label_map() -> np.ndarray:
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels.reshape(-1)[:100] = 1  # 100 CSF voxels
    labels.reshape(-1)[100:300] = 2  # 200 GM
    labels.reshape(-1)[300:600] = 3  # 300 WM
    return labels


def test_tissue_volumes_exact(tmp_path) -> None:
    labels = _label_map()
    iso = tmp_path / "iso.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0])), iso)  # 8 mm^3 voxels
    rotated = np.diag([1.0, 1.5, 2.0, 1.0])
    rotated[:3, :3] = rotated[:3, :3] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])  # 3 mm^3, rotated axes
    rot = tmp_path / "rot.nii.gz"
    nib.save(nib.Nifti1Image(labels[..., None], rotated), rot)  # a trailing channel of size 1
    volumes = tissue_volumes([iso, str(rot), labels[None]], voxel_volume_mm3=0.5)
    np.testing.assert_allclose(
        volumes, [[0.8, 1.6, 2.4], [0.3, 0.6, 0.9], [0.05, 0.1, 0.15]], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(tissue_volumes(iso), [[0.8, 1.6, 2.4]])
    assert list(TISSUE_LABELS) == ["csf", "gm", "wm"]


def test_tissue_volumes_errors(tmp_path) -> None:
    labels = _label_map()
    with pytest.raises(ConfigError, match="carries no affine; give voxel_volume_mm3"):
        tissue_volumes([labels])
    labels[0, 0, 0] = 5
    with pytest.raises(ConfigError, match=r"label values \[5\] are not tissue labels"):
        tissue_volumes([labels], voxel_volume_mm3=1.0)
    with pytest.raises(HarmonizeError, match="does not exist"):
        tissue_volumes([tmp_path / "missing.nii.gz"])
    with pytest.raises(ConfigError, match="2-D or 3-D volume"):
        tissue_volumes([np.zeros((2, 3, 3, 3))], voxel_volume_mm3=1.0)
    with pytest.raises(ConfigError, match=r"'voxel_volume_mm3' must be a finite number > 0 or None, got 0.0"):
        tissue_volumes([labels], voxel_volume_mm3=0.0)


def test_regional_intensities() -> None:
    labels = _label_map()
    image = labels * 10.0 + 1.0
    image[labels == 3] += np.linspace(-1, 1, 300)  # mean unchanged
    np.testing.assert_allclose(regional_intensities(image, labels), [11.0, 21.0, 31.0])
    no_wm = np.where(labels == 3, 0, labels)
    out = regional_intensities(image, no_wm)
    np.testing.assert_allclose(out[:2], [11.0, 21.0])
    assert np.isnan(out[2])
    with pytest.raises(ConfigError, match=r"image shape \(10, 10, 9\) differs from label shape \(10, 10, 10\)"):
        regional_intensities(image[..., :9], labels)


def test_smooth_term_outside_the_fitted_range_is_named(cohort3: dict) -> None:
    """A smooth (B-spline) term has no basis outside the fitting scans' range: a clear error, not statsmodels'."""
    c = cohort3
    middle = c["train"] & (c["age"] > 30) & (c["age"] < 70)
    harmonizer = ComBatHarmonizer(smooth_terms=("age",), eb=False).fit(c["x"][middle], c["site"][middle],
                                                                       _cov(c, middle))
    inside = ~c["train"] & (c["age"] > 35) & (c["age"] < 65)
    assert np.isfinite(harmonizer.transform(c["x"][inside], c["site"][inside], _cov(c, inside))).all()
    old = ~c["train"] & (c["age"] > 75)
    with pytest.raises(ConfigError, match=r"smooth term is only defined") as err:
        harmonizer.transform(c["x"][old], c["site"][old], _cov(c, old))
    assert any(p.startswith(f"'age' of {int(old.sum())} row(s)") and "outside the fitted range [30" in p
               for p in err.value.problems)
