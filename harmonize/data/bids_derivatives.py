"""Write the outputs of ``harmonize preprocess`` as a BIDS-Derivatives dataset.

When the input manifest came from a BIDS dataset (``harmonize manifest from-bids``), every input image has
a BIDS name (``sub-01_ses-02_T1w.nii.gz``), and ``harmonize preprocess --bids-derivatives`` also lays its
outputs out as a derivative dataset in ``OUT/derivatives/harmonize/``::

    dataset_description.json    Name, BIDSVersion, DatasetType "derivative", GeneratedBy, SourceDatasets
    sub-01/ses-02/anat/
        sub-01_ses-02_desc-preproc_T1w.nii.gz    the preprocessed image
        sub-01_ses-02_desc-preproc_T1w.json      Sources (the raw scan), SkullStripped, site and settings
        sub-01_ses-02_desc-head_mask.nii.gz      the foreground (head) mask
        sub-01_ses-02_desc-preproc_dseg.nii.gz   the label, when the manifest has one

The names keep every entity of the input and add ``desc-``; they have no ``space-`` entity, because the
images stay in the scan's own space (reoriented, resampled and cropped, not registered to a template).
The files are hard links to the outputs in ``OUT/images``, ``OUT/masks`` and ``OUT/labels`` (copies where
the file system has no hard links), so they take no extra space, and the preprocessed manifest points at
them. Every file is replaced atomically on each run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harmonize.data.bids import T1W_PATTERN, bids_entities
from harmonize.errors import HarmonizeError
from harmonize.io import atomic_write, write_json_atomic
from harmonize.keys import Keys

__all__ = [
    "BIDS_VERSION",
    "DERIVATIVES_DIR",
    "check_bids_sources",
    "derivative_name",
    "write_bids_derivatives",
]

#: Where the derivative dataset goes, inside the preprocessing output folder.
DERIVATIVES_DIR = Path("derivatives") / "harmonize"
#: The BIDS version the written dataset follows.
BIDS_VERSION = "1.10.0"
#: The pipeline's name in ``GeneratedBy`` and the dataset's name.
PIPELINE_NAME = "harmonize"
#: Which output gets which ``desc-`` and suffix.
_NAMES: Mapping[str, tuple[str, str]] = {"image": ("preproc", "T1w"), "mask": ("head", "mask"),
                                         "label": ("preproc", "dseg")}
#: Key of the raw dataset in ``DatasetLinks`` (the ``bids:raw:`` URIs of ``Sources`` refer to it).
RAW_LINK = "raw"


def _source_root(image: Path, subject: str) -> Path | None:
    """The BIDS root above ``image``: the parent of its ``sub-XX`` folder (None when there is none)."""
    for parent in image.parents:
        if parent.name == f"sub-{subject}":
            return parent.parent
    return None


def check_bids_sources(frame: pd.DataFrame) -> list[Path]:
    """Check that every manifest row's image is a BIDS T1w scan inside a BIDS dataset.

    Args:
        frame: a manifest as :func:`~harmonize.data.manifest.read_manifest` gives it (absolute image paths,
            indexed by CSV line).

    Returns:
        The BIDS roots of the images, sorted.

    Raises:
        HarmonizeError: listing every row whose image has no BIDS T1w name or is not in a ``sub-XX`` folder.
    """
    problems, roots = [], set()
    for row, image in zip(frame.index, frame[Keys.IMAGE]):
        path = Path(str(image))
        match = T1W_PATTERN.match(path.name)
        root = _source_root(path, bids_entities(path.name)["sub"]) if match else None
        if root is None:
            problems.append(f"row {row}: {path} is not a BIDS T1w scan (sub-<label>[_ses-<label>]..._T1w.nii.gz "
                            "inside its sub-<label> folder)")
        else:
            roots.add(root)
    if problems:
        raise HarmonizeError(
            f"--bids-derivatives needs a manifest of BIDS scans (from 'harmonize manifest from-bids'); "
            f"{len(problems)} row(s) are not. Leave the option out to write the plain output folder.",
            problems=problems)
    return sorted(roots)


def derivative_name(image: str | os.PathLike, output: str) -> Path:
    """The derivative's path, relative to the derivative dataset, of one output of a BIDS scan.

    Args:
        image: the input scan, e.g. ``.../sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz``.
        output: ``image``, ``mask`` or ``label``.

    Returns:
        E.g. ``sub-01/ses-02/anat/sub-01_ses-02_desc-preproc_T1w.nii.gz``.

    Example:
        >>> derivative_name("ds/sub-01/ses-02/anat/sub-01_ses-02_run-1_T1w.nii.gz", "mask").as_posix()
        'sub-01/ses-02/anat/sub-01_ses-02_run-1_desc-head_mask.nii.gz'
    """
    name = Path(image).name
    match = T1W_PATTERN.match(name)
    if match is None:
        raise HarmonizeError(f"{image} is not a BIDS T1w scan name (sub-<label>[_ses-<label>]..._T1w.nii.gz)")
    entities = bids_entities(name)
    desc, suffix = _NAMES[output]
    folder = Path(f"sub-{entities['sub']}", *([f"ses-{entities['ses']}"] if "ses" in entities else []), "anat")
    return folder / f"{match['entities']}_desc-{desc}_{suffix}.nii.gz"


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` atomically (a copy where hard links fail)."""

    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    atomic_write(target, write)


def _description(roots: Sequence[Path]) -> dict[str, Any]:
    from harmonize import __version__

    links = {RAW_LINK if i == 0 else f"{RAW_LINK}{i + 1}": root.as_uri() for i, root in enumerate(roots)}
    return {
        "Name": f"{PIPELINE_NAME} preprocessing of {', '.join(root.name for root in roots)}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__,
                         "Description": "harmonize preprocess: reorient to RAS, resample, crop/pad around the "
                                        "head, per-site histogram standardisation, z-normalisation "
                                        "(each image's sidecar records the settings)"}],
        "SourceDatasets": [{"URL": uri} for uri in links.values()],
        "DatasetLinks": links,
    }


def write_bids_derivatives(new: pd.DataFrame, source: pd.DataFrame, outputs: Sequence[Mapping[str, Path]],
                           out_dir: Path, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Lay the preprocessing outputs out as a BIDS-Derivatives dataset in ``out_dir/derivatives/harmonize``.

    Args:
        new: the preprocessed manifest (image and label pointing at ``out_dir``'s outputs).
        source: the input manifest, row for row (absolute paths of the BIDS scans).
        outputs: per row, the output files by kind (``image``, ``mask``, optional ``label``).
        out_dir: the preprocessing output folder.
        settings: the preprocessing settings, recorded in each image's sidecar.

    Returns:
        ``new`` with image (and label) pointing at the derivative files.

    Raises:
        HarmonizeError: a row whose image is not a BIDS scan (:func:`check_bids_sources`).
    """
    roots = check_bids_sources(source)
    links = {root: RAW_LINK if i == 0 else f"{RAW_LINK}{i + 1}" for i, root in enumerate(roots)}
    root_dir = out_dir / DERIVATIVES_DIR
    write_json_atomic(root_dir / "dataset_description.json", _description(roots), indent=2)
    result = new.copy()
    images, labels = [], []
    for (_, row), files in zip(source.iterrows(), outputs):
        raw = Path(str(row[Keys.IMAGE]))
        root = _source_root(raw, bids_entities(raw.name)["sub"])
        assert root is not None  # checked above
        paths = {}
        for kind in ("image", "mask", "label"):
            if kind in files:
                paths[kind] = root_dir / derivative_name(raw, kind)
                _link(Path(files[kind]), paths[kind])
        sidecar = {"Sources": [f"bids:{links[root]}:{raw.relative_to(root).as_posix()}"], "SkullStripped": False,
                   "Site": str(row[Keys.SITE]), "Settings": dict(settings)}
        write_json_atomic(paths["image"].with_name(paths["image"].name.replace(".nii.gz", ".json")), sidecar,
                          indent=2)
        images.append(str(paths["image"]))
        labels.append(str(paths["label"]) if "label" in paths else None)
    result[Keys.IMAGE] = images
    if Keys.LABEL in result:
        result[Keys.LABEL] = labels
    return result
