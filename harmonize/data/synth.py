"""A synthetic multi-site MRI cohort with known ground truth, built from the MNI templates shipped with nilearn.

Each subject is the MNI ICBM152 anatomy (:mod:`harmonize.data.templates`) with

- age-related atrophy (:class:`~harmonize.data.transforms.Atrophy`): cortical thinning and ventricular
  enlargement that grow with age, plus individual variation, so age is predictable from anatomy;
- a head size that depends on sex (men about 5% larger linearly, i.e. 15% in volume) and an individual
  smooth diffeomorphic shape (:class:`~harmonize.data.transforms.Deformation`);

and each site has its own age distribution and its own acquisition
(:class:`~harmonize.data.transforms.SiteAcquisition`: tissue contrast, contrast curve, resolution, bias field,
noise level, intensity unit; optionally a flipped storage axis, stored correctly in the affine). Sites differ
the way real scanners do (contrast, bias, noise, blur), not by a mean intensity that z-normalisation removes.

Outputs (:func:`generate_cohort`): ``images/<id>.nii.gz`` (float32), ``labels/<id>.nii.gz`` (uint8: 0
background, 1 CSF, 2 GM, 3 WM), ``manifest.csv`` (``subject_id,image,label,site,age,sex,split``, paths relative
to the manifest) and ``cohort.json`` (every generating parameter, per site and per subject, and the seed).
The same configuration gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torchio as tio

from harmonize import __version__, defaults
from harmonize.data.site_profile import (
    REFERENCE_TISSUE_INTENSITIES,
    SiteProfile,
)
from harmonize.data.synth_files import (
    AGE_DECIMALS,
    COHORT_NAME,
    GENERATOR,
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_NAME,
    NIFTI_SUFFIX,
    _cohort_json,
    _jsonable,
    _manifest_text,
    _previous_cohort_files,
    _write_bytes_atomic,
    _write_nifti,
)
from harmonize.data.templates import TISSUE_NAMES, Templates, load_templates
from harmonize.data.transforms.atrophy import VENTRICLE_SMOOTHING_MM, Atrophy
from harmonize.data.transforms.deformation import Deformation
from harmonize.data.transforms.random_site_acquisition import RandomSiteAcquisition
from harmonize.data.transforms.site_acquisition import (
    BACKGROUND_THRESHOLD,
    SiteAcquisition,
)
from harmonize.errors import integer_problem, number_problem, raise_problems, range_problem
from harmonize.keys import Keys, Sex, Split
from harmonize.output_dir import OutputDir
from harmonize.progress import progress as show_progress

__all__ = [
    "COHORT_NAME",
    "MANIFEST_NAME",
    "SiteProfile",
    "SynthConfig",
    "cohort_manifest_text",
    "draw_site_profiles",
    "generate_cohort",
    "held_out_split",
    "tissue_labels",
]

logger = logging.getLogger(__name__)


# --- the anatomy model ----------------------------------------------------------------------------------------
#: Mean linear head-size factor per sex (ICV differs by about 15% between men and women) and its spread.
HEAD_SCALE_MEAN = MappingProxyType({Sex.FEMALE: 0.975, Sex.MALE: 1.025})
HEAD_SCALE_STD = 0.025
HEAD_SCALE_LIMITS = (0.85, 1.15)
#: Smooth individual shape: velocity standard deviation (mm) at each of CONTROL_POINTS^3 control points.
SHAPE_VELOCITY_STD_MM = 3.0
SHAPE_CONTROL_POINTS = 5
#: Atrophy starts at this age and reaches "level 1" this many years later.
ATROPHY_ONSET_YEARS = 20.0
ATROPHY_SPAN_YEARS = 60.0
#: Fraction of pial-side grey matter lost per atrophy level (linear in age), and its individual spread.
GM_THINNING_PER_LEVEL = 0.4
GM_THINNING_STD = 0.04
#: Ventricle-wall displacement (mm) at level 1 (quadratic in age: ventricles grow faster when older).
VENTRICLE_MM_PER_LEVEL2 = 4.0
VENTRICLE_STD_MM = 0.4
#: Decimals kept for velocities (the stored values are the values used; ages: AGE_DECIMALS).
VELOCITY_DECIMALS = 3

# --- the scanner model ----------------------------------------------------------------------------------------
#: Half-widths of the between-site ranges at site_effect=1 (CSF, GM, WM intensities; gamma; bias coefficient).
TISSUE_INTENSITY_SPREAD = (0.065, 0.05, 0.025)
GAMMA_SPREAD = 0.15
BIAS_COEFFICIENT_SPREAD = 0.12
#: Between-site ranges at site_effect=1: blur FWHM (mm, per axis), noise std and log intensity unit.
BLUR_FWHM_MAX_MM = 4.0
NOISE_STD_RANGE = (0.01, 0.04)
LOG_INTENSITY_SCALE_SPREAD = 0.7
#: Within-site, per-scan variation: bias coefficients (positioning) and intensity unit (calibration).
SUBJECT_BIAS_JITTER = 0.05
SUBJECT_LOG_SCALE_JITTER = 0.05
#: Default sites' age ranges are the cohort's range shrunk at each end by up to this fraction.
DEFAULT_AGE_SHRINK = 0.15
_MAX_SEED = 2**31
# Independent random streams, keyed as SeedSequence(seed, spawn_key=(stream, ...)).
_SITE_STREAM, _SUBJECT_STREAM = 0, 1


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic cohort.

    Attributes:
        n_sites: number of sites (2..64); ignored when ``sites`` is given.
        subjects_per_site: subjects per site (>= 3 so each split can hold one).
        shape: cubic image shape in voxels (the field of view is 200 mm, so 64 gives 3.125 mm voxels).
        seed: seed of every random draw; the same config writes byte-identical files.
        biased: give sites partly overlapping age ranges (adjacent windows sharing ``biased_overlap`` of their
            width) instead of broadly overlapping ones, for the biased-dataset experiments.
        biased_overlap: fraction in [0, 1) of a site's age window shared with the next site's.
        biased_splits: with ``biased``, the splits whose subjects take their site's age window; the others are drawn
            from the whole ``age_range`` (``("train",)``: trained on biased sites, audited on every age at every site, as in
            Dinsdale et al.'s biased-dataset experiments).
        age_range: ages (years) of the whole cohort.
        val_fraction: fraction of each site's subjects in the validation split.
        test_fraction: fraction of each site's subjects in the test split.
        male_fraction: fraction of each site's subjects who are male.
        site_effect: scales the between-site spread of acquisition parameters (0: identical scanners,
            1: the default, realistic differences).
        vary_orientation: store odd-numbered sites with the first array axis reversed (LAS instead of RAS).
        sites: explicit site profiles (overrides ``n_sites``, ``biased`` and the drawn acquisitions).

    Raises:
        ConfigError: on construction, naming every setting out of range (with its value and what is allowed).
    """

    n_sites: int = defaults.SYNTH_SITES
    subjects_per_site: int = defaults.SYNTH_SUBJECTS_PER_SITE
    shape: int = defaults.SYNTH_SHAPE
    seed: int = defaults.SEED
    biased: bool = False
    biased_overlap: float = 0.5
    biased_splits: tuple[str, ...] = (Split.TRAIN, Split.VAL, Split.TEST)
    age_range: tuple[float, float] = (20.0, 85.0)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    male_fraction: float = 0.5
    site_effect: float = 1.0
    vary_orientation: bool = False
    sites: tuple[SiteProfile, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        raise_problems("SynthConfig", self._problems())

    def _problems(self) -> list[str]:
        """What is wrong with this configuration, one line each (empty when valid)."""
        found = [None if self.sites is not None else integer_problem("n_sites", self.n_sites, minimum=2, maximum=64),
                 integer_problem("subjects_per_site", self.subjects_per_site, minimum=3),
                 integer_problem("shape", self.shape, minimum=16), integer_problem("seed", self.seed, minimum=0),
                 number_problem("biased_overlap", self.biased_overlap, strict=False, maximum=1, strict_maximum=True),
                 number_problem("site_effect", self.site_effect, strict=False, maximum=3)]
        fractions = [number_problem(name, getattr(self, name), strict=False, maximum=1)
                     for name in ("val_fraction", "test_fraction", "male_fraction")]
        found = [p for p in found + fractions if p]
        if not any(fractions) and self.val_fraction + self.test_fraction >= 1.0:
            found.append(f"'val_fraction' + 'test_fraction' must be < 1 to leave some training subjects, got "
                         f"{self.val_fraction} + {self.test_fraction}")
        unknown = sorted(set(map(str, self.biased_splits)) - {str(s) for s in Split})
        if unknown:
            found.append(f"biased_splits: {unknown} are not splits ({', '.join(map(str, Split))})")
        if problem := range_problem("age_range", self.age_range, minimum=0, strict_order=True):
            found.append(problem)
        if self.sites is not None:
            if len(self.sites) < 2:
                found.append(f"sites must hold at least 2 profiles, got {len(self.sites)}")
            names = [getattr(site, "name", None) for site in self.sites]
            if len(set(names)) != len(names):
                found.append(f"site names must be unique, got {names}")
            for index, site in enumerate(self.sites):
                if isinstance(site, SiteProfile):
                    found.extend(site.problems())
                else:
                    found.append(f"sites[{index}] must be a SiteProfile, got {type(site).__name__}")
        return found

    def site_names(self) -> list[str]:
        """The site ids: ``site0``, ``site1``, ... (zero-padded to a common width) or the given profiles' names."""
        if self.sites is not None:
            return [site.name for site in self.sites]
        width = len(str(self.n_sites - 1))
        return [f"site{i:0{width}d}" for i in range(self.n_sites)]


def held_out_split(fraction: float, val_share: float = defaults.DEMO_HELD_OUT_VAL_SHARE) -> dict[str, float]:
    """``val_fraction`` and ``test_fraction`` for :class:`SynthConfig` that hold ``fraction`` of each site out.

    Example: ``SynthConfig(subjects_per_site=60, **held_out_split(32 / 60))`` trains on 28 subjects per site.
    """
    return {"val_fraction": fraction * val_share, "test_fraction": fraction * (1 - val_share)}


def tissue_labels(tissues: np.ndarray, threshold: float = BACKGROUND_THRESHOLD) -> np.ndarray:
    """Hard labels from partial-volume tissue maps: 0 where they sum below ``threshold``, else 1 + argmax.

    Args:
        tissues: ``(3, X, Y, Z)`` CSF, GM and WM probabilities.
        threshold: background threshold on the summed probabilities.

    Returns:
        uint8 labels ``(X, Y, Z)``: 0 background, 1 CSF, 2 GM, 3 WM.
    """
    labels = (np.argmax(tissues, axis=0) + 1).astype(np.uint8)
    labels[tissues.sum(axis=0) < threshold] = 0
    return labels


def draw_site_profiles(config: SynthConfig) -> list[SiteProfile]:
    """Draw every site's age range and acquisition (or return ``config.sites``).

    Site ``i``'s acquisition depends only on ``config.seed``, ``i`` and ``config.site_effect``, so adding sites
    leaves the first ones unchanged.

    Args:
        config: the cohort settings.

    Returns:
        One :class:`SiteProfile` per site.
    """
    if config.sites is not None:
        return list(config.sites)
    names = config.site_names()
    age_ranges = _site_age_ranges(config, names)
    sampler = _site_sampler(config.site_effect)
    profiles = []
    for index, name in enumerate(names):
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_SITE_STREAM, index)))
        params = sampler.get_params(rng)
        shrink = rng.uniform(0.0, DEFAULT_AGE_SHRINK, size=2)
        if not config.biased:
            low, high = config.age_range
            span = high - low
            age_ranges[index] = (low + shrink[0] * span, high - shrink[1] * span)
        profiles.append(
            SiteProfile(
                name=name,
                age_range=tuple(round(float(a), AGE_DECIMALS) for a in age_ranges[index]),  # type: ignore[arg-type]
                tissue_intensities=tuple(params["tissue_intensities"]),
                gamma=params["gamma"],
                blur_fwhm_mm=tuple(params["blur_fwhm_mm"]),  # type: ignore[arg-type]
                bias_coefficients=tuple(params["bias_coefficients"]),
                bias_order=params["bias_order"],
                noise_std=params["noise_std"],
                intensity_scale=params["intensity_scale"],
                flip_axes=(0,) if config.vary_orientation and index % 2 == 1 else (),
            )
        )
    return profiles


def generate_cohort(
    out_dir: str | os.PathLike, config: SynthConfig | None = None, overwrite: bool = False, progress: bool = False
) -> Path:
    """Generate the synthetic multi-site cohort into ``out_dir`` and return the manifest's path.

    Args:
        out_dir: output directory; created if missing. It must be empty unless ``overwrite`` is true.
        config: the cohort settings (defaults: 4 sites x 40 subjects at 64^3).
        overwrite: write into a non-empty directory: the files harmonize wrote there (recorded in
            ``.harmonize-outputs.json``, or listed by a previous ``cohort.json``) are removed, so none is left
            stale; other files are kept, and refused by name where the cohort is written (``images/``,
            ``labels/``, ``manifest.csv``, ``cohort.json``).
        progress: show progress on stderr (a bar on a terminal, else a line per hundred subjects).

    Returns:
        Path of ``manifest.csv``.

    Raises:
        OutputDirError: ``out_dir`` is a file or not writable, non-empty while ``overwrite`` is false, or holds
            files harmonize did not write where the cohort goes (see :class:`~harmonize.output_dir.OutputDir`).
        FolderLockedError: another run is writing ``out_dir``.
        OutputWriteError: a file cannot be written (full disk), naming it; what this run wrote is removed.
    """
    config = config or SynthConfig()
    out = Path(out_dir)
    claim = OutputDir(out, "harmonize synth", overwrite=overwrite,
                      reserved=(IMAGES_DIR, LABELS_DIR, COHORT_NAME, MANIFEST_NAME),
                      known_outputs=lambda folder: _previous_cohort_files(folder) or (), discard_on_error=True)
    with claim:
        return _write_cohort(out, config, progress)


def _write_cohort(out: Path, config: SynthConfig, progress: bool) -> Path:
    """Render every subject and write the cohort into ``out`` (claimed by :func:`generate_cohort`)."""
    started = time.perf_counter()
    templates = load_templates(config.shape)
    sites = draw_site_profiles(config)
    subjects = _draw_subjects(config, sites)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    site_by_name = {site.name: site for site in sites}
    for subject in show_progress(subjects, "synth", unit="subject", enabled=progress):
        image, labels, affine = _render_subject(templates, subject, site_by_name[subject["site"]])
        _write_nifti(out / subject[Keys.IMAGE], image, affine)
        _write_nifti(out / subject[Keys.LABEL], labels, affine)
    cohort = {
        "generator": GENERATOR,
        "version": __version__,
        "seed": config.seed,
        "config": _jsonable(dataclasses.asdict(config)),
        "template": {
            "source": "MNI ICBM152 2009a symmetric (nilearn)",
            "shape": list(templates.shape),
            "voxel_size_mm": templates.voxel_size,
            "affine": templates.affine.tolist(),
            "tissues": list(TISSUE_NAMES),
        },
        "labels": {"0": "background", **{str(i + 1): name for i, name in enumerate(TISSUE_NAMES)}},
        "sites": [_jsonable(dataclasses.asdict(site)) for site in sites],
        "subjects": _jsonable(subjects),
    }
    _write_bytes_atomic(out / COHORT_NAME, _cohort_json(cohort).encode())
    manifest = out / MANIFEST_NAME
    _write_bytes_atomic(manifest, _manifest_text(subjects).encode())
    logger.info(
        "Wrote %d subjects from %d sites at %d^3 to %s in %.1f s",
        len(subjects), len(sites), config.shape, out, time.perf_counter() - started,
    )
    return manifest


def cohort_manifest_text(config: SynthConfig | None = None) -> str:
    """The ``manifest.csv`` that :func:`generate_cohort` writes for ``config``, without rendering any image.

    The subjects and sites are drawn exactly as :func:`generate_cohort` draws them, so this is the manifest of
    the cohort it would generate (``data_manifests/embedded_cohort.csv`` is this text for the defaults).
    """
    config = config or SynthConfig()
    return _manifest_text(_draw_subjects(config, draw_site_profiles(config)))


# --- drawing ---------------------------------------------------------------------------------------------------


def _site_sampler(site_effect: float) -> RandomSiteAcquisition:
    s = float(site_effect)
    return RandomSiteAcquisition(
        tissue_intensities=[
            (ref - s * d, ref + s * d) for ref, d in zip(REFERENCE_TISSUE_INTENSITIES, TISSUE_INTENSITY_SPREAD)
        ],
        gamma=(max(1.0 - s * GAMMA_SPREAD, 0.1), 1.0 + s * GAMMA_SPREAD),
        blur_fwhm_mm=(0.0, s * BLUR_FWHM_MAX_MM),
        bias_coefficients=s * BIAS_COEFFICIENT_SPREAD,
        noise_std=(NOISE_STD_RANGE[0], NOISE_STD_RANGE[0] + s * (NOISE_STD_RANGE[1] - NOISE_STD_RANGE[0])),
        intensity_scale=(math.exp(-s * LOG_INTENSITY_SCALE_SPREAD), math.exp(s * LOG_INTENSITY_SCALE_SPREAD)),
    )


def _site_age_ranges(config: SynthConfig, names: Sequence[str]) -> list[tuple[float, float]]:
    """Biased: adjacent windows of equal width sharing ``biased_overlap`` of it, spanning the age range."""
    low, high = config.age_range
    n = len(names)
    if not config.biased:
        return [(low, high)] * n
    width = (high - low) / (1.0 + (n - 1) * (1.0 - config.biased_overlap))
    step = width * (1.0 - config.biased_overlap)
    return [(low + i * step, low + i * step + width) for i in range(n)]


def _draw_subjects(config: SynthConfig, sites: Sequence[SiteProfile]) -> list[dict[str, Any]]:
    n = config.subjects_per_site
    subjects = []
    width = max(3, len(str(n - 1)))
    for site_index, site in enumerate(sites):
        site_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_SUBJECT_STREAM, site_index)))
        n_male = int(round(n * config.male_fraction))
        sexes = site_rng.permutation([Sex.MALE] * n_male + [Sex.FEMALE] * (n - n_male))
        splits = _split_labels(n, config.val_fraction, config.test_fraction, site_rng)
        for index in range(n):
            rng = np.random.default_rng(
                np.random.SeedSequence(config.seed, spawn_key=(_SUBJECT_STREAM, site_index, index))
            )
            subject_id = f"{site.name}-sub{index:0{width}d}"
            sex = Sex(str(sexes[index]))
            whole = config.biased and str(splits[index]) not in config.biased_splits
            ages = config.age_range if whole else site.age_range
            age = round(float(rng.uniform(*ages)), AGE_DECIMALS)
            level = max(age - ATROPHY_ONSET_YEARS, 0.0) / ATROPHY_SPAN_YEARS
            gm_thinning = float(np.clip(GM_THINNING_PER_LEVEL * level + rng.normal(0, GM_THINNING_STD), 0.0, 0.9))
            ventricle_mm = VENTRICLE_MM_PER_LEVEL2 * level**2 + rng.normal(0, VENTRICLE_STD_MM)
            ventricle_mm = float(np.clip(ventricle_mm, 0.0, VENTRICLE_SMOOTHING_MM))
            head_scale = float(np.clip(rng.normal(HEAD_SCALE_MEAN[sex], HEAD_SCALE_STD), *HEAD_SCALE_LIMITS))
            velocity = np.round(
                rng.normal(0.0, SHAPE_VELOCITY_STD_MM, (3,) + (SHAPE_CONTROL_POINTS,) * 3), VELOCITY_DECIMALS
            )
            bias = [c + float(rng.normal(0, SUBJECT_BIAS_JITTER)) for c in site.bias_coefficients]
            intensity_scale = site.intensity_scale * math.exp(float(rng.normal(0, SUBJECT_LOG_SCALE_JITTER)))
            subjects.append({
                Keys.SUBJECT_ID: subject_id,
                Keys.IMAGE: f"{IMAGES_DIR}/{subject_id}{NIFTI_SUFFIX}",
                Keys.LABEL: f"{LABELS_DIR}/{subject_id}{NIFTI_SUFFIX}",
                Keys.SITE: site.name,
                Keys.AGE: age,
                Keys.SEX: str(sex),
                Keys.SPLIT: str(splits[index]),
                "atrophy": {"gm_thinning": gm_thinning, "ventricle_dilation_mm": ventricle_mm},
                "deformation": {"scale": head_scale, "velocity_mm": velocity.tolist()},
                "acquisition": {
                    "tissue_intensities": list(site.tissue_intensities),
                    "gamma": site.gamma,
                    "blur_fwhm_mm": list(site.blur_fwhm_mm),
                    "bias_coefficients": bias,
                    "bias_order": site.bias_order,
                    "noise_std": site.noise_std,
                    "noise_seed": int(rng.integers(_MAX_SEED)),
                    "intensity_scale": intensity_scale,
                },
                "flip_axes": list(site.flip_axes),
            })
    return subjects


def _split_labels(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    n_train = max(n - n_val - n_test, 1)
    n_val = min(n_val, n - n_train)
    n_test = n - n_train - n_val
    splits = np.array([Split.TRAIN] * n_train + [Split.VAL] * n_val + [Split.TEST] * n_test, dtype=object)
    return rng.permutation(splits)


# --- rendering -------------------------------------------------------------------------------------------------


def _render_subject(
    templates: Templates, subject: dict[str, Any], site: SiteProfile
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tissues = tio.LabelMap(tensor=torch.from_numpy(templates.tissues()), affine=templates.affine)
    sample = tio.Subject({Keys.TISSUES: tissues})
    sample = Atrophy(**subject["atrophy"], copy=False)(sample)
    sample = Deformation(**subject["deformation"], copy=False)(sample)
    sample = SiteAcquisition(**subject["acquisition"], copy=False)(sample)
    image = sample[Keys.IMAGE].data.numpy()[0]
    labels = tissue_labels(sample[Keys.TISSUES].data.numpy())
    affine = np.array(templates.affine, dtype=np.float64)
    for axis in site.flip_axes:
        image, labels = np.flip(image, axis), np.flip(labels, axis)
        affine = _flipped_affine(affine, axis, image.shape[axis])
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.uint8), affine


def _flipped_affine(affine: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Affine of an array reversed along ``axis``, so every voxel keeps its world position."""
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, axis] * (size - 1)
    flipped[:3, axis] = -affine[:3, axis]
    return flipped
