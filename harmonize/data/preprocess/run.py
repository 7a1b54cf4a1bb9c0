"""The preprocessing run: one call per whole run, fit step, shard or merge (:func:`preprocess_manifest`)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess.config import PreprocessConfig, PreprocessResult
from harmonize.data.preprocess.landmarks import site_landmarks, write_fit_record
from harmonize.data.preprocess.layout import (
    CACHE_DIR,
    JSON_FORMAT,
    MANIFEST_FILENAME,
    MARKER_FILENAME,
    MARKER_TOOL,
    PIPELINE_VERSION,
    RESERVED_NAMES,
    check_out_dir,
    check_scans_listed_once,
    earlier_outputs,
    file_hash,
    is_earlier_output,
    remove_leftover_temporaries,
    scans_of,
)
from harmonize.data.preprocess.passes import (
    intensity_pass,
    spatial_pass,
    write_output_manifest,
)
from harmonize.data.preprocess.pool import ScanPool, jobs_problem
from harmonize.data.preprocess.shards import (
    Shard,
    clear_shards,
    merge_shards,
    refuse_while_shards_run,
    run_shard,
)
from harmonize.errors import ConfigError, raise_problems
from harmonize.io import write_json_atomic
from harmonize.keys import Split
from harmonize.output_dir import OutputDir

__all__ = ["preprocess_manifest"]

logger = logging.getLogger(__name__)


def preprocess_manifest(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: PreprocessConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    bids_derivatives: bool = False,
    *,
    jobs: int = 1,
    fit_only: bool = False,
    shard: str | Shard | None = None,
    merge: bool = False,
) -> PreprocessResult:
    """Preprocess every scan of a manifest into ``out_dir`` and write a new manifest there.

    See :mod:`harmonize.data.preprocess` for the pipeline, the output layout and the cache. The inputs are never
    modified. A second run with the same inputs and settings reuses every output (``processed == 0``). For a job
    array, run the fit step once (``fit_only``), then every ``shard`` (at once), then ``merge``
    (:mod:`harmonize.data.preprocess.shards`); the folder then holds what one run would have written.

    Args:
        manifest: the input manifest CSV (read with :func:`~harmonize.data.manifest.read_manifest`).
        out_dir: the output folder: new, empty, or the output of an earlier run (then its cache is used).
        config: the pipeline settings (defaults: :class:`PreprocessConfig`).
        overwrite: write into a non-empty folder that is not an earlier output, and recompute every scan
            instead of reusing the cache (not for a shard or the merge).
        progress: show progress (a bar on a terminal, else a line per hundred scans: :mod:`harmonize.progress`).
        bids_derivatives: also lay the outputs out as a BIDS-Derivatives dataset in
            ``out_dir/derivatives/harmonize`` and point the new manifest at it
            (:mod:`harmonize.data.bids_derivatives`); the manifest's images must be BIDS scans. With shards, give
            it to the merge.
        jobs: worker processes (:class:`~harmonize.data.preprocess.pool.ScanPool`); the outputs are byte-identical
            whatever the number.
        fit_only: the fit step: the spatial steps of the training scans and the landmarks, no final images.
        shard: ``"K/N"``: preprocess the ``K``-th of ``N`` blocks of rows with the landmarks of the fit step.
        merge: merge the shards' manifests into ``manifest.csv``.

    Returns:
        The new manifest's path, counts of processed and cached scans, and the landmarks per site.

    Raises:
        ManifestError: the manifest cannot be read (every problem listed).
        ConfigError: ``jobs`` < 1, a malformed ``shard``, or steps combined that do not go together.
        HarmonizeError: ``out_dir`` is the manifest's folder or holds input files, or is a foreign non-empty
            folder without ``overwrite``; the manifest has no training rows; scans that cannot be read or
            have no foreground (every such scan listed, after the others were processed); a shard without fitted
            landmarks or a merge with a shard missing (named).
    """
    start = time.perf_counter()
    config = config or PreprocessConfig()
    shard = None if shard is None else Shard.parse(shard)
    _check_step(fit_only, shard, merge, overwrite, bids_derivatives)
    raise_problems("preprocess_manifest", [jobs_problem(jobs)])
    manifest = Path(manifest).expanduser().absolute()
    frame = read_manifest(manifest)
    out = Path(out_dir).expanduser().resolve()
    check_out_dir(out, manifest, frame)
    check_scans_listed_once(manifest, frame)
    reserved = RESERVED_NAMES
    if bids_derivatives:
        from harmonize.data.bids_derivatives import DERIVATIVES_DIR, check_bids_sources

        check_bids_sources(frame)
        # the run writes into derivatives/ too: a file of the user's there is refused by name, never replaced
        reserved = (*RESERVED_NAMES, DERIVATIVES_DIR.parts[0])
    if shard is not None:
        return run_shard(out, manifest, frame, config, shard, jobs, progress, start)
    claim = OutputDir(out, MARKER_TOOL, overwrite=overwrite, inputs=[manifest], reserved=reserved,
                      reuse=is_earlier_output, known_outputs=earlier_outputs)
    with claim:
        if merge:
            return merge_shards(out, manifest, frame, config, bids_derivatives, start)
        return _preprocess_into(out, manifest, frame, config, overwrite, progress, bids_derivatives, start, jobs,
                                fit_only)


def _check_step(fit_only: bool, shard: Shard | None, merge: bool, overwrite: bool, bids_derivatives: bool) -> None:
    """Refuse steps that do not go together (each message says what to run instead)."""
    steps = [name for name, given in (("fit_only (--fit-only)", fit_only), ("shard (--shard)", shard is not None),
                                      ("merge (--merge)", merge)) if given]
    if len(steps) > 1:
        raise ConfigError(f"Arguments {' and '.join(steps)} are separate steps: run the fit step once, then the "
                          "shards, then the merge.")
    if overwrite and (shard is not None or merge):
        raise ConfigError("Argument 'overwrite' (--overwrite) goes with the fit step (--fit-only), which starts a new "
                          "round; a shard or the merge only adds to it.")
    if bids_derivatives and (shard is not None or fit_only):
        raise ConfigError("Argument 'bids_derivatives' (--bids-derivatives) goes with the merge (--merge), which "
                          "writes the manifest; not with the fit step or a shard.")


def _preprocess_into(out: Path, manifest: Path, frame: pd.DataFrame, config: PreprocessConfig, overwrite: bool,
                     progress: bool, bids_derivatives: bool, start: float, jobs: int,
                     fit_only: bool) -> PreprocessResult:
    """A whole run, or the fit step, while ``out`` is locked."""
    refuse_while_shards_run(out)
    remove_leftover_temporaries(out)
    clear_shards(out)  # a new fit or a whole run makes earlier shards out of date
    marker = {"tool": MARKER_TOOL, "version": PIPELINE_VERSION, "source": str(manifest), "config": asdict(config)}
    write_json_atomic(out / MARKER_FILENAME, marker, **JSON_FORMAT)
    (out / CACHE_DIR).mkdir(exist_ok=True)
    scans = scans_of(frame)
    fitted = [s for s in scans if s.split == Split.TRAIN] if config.histogram_standardisation else []
    with ScanPool(jobs) as pool:
        spatial = spatial_pass(pool, fitted if fit_only else scans, config, out, overwrite, manifest, progress)
        if config.histogram_standardisation:
            landmarks, landmark_files, unseen = site_landmarks(scans, config, out, overwrite)
        else:
            landmarks, landmark_files, unseen = {s.site: None for s in scans}, {}, ()
        write_fit_record(out, file_hash(manifest), config)
        if fit_only:
            logger.debug("Fitted the landmarks of %s into %s (%.1f s)", manifest, out, time.perf_counter() - start)
            return PreprocessResult(manifest=None, processed=spatial, cached=len(fitted) - spatial,
                                    landmarks=landmark_files, pooled_sites=unseen,
                                    seconds=time.perf_counter() - start, step="fit")
        processed, cached = intensity_pass(pool, scans, landmarks, config, out, manifest, progress)
    new_manifest = write_output_manifest(frame, scans, out, out / MANIFEST_FILENAME, config, bids_derivatives)
    result = PreprocessResult(manifest=new_manifest, processed=processed, cached=cached, landmarks=landmark_files,
                              pooled_sites=unseen, seconds=time.perf_counter() - start)
    logger.debug("Preprocessed %d scans into %s: processed %d, cached %d (%.1f s)", len(scans), out,
                 result.processed, result.cached, result.seconds)
    return result
