"""Per-site intensity landmarks: trained once on the site's training scans, then read by every scan (and shard).

Landmarks are trained with ``tio.HistogramStandardization.train`` on the foreground of the site's **training**
scans only (Nyul & Udupa 2000), after the spatial steps. Validation and test scans never influence them. A site
with no training scan (an unseen site, which the audit evaluates) is standardised with landmarks pooled over
every training scan of every site, and a warning is logged.

The fit record (``landmarks/fit.json``) says which manifest (its content hash) and which settings the landmarks
were fitted for. A shard (:mod:`harmonize.data.preprocess.shards`) reads the landmarks only when its own manifest
and settings match that record, and every landmarks file still has its recorded hash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torchio as tio

from harmonize.data.preprocess.config import PreprocessConfig
from harmonize.data.preprocess.layout import (
    FIT_FILENAME,
    JSON_FORMAT,
    LANDMARKS_DIR,
    LANDMARKS_INDEX_FILENAME,
    PIPELINE_VERSION,
    POOLED_LANDMARKS_FILENAME,
    Scan,
    content_key,
    file_hash,
    outputs,
    safe_name,
)
from harmonize.errors import HarmonizeError
from harmonize.io import atomic_write, read_json_object, write_json_atomic
from harmonize.keys import Split

__all__ = ["FitMismatchError", "fitted_landmarks", "landmarks_file", "site_landmarks", "write_fit_record"]

logger = logging.getLogger(__name__)

#: Landmarks of each site (None: no histogram standardisation), their files, and the sites with pooled landmarks.
Landmarks = tuple[dict[str, "np.ndarray | None"], dict[str, Path], tuple[str, ...]]


class FitMismatchError(HarmonizeError):
    """A shard whose output folder has no landmarks fitted for its manifest and settings."""


def landmarks_file(site: str) -> str:
    """The landmarks file name of a site (``site-<id>.npy``)."""
    return f"site-{safe_name(site)}.npy"


def _train_landmarks(
    scans: Sequence[Scan], file: str, config: PreprocessConfig, out_dir: Path, previous: Mapping[str, Any] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Landmarks of ``scans`` (reused when trained before from the very same spatial outputs)."""
    key = content_key({"version": PIPELINE_VERSION, "scans": sorted(s.spatial_key for s in scans),
                       "cutoff": list(config.landmarks_cutoff)})
    path = out_dir / LANDMARKS_DIR / file
    if previous and previous.get("key") == key and path.is_file() and file_hash(path) == previous.get("sha256"):
        return np.load(path), dict(previous)
    paths = [outputs(out_dir, s) for s in scans]
    landmarks = tio.HistogramStandardization.train(
        [str(p["spatial"]) for p in paths],
        cutoff=config.landmarks_cutoff,
        mask_path=[str(p["mask"]) for p in paths],
        progress=False,
    )
    landmarks = np.asarray(landmarks, dtype=float)
    if not np.all(np.isfinite(landmarks)) or not np.all(np.diff(landmarks) > 0):
        subjects = ", ".join(sorted(s.subject_id for s in scans))
        raise HarmonizeError(
            f"The intensity landmarks trained for {file} are not finite and increasing "
            f"({landmarks.round(3).tolist()}); the masks of its training scans ({subjects}) hold too few distinct "
            "intensities. Check these scans (masks/ shows what was taken as the head).")
    atomic_write(path, lambda tmp: np.save(tmp, landmarks))
    entry = {"key": key, "file": file, "sha256": file_hash(path), "n_scans": len(scans),
             "subjects": sorted(s.subject_id for s in scans)}
    return landmarks, entry


def site_landmarks(scans: Sequence[Scan], config: PreprocessConfig, out_dir: Path, overwrite: bool) -> Landmarks:
    """Train (or reuse) landmarks per site from its training scans; pooled ones for sites without any.

    Args:
        scans: every scan of the manifest, after their spatial stage (``spatial_key`` set).
        config: the pipeline settings.
        out_dir: the output folder.
        overwrite: retrain even when the index shows landmarks trained from the same spatial outputs.

    Returns:
        The landmarks per site, their files, and the sites without training scans (pooled landmarks).

    Raises:
        HarmonizeError: no training row, or landmarks that are not finite and increasing.
    """
    index_path = out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME
    previous = {} if overwrite else (read_json_object(index_path) or {})
    train = [s for s in scans if s.split == Split.TRAIN]
    if not train:
        raise HarmonizeError(
            "The manifest has no training rows (split 'train'): per-site intensity landmarks are trained on "
            "training scans only. Add training rows to the manifest."
        )
    sites = sorted({s.site for s in scans})
    unseen = tuple(site for site in sites if not any(s.site == site for s in train))
    arrays: dict[str, np.ndarray | None] = {}
    files: dict[str, Path] = {}
    entries: dict[str, Any] = {"sites": {}}
    for site in sorted({s.site for s in train}):
        site_scans = [s for s in train if s.site == site]
        arrays[site], entries["sites"][site] = _train_landmarks(
            site_scans, landmarks_file(site), config, out_dir, previous.get("sites", {}).get(site))
        files[site] = out_dir / LANDMARKS_DIR / landmarks_file(site)
    if unseen:
        pooled, entries["pooled"] = _train_landmarks(train, POOLED_LANDMARKS_FILENAME, config, out_dir,
                                                     previous.get("pooled"))
        for site in unseen:
            arrays[site] = pooled
            files[site] = out_dir / LANDMARKS_DIR / POOLED_LANDMARKS_FILENAME
        logger.warning(
            "Site(s) %s have no training scans; their scans are standardised with landmarks pooled over the "
            "%d training scans of all sites (the per-site landmarks need training scans of the site).",
            list(unseen), len(train))
    entries["pooled_sites"] = list(unseen)
    write_json_atomic(index_path, entries, **JSON_FORMAT)
    return arrays, files, unseen



def write_fit_record(out_dir: Path, manifest_sha256: str, config: PreprocessConfig) -> Path:
    """Record that the landmarks in ``out_dir`` were fitted for this manifest content and these settings."""
    index = out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME
    record = {"version": PIPELINE_VERSION, "manifest_sha256": manifest_sha256, "config": asdict(config),
              "landmarks_index_sha256": file_hash(index) if config.histogram_standardisation else None}
    return write_json_atomic(out_dir / LANDMARKS_DIR / FIT_FILENAME, record, **JSON_FORMAT)


def _settings_differences(fitted: Mapping[str, Any], config: PreprocessConfig) -> list[str]:
    mine = _json_like(asdict(config))
    return [f"{name}: fitted with {fitted.get(name)!r}, this run has {value!r}" for name, value in mine.items()
            if _json_like(fitted.get(name)) != value]


def _json_like(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), to compare settings read from a file."""
    if isinstance(value, Mapping):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_like(v) for v in value]
    return value


def fitted_landmarks(
    out_dir: Path, scans: Sequence[Scan], manifest: Path, manifest_sha256: str, config: PreprocessConfig
) -> Landmarks:
    """The landmarks the fit step wrote into ``out_dir``, checked against this manifest and these settings.

    Args:
        out_dir: the output folder.
        scans: the scans that will be standardised (their sites must have landmarks).
        manifest: the manifest (named in errors).
        manifest_sha256: the hash of its content.
        config: this run's settings.

    Returns:
        The landmarks per site, their files, and the sites standardised with the pooled landmarks.

    Raises:
        FitMismatchError: no fit record (the fit step has not run, or was interrupted), a record for another
            manifest content, other settings or another pipeline version, or a landmarks file changed since.
    """
    fit_path = out_dir / LANDMARKS_DIR / FIT_FILENAME
    fit = read_json_object(fit_path)
    rerun = (f"run 'harmonize preprocess {manifest} --out {out_dir} --fit-only' with the same settings first, then "
             "the shards")
    if fit is None:
        raise FitMismatchError(f"{out_dir} has no fitted landmarks ({fit_path} is missing): {rerun}.")
    problems = []
    if fit.get("version") != PIPELINE_VERSION:
        problems.append(f"pipeline version: fitted with {fit.get('version')}, this run has {PIPELINE_VERSION}")
    if fit.get("manifest_sha256") != manifest_sha256:
        problems.append(f"manifest: {manifest} changed since the landmarks were fitted (its content differs)")
    problems += _settings_differences(fit.get("config") or {}, config)
    if problems:
        raise FitMismatchError(f"The landmarks in {out_dir} were fitted for another manifest or other settings: "
                               f"{rerun}.", problems=problems)
    if not config.histogram_standardisation:
        return {scan.site: None for scan in scans}, {}, ()
    index_path = out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME
    if not index_path.is_file() or file_hash(index_path) != fit.get("landmarks_index_sha256"):
        raise FitMismatchError(f"{index_path} changed (or is gone) since the fit step: {rerun}.")
    index = read_json_object(index_path) or {}
    entries: dict[str, Any] = dict(index.get("sites") or {})
    pooled_sites = tuple(str(s) for s in index.get("pooled_sites") or ())
    arrays: dict[str, np.ndarray | None] = {}
    files: dict[str, Path] = {}
    for site in sorted({scan.site for scan in scans} | set(entries) | set(pooled_sites)):
        entry = entries.get(site) if site not in pooled_sites else index.get("pooled")
        if not isinstance(entry, Mapping) or "file" not in entry:
            raise FitMismatchError(f"{index_path} has no landmarks for site {site!r}: {rerun}.")
        path = out_dir / LANDMARKS_DIR / str(entry["file"])
        if not path.is_file() or file_hash(path) != entry.get("sha256"):
            raise FitMismatchError(f"The landmarks file {path} changed (or is gone) since the fit step: {rerun}.")
        arrays[site], files[site] = np.load(path), path
    return arrays, files, pooled_sites
