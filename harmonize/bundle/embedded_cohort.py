"""The embedded synthetic cohort of the bundles: generated and preprocessed once into a cache, then reused.

A bundle run without a manifest (``--manifest`` left ``null``) trains on the embedded cohort. Generating and
preprocessing 160 scans takes minutes, so :func:`ensure_embedded_cohort` does it once per set of settings: the
folder is named after a hash of every setting (content-addressed), is built under a hidden temporary name and
renamed into place only when complete (atomic), and later runs with the same settings reuse it. Two processes
that start at once (e.g. the ranks of a ``torchrun`` job) both build, the first rename wins and the other
process's copy is removed.

The cohort is made by the library's own functions: :func:`harmonize.data.synth.generate_cohort`, then
:func:`harmonize.data.preprocess.preprocess_manifest` (resample, crop/pad, per-site histogram standardisation).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonize import __version__, defaults
from harmonize.data.preprocess import (
    PIPELINE_VERSION,
    PreprocessConfig,
    preprocess_manifest,
)
from harmonize.data.synth import SynthConfig, generate_cohort
from harmonize.errors import HarmonizeError
from harmonize.io import TMP_TAG, write_json_atomic

__all__ = [
    "CACHE_ENV",
    "SETTINGS_FILENAME",
    "default_cache_dir",
    "embedded_cohort_key",
    "ensure_embedded_cohort",
    "resolve_manifest",
]

logger = logging.getLogger(__name__)

#: Environment variable that moves the cache (default ``$XDG_CACHE_HOME/harmonize`` or ``~/.cache/harmonize``).
CACHE_ENV = "HARMONIZE_CACHE_DIR"
#: Written into a finished cohort folder: the settings it was made with (and its completion mark).
SETTINGS_FILENAME = "settings.json"
#: Prefix of the cohort folders in the cache, followed by the first :data:`KEY_LENGTH` hex digits of the key.
FOLDER_PREFIX = "embedded-"
KEY_LENGTH = 16
#: Sub-folders of a cohort folder: the generated scans and their preprocessed versions.
COHORT_DIR, PREPROCESSED_DIR = "cohort", "preprocessed"
MANIFEST_NAME = "manifest.csv"


def default_cache_dir() -> Path:
    """Where the embedded cohort is cached: ``$HARMONIZE_CACHE_DIR``, else ``$XDG_CACHE_HOME/harmonize``, else
    ``~/.cache/harmonize`` (outside any repository, shared by every bundle)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "harmonize"


def _settings(synth: SynthConfig, preprocess: PreprocessConfig) -> dict[str, Any]:
    return {
        "harmonize": __version__,
        "preprocess_pipeline": PIPELINE_VERSION,
        "synth": {k: v for k, v in vars(synth).items() if k != "sites"},
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(preprocess).items()},
    }


def embedded_cohort_key(synth: SynthConfig, preprocess: PreprocessConfig) -> str:
    """Hex digest naming the cached cohort of these settings (same settings and package version: same key)."""
    text = json.dumps(_settings(synth, preprocess), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def _is_complete(folder: Path) -> bool:
    return (folder / SETTINGS_FILENAME).is_file() and (folder / PREPROCESSED_DIR / MANIFEST_NAME).is_file()


def ensure_embedded_cohort(
    cache_dir: str | os.PathLike[str] | None = None,
    sites: int = defaults.SYNTH_SITES,
    subjects_per_site: int = defaults.SYNTH_SUBJECTS_PER_SITE,
    shape: int = defaults.SYNTH_SHAPE,
    seed: int = defaults.SEED,
    biased: bool = False,
    preprocess_shape: Sequence[int] = defaults.DEMO_SHAPE,
    preprocess_spacing: float = defaults.DEMO_SPACING,
    progress: bool = False,
) -> Path:
    """Path of the preprocessed manifest of the embedded cohort, generating it into the cache the first time.

    Args:
        cache_dir: the cache folder (default :func:`default_cache_dir`); created if missing.
        sites: scanners of the cohort.
        subjects_per_site: subjects scanned at each site.
        shape: cubic shape of the generated scans (voxels).
        seed: seed of the cohort.
        biased: sites with partly overlapping age ranges (the biased-dataset experiment).
        preprocess_shape: shape the scans are cropped/padded to after resampling (what the networks see).
        preprocess_spacing: isotropic voxel size after resampling (mm).
        progress: show progress bars while generating.

    Returns:
        ``<cache_dir>/embedded-<key>/preprocessed/manifest.csv``.

    Raises:
        ConfigError: invalid cohort or preprocessing settings (every problem listed).
        HarmonizeError: the cache folder cannot be written.
    """
    synth = SynthConfig(n_sites=sites, subjects_per_site=subjects_per_site, shape=shape, seed=seed, biased=biased)
    preprocess = PreprocessConfig(target_spacing=preprocess_spacing, target_shape=tuple(preprocess_shape))
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = cache / f"{FOLDER_PREFIX}{embedded_cohort_key(synth, preprocess)}"
    manifest = folder / PREPROCESSED_DIR / MANIFEST_NAME
    if _is_complete(folder):
        logger.info("Embedded cohort reused from %s", folder)
        return manifest
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TMP_TAG}", dir=cache))
    except OSError as err:
        raise HarmonizeError(
            f"Cannot write the embedded cohort's cache in {cache}: {err}. Give another folder with cache_dir "
            f"(bundle override --cache_dir) or the {CACHE_ENV} environment variable."
        ) from err
    logger.info("Generating the embedded cohort (%d sites x %d subjects at %d^3) into %s", sites,
                subjects_per_site, shape, folder)
    try:
        generated = generate_cohort(tmp / COHORT_DIR, synth, progress=progress)
        preprocess_manifest(generated, tmp / PREPROCESSED_DIR, preprocess, progress=progress)
        write_json_atomic(tmp / SETTINGS_FILENAME, _settings(synth, preprocess), indent=1, sort_keys=True,
                          default=list)
        _move_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` onto ``folder``; if another process got there first, keep its copy."""
    try:
        os.rename(tmp, folder)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and _is_complete(folder):
            logger.info("Embedded cohort was built by another process meanwhile; using %s", folder)
            return
        raise HarmonizeError(f"Cannot move the embedded cohort into {folder}: {err}") from err


def resolve_manifest(
    manifest: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
    cohort: dict[str, Any] | None = None,
    raw: bool = False,
) -> Path:
    """The manifest a bundle trains on: the user's ``manifest``, or the embedded cohort when it is ``None``.

    Args:
        manifest: path of a manifest CSV, or ``None``.
        cache_dir: cache of the embedded cohort (see :func:`ensure_embedded_cohort`).
        cohort: keyword arguments of :func:`ensure_embedded_cohort` (sites, shape, ...).
        raw: for the embedded cohort, the manifest of its raw scans (before preprocessing), which bundle
            inference preprocesses itself; the user's ``manifest`` is returned as it is.

    Raises:
        HarmonizeError: ``manifest`` names a file that does not exist.
    """
    if manifest is None or str(manifest) == "":
        preprocessed = ensure_embedded_cohort(cache_dir, **(cohort or {}))
        return preprocessed.parent.parent / COHORT_DIR / MANIFEST_NAME if raw else preprocessed
    path = Path(manifest).expanduser().absolute()
    if not path.is_file():
        raise HarmonizeError(
            f"Manifest {path} does not exist. Give the path of a manifest CSV (see docs/manifests.md) with "
            "--manifest, or leave it null to use the embedded synthetic cohort."
        )
    return path
