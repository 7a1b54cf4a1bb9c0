"""What a model's input scans look like (grid and intensity preprocessing), and the check that new scans match.

A network trained on scans of one grid and intensity scale reads any other as a new scanner: the audit of a model
trained on ``harmonize preprocess`` outputs, given the raw manifest, finds the site in the features perfectly
(a site probe of 1.000) and says nothing of the model. :func:`describe_inputs` records, from a manifest's
image headers and the ``preprocess.json`` beside a preprocessed manifest, the voxel spacing, the shape and whether
intensities were standardised; the model file keeps it (:func:`~harmonize.workflows.model_file.save_model`), and
:func:`check_inputs` refuses scans that differ, naming a file, what differs and the ``harmonize preprocess``
command that makes them match. :func:`common_grid` refuses scans of different shapes (they cannot be batched),
naming two of them.
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

__all__ = ["SPACING_TOLERANCE", "check_inputs", "common_grid", "describe_inputs"]

logger = logging.getLogger(__name__)

#: Relative difference of voxel sizes still taken as the same spacing.
SPACING_TOLERANCE = 1e-3


def _source(frame: pd.DataFrame) -> Path | None:
    from harmonize.data.manifest import MANIFEST_ATTR

    source = frame.attrs.get(MANIFEST_ATTR)
    return None if source is None else Path(source)


def _image_path(value: Any, source: Path | None) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() or source is None else source.parent / path


def _header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Shape and voxel sizes of an image's header (``None``: unreadable; validation reports it)."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        return tuple(int(n) for n in header.get_data_shape()[:3]), tuple(float(z) for z in header.get_zooms()[:3])
    except (OSError, ValueError, TypeError, nib.filebasedimages.ImageFileError):
        return None


def common_grid(frame: pd.DataFrame) -> tuple[tuple[int, ...], tuple[float, ...] | None] | None:
    """The shape and spacing shared by every image of ``frame`` (``None`` when no header could be read).

    The spacing is ``None`` when the images share their shape but not their voxel size.

    Raises:
        HarmonizeError: two images have different shapes: names both files and shapes, and suggests
            ``harmonize preprocess``, which brings every scan to one grid.
    """
    source = _source(frame)
    first: tuple[Path, tuple[int, ...], tuple[float, ...]] | None = None
    same_spacing = True
    for value in frame[Keys.IMAGE]:
        path = _image_path(value, source)
        found = _header(path)
        if found is None:
            continue
        if first is None:
            first = (path, *found)
        elif found[0] != first[1]:
            manifest = source or "the manifest"
            raise HarmonizeError(
                f"The scans of {manifest} have different shapes: {first[0]} is {first[1]} voxels and {path} is "
                f"{found[0]}. A network needs scans of one shape (and spacing) to batch them: preprocess the "
                f"manifest first (harmonize preprocess {manifest} --out DIR, then use DIR/manifest.csv)."
            )
        else:
            same_spacing &= all(math.isclose(a, b, rel_tol=SPACING_TOLERANCE) for a, b in zip(found[1], first[2]))
    return None if first is None else (first[1], first[2] if same_spacing else None)


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
        HarmonizeError: the images have different shapes (see :func:`common_grid`).
    """
    grid = common_grid(frame)
    source = _source(frame)
    return {
        "manifest": None if source is None else str(source),
        "shape": None if grid is None else list(grid[0]),
        "spacing": None if grid is None or grid[1] is None else [round(z, 6) for z in grid[1]],
        "standardised": None if source is None else _marker(frame) is not None,
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
