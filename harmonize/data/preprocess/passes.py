"""One stage over many scans, with every scan's problem gathered, and the manifest of the outputs.

Shared by the whole run, the fit step and the shards (:mod:`harmonize.data.preprocess.run`,
:mod:`harmonize.data.preprocess.shards`), so that each does exactly what the others do to a scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from harmonize.data.manifest import write_manifest
from harmonize.data.preprocess.config import PreprocessConfig
from harmonize.data.preprocess.layout import Scan, outputs
from harmonize.data.preprocess.pool import ScanPool
from harmonize.data.preprocess.stages import cached_intensity, cached_spatial
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys

__all__ = ["intensity_pass", "landmarks_hashes", "spatial_pass", "write_output_manifest"]


def spatial_pass(pool: ScanPool, scans: Sequence[Scan], config: PreprocessConfig, out: Path, overwrite: bool,
                 manifest: Path, progress: bool) -> int:
    """Steps 1-4 of every scan (cached); sets each scan's ``spatial_key`` and ``record``.

    Returns:
        How many scans were (re)computed.

    Raises:
        HarmonizeError: scans that could not be preprocessed, each listed (the others are cached for the next run).
        OutputWriteError: an output could not be written.
    """
    outcomes = pool.map(cached_spatial, scans, config, out, overwrite, desc="preprocess: resample",
                        progress=progress)
    problems = [o.problem for o in outcomes if o.problem is not None]
    if problems:
        raise HarmonizeError(f"{len(problems)} scan(s) of {manifest} could not be preprocessed; the others are "
                             "cached for the next run.", problems=problems)
    for scan, outcome in zip(scans, outcomes):
        scan.spatial_key, scan.record = outcome.spatial_key, outcome.record
    return sum(o.computed for o in outcomes)


def landmarks_hashes(landmarks: Mapping[str, np.ndarray | None]) -> dict[str, str | None]:
    """The hash of each site's landmarks (part of the final image's cache key)."""
    return {site: None if values is None else hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
            for site, values in landmarks.items()}


def intensity_pass(pool: ScanPool, scans: Sequence[Scan], landmarks: Mapping[str, np.ndarray | None],
                   config: PreprocessConfig, out: Path, manifest: Path, progress: bool) -> tuple[int, int]:
    """Step 5 of every scan (cached), each with its site's landmarks.

    Returns:
        How many final images were (re)computed, and how many were reused.

    Raises:
        HarmonizeError: scans that could not be normalised, each listed.
        OutputWriteError: an output could not be written.
    """
    outcomes = pool.map(cached_intensity, scans, dict(landmarks), landmarks_hashes(landmarks), config, out,
                        desc="preprocess: standardise", progress=progress)
    problems = [o.problem for o in outcomes if o.problem is not None]
    if problems:
        raise HarmonizeError(f"{len(problems)} scan(s) of {manifest} could not be normalised.", problems=problems)
    for scan, outcome in zip(scans, outcomes):
        scan.record = outcome.record
    computed = sum(o.computed for o in outcomes)
    return computed, len(scans) - computed


def write_output_manifest(frame: pd.DataFrame, scans: Sequence[Scan], out: Path, path: Path, config: PreprocessConfig,
                          bids_derivatives: bool = False) -> Path:
    """Write ``frame`` (the rows of ``scans``) with image and label pointing at the outputs in ``out``.

    Args:
        frame: the input manifest's rows, in the order of ``scans``.
        scans: the scans of those rows.
        out: the output folder.
        path: the manifest to write (replaced atomically).
        config: the settings (recorded in a BIDS-Derivatives dataset).
        bids_derivatives: also lay the outputs out as a BIDS-Derivatives dataset
            (:mod:`harmonize.data.bids_derivatives`) and point the manifest at it.

    Returns:
        ``path``.
    """
    new = frame.copy()
    new[Keys.IMAGE] = [str(outputs(out, s)["image"]) for s in scans]
    if Keys.LABEL in new:
        new[Keys.LABEL] = [str(outputs(out, s)["label"]) if s.label is not None else None for s in scans]
    if bids_derivatives:
        from harmonize.data.bids_derivatives import write_bids_derivatives

        new = write_bids_derivatives(new, frame, [outputs(out, s) for s in scans], out, asdict(config))
    return write_manifest(new, path, overwrite=True)
