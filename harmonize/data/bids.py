"""Build a manifest from a BIDS dataset: ``participants.tsv``, ``sessions.tsv``, sidecars and every T1w scan.

One manifest row per T1w image (``sub-*/anat/*_T1w.nii[.gz]`` and ``sub-*/ses-*/anat/*_T1w.nii[.gz]``). The
row's ``subject_id`` is the image's BIDS file name without the ``_T1w`` suffix, so it is unique: ``sub-01``
for a dataset without sessions, ``sub-01_ses-1`` with sessions (and ``..._run-2`` when a session has several
runs). ``n/a`` (the BIDS missing value) is a problem wherever a value is needed.

- **Sex** comes from the participant's row of ``participants.tsv``.
- **Age** comes from the session's row of ``sub-XX/sub-XX_sessions.tsv`` when that file exists and has the
  age column, so a follow-up session gets its own age; otherwise (no session, no sessions file, or no age
  column in it) from ``participants.tsv``. A scan whose session has no row in a sessions file with an age
  column is a problem.
- **Site** comes from where :class:`SiteFrom` (``--site-from``) says: columns of ``participants.tsv``
  (``participants:scanner``), of the sessions file (``sessions:scanner``), or fields of the scan's JSON
  sidecar (``sidecar:Manufacturer,ManufacturersModelName``). Several fields are joined with ``_``. The
  sidecar follows the BIDS inheritance principle: ``*_T1w.json`` files from the dataset root down to the
  scan's folder whose entities are a subset of the scan's, merged top-down (the one nearest the scan wins),
  so a top-level ``T1w.json`` gives every scan a field.

Splits are assigned per participant (every scan of a participant shares its split, so no subject leaks
across splits), per site, with a seeded generator: see :func:`assign_splits`. A participant whose scans are
at several sites is drawn with the site of its first scan.

Sex values are mapped case-insensitively by :data:`SEX_MAP`: ``F``/``female``/``0`` -> ``F`` and
``M``/``male``/``1`` -> ``M`` (0/1 follows UK Biobank's coding, 0 female, 1 male). Any other value is a
problem unless ``sex_map`` maps it (e.g. ABIDE codes 1 male, 2 female: ``{"1": "M", "2": "F"}``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonize import defaults
from harmonize.data.bids_tables import (
    BIDS_AGE,
    BIDS_NA,
    BIDS_SEX,
    PARTICIPANTS_FILE,
    SESSION_PREFIX,
    SESSIONS_SUFFIX,
    SEX_MAP,
    SiteFrom,
    _join_site,
    _parse_age,
    _Participant,
    _read_participants,
    _read_sessions,
    _Sessions,
    _where,
)
from harmonize.data.manifest import write_manifest
from harmonize.errors import ConfigError, ManifestError, number_problem
from harmonize.keys import Keys, Sex, SiteSource, Split
from harmonize.output_dir import output_file

__all__ = [
    "BIDS_AGE",
    "BIDS_SEX",
    "SEX_MAP",
    "SIDECAR_SITE_FIELDS",
    "SiteFrom",
    "assign_splits",
    "bids_entities",
    "bids_manifest_frame",
    "manifest_from_bids",
    "sidecar_of",
]

logger = logging.getLogger(__name__)

T1W_PATTERN = re.compile(r"^(?P<entities>sub-[^_]+(?:_[^_]+-[^_]+)*)_T1w\.nii(?:\.gz)?$")
#: A sidecar that may apply to T1w scans: optional entities, then ``T1w.json``.
SIDECAR_PATTERN = re.compile(r"^(?:(?P<entities>[^_]+-[^_]+(?:_[^_]+-[^_]+)*)_)?T1w\.json$")
#: Sidecar fields that describe the scanner (BIDS "Scanner Hardware"), the usual choices for the site.
SIDECAR_SITE_FIELDS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "StationName",
                       "DeviceSerialNumber")


def bids_entities(name: str) -> dict[str, str]:
    """The entities of a BIDS file name, in order: ``"sub-01_ses-2_T1w.nii.gz"`` -> ``{"sub": "01", "ses": "2"}``."""
    stem = name.split(".", 1)[0]
    entities = {}
    for part in stem.split("_"):
        key, sep, value = part.partition("-")
        if sep:
            entities[key] = value
    return entities


def sidecar_of(image: str | os.PathLike, bids_dir: str | os.PathLike) -> tuple[dict[str, Any], list[Path]]:
    """The JSON sidecar of a T1w image, with the BIDS inheritance principle applied.

    Every ``[entities_]T1w.json`` from ``bids_dir`` down to the image's folder whose entities all appear in
    the image's name applies; they are merged top-down, so the file nearest the image wins a field.

    Args:
        image: the T1w image, inside ``bids_dir``.
        bids_dir: the dataset's root.

    Returns:
        The merged fields and the files read (top-down; empty when no sidecar applies).

    Raises:
        ManifestError: a sidecar that is not a JSON object, naming the file.
    """
    image, root = Path(image), Path(bids_dir)
    entities = bids_entities(image.name)
    folders = [root, *(root / Path(*image.relative_to(root).parts[:i])
                       for i in range(1, len(image.relative_to(root).parts)))]
    merged: dict[str, Any] = {}
    used: list[Path] = []
    for folder in folders:
        for path in sorted(folder.glob("*T1w.json")):
            match = SIDECAR_PATTERN.match(path.name)
            if match is None:
                continue
            own = bids_entities(match["entities"] or "")
            if any(entities.get(k) != v for k, v in own.items()):
                continue
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ManifestError(f"cannot read the sidecar {path} as JSON: {err}") from err
            if not isinstance(content, dict):
                raise ManifestError(f"the sidecar {path} holds a {type(content).__name__}, not a JSON object")
            merged.update(content)
            used.append(path)
    return merged, used


def _find_t1w(bids_dir: Path) -> dict[str, list[Path]]:
    """Every T1w image, grouped by participant (``sub-XX`` folder), sorted."""
    found: dict[str, list[Path]] = {}
    for pattern in ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*"):
        for path in bids_dir.glob(pattern):
            if T1W_PATTERN.match(path.name) and path.is_file():
                found.setdefault(path.relative_to(bids_dir).parts[0], []).append(path)
    return {pid: sorted(paths) for pid, paths in sorted(found.items())}


def _scan_site(path: Path, bids_dir: Path, who: _Participant, session: str | None, sessions: _Sessions | None,
               site_from: SiteFrom) -> tuple[str | None, str | None]:
    """``(site, None)`` or ``(None, problem)`` for one scan."""
    if site_from.source == SiteSource.PARTICIPANTS:
        return who.site, None
    if site_from.source == SiteSource.SESSIONS:
        pid = path.relative_to(bids_dir).parts[0]
        if session is None:
            return None, (f"{path}: has no session, so --site-from {site_from} cannot give its site; use "
                          "participants:COLUMN or sidecar:FIELD for datasets without sessions")
        if sessions is None:
            return None, (f"{path}: --site-from {site_from} needs {bids_dir / pid / (pid + SESSIONS_SUFFIX)}, "
                          "which does not exist")
        if session not in sessions.rows:
            return None, f"{sessions.path}: no row for session '{session}' (needed for the site of {path})"
        line, values = sessions.rows[session]
        site_values = [values[c] for c in site_from.fields]
        for column, value in zip(site_from.fields, site_values):
            if not value or value == BIDS_NA:
                return None, f"{_where(sessions.path, line, session, column)}: the site is missing ('{value}')"
        return _join_site(site_values), None
    fields, used = sidecar_of(path, bids_dir)
    if not used:
        return None, (f"{path}: no JSON sidecar found for --site-from {site_from} (looked for "
                      f"{path.name.split('.')[0]}.json beside it and T1w.json files above it)")
    absent = [f for f in site_from.fields if f not in fields or fields[f] in (None, "", BIDS_NA)]
    if absent:
        files = ", ".join(str(p) for p in used)
        return None, (f"{files}: no field {', '.join(repr(f) for f in absent)} for the site of {path} "
                      f"(--site-from {site_from}); its fields are: {', '.join(sorted(fields)) or 'none'}")
    return _join_site([str(fields[f]).strip() for f in site_from.fields]), None


def _scan_age(path: Path, who: _Participant, session: str | None, sessions: _Sessions | None,
              age_column: str) -> tuple[float | None, str | None]:
    """``(age, None)`` or ``(None, problem)``: the session's age when its sessions.tsv has one, else the
    participant's."""
    if session is not None and sessions is not None and age_column in sessions.header:
        if session not in sessions.rows:
            return None, (f"{sessions.path}: no row for session '{session}' (needed for the {age_column} of "
                          f"{path}); add the row with its {age_column}")
        line, values = sessions.rows[session]
        return _parse_age(values[age_column], _where(sessions.path, line, session, age_column))
    return who.age, who.age_problem


def assign_splits(sites: Mapping[str, Sequence[str]], seed: int = defaults.SEED,
                  val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                  test_fraction: float = defaults.MANIFEST_TEST_FRACTION) -> dict[str, Split]:
    """Assign each participant to train/val/test, per site, reproducibly.

    Each site's participants are sorted, then shuffled by a generator seeded with ``(seed, crc32(site))``,
    so a site's split does not change when other sites are added. The site gets ``round(n * test_fraction)``
    test and ``round(n * val_fraction)`` validation participants, reduced if needed so that at least one
    participant is left for training; the rest train.

    Args:
        sites: ``{site: participant ids}``.
        seed: seed of the shuffle.
        val_fraction: fraction of each site's participants in validation, in [0, 1).
        test_fraction: fraction in test, in [0, 1); the two fractions sum to less than 1.

    Returns:
        ``{participant id: split}``.

    Raises:
        ConfigError: a fraction out of range.
    """
    problems = [number_problem(name, value, strict=False, maximum=1, strict_maximum=True)
                for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction))]
    if not any(problems) and val_fraction + test_fraction >= 1.0:
        problems.append(f"'val_fraction' + 'test_fraction' must be < 1 so that some participants train, got "
                        f"{val_fraction} + {test_fraction}")
    if problems := [p for p in problems if p]:
        raise ConfigError("Invalid split fractions.", problems=problems)
    splits: dict[str, Split] = {}
    for site, members in sites.items():
        ids = sorted(members)
        rng = np.random.default_rng([seed, zlib.crc32(str(site).encode("utf-8"))])
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = round(len(ids) * test_fraction)
        n_val = round(len(ids) * val_fraction)
        while len(ids) and n_test + n_val >= len(ids):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, pid in enumerate(order):
            splits[pid] = Split.TEST if i < n_test else Split.VAL if i < n_test + n_val else Split.TRAIN
    return splits


def _site_from(site_column: str | None, site_from: str | SiteFrom | None) -> SiteFrom:
    if (site_column is None) == (site_from is None):
        raise ConfigError("give the site's source once: site_column (--site-column COL) or site_from "
                          "(--site-from participants:COL, sessions:COL or sidecar:FIELD,...)"
                          + (f"; got both {site_column!r} and {str(site_from)!r}" if site_column else ""))
    if site_column is not None:
        return SiteFrom(SiteSource.PARTICIPANTS, (site_column,))
    return site_from if isinstance(site_from, SiteFrom) else SiteFrom.parse(str(site_from))


def bids_manifest_frame(bids_dir: str | os.PathLike, site_column: str | None = None, seed: int = defaults.SEED,
                        val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                        test_fraction: float = defaults.MANIFEST_TEST_FRACTION,
                        sex_map: Mapping[str, str] | None = None, age_column: str = BIDS_AGE,
                        sex_column: str = BIDS_SEX, extra_columns: Sequence[str] = (),
                        skip_invalid: bool = False, site_from: str | SiteFrom | None = None) -> pd.DataFrame:
    """Build the manifest table of a BIDS dataset (absolute image paths); see the module docstring.

    Args:
        bids_dir: the BIDS dataset's root folder.
        site_column: the participants.tsv column that holds the site or scanner (short for
            ``site_from="participants:COLUMN"``); give this or ``site_from``.
        seed: seed of the split assignment.
        val_fraction: fraction of each site's participants in validation.
        test_fraction: fraction of each site's participants in test.
        sex_map: extra or overriding sex mappings (value -> ``F``/``M``), matched case-insensitively.
        age_column: the participants.tsv (and sessions.tsv) column with age in years.
        sex_column: the participants.tsv column with sex.
        extra_columns: further participants.tsv columns to copy into the manifest (e.g. to declare them
            as confounds); ``n/a`` becomes an empty cell.
        skip_invalid: leave out (with a logged warning) participants with a bad row or no image, images
            without a participant row, and scans without an age or site, instead of failing.
        site_from: where the site is read, a :class:`SiteFrom` or its text (``"sessions:scanner"``,
            ``"sidecar:Manufacturer,ManufacturersModelName"``).

    Returns:
        One row per T1w image, sorted by subject_id, with columns subject_id, image, site, age, sex, split
        and the extra columns.

    Raises:
        ManifestError: listing every problem (missing participants.tsv or column, bad values, participants
            without images, images without a participant row, a session without its age, a sidecar without
            the site's field), each naming its file and row.
        ConfigError: a bad fraction, sex mapping or site source.
    """
    bids = Path(bids_dir).expanduser().absolute()
    source = _site_from(site_column, site_from)
    reserved = [c for c in extra_columns if c in {k.value for k in Keys}]
    if reserved:
        raise ConfigError(f"extra columns {', '.join(reserved)} would replace manifest columns; leave them out")
    if not bids.is_dir():
        raise ManifestError(f"BIDS folder not found: {bids}")
    mapping = dict(SEX_MAP)
    for key, value in (sex_map or {}).items():
        if str(value).strip().upper() not in {s.value for s in Sex}:
            raise ConfigError(f"sex_map maps '{key}' to '{value}'; map every value to F or M")
        mapping[str(key).strip().lower()] = Sex(str(value).strip().upper())
    problems: list[str] = []
    participants, listed = _read_participants(bids, source, age_column, sex_column, extra_columns, mapping,
                                              problems)
    images = _find_t1w(bids)
    tsv = bids / PARTICIPANTS_FILE
    for pid, paths in images.items():
        if pid not in listed:
            problems.extend(f"{path}: participant '{pid}' has no row in {tsv}" for path in paths)
    for pid, who in participants.items():
        if pid not in images:
            problems.append(f"{_where(tsv, who.line, pid)}: no T1w image found (looked for {pid}/anat/"
                            f"{pid}_*T1w.nii.gz and {pid}/ses-*/anat/{pid}_*T1w.nii.gz)")
    rows = []
    for pid, who in participants.items():
        sessions = _read_sessions(bids, pid, source, problems) if pid in images else None
        for path in images.get(pid, []):
            match = T1W_PATTERN.match(path.name)
            assert match is not None
            ses = bids_entities(path.name).get("ses")
            session = None if ses is None else SESSION_PREFIX + ses
            age, age_problem = _scan_age(path, who, session, sessions, age_column)
            site, site_problem = _scan_site(path, bids, who, session, sessions, source)
            scan_problems = [p for p in (age_problem, site_problem) if p]
            if scan_problems:
                problems.extend(p for p in scan_problems if p not in problems)
                continue
            rows.append({Keys.SUBJECT_ID.value: match["entities"], Keys.IMAGE.value: str(path),
                         Keys.SITE.value: site, Keys.AGE.value: age, Keys.SEX.value: who.sex.value,
                         "_pid": pid, **who.extra})
    if problems and not skip_invalid:
        raise ManifestError(f"cannot build a manifest from the BIDS dataset {bids}: {len(problems)} problem(s) "
                            "(fix them, or pass skip_invalid / --skip-invalid to leave those scans out)",
                            problems=problems)
    for problem in problems:
        logger.warning("skipped: %s", problem)
    if not rows:
        raise ManifestError(f"the BIDS dataset {bids} has no T1w image with a valid participants.tsv row, age "
                            "and site", problems=problems)
    frame = pd.DataFrame(rows).sort_values(Keys.SUBJECT_ID.value, kind="stable").reset_index(drop=True)
    by_site: dict[str, list[str]] = {}
    for pid, site in frame.drop_duplicates("_pid")[["_pid", Keys.SITE.value]].itertuples(index=False):
        by_site.setdefault(site, []).append(pid)
    splits = assign_splits(by_site, seed, val_fraction, test_fraction)
    frame.insert(frame.columns.get_loc(Keys.SEX.value) + 1, Keys.SPLIT.value,
                 [splits[pid].value for pid in frame.pop("_pid")])
    duplicated = frame[Keys.SUBJECT_ID.value][frame[Keys.SUBJECT_ID.value].duplicated()].tolist()
    if duplicated:
        raise ManifestError(f"the BIDS dataset {bids} has several T1w images with the same entities "
                            "(e.g. sub-01_T1w.nii and sub-01_T1w.nii.gz)", problems=duplicated)
    return frame


def manifest_from_bids(bids_dir: str | os.PathLike, site_column: str | None, out_path: str | os.PathLike, *,
                       seed: int = defaults.SEED, val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                       test_fraction: float = defaults.MANIFEST_TEST_FRACTION,
                       sex_map: Mapping[str, str] | None = None, age_column: str = BIDS_AGE,
                       sex_column: str = BIDS_SEX, extra_columns: Sequence[str] = (), skip_invalid: bool = False,
                       overwrite: bool = False, site_from: str | SiteFrom | None = None) -> Path:
    """Write a manifest CSV for a BIDS dataset (image paths relative to the CSV's folder).

    Args:
        bids_dir: the BIDS dataset's root folder (read only; nothing in it is changed).
        site_column: the participants.tsv column that holds the site or scanner, or None with ``site_from``.
        out_path: the manifest CSV to write.
        seed: seed of the split assignment (:func:`assign_splits`).
        val_fraction: fraction of each site's participants in validation.
        test_fraction: fraction of each site's participants in test.
        sex_map: extra sex mappings (value -> ``F``/``M``).
        age_column: participants.tsv and sessions.tsv column with age in years.
        sex_column: participants.tsv column with sex.
        extra_columns: further participants.tsv columns to copy (e.g. confounds).
        skip_invalid: leave out unusable participants and scans (logged) instead of failing.
        overwrite: replace an existing ``out_path`` when harmonize wrote it (the folder's record of outputs,
            :func:`harmonize.output_dir.output_file`); a file of the user's there is refused, and the folder's
            other files are kept.
        site_from: where the site is read (:class:`SiteFrom` or ``"SOURCE:FIELDS"``), instead of ``site_column``.

    Returns:
        The path written.

    Raises:
        ManifestError: the dataset has problems (all listed).
        OutputDirError: the output exists (without ``overwrite``), or is a file harmonize did not write.
        ConfigError: a bad fraction, sex mapping or site source.
    """
    out = Path(out_path).expanduser().absolute()
    claim = output_file(out, "harmonize manifest from-bids", overwrite=overwrite)
    frame = bids_manifest_frame(bids_dir, site_column, seed, val_fraction, test_fraction, sex_map, age_column,
                                sex_column, extra_columns, skip_invalid, site_from=site_from)
    with claim:
        written = write_manifest(frame, out, overwrite=overwrite)
    counts = frame.groupby(Keys.SPLIT.value).size().to_dict()
    logger.info("wrote %s: %d scans of %d sites (%s)", written, len(frame), frame[Keys.SITE.value].nunique(),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return written
