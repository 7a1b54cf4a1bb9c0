"""Sharded preprocessing for a scheduler's job array: fit once, run the shards, merge their manifests.

1. The fit step (``preprocess_manifest(..., fit_only=True)``, ``--fit-only``) runs the spatial steps of the
   training scans and fits every site's landmarks, then records what they were fitted for
   (:func:`~harmonize.data.preprocess.landmarks.write_fit_record`). It holds the folder's lock.
2. Shard ``K/N`` (``shard="K/N"``, ``--shard K/N``) preprocesses the ``K``-th of ``N`` contiguous blocks of the
   manifest's rows into the same folder, with the fitted landmarks. It refuses to run without them, or when its
   manifest or settings differ from the fit's (:class:`~harmonize.data.preprocess.landmarks.FitMismatchError`).
   Shards write different scans' files, so they run at once; each locks only ``shards/K-of-N/``, where it writes
   its part of the manifest and, last, its record ``shard.json``.
3. The merge (:func:`merge_shards`, ``--merge``) checks that every shard of the round finished, with the current
   landmarks and the same manifest, names each one missing, and writes ``manifest.csv`` exactly as one run
   would.

Every file is written atomically, as in a whole run: a shard killed midway leaves no half-written file, and
running it again reuses what it had finished.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harmonize.data.preprocess.config import PreprocessConfig, PreprocessResult
from harmonize.data.preprocess.landmarks import fitted_landmarks
from harmonize.data.preprocess.layout import (
    FIT_FILENAME,
    JSON_FORMAT,
    LANDMARKS_DIR,
    MANIFEST_FILENAME,
    MARKER_TOOL,
    SHARDS_DIR,
    Scan,
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
from harmonize.data.preprocess.pool import ScanPool
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import TMP_GLOB, read_json_object, write_json_atomic
from harmonize.locks import LOCK_FILENAME, FolderLock, FolderLockedError, read_holder

__all__ = ["SHARD_RECORD_FILENAME", "Shard", "ShardError", "clear_shards", "merge_shards", "refuse_while_shards_run",
           "run_shard"]

logger = logging.getLogger(__name__)

#: A shard's record, written last into its folder ``shards/K-of-N/``.
SHARD_RECORD_FILENAME = "shard.json"
_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SHARD_FOLDER = re.compile(r"^(\d+)-of-(\d+)$")


class ShardError(HarmonizeError):
    """Shards that cannot be merged: one missing, from another round, or for another manifest."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as a job array's task id): the ``index``-th contiguous block of rows.

    Args:
        index: which shard, 1 to ``count``.
        count: how many shards in all.

    Raises:
        ConfigError: ``index`` outside 1..``count``, or ``count`` < 1.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"Argument 'shard' must be K/N with 1 <= K <= N, not {self.index}/{self.count} (K is the "
                              "job array's task id, from 1).")

    @classmethod
    def parse(cls, text: str | Shard) -> Shard:
        """``"2/8"`` -> ``Shard(2, 8)``.

        Raises:
            ConfigError: not two integers ``K/N`` with 1 <= K <= N.
        """
        if isinstance(text, Shard):
            return text
        match = _SHARD_TEXT.match(str(text))
        if match is None:
            raise ConfigError(f"Argument 'shard' must be K/N (e.g. 2/8: the second of 8 shards), not {text!r}.")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """The shard's folder name, ``K-of-N``."""
        return f"{self.index}-of-{self.count}"

    def select(self, n: int) -> range:
        """The positions (0-based) of this shard's rows among ``n`` rows."""
        return range((self.index - 1) * n // self.count, self.index * n // self.count)


def _live_holder(folder: Path) -> Any:
    holder = read_holder(folder / LOCK_FILENAME)
    return None if holder is None or holder.is_stale() else holder


def refuse_while_shards_run(out: Path) -> None:
    """Raise while a shard runs in ``out`` (the fit step and the merge must wait for the shards)."""
    running = [f"shard {folder.name.replace('-of-', '/')} ({holder.describe()})"
               for folder in sorted((out / SHARDS_DIR).glob("*-of-*")) if (holder := _live_holder(folder))]
    if running:
        raise FolderLockedError(f"Shards are still running in {out}: {', '.join(running)}. Wait for them to finish "
                                "(a new fit would change the landmarks they use).")


def clear_shards(out: Path) -> None:
    """Remove the shards' folders of an earlier round (a new fit step starts a new round)."""
    for path in sorted((out / SHARDS_DIR).glob("*/*"), reverse=True):
        if path.is_file():
            path.unlink()
    for folder in sorted((out / SHARDS_DIR).glob("*")):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def run_shard(out: Path, manifest: Path, frame: pd.DataFrame, config: PreprocessConfig, shard: Shard, jobs: int,
              progress: bool, start: float) -> PreprocessResult:
    """Preprocess one shard's rows into ``out`` with the fitted landmarks (see the module docstring).

    Raises:
        FitMismatchError: no landmarks fitted in ``out`` for this manifest and these settings.
        FolderLockedError: the fit step or the merge holds ``out``, or this shard runs already.
        HarmonizeError: scans that could not be preprocessed, each listed.
    """
    if not is_earlier_output(out):
        raise ShardError(f"{out} holds no fitted landmarks: run 'harmonize preprocess {manifest} --out {out} "
                         "--fit-only' first (once, before the shards), then the shards.")
    holder = _live_holder(out)
    if holder is not None:
        raise FolderLockedError(f"The output folder {out} is in use by {holder.describe()}; shard {shard} runs "
                                "after the fit step and before the merge. Wait for that run to finish.")
    folder = out / SHARDS_DIR / shard.name
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder, f"{MARKER_TOOL} --shard {shard}"):
        for leftover in folder.glob(TMP_GLOB):
            leftover.unlink(missing_ok=True)
        (folder / SHARD_RECORD_FILENAME).unlink(missing_ok=True)  # written again once this run has finished
        scans = scans_of(frame)
        sha = file_hash(manifest)
        landmarks, files, pooled = fitted_landmarks(out, scans, manifest, sha, config)
        rows = shard.select(len(scans))
        part = [scans[i] for i in rows]
        with ScanPool(jobs) as pool:
            spatial_pass(pool, part, config, out, False, manifest, progress)
            processed, cached = intensity_pass(pool, part, landmarks, config, out, manifest, progress)
        written = write_output_manifest(frame.iloc[rows.start:rows.stop], part, out, folder / MANIFEST_FILENAME,
                                        config)
        record = {"shard": shard.index, "of": shard.count, "rows": [scan.row for scan in part],
                  "manifest_sha256": sha, "fit_sha256": file_hash(out / LANDMARKS_DIR / FIT_FILENAME),
                  "processed": processed, "cached": cached}
        write_json_atomic(folder / SHARD_RECORD_FILENAME, record, **JSON_FORMAT)
    return PreprocessResult(manifest=written, processed=processed, cached=cached, landmarks=files,
                            pooled_sites=pooled, seconds=time.perf_counter() - start, step=f"shard {shard}")


def _shard_records(out: Path, manifest: Path, sha: str, scans: list[Scan]) -> list[dict[str, Any]]:
    """The records of every shard of the round in ``out``, checked; every problem listed."""
    folders = {int(m.group(1)): int(m.group(2)) for f in (out / SHARDS_DIR).glob("*-of-*")
               if (m := _SHARD_FOLDER.match(f.name))}
    counts = sorted(set(folders.values()))
    if not counts:
        raise ShardError(f"{out / SHARDS_DIR} holds no shard: run the shards (--shard K/N) before --merge.")
    if len(counts) > 1:
        raise ShardError(f"{out / SHARDS_DIR} holds shards of rounds of {counts} shards; run --fit-only again "
                         "(it clears old rounds), then one round of shards.")
    count = counts[0]
    fit_sha = file_hash(out / LANDMARKS_DIR / FIT_FILENAME)
    records, problems = [], []
    for index in range(1, count + 1):
        shard = Shard(index, count)
        path = out / SHARDS_DIR / shard.name / SHARD_RECORD_FILENAME
        record = read_json_object(path)
        if record is None:
            problems.append(f"shard {shard}: missing ({path} does not exist: the shard has not run, failed, or "
                            f"still runs); run it (--shard {shard})")
        elif record.get("manifest_sha256") != sha:
            problems.append(f"shard {shard}: made from another content of {manifest}; run it again")
        elif record.get("fit_sha256") != fit_sha:
            problems.append(f"shard {shard}: made with landmarks fitted before the last --fit-only; run it again")
        elif record.get("rows") != [scans[i].row for i in shard.select(len(scans))]:
            problems.append(f"shard {shard}: covers other rows than shard {shard} of {len(scans)} rows; run it again")
        else:
            records.append(record)
    if problems:
        raise ShardError(f"Cannot merge the {count} shards in {out}: {len(problems)} of them are missing or out of "
                         "date.", problems=problems)
    return records


def merge_shards(out: Path, manifest: Path, frame: pd.DataFrame, config: PreprocessConfig, bids_derivatives: bool,
                 start: float) -> PreprocessResult:
    """Check that every shard of the round finished, then write ``out/manifest.csv`` as one run would.

    Runs while ``out`` is claimed (:class:`~harmonize.output_dir.OutputDir`); removes the temporary files of
    shards that were killed.

    Raises:
        ShardError: a shard missing (named), from another manifest content or an earlier fit, or rounds of
            different numbers of shards.
        FitMismatchError: the settings differ from the fit's.
    """
    refuse_while_shards_run(out)
    remove_leftover_temporaries(out)  # of shards that were killed: no shard runs now
    scans = scans_of(frame)
    sha = file_hash(manifest)
    _, files, pooled = fitted_landmarks(out, scans, manifest, sha, config)
    records = _shard_records(out, manifest, sha, scans)
    written = write_output_manifest(frame, scans, out, out / MANIFEST_FILENAME, config, bids_derivatives)
    return PreprocessResult(manifest=written, processed=sum(int(r.get("processed", 0)) for r in records),
                            cached=sum(int(r.get("cached", 0)) for r in records), landmarks=files, pooled_sites=pooled,
                            seconds=time.perf_counter() - start, step="merge")
