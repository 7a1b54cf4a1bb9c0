"""Retain and forget sets of 2D reconstruction samples, for the machine-unlearning experiments.

A sample is a dict keyed by :class:`~harmonize.keys.Keys`: the zero-filled magnitude ``IMAGE`` (network input,
``(1, H, W)``), the fully sampled magnitude ``TARGET``, the k-space ``KSPACE`` / ``MASKED_KSPACE``
(``(coils, H, W, 2)``), the line mask ``SAMPLING_MASK``, the ``FORGET`` flag (bool tensor), the ``VOLUME_ID``
and ``SLICE_INDEX`` (metrics are per volume), and any extra fields (e.g. ``SITE``). Each volume is scaled so
that its target's maximum is 1, so PSNR and SSIM use a data range of 1.

Two scenarios (Xue et al., "Erase to Enhance", build retain = brain, forget = knee):

- :func:`anatomy_shift_splits`: retain = synthetic brain scans (warped MNI T1 slices), forget = phantoms, a
  different anatomy (the embedded stand-in for brain vs knee).
- :func:`site_forget_splits`: a multi-site cohort from a manifest, where one site (or the rows marked
  ``forget``) withdraws consent and must be forgotten.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.transforms import LoadImage, Orientation

from harmonize import defaults
from harmonize.errors import ManifestError, integer_problem, raise_problems
from harmonize.keys import Keys, MaskType, PhantomKind, Split
from harmonize.recon.brain_volumes import brain_volume, random_brain_warp
from harmonize.recon.coil_maps import simulate_coil_maps
from harmonize.recon.kspace import SimulateKspaced
from harmonize.recon.phantoms import phantom_volume
from harmonize.recon.undersample import UndersampleKspaced, undersampling_problems

__all__ = [
    "KspaceSettings",
    "ReconSplits",
    "anatomy_shift_splits",
    "central_axial_slices",
    "manifest_groups",
    "site_forget_splits",
    "volume_items",
]

logger = logging.getLogger(__name__)

#: Fraction of a volume's foreground extent (along z) from which central axial slices are taken.
CENTRAL_RANGE = (0.35, 0.65)
#: Percentile of a volume's foreground used as its white level before clipping to [0, 1].
WHITE_PERCENTILE = 99.5
#: A voxel above this fraction of the white level is foreground when looking for the head's extent.
FOREGROUND_FRACTION = 0.05
#: Foreground voxels used to estimate the white level.
_QUANTILE_SAMPLES = 100_000
#: Largest seed drawn for per-volume mask generators.
_SEED_BOUND = 2**31 - 1


@dataclass(frozen=True)
class KspaceSettings:
    """How samples are acquired: Cartesian mask, acceleration, centre fraction and number of coils.

    Attributes:
        mask_type: ``equispaced`` or ``random`` (:class:`~harmonize.keys.MaskType`).
        acceleration: undersampling factor ``R``.
        center_fraction: fraction of central k-space lines always sampled.
        num_coils: 1 for single-coil k-space; more simulates smooth coil sensitivities.
        keep_kspace: keep ``KSPACE`` and ``MASKED_KSPACE`` in each sample (needed by k-space networks such as
            VarNet; an image-domain U-Net needs only ``IMAGE`` and ``TARGET``).

    Raises:
        ConfigError: on construction, naming every setting out of range.
    """

    mask_type: MaskType | str = MaskType.EQUISPACED
    acceleration: float = defaults.RECON_ACCELERATION
    center_fraction: float = defaults.RECON_CENTER_FRACTION
    num_coils: int = 1
    keep_kspace: bool = True

    def __post_init__(self) -> None:
        self.check()

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when valid)."""
        problems = undersampling_problems(self.acceleration, self.center_fraction, self.mask_type)
        return problems + [p for p in (integer_problem("num_coils", self.num_coils),) if p]

    def check(self) -> None:
        """Raise :class:`~harmonize.errors.ConfigError` listing every setting out of range (run on construction)."""
        raise_problems("KspaceSettings", self.problems())


@dataclass
class ReconSplits:
    """The four sets of the unlearning protocol (Xue et al.): retain/forget x train/test.

    Metrics: BTA on ``retain_test``, KTA on ``forget_test``, UA on ``forget_train``. Each set is a list of
    sample dicts or any map-style dataset of them (e.g. :class:`~harmonize.recon.fastmri.FastMRISliceDataset`).
    """

    retain_train: Sequence[dict[str, Any]] = field(default_factory=list)
    forget_train: Sequence[dict[str, Any]] = field(default_factory=list)
    retain_test: Sequence[dict[str, Any]] = field(default_factory=list)
    forget_test: Sequence[dict[str, Any]] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        """Number of slices in each set."""
        names = ("retain_train", "forget_train", "retain_test", "forget_test")
        return {name: len(getattr(self, name)) for name in names}


def volume_items(
    volume: np.ndarray,
    volume_id: str,
    forget: bool,
    kspace: KspaceSettings,
    rng: np.random.Generator,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Turn a magnitude volume ``(slices, H, W)`` into reconstruction samples, one per slice.

    The volume is scaled to a maximum of 1, each slice gets its fully sampled k-space (through simulated coil
    maps if ``kspace.num_coils > 1``, one set per volume), an undersampling mask (seeded from ``rng``) and the
    zero-filled input.

    Args:
        volume: ``(slices, H, W)`` non-negative magnitudes.
        volume_id: id of the volume, written to every sample.
        forget: whether the volume belongs to the forget set.
        kspace: acquisition settings.
        rng: random generator (masks, coil maps).
        extra: further fields copied into every sample (e.g. ``{Keys.SITE: "A"}``).

    Returns:
        One sample dict per slice.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume {volume_id!r} must be (slices, H, W), got shape {volume.shape}.")
    volume = volume / max(float(volume.max()), 1e-6)
    coil_maps = simulate_coil_maps(volume.shape[1:], kspace.num_coils, rng) if kspace.num_coils > 1 else None
    simulate = SimulateKspaced(keys=Keys.IMAGE, coil_maps=coil_maps)
    undersample = UndersampleKspaced(
        mask_type=kspace.mask_type, acceleration=kspace.acceleration, center_fraction=kspace.center_fraction
    ).set_random_state(seed=int(rng.integers(_SEED_BOUND)))
    items = []
    for index, image in enumerate(volume):
        sample = undersample(simulate({Keys.IMAGE: torch.from_numpy(image.copy())}))
        if not kspace.keep_kspace:
            sample.pop(Keys.KSPACE)
            sample.pop(Keys.MASKED_KSPACE)
        sample[Keys.FORGET] = torch.tensor(bool(forget))
        sample[Keys.VOLUME_ID] = str(volume_id)
        sample[Keys.SLICE_INDEX] = index
        sample.update(extra or {})
        items.append(sample)
    return items


def _check_counts(**counts: int) -> None:
    raise_problems("The numbers of volumes and slices",
                   [integer_problem(name, value) for name, value in counts.items()])


def anatomy_shift_splits(
    retain_train: int = 40,
    forget_train: int = 8,
    retain_test: int = 8,
    forget_test: int = 8,
    slices_per_volume: int = 4,
    size: int = 64,
    kspace: KspaceSettings | None = None,
    phantom_kind: PhantomKind | str = PhantomKind.MIXED,
    seed: int = 0,
) -> ReconSplits:
    """Retain = synthetic brain scans, forget = phantoms: the embedded analogue of brain vs knee.

    Every volume is a distinct subject or phantom; test volumes are disjoint from training ones. Each set draws
    from its own child generator of ``seed``, so changing one count leaves the other sets unchanged.

    Args:
        retain_train: brain volumes to train on.
        forget_train: phantom volumes to train on (and later forget; UA is measured on them).
        retain_test: brain volumes for BTA.
        forget_test: phantom volumes for KTA.
        slices_per_volume: slices per volume.
        size: slice side in pixels.
        kspace: acquisition settings (default: equispaced x4, centre 0.08, one coil).
        phantom_kind: which phantoms form the forget domain.
        seed: seed of everything random here.

    Returns:
        The :class:`ReconSplits`.
    """
    _check_counts(
        retain_train=retain_train,
        forget_train=forget_train,
        retain_test=retain_test,
        forget_test=forget_test,
        slices_per_volume=slices_per_volume,
    )
    kspace = kspace or KspaceSettings()
    rngs = np.random.default_rng(seed).spawn(4)
    splits = ReconSplits()

    def brains(count: int, rng: np.random.Generator, prefix: str) -> list[dict[str, Any]]:
        items = []
        for i in range(count):
            volume = brain_volume(size, slices_per_volume, random_brain_warp(rng))
            items += volume_items(volume, f"{prefix}-{i:03d}", False, kspace, rng)
        return items

    def phantoms(count: int, rng: np.random.Generator, prefix: str) -> list[dict[str, Any]]:
        items = []
        for i in range(count):
            volume = phantom_volume(size, slices_per_volume, rng, phantom_kind)
            items += volume_items(volume, f"{prefix}-{i:03d}", True, kspace, rng)
        return items

    splits.retain_train = brains(retain_train, rngs[0], "brain-train")
    splits.forget_train = phantoms(forget_train, rngs[1], "phantom-train")
    splits.retain_test = brains(retain_test, rngs[2], "brain-test")
    splits.forget_test = phantoms(forget_test, rngs[3], "phantom-test")
    logger.info("Anatomy-shift splits (slices): %s", splits.sizes())
    return splits


def central_axial_slices(path: str | os.PathLike, size: int, num_slices: int) -> np.ndarray:
    """Load a 3D image, reorient it to RAS and take ``num_slices`` central axial slices, resized and scaled.

    Args:
        path: a 3D image MONAI can read (NIfTI).
        size: output side in pixels (the slice is zero-padded to a square, then resized).
        num_slices: number of slices, evenly spread over the central part of the foreground's height.

    Returns:
        ``(num_slices, size, size)`` float32 in [0, 1] (white level = the 99.5th foreground percentile).

    Raises:
        ManifestError: if the file cannot be read or is not 3D.
    """
    try:
        image = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    except (OSError, RuntimeError, ValueError) as err:
        raise ManifestError(f"Cannot read image {path}: {err}") from err
    if image.ndim != 4:
        raise ManifestError(f"Image {path} must be 3D, got shape {tuple(image.shape[1:])}.")
    volume = torch.as_tensor(Orientation(axcodes="RAS")(image)).float()[0]  # (X, Y, Z)
    positive = volume[volume > 0]
    if positive.numel():
        subsample = positive[:: max(1, positive.numel() // _QUANTILE_SAMPLES)]  # torch.quantile caps its input size
        white = float(torch.quantile(subsample, WHITE_PERCENTILE / 100))
    else:
        white = 1.0
    volume = (volume / max(white, 1e-6)).clamp(0.0, 1.0)
    heights = torch.nonzero((volume > FOREGROUND_FRACTION).flatten(0, 1).any(dim=0)).flatten()
    lo, hi = (int(heights[0]), int(heights[-1])) if heights.numel() else (0, volume.shape[2] - 1)
    positions = np.linspace(lo + CENTRAL_RANGE[0] * (hi - lo), lo + CENTRAL_RANGE[1] * (hi - lo), num_slices)
    slab = volume[:, :, np.round(positions).astype(int)].permute(2, 1, 0).flip(1)  # (S, Y, X), anterior up
    side = max(slab.shape[1:])
    pad_y, pad_x = side - slab.shape[1], side - slab.shape[2]
    slab = F.pad(slab, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2))
    if side >= size:
        resized = F.interpolate(slab.unsqueeze(1), size=(size, size), mode="area")
    else:
        resized = F.interpolate(slab.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
    return resized.squeeze(1).clamp(0.0, 1.0).numpy().astype(np.float32)


def manifest_groups(
    manifest: pd.DataFrame | str | os.PathLike, forget_site: str | None = None, eval_split: Split | str = Split.TEST
) -> dict[str, pd.DataFrame]:
    """Split a manifest's rows into the four unlearning sets.

    Args:
        manifest: a manifest path (read with :func:`harmonize.data.manifest.read_manifest`) or its DataFrame
            (``image``, ``site``, ``split``, ``subject_id``, optional ``forget``).
        forget_site: the site to forget; ``None`` uses the ``forget`` column.
        eval_split: the split whose rows evaluate (BTA, KTA); ``train`` rows train.

    Returns:
        ``{"retain_train", "forget_train", "retain_test", "forget_test"}`` -> rows.

    Raises:
        ManifestError: no ``forget`` column and no ``forget_site``, an unknown site, or an empty set.
    """
    if not isinstance(manifest, pd.DataFrame):
        from harmonize.data.manifest import read_manifest

        manifest = read_manifest(manifest)
    sites = sorted(str(s) for s in manifest[Keys.SITE].unique())
    if forget_site is not None:
        if str(forget_site) not in sites:
            raise ManifestError(f"forget_site {forget_site!r} is not a site of the manifest; its sites are {sites}.")
        forget = manifest[Keys.SITE].astype(str) == str(forget_site)
    elif Keys.FORGET in manifest.columns:
        forget = manifest[Keys.FORGET].fillna(False).astype(bool)
    else:
        raise ManifestError(
            f"The manifest has no '{Keys.FORGET}' column: pass forget_site= one of {sites}, "
            f"or add a '{Keys.FORGET}' column (true for the scans to forget)."
        )
    split = manifest[Keys.SPLIT].astype(str)
    groups = {
        "retain_train": manifest[~forget & (split == Split.TRAIN)],
        "forget_train": manifest[forget & (split == Split.TRAIN)],
        "retain_test": manifest[~forget & (split == str(eval_split))],
        "forget_test": manifest[forget & (split == str(eval_split))],
    }
    empty = [
        f"{name}: no rows (forget={name.startswith('forget')}, split={'train' if 'train' in name else eval_split})"
        for name, rows in groups.items()
        if rows.empty
    ]
    if empty:
        raise ManifestError("The manifest cannot form all four unlearning sets.", problems=empty)
    return groups


def site_forget_splits(
    manifest: pd.DataFrame | str | os.PathLike,
    forget_site: str | None = None,
    size: int = 64,
    slices_per_volume: int = 4,
    kspace: KspaceSettings | None = None,
    eval_split: Split | str = Split.TEST,
    seed: int = 0,
) -> ReconSplits:
    """Forget the scans of one site of a multi-site cohort (e.g. a hospital withdrawing consent).

    The forget set is the rows of ``forget_site`` when given, otherwise the rows whose ``forget`` column is true.
    Rows of split ``train`` train; rows of ``eval_split`` (``test`` by default) evaluate.

    Args:
        manifest: a manifest path (read with :func:`harmonize.data.manifest.read_manifest`) or its DataFrame
            (absolute ``image`` paths, ``site``, ``split``, optional ``forget``).
        forget_site: the site to forget, or ``None`` to use the ``forget`` column.
        size: slice side in pixels.
        slices_per_volume: central axial slices per scan.
        kspace: acquisition settings.
        eval_split: the split used for BTA and KTA.
        seed: seed of the masks.

    Returns:
        The :class:`ReconSplits`, samples carrying ``SITE`` and ``SUBJECT_ID`` too (``VOLUME_ID`` = subject id).

    Raises:
        ManifestError: no ``forget`` column and no ``forget_site``, an unknown site, or an empty set.
    """
    _check_counts(slices_per_volume=slices_per_volume)
    kspace = kspace or KspaceSettings()
    groups = manifest_groups(manifest, forget_site, eval_split)
    rngs = dict(zip(groups, np.random.default_rng(seed).spawn(len(groups)), strict=True))
    splits = ReconSplits()
    for name, rows in groups.items():
        items: list[dict[str, Any]] = []
        for _, row in rows.iterrows():
            volume = central_axial_slices(row[Keys.IMAGE], size, slices_per_volume)
            extra = {Keys.SITE: str(row[Keys.SITE]), Keys.SUBJECT_ID: str(row[Keys.SUBJECT_ID])}
            is_forget = name.startswith("forget")
            items += volume_items(volume, str(row[Keys.SUBJECT_ID]), is_forget, kspace, rngs[name], extra)
        setattr(splits, name, items)
    logger.info("Site-forget splits (slices): %s", splits.sizes())
    return splits

