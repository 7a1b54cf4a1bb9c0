"""What a model's input scans look like (grid and intensity preprocessing), and the check that new scans match.

A network trained on scans of one grid and intensity scale reads any other as a new scanner: the audit of a model
trained on ``harmonize preprocess`` outputs, given the raw manifest, finds the site in the features perfectly
(a site probe of 1.000) and says nothing of the model. :func:`describe_inputs` records, from a manifest's
image headers and the ``preprocess.json`` beside a preprocessed manifest, the voxel spacing, the shape and whether
intensities were standardised; the model file keeps it (:func:`~harmonize.workflows.model_file.save_model`), and
:func:`check_inputs` refuses scans that differ, naming a file, what differs and the ``harmonize preprocess``
command that makes them match. A MONAI bundle records its training preprocessing in ``models/preprocessing.json``
(:func:`harmonize.bundle.save_preprocessing`); :func:`describe_preprocessing` reads the same description from it,
so that bundle models (brain age and tissue segmentation) are checked the same way. Scans of different shapes
are refused by the data layer (:func:`harmonize.data.dataset.image_grid`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harmonize.errors import HarmonizeError
from harmonize.io import read_json_object
from harmonize.keys import Keys

__all__ = ["SPACING_TOLERANCE", "check_inputs", "describe_inputs", "describe_preprocessing"]

logger = logging.getLogger(__name__)

#: Relative difference of voxel sizes still taken as the same spacing.
SPACING_TOLERANCE = 1e-3
#: ``format`` of a bundle's ``models/preprocessing.json`` (:mod:`harmonize.bundle.preprocessing`).
BUNDLE_PREPROCESSING_FORMAT = "harmonize-bundle-preprocessing"


def _source(frame: pd.DataFrame) -> Path | None:
    from harmonize.data.manifest import MANIFEST_ATTR

    source = frame.attrs.get(MANIFEST_ATTR)
    return None if source is None else Path(source)


def _image_path(value: Any, source: Path | None) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() or source is None else source.parent / path


def _marker(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The ``preprocess.json`` of a manifest written by ``harmonize preprocess`` (``None`` if there is none)."""
    from harmonize.data.preprocess import MARKER_FILENAME, MARKER_TOOL

    source = _source(frame)
    marker = None if source is None else read_json_object(source.parent / MARKER_FILENAME)
    return marker if marker is not None and marker.get("tool") == MARKER_TOOL else None


def describe_inputs(frame: pd.DataFrame) -> dict[str, Any]:
    """The grid and intensity preprocessing of a manifest's scans, as a model file records it.

    Returns:
        ``{"manifest", "shape", "spacing", "standardised"}``: the shape and spacing shared by the images (from
        their headers; ``None`` if none could be read) and whether their intensities were standardised by
        ``harmonize preprocess`` (a ``preprocess.json`` beside the manifest; ``None`` for a frame that does not
        name its file).

    Raises:
        HarmonizeError: the images have different shapes (see :func:`harmonize.data.dataset.image_grid`).
    """
    from harmonize.data.dataset import image_grid

    source = _source(frame)
    grid = image_grid(frame, source)
    return {
        "manifest": None if source is None else str(source),
        "shape": None if grid is None else list(grid[0]),
        "spacing": None if grid is None or grid[1] is None else [round(z, 6) for z in grid[1]],
        "standardised": None if source is None else _marker(frame) is not None,
    }


def describe_preprocessing(content: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The training scans' description (as :func:`describe_inputs` gives it) from a bundle's ``preprocessing.json``.

    Args:
        content: the file's content (:func:`harmonize.bundle.load_preprocessing`), or ``None`` when the bundle has
            none.

    Returns:
        ``{"manifest", "shape", "spacing", "standardised"}``: the ``harmonize preprocess`` settings the training
        manifest was made with (shape, isotropic or per-axis spacing, standardised), or only ``standardised``
        false when training used scans ``harmonize preprocess`` did not make. ``None`` for no file, or a file of
        another format (nothing recorded: nothing checked).
    """
    if not isinstance(content, Mapping) or content.get("format") != BUNDLE_PREPROCESSING_FORMAT:
        return None
    config = content.get("config")
    if not isinstance(config, Mapping):
        return {"manifest": content.get("manifest"), "shape": None, "spacing": None, "standardised": False}
    spacing = config.get("target_spacing")
    spacing = [spacing] * 3 if isinstance(spacing, (int, float)) else spacing
    shape = config.get("target_shape")
    return {
        "manifest": content.get("manifest"),
        "shape": None if shape is None else [int(n) for n in shape],
        "spacing": None if spacing is None else [round(float(z), 6) for z in spacing],
        "standardised": True,
    }


def _preprocess_hint(recorded: Mapping[str, Any], source: Any) -> str:
    spacing, shape = recorded.get("spacing"), recorded.get("shape")
    options = ""
    if spacing and len(set(spacing)) == 1:
        options += f" --spacing {spacing[0]:g}"
    if shape:
        options += f" --shape {' '.join(map(str, shape))}"
    return (f"Preprocess the scans as the training scans were (harmonize preprocess {source or 'MANIFEST'} --out DIR"
            f"{options}) and give DIR/manifest.csv")


def check_inputs(recorded: Mapping[str, Any] | None, frame: pd.DataFrame, model: str) -> None:
    """Refuse scans whose grid or intensity preprocessing differs from the model's training scans.

    Args:
        recorded: what :func:`describe_inputs` gave for the training manifest (``None``: the model records
            nothing, e.g. a file written before harmonize recorded it; only the shapes' agreement is checked).
        frame: the manifest of the scans to run the model on.
        model: the model's name (its file), for the message.

    Raises:
        HarmonizeError: another shape, spacing or intensity standardisation, naming a file, both values and the
            ``harmonize preprocess`` command that makes them match.
    """
    found = describe_inputs(frame)
    if not recorded:
        logger.info("%s records no training preprocessing: the scans' grid and intensities are not checked.", model)
        return
    source = found["manifest"]
    trained_on = recorded.get("manifest") or "its training manifest"
    first = _image_path(frame[Keys.IMAGE].iloc[0], _source(frame)) if len(frame) else source
    problems = []
    if recorded.get("shape") and found["shape"] and list(recorded["shape"]) != list(found["shape"]):
        problems.append(f"shape: the model was trained on {tuple(recorded['shape'])} voxels, {first} is "
                        f"{tuple(found['shape'])}")
    if recorded.get("spacing") and found["spacing"] and not all(
            math.isclose(a, b, rel_tol=SPACING_TOLERANCE) for a, b in zip(recorded["spacing"], found["spacing"])):
        problems.append(f"spacing: the model was trained on {tuple(recorded['spacing'])} mm voxels, {first} has "
                        f"{tuple(found['spacing'])} mm")
    if None not in (recorded.get("standardised"), found["standardised"]) and \
            bool(recorded["standardised"]) != found["standardised"]:
        if recorded["standardised"]:
            problems.append("intensities: the model was trained on scans standardised by harmonize preprocess "
                            f"(preprocess.json beside {trained_on}); {source or 'the manifest'} has no preprocess.json "
                            "beside it, so its intensities are raw")
        else:
            problems.append(f"intensities: the model was trained on scans not standardised by harmonize preprocess "
                            f"({trained_on}), and {source or 'the manifest'} lists preprocessed scans")
    if problems:
        raise HarmonizeError(
            f"The scans of {source or 'the manifest'} are not preprocessed as the training scans of {model} were: the "
            "network would read the difference as a new scanner, and the audit would measure that, not the model. "
            f"{_preprocess_hint(recorded, source)}.",
            problems=problems,
        )
