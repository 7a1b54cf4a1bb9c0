"""Shared fixtures of the data tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ..conftest import write_csv

#: Input grid of the small cohorts: 20^3 voxels of 1.2 mm (24 mm across).
NIFTI_SHAPE = (20, 20, 20)
NIFTI_SPACING = 1.2
#: Per-site (scale, offset) of the tissue intensities, so that the sites really differ.
SITE_INTENSITY = {"siteA": (1.0, 0.0), "siteB": (2.5, 40.0), "siteC": (0.6, 10.0)}


def write_phantom(path: Path, rng: np.random.Generator, scale: float = 1.0, offset: float = 0.0,
                  flip: bool = False) -> np.ndarray:
    """Write a head-like phantom (two tissues inside an ellipsoid, near-zero noisy background) and its label.

    ``flip`` stores the image in LAS orientation (x axis reversed) to exercise reorientation.
    Returns the label array (1 = inner tissue, 2 = outer tissue, 0 = background).
    """
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in NIFTI_SHAPE), indexing="ij")
    radius = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.75) ** 2
    label = np.where(radius < 0.35, 1, np.where(radius < 1.0, 2, 0)).astype(np.uint8)
    image = np.where(label == 1, 120.0, np.where(label == 2, 70.0, 0.0))
    image = (image + rng.normal(0, 6, image.shape)) * (label > 0)
    image = scale * image + offset * (label > 0) + np.abs(rng.normal(0, 2, image.shape))
    affine = np.diag([NIFTI_SPACING] * 3 + [1.0])
    affine[:3, 3] = -NIFTI_SPACING * (np.array(NIFTI_SHAPE) - 1) / 2
    if flip:
        image, label = image[::-1].copy(), label[::-1].copy()
        affine[0, 0] = -NIFTI_SPACING
        affine[0, 3] = -affine[0, 3]
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), path)
    return label


@pytest.fixture
def make_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a small cohort (``sites`` x ``per_site`` scans) and its manifest; return the manifest.

    Each site has ``n_train`` training scans, then alternately val and test. ``unseen`` sites get only test
    scans. Labels are written for every scan unless ``labels=False``; ``siteB`` is stored in LAS orientation.
    """

    def make(sites: Sequence[str] = ("siteA", "siteB"), per_site: int = 3, n_train: int = 2,
             unseen: Sequence[str] = (), labels: bool = True, folder: str = "cohort", seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / folder
        (root / "img").mkdir(parents=True)
        rows = []
        for site in [*sites, *unseen]:
            scale, offset = SITE_INTENSITY.get(site, (1.5, 5.0))
            for i in range(per_site):
                sid = f"{site}-{i:02d}"
                image = root / "img" / f"{sid}_T1w.nii.gz"
                label = write_phantom(image, rng, scale, offset, flip=site == "siteB")
                label_path = ""
                if labels:
                    label_path = f"img/{sid}_dseg.nii.gz"
                    nib.save(nib.Nifti1Image(label, nib.load(image).affine), root / label_path)
                split = "test" if site in unseen else "train" if i < n_train else ("val", "test")[(i - n_train) % 2]
                rows.append({"subject_id": sid, "image": f"img/{sid}_T1w.nii.gz", "label": label_path,
                             "site": site, "age": f"{40 + 3 * i}", "sex": "FM"[i % 2], "split": split,
                             "scanner": f"vendor{i % 2}", "tiv": f"{1400 + 10 * i}"})
        return write_csv(root / "manifest.csv", rows)

    return make


#: The BIDS dataset of docs/bids.md: {scan: (intensity site, sidecar fields)}. sub-02 changed scanner
#: between its sessions; sub-03 and sub-04 have no sessions.
BIDS_EXAMPLE_SCANS = {
    "sub-01/ses-01/anat/sub-01_ses-01_T1w": ("siteA", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma"}),
    "sub-01/ses-02/anat/sub-01_ses-02_T1w": ("siteA", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma"}),
    "sub-02/ses-01/anat/sub-02_ses-01_T1w": ("siteB", {"Manufacturer": "GE", "ManufacturersModelName": "Premier"}),
    "sub-02/ses-02/anat/sub-02_ses-02_T1w": ("siteA", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma"}),
    "sub-03/anat/sub-03_T1w": ("siteB", {"Manufacturer": "GE", "ManufacturersModelName": "Premier"}),
    "sub-04/anat/sub-04_T1w": ("siteA", {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma"}),
}
BIDS_EXAMPLE_TEXT = {
    "dataset_description.json": '{\n  "Name": "tiny",\n  "BIDSVersion": "1.10.0"\n}\n',
    "participants.tsv": ("participant_id\tage\tsex\nsub-01\t45.0\tF\nsub-02\t61.0\tM\nsub-03\t38.0\tF\n"
                         "sub-04\t52.0\tM\n"),
    "T1w.json": '{\n  "MagneticFieldStrength": 3,\n  "RepetitionTime": 2.3\n}\n',
    "sub-01/sub-01_sessions.tsv": "session_id\tage\nses-01\t45.0\nses-02\t49.5\n",
    "sub-02/sub-02_sessions.tsv": "session_id\tage\nses-01\t61.0\nses-02\t63.0\n",
}


def write_bids_example(root: Path) -> Path:
    """Write the BIDS dataset of docs/bids.md (20^3 phantoms; each sidecar names its scanner) into ``root``."""
    import json

    rng = np.random.default_rng(0)
    for name, text in BIDS_EXAMPLE_TEXT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for stem, (site, sidecar) in BIDS_EXAMPLE_SCANS.items():
        path = root / f"{stem}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_phantom(path, rng, *SITE_INTENSITY[site])
        (root / f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return root


@pytest.fixture
def bids_example(tmp_path: Path) -> Path:
    """The BIDS dataset of docs/bids.md, in ``tmp_path/ds``."""
    return write_bids_example(tmp_path / "ds")
