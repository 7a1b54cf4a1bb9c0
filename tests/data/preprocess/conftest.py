"""Helpers of the preprocessing tests: tiny settings, a quiet run, and the content of an output folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from harmonize.data.preprocess import (
    PreprocessConfig,
    PreprocessResult,
    preprocess_manifest,
)

#: 16^3 voxels of 1.5 mm cover the 24 mm of the 20^3 x 1.2 mm inputs.
CONFIG = PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16))


def run(manifest: Path, out: Path, config: PreprocessConfig = CONFIG, **kwargs) -> PreprocessResult:
    """``preprocess_manifest`` with the tiny settings and no progress display."""
    return preprocess_manifest(manifest, out, config, progress=False, **kwargs)


def tree_hashes(folder: Path, skip: Callable[[Path], bool] = lambda path: False) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder`` (except those ``skip`` returns True for)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not skip(p.relative_to(folder))}


def mtimes(folder: Path) -> dict[str, int]:
    """``{name: modification time}`` of a folder's entries."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def rewrite(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite a NIfTI file with ``change(data)`` applied to its voxels (same affine)."""
    image = nib.load(path)
    data = np.asarray(image.get_fdata(), dtype=np.float32)
    nib.save(nib.Nifti1Image(change(data), image.affine), path)
