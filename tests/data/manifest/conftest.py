"""Shared fixtures and helpers of the manifest tests: a six-scan cohort at two sites, and its CSV."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize.data.manifest import read_manifest, validate_manifest
from harmonize.errors import ManifestError
from harmonize.keys import Keys

from ...conftest import write_csv

REPO = Path(__file__).resolve().parents[3]
SHAPE = (8, 8, 8)
COLUMNS = [Keys.SUBJECT_ID, Keys.IMAGE, Keys.SITE, Keys.AGE, Keys.SEX, Keys.SPLIT, Keys.LABEL, "tiv"]
# (site, age, sex, split) of the six scans of the default cohort; rows 2..7 of the CSV.
DESIGN = [("A", 20.0, "F", "train"), ("A", 45.5, "M", "train"), ("A", 60.0, "F", "test"),
          ("B", 30.0, "M", "train"), ("B", 50.0, "F", "val"), ("B", 70.0, "M", "train")]


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Six scans at two sites (8^3 float images, uint8 labels), rows as dicts to edit, and the manifest path."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (site, age, sex, split) in enumerate(DESIGN, start=1):
        sid = f"{i:03d}"
        image = save_nifti(tmp_path / f"sub-{sid}" / "anat" / f"sub-{sid}_T1w.nii.gz",
                           rng.random(SHAPE, dtype=np.float32))
        label = save_nifti(tmp_path / f"sub-{sid}" / "anat" / f"sub-{sid}_dseg.nii.gz",
                           rng.integers(0, 3, SHAPE).astype(np.uint8))
        rows.append({Keys.SUBJECT_ID: sid, Keys.IMAGE: str(image.relative_to(tmp_path)), Keys.SITE: site,
                     Keys.AGE: age, Keys.SEX: sex, Keys.SPLIT: split, Keys.LABEL: str(label.relative_to(tmp_path)),
                     "tiv": 1.2 + 0.1 * i})
    return write_csv(tmp_path / "manifest.csv", rows, COLUMNS), rows


def problems_of(path: Path, **kwargs) -> list[str]:
    return [str(p) for p in validate_manifest(path, progress=False, **kwargs).problems]


def read_error(path: Path, **kwargs) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(path, **kwargs)
    return str(info.value)
